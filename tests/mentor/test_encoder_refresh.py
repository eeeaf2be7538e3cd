"""Intra refresh instead of periodic IDRs (mentor/media.py): the stream has IDR pictures only at
the start and on request, x264 honours a forced IDR with ``intra-refresh`` on, ``is_keyframe``
marks exactly the IDR pictures, a decoder can start at a forced IDR, and a real aiortc receiver
joining a running stream decodes its first picture within a few frames of its request.

Independent checks: FFmpeg's H.264 decoder (PyAV) says which pictures are I pictures
(``frame.pict_type``: an IDR picture has I slices only; with intra refresh every other picture
is a P picture) and reads the strip ids; the join test counts frames on the station's clock.
"""

from __future__ import annotations

import asyncio
import threading
import time

import av
import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from scrubin.mentor.ice import ice_configuration, restrict_host_addresses
from scrubin.mentor.media import MediaError, StreamEncoder, VideoFanout, has_idr
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_meta import FrameMeta
from scrubin.mentor.strip import read_strip, with_strip

W, H = 320, 180   # view; 320x196 with the strip


def _view(k: int) -> np.ndarray:
    """A smooth moving test picture (blurred noise rolled by k px)."""
    rng = np.random.default_rng(5)
    base = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 2)
    return np.roll(cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX), 2 * k, axis=1)


def _encode(enc: StreamEncoder, n: int, force_at: tuple[int, ...] = ()) -> list[list]:
    out = []
    for i in range(n):
        if i in force_at:
            enc.request_keyframe()
        out.append(enc.encode(with_strip(_view(i), 100 + i), i * 3000))
    return out


def _pict_types(packets: list[list]) -> list[str]:
    dec = av.CodecContext.create("h264", "r")
    kinds = []
    for pk in packets:
        for p in pk:
            for f in dec.decode(p):
                kinds.append(av.video.frame.PictureType(f.pict_type).name)
    return kinds


def test_idr_only_at_start_and_on_request() -> None:
    enc = StreamEncoder(W, H + 16, 30.0, 1_000_000, refresh_s=0.5)
    enc.min_keyframe_gap_s = 0.0
    packets = _encode(enc, 100, force_at=(70,))
    kinds = _pict_types(packets)
    assert len(kinds) == 100
    i_pictures = [i for i, k in enumerate(kinds) if k == "I"]
    assert i_pictures == [0, 70], kinds                      # no periodic IDR in 3.3 s
    flagged = [i for i, pk in enumerate(packets) if any(p.is_keyframe for p in pk)]
    assert flagged == [0, 70]                                # libavcodec also flags 15, 30, ...
    assert enc.idr_frames == [0, 70] and enc.keyframes == 2


def test_decoder_starts_at_forced_idr_not_before() -> None:
    enc = StreamEncoder(W, H + 16, 30.0, 1_000_000, refresh_s=0.5)
    enc.min_keyframe_gap_s = 0.0
    packets = _encode(enc, 60, force_at=(40,))
    dec = av.CodecContext.create("h264", "r")
    ids = []
    for pk in packets[40:]:
        for p in pk:
            ids += [read_strip(f.to_ndarray(format="gray")) for f in dec.decode(p)]
    assert ids == list(range(140, 160))


def test_periodic_idr_when_asked_and_without_refresh() -> None:
    # keyframe_interval_s with intra refresh: IDRs forced by the encoder every 10 frames
    enc = StreamEncoder(W, H + 16, 30.0, 1_000_000, keyframe_interval_s=10 / 30)
    kinds = _pict_types(_encode(enc, 35))
    assert [i for i, k in enumerate(kinds) if k == "I"] == [0, 10, 20, 30]
    # refresh_s=None: x264's own periodic IDRs (the old policy)
    enc = StreamEncoder(W, H + 16, 30.0, 1_000_000, keyframe_interval_s=15 / 30, refresh_s=None)
    kinds = _pict_types(_encode(enc, 35))
    assert [i for i, k in enumerate(kinds) if k == "I"] == [0, 15, 30]


