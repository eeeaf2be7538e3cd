"""Per-call tokens (mentor/tokens.py) on the real gRPC server over TLS on 127.0.0.1.

Expected values come from the JWT standard through a peer implementation (PyJWT): it
verifies the server's tokens with the server's key and forges the refused ones (another key,
``alg: none``, another session). Refusals must be UNAUTHENTICATED (cannot identify the caller:
bad signature, expired, no session named, ended session) or PERMISSION_DENIED (identified, not
allowed: another session, a role that may not make the call), and each is in the audit log."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import grpc
import jwt
import pytest

from scrubin.mentor.client import MentorClient
from scrubin.mentor.tokens import KEY_NAME, SESSION_HEADER
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc
from tests.mentor.test_grpc import new_session, running, stroke

pytestmark = pytest.mark.timeout(60)


def server_key(server) -> bytes:
    raw = (server.state_dir / KEY_NAME).read_text().strip()
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


async def call_annotations(server, token: str, session_id: str | None) -> grpc.StatusCode:
    """An ``Annotations`` call with ``token`` that half-closes at once; the status it ends with
    (OK when accepted: with no hello the server has nothing to replay and ends the call).

    No message is written: a write racing the server's refusal fails on the client with
    INTERNAL ("execute_batch" on a finished call) and hides the server's status; half-closing
    cannot (grpc.aio skips it on a finished call)."""
    meta = [("authorization", f"Bearer {token}")]
    if session_id is not None:
        meta.append((SESSION_HEADER, session_id))
    creds = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
    async with grpc.aio.secure_channel(server.grpc_target, creds) as ch:
        call = pb_grpc.MentorStub(ch).Annotations(metadata=meta, timeout=5)
        try:
            await call.done_writing()
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return (await call.code())


async def publish(server, token: str, session_id: str) -> grpc.StatusCode:
    creds = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
    meta = [("authorization", f"Bearer {token}"), (SESSION_HEADER, session_id)]
    async with grpc.aio.secure_channel(server.grpc_target, creds) as ch:
        call = pb_grpc.MentorStub(ch).PublishTelemetry(metadata=meta, timeout=5)
        await call.done_writing()
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


async def refusals(server) -> list[str]:
    log = await server.hub.db(server.hub.store.audit_log)
    return [r["detail"] for r in log if r["action"] == "refused"]


def test_join_returns_a_jwt_the_peer_library_verifies(tmp_path):
    async def main():
        async with running(tmp_path, call_token_ttl_s=120) as server:
            made = await new_session(server)
            async with MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path,
                                    "Dr A") as c:
                reply = await c.join()
            claims = jwt.decode(reply.call_token, server_key(server), algorithms=["HS256"],
                                audience=made.session_id, issuer="scrubin")
            header = jwt.get_unverified_header(reply.call_token)
            assert header == {"alg": "HS256", "typ": "JWT"}
            assert claims["role"] == "mentor" and claims["sub"] == "mentor:Dr A"
            assert claims["exp"] - claims["iat"] == 120
            assert abs(claims["exp"] - reply.call_token_expires) < 1e-6
            assert abs(claims["iat"] - time.time()) < 5
            with pytest.raises(jwt.InvalidAudienceError):
                jwt.decode(reply.call_token, server_key(server), algorithms=["HS256"],
                           audience="another-session")
    asyncio.run(main())


def test_call_token_carries_identity_for_annotations(tmp_path):
    """A client switched to its call token annotates as the author its Join named."""
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path,
                                    "Dr A") as c:
                assert c.use_call_token(await c.join())
                assert dict(c.metadata)[SESSION_HEADER] == made.session_id
                stream = c.annotations()
                await stream.start()
                try:
                    seq = await stream.send(stroke(1))
                    got_seq, event = await asyncio.wait_for(stream.events.get(), 5)
                finally:
                    await stream.close()
            assert seq == got_seq == 1
            assert event["author"] == "mentor:Dr A" and event["role"] == "mentor"
    asyncio.run(main())


def test_expired_and_forged_tokens_unauthenticated_and_audited(tmp_path):
    async def main():
        async with running(tmp_path, call_token_ttl_s=1) as server:
            made = await new_session(server)
            sid = made.session_id
            async with MentorClient(server.grpc_target, made.tokens["mentor"],
                                    server.cert_path) as c:
                short = (await c.join()).call_token
            assert await call_annotations(server, short, sid) == grpc.StatusCode.OK
            await asyncio.sleep(1.2)
            assert await call_annotations(server, short, sid) == grpc.StatusCode.UNAUTHENTICATED

            now = int(time.time())
            claims = {"iss": "scrubin", "aud": sid, "sub": "surgeon", "role": "surgeon",
                      "iat": now, "exp": now + 300}
            other_key = jwt.encode(claims, b"k" * 32, algorithm="HS256")
            unsigned = jwt.encode(claims, None, algorithm="none")
            good = jwt.encode(claims, server_key(server), algorithm="HS256")
            head, body, sig = good.split(".")
            lifted = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            lifted["exp"] = now + 10 ** 6
            tampered = ".".join((head, base64.urlsafe_b64encode(
                json.dumps(lifted).encode()).rstrip(b"=").decode(), sig))
            for token in (other_key, unsigned, tampered):
                assert await call_annotations(server, token, sid) == grpc.StatusCode.UNAUTHENTICATED
            # A server-signed token is accepted only when the call names its session.
            assert await call_annotations(server, good, sid) == grpc.StatusCode.OK
            assert await call_annotations(server, good, None) == grpc.StatusCode.UNAUTHENTICATED
            details = await refusals(server)
            assert sum("expired" in d for d in details) == 1
            assert sum("bad signature" in d for d in details) == 2
            assert sum("alg 'none' refused" in d for d in details) == 1
            assert sum("names no session" in d for d in details) == 1
            await server.hub.db(server.hub.store.end_session, sid)
            assert await call_annotations(server, good, sid) == grpc.StatusCode.UNAUTHENTICATED
            assert any("ended session" in d for d in await refusals(server))
    asyncio.run(main())


def test_wrong_session_and_wrong_role_permission_denied_and_audited(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            a, b = await new_session(server), await new_session(server)
            async with MentorClient(server.grpc_target, a.tokens["observer"],
                                    server.cert_path) as c:
                observer_a = (await c.join()).call_token
            # Session A's call token and session A's session token, on a call naming B.
            for token in (observer_a, a.tokens["observer"]):
                assert await call_annotations(server, token, b.session_id) == \
                    grpc.StatusCode.PERMISSION_DENIED
            # The observer's call token on the surgeon-only PublishTelemetry.
            assert await publish(server, observer_a, a.session_id) == \
                grpc.StatusCode.PERMISSION_DENIED
            log = await server.hub.db(server.hub.store.audit_log)
            refused = [(r["session_id"], r["role"], r["detail"]) for r in log
                       if r["action"] == "refused"]
            assert (a.session_id, "observer", "Annotations: token of another session") in refused
            assert sum("of another session" in d for _, _, d in refused) == 2
            assert (a.session_id, "observer",
                    "PublishTelemetry: role observer may not") in refused
    asyncio.run(main())


def test_join_needs_the_session_token_so_a_call_token_cannot_renew_itself(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with MentorClient(server.grpc_target, made.tokens["mentor"],
                                    server.cert_path) as c:
                token = (await c.join()).call_token
            creds = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
            async with grpc.aio.secure_channel(server.grpc_target, creds) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await pb_grpc.MentorStub(ch).Join(pb.JoinRequest(), timeout=5, metadata=[
                        ("authorization", f"Bearer {token}"),
                        (SESSION_HEADER, made.session_id)])
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "Join: a call token cannot renew itself" in await refusals(server)
    asyncio.run(main())


def test_client_renews_its_call_token_before_it_expires(tmp_path):
    """2-s tokens renewed at half their life: calls 3 s later still pass, each with a newer
    token; the first token, expired by then, is refused."""
    async def main():
        async with running(tmp_path, call_token_ttl_s=2) as server:
            made = await new_session(server)
            async with MentorClient(server.grpc_target, made.tokens["mentor"],
                                    server.cert_path) as c:
                first = (await c.use_call_tokens(renew_at=0.5)).call_token
                await asyncio.sleep(3.0)
                now = dict(c.metadata)["authorization"].removeprefix("Bearer ")
                assert now != first and now.count(".") == 2
                assert await call_annotations(server, now, made.session_id) == \
                    grpc.StatusCode.OK
                assert await call_annotations(server, first, made.session_id) == \
                    grpc.StatusCode.UNAUTHENTICATED
                stream = c.annotations()  # the project's stream, on the renewed token
                await stream.start()
                try:
                    assert await stream.send(stroke(1)) == 1
                finally:
                    await stream.close()
            log = await server.hub.db(server.hub.store.audit_log)
            assert [r["action"] for r in log].count("join") == 1
            assert sum(r["action"] == "renew" for r in log) >= 2  # >= 2 renewals in 3 s
    asyncio.run(main())
