"""Call-token renewal (mentor/DESIGN.md "Renewal") with the real server over TLS on 127.0.0.1
and the real StationLink, on 3-s call tokens.

Truth comes from outside the client: the server's audit log (what it accepted, renewed and
refused), the session-wide seq the server assigns (1, 2, 3, ... with neither gap nor
duplicate), PyJWT reading the tokens, and the frame ids the test itself published. Every
stream is cut and reopened after each token lifetime, so a reopened call that carried an
expired token would be refused - and audited - by the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import jwt
import numpy as np
import pytest

from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.client import MentorClient
from scrubin.mentor.errors import MentorError
from scrubin.mentor.impair import Impairment
from scrubin.mentor.impair_relay import TcpRelay
from scrubin.mentor.link_status import LinkMonitor
from scrubin.mentor.media import StreamEncoder, VideoFanout
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_link import StationLink
from scrubin.mentor.station_meta import FrameMeta
from scrubin.mentor.strip import STRIP_HEIGHT
from scrubin.mentor.tokens import SESSION_HEADER
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc
from tests.mentor.test_grpc import new_session, running, stroke
from tests.mentor.test_tokens_call import server_key

pytestmark = pytest.mark.timeout(60)

TTL_S = 3


class SeqBoard(AnnotationBoard):
    """The station's board, keeping every seq it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seqs: list[int] = []

    def apply(self, seq: int, event: dict) -> bool:
        self.seqs.append(seq)
        return super().apply(seq, event)


def make_station() -> SurgeonStation:
    return SurgeonStation(VideoFanout(StreamEncoder(320, 180 + STRIP_HEIGHT, 30.0)))


def meta(frame_id: int) -> FrameMeta:
    return FrameMeta(frame_id, time.time(), 320, 180, (300.0, 300.0, 160.0, 90.0),
                     (0.0,) * 5, np.eye(4), np.eye(4), "LIVE")


def bearer(client: MentorClient) -> str:
    return dict(client.metadata)["authorization"].removeprefix("Bearer ")


async def audit(server) -> list[dict]:
    return await server.hub.db(server.hub.store.audit_log)


async def start_link(server, token: str, target: str = "") -> StationLink:
    client = MentorClient(target or server.grpc_target, token, server.cert_path, "station")
    link = StationLink(make_station(), client, SeqBoard(), None, settle_s=0.05)
    await link.start(["127.0.0.1"])
    return link


async def stop_link(link: StationLink) -> None:
    await link.close()
    await link.client.close()


