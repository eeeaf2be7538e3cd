"""The gRPC side of the real server on 127.0.0.1 with real TLS (mentor/grpc_service.py,
mentor/client.py): join, refusals, exactly-once resume, telemetry, signalling, health."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scrubin.mentor.client import MentorClient
from scrubin.mentor.errors import MentorError
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.mentor.tls import ensure_self_signed
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@contextlib.asynccontextmanager
async def running(tmp: Path, **kw):
    server = MentorServer(ServerConfig(db=tmp / "mentor.db", port=0, grpc_port=0, **kw))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.2)


async def new_session(server: MentorServer, record: bool = False):
    return await server.hub.db(server.hub.store.new_session, record, "test")


def client(server: MentorServer, token: str, name: str = "") -> MentorClient:
    return MentorClient(server.grpc_target, token, server.cert_path, name)


def stroke(i: int, annotation: str | None = None, op: str = "create") -> dict:
    return {"event_id": str(uuid.uuid4()), "op": op, "annotation_id": annotation or f"a{i}",
            "kind": "freehand", "color": "#00ff00", "frame_id": 100 + i,
            "capture_time": 1764680000.0 + i, "points": [[0.1 * (i % 10), 0.5], [0.5, 0.25]]}


def test_join_each_role_reports_session_and_recording(tmp_path):
    async def main():
        async with running(tmp_path, stun=["stun:127.0.0.1:3478"],
                           ice_hosts=["127.0.0.1"]) as server:
            made = await new_session(server, record=True)
            for role in ("surgeon", "mentor", "observer"):
                async with client(server, made.tokens[role], "Dr Who") as c:
                    reply = await c.join()
                    assert reply.session_id == made.session_id
                    assert reply.role == pb.Role.Value(f"ROLE_{role.upper()}")
                    assert reply.author == f"{role}:Dr Who"
                    assert reply.recording is True
                    assert [list(s.urls) for s in reply.ice_servers] == [["stun:127.0.0.1:3478"]]
                    assert list(reply.ice_hosts) == ["127.0.0.1"]
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        other = "mentor" if role != "mentor" else "surgeon"
                        await c.join(other)
                    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            log = await server.hub.db(server.hub.store.audit_log, made.session_id)
            joins = [r for r in log if r["action"] == "join"]
            assert [r["role"] for r in joins] == ["surgeon", "mentor", "observer"]
            assert all(r["peer"].startswith("ipv4:127.0.0.1:") for r in joins)
    asyncio.run(main())


def test_wrong_and_ended_tokens_are_refused_and_audited(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with client(server, "x" * 43) as c:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await c.join()
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            async with client(server, made.tokens["mentor"]) as c:
                await c.join()
                await server.hub.db(server.hub.store.end_session, made.session_id)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await c.join()
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "ended" in err.value.details()
            # no metadata at all
            async with client(server, "") as c:
                c.metadata = ()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await c.stub.Join(pb.JoinRequest())
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            log = await server.hub.db(server.hub.store.audit_log, None)
            refused = [r["detail"] for r in log if r["action"] == "refused"]
            assert refused == ["Join: unknown token", "Join: ended session token",
                               "Join: unknown token"]
    asyncio.run(main())


def test_plaintext_and_untrusted_certificate_are_refused(tmp_path):
    async def main():
        async with running(tmp_path / "srv") as server:
            (tmp_path / "srv").mkdir(exist_ok=True)
            made = await new_session(server)
            md = (("authorization", f"Bearer {made.tokens['mentor']}"),)
            async with grpc.aio.insecure_channel(server.grpc_target) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await pb_grpc.MentorStub(ch).Join(pb.JoinRequest(), metadata=md, timeout=3)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            other_cert, _ = ensure_self_signed(tmp_path / "other")
            async with MentorClient(server.grpc_target, made.tokens["mentor"], other_cert) as c:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await c.join(timeout=3)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            log = await server.hub.db(server.hub.store.audit_log, made.session_id)
            assert not [r for r in log if r["action"] == "join"]  # nothing got through
    asyncio.run(main())


def test_health_checking_needs_no_token(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            creds = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
            async with grpc.aio.secure_channel(server.grpc_target, creds) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                for name in ("", "scrubin.mentor.v1.Mentor"):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Check(health_pb2.HealthCheckRequest(service="no.Such"))
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
    asyncio.run(main())


def test_observer_cannot_annotate_and_mentor_cannot_clear_all(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with client(server, made.tokens["observer"]) as obs, \
                    client(server, made.tokens["mentor"]) as men, \
                    client(server, made.tokens["surgeon"]) as sur:
                s_obs, s_men, s_sur = obs.annotations(), men.annotations(), sur.annotations()
                for s in (s_obs, s_men, s_sur):
                    await s.start()
                with pytest.raises(MentorError, match="observers cannot annotate"):
                    await s_obs.send(stroke(1))
                with pytest.raises(MentorError, match="surgeon's only"):
                    await s_men.send({"event_id": "c1", "op": "clear_all"})
                assert await s_men.send(stroke(2, "m1")) == 1
                # a mentor may not change the surgeon's annotation; the surgeon may clear
                assert await s_sur.send(stroke(3, "s1")) == 2
                with pytest.raises(MentorError, match="may not update"):
                    await s_men.send(stroke(4, "s1", "update"))
                assert await s_sur.send({"event_id": "c2", "op": "clear_all"}) == 3
                seen = [await asyncio.wait_for(s_obs.events.get(), 5) for _ in range(3)]
                assert [(s, e["op"], e["author"]) for s, e in seen] == [
                    (1, "create", "mentor"), (2, "create", "surgeon"), (3, "clear_all", "surgeon")]
                for s in (s_obs, s_men, s_sur):
                    await s.close()
            events = await server.hub.db(server.hub.store.events_after, made.session_id, 0)
            assert len(events) == 3
            log = await server.hub.db(server.hub.store.audit_log, made.session_id)
            refused = [(r["role"], r["detail"]) for r in log if r["action"] == "refused"]
            assert len(refused) == 3 and refused[0][0] == "observer"
            assert "observers cannot annotate" in refused[0][1]
    asyncio.run(main())


def test_resend_of_an_applied_event_is_acked_with_its_original_seq(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            md = (("authorization", f"Bearer {made.tokens['mentor']}"),)
            ev = stroke(1)
            msg = pb.AnnotationClientMessage(event=pb.AnnotationEvent(
                event_id=ev["event_id"], op=pb.OP_CREATE, annotation_id="a",
                kind=pb.KIND_ARROW, points=[pb.Point2(x=0.2, y=0.3)]))
            async with client(server, made.tokens["mentor"]) as c:
                for expect_dup in (False, True, True):  # three separate calls
                    call = c.stub.Annotations(metadata=md)
                    await call.write(msg)
                    reply = await call.read()
                    assert reply.WhichOneof("msg") == "ack"
                    assert (reply.ack.seq, reply.ack.duplicate) == (1, expect_dup)
                    call.cancel()
            assert await server.hub.db(server.hub.store.last_seq, made.session_id) == 1
    asyncio.run(main())


def test_events_made_meanwhile_arrive_exactly_once_and_in_order(tmp_path):
    """A watcher drops its link repeatedly while a mentor draws (and itself reconnects
    with unacknowledged events): every seq 1..N arrives exactly once, in order, and each
    event is stored once."""
    n = 60

    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with client(server, made.tokens["mentor"], "m") as men, \
                    client(server, made.tokens["observer"], "o") as obs:
                writer, reader = men.annotations(), obs.annotations()
                await writer.start()
                await reader.start()
                sends = []
                for i in range(n):
                    sends.append(asyncio.create_task(writer.send(stroke(i))))
                    if i % 10 == 3:
                        reader.drop_connection()
                    if i % 20 == 11:
                        writer.drop_connection()
                    await asyncio.sleep(0.005)
                seqs = await asyncio.wait_for(asyncio.gather(*sends), 30)
                got = [await asyncio.wait_for(reader.events.get(), 10) for _ in range(n)]
                assert reader.events.empty()
                assert sorted(seqs) == list(range(1, n + 1))
                assert [s for s, _ in got] == list(range(1, n + 1))
                assert reader.connects >= 4 and writer.connects >= 3
                await writer.close()
                await reader.close()
                # a late joiner resuming from the middle gets the rest, once
                late = obs.annotations(after_seq=n // 2)
                await late.start()
                rest = [await asyncio.wait_for(late.events.get(), 10) for _ in range(n // 2)]
                assert [s for s, _ in rest] == list(range(n // 2 + 1, n + 1))
                await late.close()
            stored = await server.hub.db(server.hub.store.events_after, made.session_id, 0)
            assert [s for s, _ in stored] == list(range(1, n + 1))
            assert len({e["event_id"] for _, e in stored}) == n
    asyncio.run(main())


def test_half_close_after_hello_returns_the_history_and_ends(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with client(server, made.tokens["mentor"]) as c:
                s = c.annotations()
                await s.start()
                for i in range(3):
                    await s.send(stroke(i))
                await s.close()
                call = c.stub.Annotations(metadata=c.metadata)
                await call.write(pb.AnnotationClientMessage(hello=pb.Hello(after_seq=1)))
                await call.done_writing()
                replies = [r async for r in call]
                assert [r.event.seq for r in replies] == [2, 3]
                assert await call.code() == grpc.StatusCode.OK
    asyncio.run(main())


def test_telemetry_surgeon_publishes_others_watch(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with client(server, made.tokens["surgeon"]) as sur, \
                    client(server, made.tokens["mentor"]) as men:
                frames: asyncio.Queue = asyncio.Queue()

                async def watch():
                    async for f in men.watch_telemetry():
                        await frames.put(f)
                watcher = asyncio.create_task(watch())
                await asyncio.sleep(0.2)
                pub = sur.telemetry_publisher()
                t = [1.0, 0, 0, 10.0, 0, 1.0, 0, -20.0, 0, 0, 1.0, 500.0, 0, 0, 0, 1.0]
                for i in range(1, 4):
                    frame = pb.TelemetryFrame(frame_id=i, capture_time=100.0 + i, width=1280,
                                              height=720, tracking=pb.TRACKING_LIVE,
                                              fre_mm=0.27, latency_ms=40.0)
                    frame.T_camera_ref.m.extend(t)
                    frame.stages_ms["track"] = 3.1
                    await pub.send(frame)
                    got = await asyncio.wait_for(frames.get(), 5)
                    assert got.frame_id == i and list(got.T_camera_ref.m) == t
                    assert got.HasField("fre_mm") and not got.HasField("tre_mm")
                summary = await pub.finish()
                assert (summary.frames, summary.last_frame_id) == (3, 3)
                watcher.cancel()
                bad = men.telemetry_publisher()
                await bad.send(pb.TelemetryFrame(frame_id=1))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await bad.finish()
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                short = sur.telemetry_publisher()
                f = pb.TelemetryFrame(frame_id=9)
                f.T_ref_ct.m.extend([1.0] * 12)
                await short.send(f)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await short.finish()
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "T_ref_ct has 12 numbers" in err.value.details()
    asyncio.run(main())


def test_signalling_between_station_and_native_viewer(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with client(server, made.tokens["surgeon"], "station") as sur, \
                    client(server, made.tokens["mentor"], "headset") as men:
                early = men.signal()
                await early.send("offer", SDP)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await early.recv()
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "station is not connected" in err.value.details()

                station = sur.signal()
                await station.wait_open()
                assert (await men.join()).surgeon_online is True
                viewer = men.signal()
                await viewer.send("offer", SDP)
                offer = await asyncio.wait_for(station.recv(), 5)
                assert (offer.sdp_type, offer.sdp, offer.role, offer.author) == (
                    "offer", SDP, pb.ROLE_MENTOR, "mentor:headset")
                assert len(offer.peer_id) == 16
                await station.send("answer", SDP.replace("1 1", "2 2"), offer.peer_id)
                answer = await asyncio.wait_for(viewer.recv(), 5)
                assert (answer.sdp_type, answer.peer_id) == ("answer", offer.peer_id)
                assert "o=- 2 2" in answer.sdp
                viewer.close()
                bye = await asyncio.wait_for(station.recv(), 5)
                assert (bye.sdp_type, bye.peer_id) == ("bye", offer.peer_id)
                station.close()
                await asyncio.sleep(0.2)
                assert (await men.join()).surgeon_online is False
    asyncio.run(main())


def test_a_feed_that_falls_behind_is_closed_and_the_client_resumes(tmp_path, monkeypatch):
    from scrubin.mentor import hub as hub_module

    monkeypatch.setattr(hub_module, "FEED_BACKLOG", 5)

    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            ident = await server.hub.db(server.hub.store.identify_token, made.tokens["mentor"])
            feed = server.hub.open_feed(made.session_id)  # nobody reads it yet
            for i in range(8):
                await server.hub.submit(ident, "mentor", stroke(i), "")
            got = []

            async def emit(seq, event):
                got.append(seq)
            with pytest.raises(hub_module.FeedClosedError, match="events behind; resume"):
                await asyncio.wait_for(feed.run(0, emit), 5)
            assert got == list(range(1, 9))  # the replay from the store still came in full
            # a new stream (what a closed client opens) gets every event
            async with client(server, made.tokens["observer"]) as c:
                s = c.annotations()
                await s.start()
                got = [(await asyncio.wait_for(s.events.get(), 5))[0] for _ in range(8)]
                assert got == list(range(1, 9))
                await s.close()
    asyncio.run(main())


def test_meta_json_of_the_design_round_trips_through_the_telemetry_frame():
    """The station publishes its "meta" JSON (mentor/DESIGN.md example) as a TelemetryFrame;
    the page receives the same fields back."""
    from scrubin.mentor.telemetry import frame_from_json, frame_to_json

    meta = {"frame_id": 123, "capture_time": 1764680000.123, "width": 1280, "height": 720,
            "K": [1000.0, 1001.0, 639.5, 359.5], "dist": [0.1, -0.05, 0.0, 0.0, 0.01],
            "T_camera_ref": [float(i) for i in range(16)], "T_ref_ct": None,
            "tracking": "HELD", "fre_mm": 0.27, "tre_mm": None,
            "stages_ms": {"track": 3.1, "render": 5.7, "encode": 3.0}, "latency_ms": 41.5}
    frame = frame_from_json(meta)
    again = pb.TelemetryFrame.FromString(frame.SerializeToString())
    assert frame_to_json(again) == meta
    with pytest.raises(MentorError, match="'tracking': 'GOOD'"):
        frame_from_json({**meta, "tracking": "GOOD"})
    with pytest.raises(MentorError, match="T_camera_ref has 3 numbers"):
        frame_from_json({**meta, "T_camera_ref": [1.0, 2.0, 3.0]})
