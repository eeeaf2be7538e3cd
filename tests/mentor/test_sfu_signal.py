"""The ``sfu-*`` messages of ``Signal`` on a real server (real gRPC with TLS on 127.0.0.1):
refused without ``serve --sfu``, an observer cannot publish, an answer needs a subscription,
and every refusal is in the audit log. (The accepted path, with a real Janus, is
tests/mentor/test_sfu_janus.py.)"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from scrubin.mentor.client import MentorClient
from scrubin.mentor.sfu_bridge import SfuBridge


async def _signal(server, token: str, kind: str, sdp: str = "") -> grpc.aio.AioRpcError:
    async with MentorClient(server.server.grpc_target, token, str(server.server.cert_path),
                            "probe") as client:
        sig = client.signal()
        await sig.wait_open()
        await sig.send(kind, sdp)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while await asyncio.wait_for(sig.recv(), 10) is not None:
                pass
        return err.value


def _refusals(server, sid: str) -> list[str]:
    return [a["detail"] for a in server.db(server.server.hub.store.audit_log, sid)
            if a["action"] == "sfu_refused"]


def test_sfu_messages_refused_without_sfu(mentor_server) -> None:
    sid, tokens = mentor_server.new_session()
    err = asyncio.run(_signal(mentor_server, tokens["observer"], "sfu-subscribe"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no SFU" in err.details()


def test_sfu_role_and_order_checked(mentor_server) -> None:
    sid, tokens = mentor_server.new_session()
    hub = mentor_server.server.hub
    # a bridge that was never started: these refusals come before any Janus request
    hub.sfu = SfuBridge("http://127.0.0.1:9/janus", "a", "b")
    try:
        err = asyncio.run(_signal(mentor_server, tokens["observer"], "sfu-offer", "v=0\r\n"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "only the surgeon station publishes" in err.details()
        err = asyncio.run(_signal(mentor_server, tokens["mentor"], "sfu-answer", "v=0\r\n"))
        assert "without an sfu-subscribe" in err.details()
        err = asyncio.run(_signal(mentor_server, tokens["observer"], "sfu-subscribe"))
        assert "has not published" in err.details()     # no station feed yet
        err = asyncio.run(_signal(mentor_server, tokens["surgeon"], "sfu-offer", "hello"))
        assert "not an SDP" in err.details()
        err = asyncio.run(_signal(mentor_server, tokens["mentor"], "sfu-nonsense"))
        assert "expected sfu-offer" in err.details()
    finally:
        hub.sfu = None
    refused = _refusals(mentor_server, sid)
    assert len(refused) == 5, refused
    assert any("only the surgeon" in r for r in refused)