def test_station_streams_across_three_token_lifetimes_without_gap_or_duplicate(tmp_path):
    """10.5 s of annotations both ways and telemetry on 3-s tokens; every 2.5 s the station's
    TCP connection is reset (a TCP relay in front of the server) and the mentor's stream cut,
    so every call reopens: all events arrive once, in seq order, at the station and the
    mentor; telemetry resumes after each cut; the server renewed >= 3 times and refused
    nothing."""
    async def main():
        async with running(tmp_path, call_token_ttl_s=TTL_S, ice_hosts=["127.0.0.1"]) as server:
            made = await new_session(server)
            host, port = server.grpc_target.rsplit(":", 1)
            relay = TcpRelay((host, int(port)), Impairment(), Impairment(), mode="reset")
            await relay.start()
            link = await start_link(server, made.tokens["surgeon"], relay.target_str)
            first_token = bearer(link.client)
            mentor = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path,
                                  "Dr A")
            await mentor.use_call_tokens("mentor")
            stream = mentor.annotations()
            await stream.start()
            seen: list[int] = []
            telemetry: list[tuple[float, int]] = []

            async def mentor_reader() -> None:
                while True:
                    seen.append((await stream.events.get())[0])

            async def watch() -> None:
                async for frame in mentor.watch_telemetry():
                    telemetry.append((time.time(), frame.frame_id))

            async def frames() -> None:
                fid = 1000
                while True:
                    fid += 1
                    link.frame_sent(meta(fid))
                    await asyncio.sleep(0.05)

            tasks = [asyncio.create_task(f()) for f in (mentor_reader, watch, frames)]
            t0 = time.monotonic()
            sent, cuts, next_cut = 0, [], t0 + 2.5
            signal_generations = {link.signal.generation}
            while time.monotonic() - t0 < 3.5 * TTL_S:
                await stream.send(stroke(sent))
                sent += 1
                if time.monotonic() >= next_cut:   # every call reopens on the token of now
                    relay.reset_all()    # every call of the station fails UNAVAILABLE
                    stream.drop_connection()
                    cuts.append(time.time())
                    next_cut += 2.5
                await asyncio.sleep(0.1)
                signal_generations.add(link.signal.generation)
            # every stroke is anchored (2-D, no models) by the station: 2 events per stroke
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and (
                    len(link.board.seqs) < 2 * sent or len(seen) < 2 * sent
                    or not telemetry or telemetry[-1][0] < cuts[-1] + 0.2):
                await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()
            result = dict(sent=sent, station=list(link.board.seqs), mentor=list(seen),
                          telemetry=telemetry, cuts=cuts, first=first_token,
                          last=bearer(link.client), renewals=link.client.renewals,
                          ann_connects=link.ann.connects, mentor_connects=stream.connects,
                          ended=link.ended, errors=list(link.errors),
                          signal_generations=signal_generations,
                          generation=link.client.token_generation,
                          log=await audit(server), sid=made.session_id, key=server_key(server))
            await stream.close()
            await mentor.close()
            await stop_link(link)
            await relay.close()
            return result

    r = asyncio.run(main())
    n = 2 * r["sent"]
    assert r["sent"] >= 60
    assert r["station"] == list(range(1, n + 1))     # no gap, no duplicate, in order
    assert r["mentor"] == list(range(1, n + 1))
    assert r["ended"] == ""
    # the reconnects really happened, most of them long after the first token had expired
    first = jwt.decode(r["first"], r["key"], algorithms=["HS256"], audience=r["sid"],
                       options={"verify_exp": False})
    assert first["exp"] - first["iat"] == TTL_S
    assert len(r["cuts"]) >= 3 and sum(c > first["exp"] + 1 for c in r["cuts"]) >= 2
    assert r["ann_connects"] >= 4 and r["mentor_connects"] >= 4
    assert len(r["signal_generations"]) >= 3    # Signal reopened on newer tokens
    last = jwt.decode(r["last"], r["key"], algorithms=["HS256"], audience=r["sid"])
    assert last["sub"] == "surgeon:station" and last["jti"] != first["jti"]
    assert r["renewals"] >= 3 and r["generation"] == r["renewals"] + 1
    log = r["log"]
    assert [x["detail"] for x in log if x["action"] == "refused"] == []
    renews = [x for x in log if x["action"] == "renew" and x["author"] == "surgeon:station"]
    # a renewal cut by a reset is audited although its reply was lost (and then retried)
    assert len(renews) >= r["renewals"]
    assert sum(f"jti={last['jti']} " in x["detail"] for x in renews) == 1
    assert sum(x["action"] == "join" for x in log) == 2     # station + mentor, once each
    # telemetry: strictly increasing frame ids, and it came back after every reset (the
    # publisher reopens after a 1-s pause; on an expired token it would stay refused)
    times = [t for t, _ in r["telemetry"]]
    ids = [f for _, f in r["telemetry"]]
    assert len(ids) > 100 and all(b > a for a, b in zip(ids, ids[1:], strict=False))
    assert all(any(t > cut for t in times) for cut in r["cuts"])
    assert times[-1] - times[0] > 3 * TTL_S


