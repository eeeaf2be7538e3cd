"""The surgeon station end to end without a browser: ``run_surgeon`` on the synthetic scene
against a real server (gRPC + TLS on 127.0.0.1), a native viewer (aiortc) signalling over
gRPC, and a mentor annotating over the gRPC Annotations stream.

Truth for the anchor: the phantom's fiducial sphere (truth.json centre and radius); the stroke
is put on the fiducial's projection with the pose the station published for that frame, so the
ray meets the sphere at ``c - r * d`` and the anchor must be within 1 mm of it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from scrubin.mentor.client import MentorClient
from scrubin.mentor.errors import MentorError
from scrubin.mentor.ice import ice_configuration, sdp_candidate_addresses
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.mentor.strip import read_strip
from scrubin.samples.phantom import ensure_sample, load_truth
from scrubin.workflows.overlay import OverlayRequest
from scrubin.workflows.surgeon import SurgeonRequest, grpc_target, run_surgeon

FIDUCIAL = "F1_forehead_right"


def _stroke(meta: dict, c_ct: np.ndarray) -> list[list[float]]:
    t = np.reshape(meta["T_camera_ref"], (4, 4)) @ np.reshape(meta["T_ref_ct"], (4, 4))
    fx, fy, cx, cy = meta["K"]
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    uv, _ = cv2.projectPoints((c_ct @ t[:3, :3].T + t[:3, 3])[None], np.zeros(3), np.zeros(3),
                              k, np.array(meta["dist"]))
    u, v = uv.reshape(2)
    return [[(u + 0.5) / meta["width"], (v + 0.5) / meta["height"]]]


def _sphere_hit_ref(meta: dict, c_ct: np.ndarray, r: float) -> np.ndarray:
    t_ref_ct = np.reshape(meta["T_ref_ct"], (4, 4))
    t = np.reshape(meta["T_camera_ref"], (4, 4)) @ t_ref_ct
    o = np.linalg.inv(t)[:3, 3]
    d = (c_ct - o) / np.linalg.norm(c_ct - o)
    p = c_ct - r * d
    return t_ref_ct[:3, :3] @ p + t_ref_ct[:3, 3]


async def _scenario(tmp_path) -> dict:
    server = MentorServer(ServerConfig(db=tmp_path / "mentor.db", port=0, grpc_port=0,
                                       ice_hosts=["127.0.0.1"]))
    await server.start()
    made = await server.hub.db(server.hub.store.new_session, False, "test")
    truth = load_truth(ensure_sample("small"))
    fid = next(f for f in truth["fiducials"] if f["name"] == FIDUCIAL)
    c_ct, r = np.array(fid["center_lps"]), fid["diameter_mm"] / 2
    out = {"ids": [], "meta": {}, "events": []}
    req = SurgeonRequest(
        OverlayRequest("synthetic", tmp_path / "view.mp4", frames=90, width=640, height=360,
                       json_path=tmp_path / "r.json"),
        server.grpc_target, made.tokens["surgeon"], server.cert_path, "theatre 1")
    station = asyncio.create_task(asyncio.to_thread(run_surgeon, req))
    mentor = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path, "Dr M")
    pc = RTCPeerConnection(ice_configuration())
    tasks = []
    try:
        # wait for the station's Signal call, then offer like a native viewer
        t_end = time.time() + 60
        while not server.hub.surgeon_online(made.session_id):
            assert time.time() < t_end and not station.done(), "station did not come online"
            await asyncio.sleep(0.1)
        pc.addTransceiver("video", direction="recvonly")
        dc = pc.createDataChannel("meta")
        dc.on("message", lambda m: out["meta"].__setitem__(json.loads(m)["frame_id"],
                                                           json.loads(m)))

        async def consume(track):
            while True:
                f = await track.recv()
                fid_ = read_strip(f.to_ndarray(format="gray"))
                if fid_ is not None:
                    out["ids"].append(fid_)
        pc.on("track", lambda tr: tasks.append(asyncio.ensure_future(consume(tr))))
        await pc.setLocalDescription(await pc.createOffer())
        sig = mentor.signal()
        await sig.wait_open()
        await sig.send("offer", pc.localDescription.sdp)
        ans = await asyncio.wait_for(sig.recv(), 30)
        out["answer_hosts"] = sdp_candidate_addresses(ans.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(ans.sdp, "answer"))
        ann = mentor.annotations()
        await ann.start()
        # a frame shown with a live pose, then a stroke on the fiducial in that frame
        t_end = time.time() + 30
        meta = None
        while meta is None and time.time() < t_end:
            live = [m for i, m in out["meta"].items() if i in out["ids"][-10:]
                    and m["tracking"] == "LIVE" and m["T_camera_ref"] is not None]
            meta = live[-1] if live else None
            await asyncio.sleep(0.05)
        assert meta is not None, "no live frame displayed"
        out["stroke_meta"] = meta
        aid = str(uuid.uuid4())
        await ann.send({"event_id": str(uuid.uuid4()), "op": "create", "annotation_id": aid,
                        "kind": "freehand", "color": "#00ff00", "frame_id": meta["frame_id"],
                        "capture_time": meta["capture_time"], "points": _stroke(meta, c_ct)})
        t_end = time.time() + 20
        while time.time() < t_end:
            seq, ev = await asyncio.wait_for(ann.events.get(), 20)
            out["events"].append(ev)
            if ev["op"] == "anchor" and ev["annotation_id"] == aid:
                break
        out["truth_ref"] = _sphere_hit_ref(meta, c_ct, r)
        out["report"] = await station
        await ann.close()
        sig.close()
    finally:
        for t in tasks:
            t.cancel()
        await pc.close()
        await mentor.close()
        if not station.done():
            await asyncio.wait([station], timeout=60)
        await server.stop(0.2)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    return asyncio.run(_scenario(tmp_path_factory.mktemp("surgeon")))


def test_viewer_gets_video_keyed_by_strip_and_meta(run: dict) -> None:
    assert len(run["ids"]) >= 20
    assert run["ids"] == sorted(run["ids"])
    assert sum(i in run["meta"] for i in run["ids"]) >= 0.8 * len(run["ids"])
    assert run["answer_hosts"] == {"127.0.0.1"}  # the server's --ice-host advice followed
    m = run["stroke_meta"]
    assert (m["width"], m["height"]) == (640, 360) and len(m["dist"]) == 5


def test_stroke_anchored_at_its_frame_within_1mm(run: dict) -> None:
    anchor = [e for e in run["events"] if e["op"] == "anchor"]
    assert anchor and anchor[-1]["anchor_state"] == "anchored"
    assert anchor[-1]["author"] == "surgeon:theatre 1" and anchor[-1]["role"] == "surgeon"
    a = np.array(anchor[-1]["anchors_ref_mm"][0])
    assert np.linalg.norm(a - run["truth_ref"]) < 1.0


def test_report(run: dict, tmp_path_factory) -> None:
    m = run["report"]["mentor"]
    assert m["frames_sent"] == run["report"]["summary"]["frames"] == 90
    assert m["viewers_peak"] >= 1 and m["anchors_sent"] >= 1 and not m["anchor_failures"]
    assert m["encoder"]["frames"] == 90  # one encode per frame


@pytest.mark.parametrize("spec, msg", [("https://127.0.0.1:8443", "web address"),
                                       ("127.0.0.1", "HOST:PORT"), ("h:99999", "HOST:PORT")])
def test_bad_mentor_address(spec: str, msg: str) -> None:
    with pytest.raises(MentorError, match=msg):
        grpc_target(spec)


def test_wrong_token_is_one_line_error(tmp_path) -> None:
    async def go() -> None:
        server = MentorServer(ServerConfig(db=tmp_path / "m.db", port=0, grpc_port=0))
        await server.start()
        try:
            req = SurgeonRequest(OverlayRequest("synthetic", tmp_path / "v.mp4", frames=5),
                                 server.grpc_target, "x" * 43, server.cert_path)
            with pytest.raises(MentorError, match="refused the station: UNAUTHENTICATED"):
                await asyncio.to_thread(run_surgeon, req)
        finally:
            await server.stop(0.2)
    asyncio.run(go())
    assert not (tmp_path / "v.mp4").exists()
    assert threading.active_count() < 50


def test_link_surgeon_actions_telemetry_and_unknown_frame(tmp_path) -> None:
    """StationLink alone on a real server: the surgeon's hide_all reaches the mentor and the
    mentor cannot undo it; telemetry carries the sent frame; a stroke on a frame the station
    no longer knows stays 2-D (and says why)."""
    from scrubin.mentor.annotations_draw import AnnotationBoard
    from scrubin.mentor.media import StreamEncoder, VideoFanout
    from scrubin.mentor.station import SurgeonStation
    from scrubin.mentor.station_link import StationLink
    from scrubin.mentor.station_meta import FrameMeta

    async def go() -> None:
        server = MentorServer(ServerConfig(db=tmp_path / "m.db", port=0, grpc_port=0))
        await server.start()
        made = await server.hub.db(server.hub.store.new_session, False, "t")
        station = SurgeonStation(VideoFanout(StreamEncoder(160, 48)))
        board = AnnotationBoard()
        surgeon = MentorClient(server.grpc_target, made.tokens["surgeon"], server.cert_path, "s")
        mentor = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path, "m")
        link = StationLink(station, surgeon, board, None)
        try:
            await link.start()
            watch = mentor.watch_telemetry()
            first = asyncio.ensure_future(watch.__anext__())
            await asyncio.sleep(0.2)
            meta = FrameMeta(123456, time.time(), 160, 32, (50.0, 50.0, 79.5, 15.5),
                             (0.0,) * 5, np.eye(4), np.eye(4), "LIVE", 0.3, 0.8)
            await asyncio.to_thread(station.publish, np.zeros((32, 160, 3), np.uint8), meta)
            link.frame_sent(meta)
            tel = await asyncio.wait_for(first, 10)
            assert tel.frame_id == 123456 and tel.tracking == 1 and tel.fre_mm == 0.3
            assert list(tel.T_camera_ref.m) == np.eye(4).ravel().tolist()
            ann = mentor.annotations()
            await ann.start()
            await ann.send({"event_id": str(uuid.uuid4()), "op": "create", "annotation_id": "a",
                            "kind": "freehand", "color": "#00ff00", "frame_id": 99,
                            "points": [[0.5, 0.5]]})
            seen = []
            while not any(e["op"] == "anchor" for e in seen):
                seen.append((await asyncio.wait_for(ann.events.get(), 10))[1])
            anchor = seen[-1]
            assert anchor["anchor_state"] == "2d" and anchor["anchors_ref_mm"] == [None]
            assert "frame 99 not in the last 3 s" in link.anchor_failures[0]
            await link.hide_all()
            while seen[-1]["op"] != "hide_all":
                seen.append((await asyncio.wait_for(ann.events.get(), 10))[1])
            assert seen[-1]["role"] == "surgeon"
            with pytest.raises(MentorError, match="surgeon"):
                await ann.send({"event_id": str(uuid.uuid4()), "op": "show_all"})
            await asyncio.sleep(0.2)
            assert board.hidden
            await ann.close()
        finally:
            await link.close()
            await surgeon.close()
            await mentor.close()
            await server.stop(0.2)
    asyncio.run(go())