def test_has_idr_reads_nal_type() -> None:
    assert has_idr(b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x65\x88")      # SPS, IDR slice
    assert not has_idr(b"\x00\x00\x00\x01\x06\x05\x00\x00\x01\x41\x9a")  # SEI, non-IDR slice
    assert not has_idr(b"\x00\x00\x01")


@pytest.mark.parametrize("kw, msg", [({"refresh_s": 0.0}, "refresh_s"),
                                     ({"refresh_s": 11.0}, "refresh_s"),
                                     ({"keyframe_interval_s": -1.0}, "keyframe_interval_s"),
                                     ({"ipratio": 0.5}, "ipratio"),
                                     ({"ipratio": float("nan")}, "ipratio")])
def test_encoder_rejects_bad_refresh_settings(kw: dict, msg: str) -> None:
    with pytest.raises(MediaError, match=msg):
        StreamEncoder(W, H + 16, **kw)


# ---------------------------------------------------------------- aiortc viewer joining late
class _Viewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(ice_configuration())
        self.receiver = self.pc.addTransceiver("video", direction="recvonly").receiver
        self.ids: list[tuple[float, int | None]] = []   # (arrival time.time(), strip id)
        self.task: asyncio.Task | None = None
        self.pc.on("track", lambda t: setattr(self, "task", asyncio.ensure_future(self._run(t))))

    async def _run(self, track) -> None:
        try:
            while True:
                f = await track.recv()
                self.ids.append((time.time(), read_strip(f.to_ndarray(format="gray"))))
        except Exception:
            pass

    async def join(self, station: SurgeonStation, name: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        ans = await station.answer(name, self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(ans, "answer"))

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        await self.pc.close()


async def _late_join() -> dict:
    restrict_host_addresses(["127.0.0.1"])
    enc = StreamEncoder(W, H + 16, 30.0, 1_000_000)
    station = SurgeonStation(VideoFanout(enc))
    sent: list[tuple[float, int]] = []
    stop = threading.Event()

    def frame_loop() -> None:
        fid = 9000
        while not stop.is_set():
            station.publish(_view(fid), FrameMeta(fid, time.time(), W, H,
                                                  (300.0, 300.0, 159.5, 89.5), (0.0,) * 5,
                                                  np.eye(4), np.eye(4), "LIVE"))
            sent.append((time.time(), fid))
            fid += 1
            time.sleep(1 / 30)

    th = threading.Thread(target=frame_loop, daemon=True)
    th.start()
    first, late = _Viewer(), _Viewer()
    try:
        await first.join(station, "first")
        t_end = time.time() + 20
        while time.time() < t_end and len(first.ids) < 15:
            await asyncio.sleep(0.05)
        track = station.peers["first"].video
        idr_before, n_first, drops = enc.keyframes, len(first.ids), track.dropped
        while time.time() < t_end and len(first.ids) < n_first + 60:   # 2 refresh periods
            await asyncio.sleep(0.05)
        idr_steady, drops = enc.keyframes - idr_before, track.dropped - drops
        first_steady = [i for _, i in first.ids[n_first:]]
        await late.join(station, "late")
        t_join = time.time()
        while time.time() < t_end and len(late.ids) < 30:
            await asyncio.sleep(0.05)
        # the late viewer's own PLI (RTCP PSFB) once it decodes: answered with an IDR too
        ssrc = late.receiver.getSynchronizationSources()[0].source
        n_key = enc.keyframes
        await asyncio.sleep(0.6)                              # past min_keyframe_gap_s
        await late.receiver._send_rtcp_pli(ssrc)
        t_pli = time.time()
        while time.time() < t_end + 5 and enc.keyframes == n_key:
            await asyncio.sleep(0.02)
        t_key = time.time()
        n_after = len(late.ids)
        while time.time() < t_end + 5 and len(late.ids) < n_after + 10:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        th.join(5)
        await first.close()
        await late.close()
        await station.close()
        restrict_host_addresses(None)
    return {"first_steady": first_steady, "late": late.ids, "sent": sent, "t_join": t_join,
            "idr_steady": idr_steady, "drops": drops, "t_pli": t_pli,
            "t_key": t_key, "n_after": n_after, "keys_after_pli": enc.keyframes - n_key}


@pytest.fixture(scope="module")
def late_join() -> dict:
    return asyncio.run(_late_join())


def test_first_viewer_needs_no_periodic_idr(late_join: dict) -> None:
    first = late_join["first_steady"]
    assert len(first) >= 60 and None not in first and first == sorted(first)
    # 2 s decoded (2 refresh periods) without an IDR, unless the sender fell behind and the
    # track dropped a picture (it then asks for one: a loaded machine)
    assert late_join["idr_steady"] <= late_join["drops"], late_join["drops"]


def test_late_viewer_decodes_within_frames_of_joining(late_join: dict) -> None:
    late = late_join["late"]
    assert len(late) >= 30
    assert all(i is not None for _, i in late)               # every picture's strip CRC-clean
    # frames the station sent between the join (answer) and the late viewer's first picture:
    # its IDR is the next picture encoded after the join (0.5 s gap long past), plus
    # ICE/DTLS set-up on loopback; 1.5 s of frames allowed for a loaded 2-core machine
    t_first, fid_first = late[0]
    fid_at_join = max(f for t, f in late_join["sent"] if t <= late_join["t_join"])
    assert fid_first - fid_at_join <= 45, (fid_first, fid_at_join)


def test_late_viewer_pli_gets_idr(late_join: dict) -> None:
    assert late_join["keys_after_pli"] >= 1
    assert late_join["t_key"] - late_join["t_pli"] < 1.0
    assert len(late_join["late"]) >= late_join["n_after"] + 10   # it keeps decoding


def test_recorder_behind_gets_an_idr_to_resume_at(tmp_path) -> None:
    """With no periodic IDR, a recorder that dropped frames (writer behind) would wait for a
    viewer's request; the station asks the encoder for one when the recorder refuses a frame."""
    from scrubin.mentor.recording import Recorder

    enc = StreamEncoder(W, H + 16, 30.0, 1_000_000)
    enc.min_keyframe_gap_s = 0.0
    station = SurgeonStation(VideoFanout(enc))            # no viewers: nobody else asks
    rec = Recorder(tmp_path / "r.mcap", True, "s", annotations_in_video=False,
                   max_queued_frames=3)
    station.recorder = rec

    def publish(fid: int) -> None:
        station.publish(_view(fid), FrameMeta(fid, 1.8e9 + fid / 30, W, H,
                                              (300.0, 300.0, 159.5, 89.5), (0.0,) * 5,
                                              np.eye(4), np.eye(4), "LIVE"))
    for fid in range(1000, 1010):    # writer not started: 3 queued, the rest dropped
        publish(fid)
    assert rec.stats.dropped_frames == 7
    rec.start()
    t_end = time.time() + 10
    while time.time() < t_end and rec.stats.frames < 3:
        time.sleep(0.02)
    for fid in range(1010, 1030):
        publish(fid)
        time.sleep(0.01)
    station.recorder = None
    stats = rec.close()
    assert stats.skipped_to_keyframe <= 1          # the IDR came on the next picture
    assert stats.frames >= 3 + 19
    from mcap.reader import make_reader

    dec = av.CodecContext.create("h264", "r")
    ids = []
    with open(tmp_path / "r.mcap", "rb") as fh:
        for _, channel, msg in make_reader(fh).iter_messages():
            if channel.topic == "/station/video":
                from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo

                v = CompressedVideo()
                v.ParseFromString(msg.data)
                ids += [read_strip(f.to_ndarray(format="gray"))
                        for f in dec.decode(av.Packet(v.data))]
    assert None not in ids and ids[:3] == [1000, 1001, 1002] and ids[3] >= 1010
    assert ids == sorted(ids) and len(ids) == stats.frames