def test_expired_token_without_renewal_is_refused_and_audited(tmp_path):
    """The same reconnect without renewal: after the token's exp the reopened Annotations
    call is refused UNAUTHENTICATED, the stream fails with the server's reason, and the
    refusal is in the audit log."""
    async def main():
        async with running(tmp_path, call_token_ttl_s=2) as server:
            made = await new_session(server)
            async with MentorClient(server.grpc_target, made.tokens["mentor"],
                                    server.cert_path, "Dr A") as c:
                assert c.use_call_token(await c.join())   # taken once, never renewed
                stream = c.annotations()
                await stream.start()
                assert await stream.send(stroke(1)) == 1
                await asyncio.sleep(2.3)
                stream.drop_connection()
                with pytest.raises(MentorError, match="expired"):
                    await asyncio.wait_for(stream.send(stroke(2)), 10)
                with pytest.raises(MentorError, match="annotations refused: .*expired"):
                    await asyncio.wait_for(stream._task, 5)
                # the same token on a plain call: UNAUTHENTICATED
                creds = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
                async with grpc.aio.secure_channel(server.grpc_target, creds) as ch:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await pb_grpc.MentorStub(ch).IceServers(
                            pb.IceServersRequest(), metadata=c.metadata, timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            return await audit(server)

    log = asyncio.run(main())
    refused = [x["detail"] for x in log if x["action"] == "refused"]
    assert len(refused) == 2
    assert refused[0].startswith("Annotations: call token: expired")
    assert refused[1].startswith("IceServers: call token: expired")
    assert not any(x["action"] == "renew" for x in log)


def test_renewal_after_the_session_ended_is_refused_audited_and_ends_the_link(tmp_path):
    async def main():
        async with running(tmp_path, call_token_ttl_s=TTL_S) as server:
            made = await new_session(server)
            link = await start_link(server, made.tokens["surgeon"])
            messages: list[str] = []
            link.client.on_refused = lambda m, f=link.client.on_refused: (messages.append(m),
                                                                           f(m))
            ended_at = time.time()
            await server.hub.db(server.hub.store.end_session, made.session_id)
            server.hub.end_session(made.session_id)
            deadline = time.monotonic() + 2 * TTL_S
            while not link.ended and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            ended, refused = link.ended, link.client.refused
            shown = [ln.text for ln in LinkMonitor(link.station, link.client.channel,
                                                   link=link).lines()]
            await asyncio.sleep(0.3)
            tasks_done = all(t.done() for t in link._tasks)
            signal_done = link.signal._call.done()
            await stop_link(link)
            return ended, refused, messages, ended_at, tasks_done, signal_done, \
                await audit(server), shown

    ended, refused, messages, ended_at, tasks_done, signal_done, log, shown = asyncio.run(main())
    # the surgeon's view says so (the server still answers health checks: not "CONNECTED")
    assert shown[0] == "MENTOR LINK ENDED" and "SERVER CONNECTED" not in shown, shown
    assert shown[1].startswith("THE MENTOR SERVER REFUSED"), shown
    assert ended.startswith("mentoring link ended: the mentor server refused to renew")
    assert "UNAUTHENTICATED" in ended and "ended session" in ended
    assert refused in ended and messages == [refused]    # said once
    assert tasks_done and signal_done                     # every call of the link stopped
    renew_refusals = [x for x in log if x["action"] == "refused"
                      and x["detail"] == "Renew: ended session token"]
    assert len(renew_refusals) == 1 and renew_refusals[0]["time"] >= ended_at
    assert renew_refusals[0]["role"] == "surgeon"


def test_renew_needs_the_session_token_and_is_audited(tmp_path):
    """``Renew`` with the session token gives a fresh token (PyJWT: same session, role and
    author, full lifetime); with a call token it is refused PERMISSION_DENIED, as ``Join``."""
    async def main():
        async with running(tmp_path, call_token_ttl_s=120) as server:
            made = await new_session(server)
            async with MentorClient(server.grpc_target, made.tokens["observer"],
                                    server.cert_path, "Obs") as c:
                joined = await c.join()
                reply = await c.renew()
                creds = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
                async with grpc.aio.secure_channel(server.grpc_target, creds) as ch:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await pb_grpc.MentorStub(ch).Renew(
                            pb.RenewRequest(client_name="Obs"), timeout=5,
                            metadata=[("authorization", f"Bearer {joined.call_token}"),
                                      (SESSION_HEADER, made.session_id)])
                    with pytest.raises(grpc.aio.AioRpcError) as wrong_role:
                        await pb_grpc.MentorStub(ch).Renew(
                            pb.RenewRequest(role=pb.ROLE_SURGEON), timeout=5,
                            metadata=[("authorization", f"Bearer {made.tokens['observer']}")])
            return made, joined, reply, info.value, wrong_role.value, server_key(server), \
                await audit(server)

    made, joined, reply, refused, wrong_role, key, log = asyncio.run(main())
    new = jwt.decode(reply.call_token, key, algorithms=["HS256"], audience=made.session_id,
                     issuer="scrubin")
    old = jwt.decode(joined.call_token, key, algorithms=["HS256"], audience=made.session_id)
    assert (new["role"], new["sub"]) == (old["role"], old["sub"]) == ("observer", "observer:Obs")
    assert new["jti"] != old["jti"] and new["exp"] - new["iat"] == 120
    assert abs(reply.call_token_expires - new["exp"]) < 1e-6
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert wrong_role.code() == grpc.StatusCode.PERMISSION_DENIED
    renews = [x for x in log if x["action"] == "renew"]
    assert len(renews) == 1 and renews[0]["author"] == "observer:Obs"
    assert renews[0]["detail"] == f"grpc call token jti={new['jti']} exp={new['exp']}"
    details = [x["detail"] for x in log if x["action"] == "refused"]
    assert details == ["Renew: a call token cannot renew itself",
                       "Renew: asked for role ROLE_SURGEON"]


def test_renewal_retries_while_the_server_is_away(tmp_path):
    """The server stops for longer than a token's lifetime: renewals fail UNAVAILABLE and are
    retried with back-off; once a server is back on the same state folder (same port, same
    key) the client renews with its session token and its calls pass again."""
    async def main():
        from scrubin.mentor.server import MentorServer, ServerConfig

        cfg = dict(db=tmp_path / "mentor.db", port=0, grpc_port=0, call_token_ttl_s=2)
        server = MentorServer(ServerConfig(**cfg))
        await server.start()
        port = server.ports.grpc
        made = await new_session(server)
        c = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path)
        try:
            await c.use_call_tokens("mentor")
            first = c.token_generation
            await server.stop(0.1)
            await asyncio.sleep(3.0)                     # the token expired meanwhile
            assert c.token_generation == first and c.refused == ""
            server = MentorServer(ServerConfig(**(cfg | {"grpc_port": port})))
            await server.start()
            deadline = time.monotonic() + 10
            while c.token_generation == first and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stream = c.annotations()
            await stream.start()
            try:
                seq = await asyncio.wait_for(stream.send(stroke(1)), 10)
            finally:
                await stream.close()
            return c.token_generation - first, seq, c.refused, await audit(server)
        finally:
            await c.close()
            with contextlib.suppress(Exception):
                await server.stop(0.1)

    renewed, seq, refused, log = asyncio.run(main())
    assert renewed >= 1 and seq == 1 and refused == ""
    assert [x["detail"] for x in log if x["action"] == "refused"] == []
    assert sum(x["action"] == "renew" for x in log) >= 1


