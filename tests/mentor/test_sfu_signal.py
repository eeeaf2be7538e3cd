"""The ``sfu-*`` messages of ``Signal`` on a real server (real gRPC with TLS on 127.0.0.1):
refused without ``serve --sfu``, an observer cannot publish, an answer needs a subscription,
and every refusal is in the audit log; the same for the page's WebSocket ``sfu`` messages.
(The accepted paths, with a real Janus, are tests/mentor/test_sfu_janus.py and
test_sfu_page.py.)"""

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


async def _station_sfu_errors(server, token: str) -> list[str]:
    """The station sends two bad ``sfu-offer``s on one Signal call; the sfu-error answers."""
    async with MentorClient(server.server.grpc_target, token, str(server.server.cert_path),
                            "station") as client:
        sig = client.signal()
        await sig.wait_open()
        got = []
        for _ in range(2):
            await sig.send("sfu-offer", "hello")
            while True:
                msg = await asyncio.wait_for(sig.recv(), 10)
                assert msg is not None, "the station's Signal call was ended"
                if msg.sdp_type == "sfu-error":
                    got.append(msg.sdp)
                    break
        return got


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
        # the station's Signal call also carries the direct viewers' offers: its refused
        # publish is answered sfu-error and the call stays open (a second one is answered too)
        got = asyncio.run(_station_sfu_errors(mentor_server, tokens["surgeon"]))
        assert len(got) == 2 and all("not an SDP" in m for m in got), got
        err = asyncio.run(_signal(mentor_server, tokens["mentor"], "sfu-nonsense"))
        assert "expected sfu-offer" in err.details()
    finally:
        hub.sfu = None
    refused = _refusals(mentor_server, sid)
    assert len(refused) == 6, refused
    assert any("only the surgeon" in r for r in refused)


async def _page_ws(server, token: str, messages: list[dict]) -> list[dict]:
    """Join with ``token`` (cookie), open the page's WebSocket, say hello, send ``messages``;
    everything the server sent back within a short while."""
    import json

    import aiohttp

    from scrubin.mentor.tls import client_ssl_context

    async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=client_ssl_context(server.server.cert_path))
    ) as http:
        async with http.post(server.url + "/api/join", json={"token": token}) as r:
            assert r.status == 200
        async with http.ws_connect(server.url + "/api/ws") as ws:
            await ws.send_json({"type": "hello", "after_seq": 0})
            for m in messages:
                await ws.send_json(m)
            got = []
            try:
                while True:
                    got.append(json.loads((await ws.receive(timeout=1.5)).data))
            except TimeoutError:
                return got


def test_page_sfu_messages_checked(mentor_server) -> None:
    """The page's WebSocket side (PageSfu) before any Janus request: its welcome says
    ``sfu``, it is told there is no feed yet, and malformed or premature requests are
    answered ``sfu-error`` with the request's ``req`` and audited."""
    sid, tokens = mentor_server.new_session()
    hub = mentor_server.server.hub
    hub.sfu = SfuBridge("http://127.0.0.1:9/janus", "a", "b")
    try:
        got = asyncio.run(_page_ws(mentor_server, tokens["observer"], [
            {"type": "sfu", "sdp_type": "sfu-offer", "sdp": "v=0\r\n", "req": 1},
            {"type": "sfu", "sdp_type": "sfu-answer", "sdp": "v=0\r\n", "req": 2},
            {"type": "sfu", "sdp_type": "sfu-subscribe", "req": 3}]))
        surgeon = asyncio.run(_page_ws(mentor_server, tokens["surgeon"], [
            {"type": "sfu", "sdp_type": "sfu-subscribe", "req": 7}]))
    finally:
        hub.sfu = None
    welcome = next(m for m in got if m["type"] == "welcome")
    assert welcome["sfu"] is True
    assert {"type": "sfu", "feed": False} in got
    errors = {m["req"]: m["message"] for m in got if m.get("sdp_type") == "sfu-error"}
    assert "a page sends sfu-subscribe or sfu-answer" in errors[1], errors
    assert "without an sfu-subscribe" in errors[2], errors
    assert "has not published" in errors[3], errors
    assert [m["message"] for m in surgeon if m.get("sdp_type") == "sfu-error"] == [
        "signal sfu-subscribe: the surgeon station publishes, not subscribes"]
    refused = _refusals(mentor_server, sid)
    assert len(refused) == 4, refused
