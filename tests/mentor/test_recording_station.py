"""The recorder wired into the surgeon station: ``run_surgeon(..., record=FILE)`` against a real
server (gRPC + TLS on 127.0.0.1) with a mentor annotating over gRPC; the file is read back with
the ``mcap`` reader and replayed. A session made without recording is refused, no file made."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader

from scrubin.mentor import recording_schema as rs
from scrubin.mentor.client import MentorClient
from scrubin.mentor.errors import MentorError
from scrubin.mentor.replay import replay_to_mp4
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.workflows.overlay import OverlayRequest
from scrubin.workflows.surgeon import SurgeonRequest, run_surgeon

FRAMES = 45


async def _session(tmp_path: Path, record: bool) -> dict:
    server = MentorServer(ServerConfig(db=tmp_path / "mentor.db", port=0, grpc_port=0,
                                       ice_hosts=["127.0.0.1"]))
    await server.start()
    made = await server.hub.db(server.hub.store.new_session, record, "test")
    req = SurgeonRequest(
        OverlayRequest("synthetic", tmp_path / "view.mp4", frames=FRAMES, width=640,
                       height=360),
        server.grpc_target, made.tokens["surgeon"], server.cert_path, "theatre 1",
        audio_in="tone:440", record=tmp_path / "session.mcap")
    station = asyncio.create_task(asyncio.to_thread(run_surgeon, req))
    mentor = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path, "Dr M")
    out: dict = {"session_id": made.session_id}
    try:
        t_end = time.time() + 60
        while not server.hub.surgeon_online(made.session_id) and not station.done():
            assert time.time() < t_end, "station did not come online"
            await asyncio.sleep(0.05)
        if not station.done():
            ann = mentor.annotations()
            await ann.start()
            await ann.send({"event_id": str(uuid.uuid4()), "op": "create",
                            "annotation_id": "stroke-1", "kind": "freehand",
                            "color": "#00ff00", "frame_id": 1, "capture_time": time.time(),
                            "points": [[0.4, 0.4], [0.6, 0.45]]})
            out["seq"], _ = await asyncio.wait_for(ann.events.get(), 20)
            await ann.close()
        try:
            out["report"] = await station
        except MentorError as exc:
            out["error"] = str(exc)
    finally:
        await mentor.close()
        if not station.done():
            await asyncio.wait([station], timeout=60)
        await server.stop(0.2)
    return out


def test_station_records_a_recorded_session(tmp_path: Path) -> None:
    out = asyncio.run(_session(tmp_path, True))
    m = out["report"]["mentor"]
    rec = tmp_path / "session.mcap"
    assert m["recording"] is True and m["recording_file"]["path"] == str(rec)
    with open(rec, "rb") as fh:
        rd = make_reader(fh)
        info = next(dict(x.metadata) for x in rd.iter_metadata())
        msgs = [(c.topic, x) for _, c, x in rd.iter_messages(log_time_order=True)]
    assert info["session_id"] == out["session_id"] and info["annotations_in_video"] == "true"
    assert info["video_width"] == "640" and info["video_height"] == "376"  # view + strip
    frames = [json.loads(x.data) for t, x in msgs if t == rs.TOPIC_FRAME]
    videos = [x for t, x in msgs if t == rs.TOPIC_VIDEO]
    assert len(frames) == len(videos) == m["frames_sent"] == m["recording_file"]["frames"]
    assert m["recording_file"]["dropped_frames"] == 0
    events = [json.loads(x.data) for t, x in msgs if t == rs.TOPIC_EVENTS]
    assert [(e["seq"], e["event"]["annotation_id"]) for e in events][:1] == [
        (out["seq"], "stroke-1")]
    assert events[0]["event"]["author"] == "mentor:Dr M"
    assert [f["frame_id"] for f in frames] == sorted({f["frame_id"] for f in frames})
    assert frames[-1]["annotation_seq"] >= out["seq"]
    assert {f["tracking"] for f in frames} <= {"LIVE", "HELD", "STALE", "LOST"}
    assert all("encode" in f["stages_ms"] for f in frames)
    audio = [x.log_time / 1e9 for t, x in msgs if t == "/audio/station"]  # the theatre mic
    assert len(audio) > 10  # every 20-ms packet, on the voice's media clock, none skipped
    np.testing.assert_allclose(np.diff(audio), 0.020, atol=1e-5)
    # one clock: the mic is tapped from joining (before the pipeline's first frame) until
    # the recorder closes after the last frame (the synthetic source's capture times fall
    # behind the wall clock when the pipeline runs slower than 30 fps: no upper bound)
    assert audio[0] < frames[0]["capture_time"] < frames[-1]["capture_time"] < audio[-1]
    rep = replay_to_mp4(rec, tmp_path / "replay.mp4")
    assert rep.frames == len(frames) and rep.strip_mismatch == 0
    assert not rep.drew_annotations and (rep.width, rep.height) == (640, 360)


def test_station_refuses_to_record_an_unrecorded_session(tmp_path: Path) -> None:
    out = asyncio.run(_session(tmp_path, False))
    assert "was not created with recording on" in out["error"]
    assert not any(p.suffix in (".mcap", ".part") or ".mcap." in p.name
                   for p in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["x.txt", "missing/x.mcap"])
def test_record_path_checked_first(tmp_path: Path, name: str) -> None:
    from scrubin.workflows.surgeon import validate

    cert = tmp_path / "c.pem"
    cert.write_text("x")
    req = SurgeonRequest(OverlayRequest("synthetic", tmp_path / "v.mp4", frames=3),
                         "127.0.0.1:1", "A" * 43, cert, record=tmp_path / name)
    with pytest.raises(MentorError, match="--record .*expected a new .mcap file"):
        validate(req)