def test_use_call_tokens_checks_its_schedule(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with MentorClient(server.grpc_target, made.tokens["mentor"],
                                    server.cert_path) as c:
                for renew_at, jitter in ((0.05, 0.0), (0.99, 0.0), (0.9, 0.1), (0.5, 0.3)):
                    with pytest.raises(MentorError, match="renew_at"):
                        await c.use_call_tokens(renew_at=renew_at, jitter=jitter)
    asyncio.run(main())


def test_revoked_surgeon_token_ends_the_station_link_at_its_next_renewal(tmp_path):
    """The admin revokes the surgeon's token (HTTPS admin API): the station's call token is
    refused on new calls at once, its next renewal is refused (audited "revoked token") and
    the link ends itself; the mentor's calls and renewals go on."""
    import json
    import ssl
    import urllib.request

    async def main():
        async with running(tmp_path, call_token_ttl_s=TTL_S) as server:
            made = await new_session(server)
            link = await start_link(server, made.tokens["surgeon"])
            mentor = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path)
            await mentor.use_call_tokens("mentor")
            admin = (server.state_dir / "admin-token").read_text().strip()
            req = urllib.request.Request(
                f"{server.url}/api/admin/sessions/{made.session_id}/revoke",
                data=json.dumps({"role": "surgeon"}).encode(), method="POST",
                headers={"Authorization": f"Bearer {admin}",
                         "Content-Type": "application/json"})
            ctx = ssl.create_default_context(cafile=str(server.cert_path))
            revoked_at = time.time()
            answer = await asyncio.to_thread(
                lambda: json.loads(urllib.request.urlopen(req, context=ctx, timeout=5).read()))
            with pytest.raises(grpc.aio.AioRpcError) as at_once:
                await link.client.ice_servers()
            deadline = time.monotonic() + 2 * TTL_S
            while not link.ended and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            generation = mentor.token_generation
            await asyncio.sleep(max(0.0, revoked_at + 1.5 * TTL_S - time.time()))
            stream = mentor.annotations()
            await stream.start()
            seq = await asyncio.wait_for(stream.send(stroke(1)), 10)
            await stream.close()
            out = (answer, at_once.value.code(), link.ended, mentor.token_generation - generation,
                   seq, mentor.refused, await audit(server))
            await mentor.close()
            await stop_link(link)
            return out

    answer, at_once, ended, mentor_renewed, seq, mentor_refused, log = asyncio.run(main())
    assert answer == {"session_id": answer["session_id"], "role": "surgeon", "revoked": True}
    assert at_once == grpc.StatusCode.UNAUTHENTICATED
    assert ended.startswith("mentoring link ended: the mentor server refused to renew")
    assert "revoked token" in ended
    assert mentor_renewed >= 1 and seq == 1 and mentor_refused == ""
    refused = [x["detail"] for x in log if x["action"] == "refused"]
    assert refused == ["IceServers: revoked token", "Renew: revoked token"]
    assert [x["detail"] for x in log if x["action"] == "revoke"] == ["surgeon token revoked"]


def test_telemetry_resent_on_a_reopened_publisher_is_not_delivered_twice(tmp_path):
    """Frame ids only grow in a session (DESIGN "Frame ids", uint32, RFC 1982 comparison):
    the server passes on W - 3, W - 2, W - 1 (W = 2**32) and, after the wrap, 3; the repeated
    W - 2 and the late W - 4 (what a publisher reopened after a link loss may send) are
    not."""
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with MentorClient(server.grpc_target, made.tokens["surgeon"],
                                    server.cert_path) as sur, \
                    MentorClient(server.grpc_target, made.tokens["mentor"],
                                 server.cert_path) as men:
                got: list[int] = []

                async def watch() -> None:
                    async for f in men.watch_telemetry():
                        got.append(f.frame_id)
                watcher = asyncio.create_task(watch())
                await asyncio.sleep(0.2)
                w = 2**32
                for ids in ((w - 3, w - 2), (w - 2, w - 4, w - 1), (3,)):   # three publishers
                    pub = sur.telemetry_publisher()
                    for fid in ids:
                        await pub.send(pb.TelemetryFrame(frame_id=fid, width=1280, height=720,
                                                         tracking=pb.TRACKING_LIVE))
                        await asyncio.sleep(0.05)
                    await pub.finish()
                await asyncio.sleep(0.2)
                watcher.cancel()
                return got
    assert asyncio.run(main()) == [2**32 - 3, 2**32 - 2, 2**32 - 1, 3]
