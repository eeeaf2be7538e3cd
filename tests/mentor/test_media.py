"""Encode once, fan out: one station, two real aiortc receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from scrubin.mentor.ice import ice_configuration, restrict_host_addresses, sdp_candidate_addresses
from scrubin.mentor.media import MediaError, StreamEncoder, VideoFanout
from scrubin.mentor.media_audio import AudioSource, ToneTrack
from scrubin.mentor.station import SignalError, SurgeonStation
from scrubin.mentor.station_meta import FrameMeta
from scrubin.mentor.strip import read_strip

W, H = 640, 360  # view; the stream is 640x376 with the strip


class Receiver:
    """A viewer like the page: offers recvonly video, sendrecv audio, the 'meta' channel."""

    def __init__(self, voice_hz: float) -> None:
        self.pc = RTCPeerConnection(ice_configuration())
        self.ids: list[int] = []
        self.bad_strips = 0
        self.meta: dict[int, dict] = {}
        self.audio: list[np.ndarray] = []
        self.video_receiver = self.pc.addTransceiver("video", direction="recvonly").receiver
        self.pc.addTransceiver(ToneTrack(voice_hz), direction="sendrecv")
        self.dc = self.pc.createDataChannel("meta")
        self.dc.on("message", lambda m: self.meta.__setitem__(json.loads(m)["frame_id"],
                                                              json.loads(m)))
        self.tasks: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        self.tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track) -> None:
        try:
            while True:
                f = await track.recv()
                if track.kind == "video":
                    fid = read_strip(f.to_ndarray(format="gray"))
                    if fid is None:
                        self.bad_strips += 1
                    else:
                        self.ids.append(fid)
                else:
                    self.audio.append(f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0])
        except Exception:
            pass

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await self.pc.close()


def _meta(fid: int, t: float) -> FrameMeta:
    return FrameMeta(fid, t, W, H, (500.0, 500.0, 319.5, 179.5), (0, 0, 0, 0, 0),
                     np.eye(4), np.eye(4), "LIVE")


def _dominant_hz(chunks: list[np.ndarray], rate: int = 48000) -> float:
    """Median over the last 25 20-ms frames (after the codec's start) of each frame's spectral
    peak (zero-padded to 1 Hz bins): robust to gaps a loaded machine puts between frames."""
    peaks = []
    for a in chunks[-25:]:
        a = a.astype(np.float64)
        if len(a) < 256 or not np.any(a):
            continue
        spec = np.abs(np.fft.rfft(a * np.hanning(len(a)), rate))
        peaks.append(float(np.fft.rfftfreq(rate, 1 / rate)[np.argmax(spec)]))
    return float(np.median(peaks))


async def _scenario(record_dir) -> dict:
    restrict_host_addresses(["127.0.0.1"])
    enc = StreamEncoder(W, H + 16, 30.0, 1_000_000, keyframe_interval_s=30.0)
    fan = VideoFanout(enc)
    station = SurgeonStation(fan, AudioSource("tone:440"),
                             record_audio=lambda pid: str(record_dir / f"{pid}.ogg"))
    plis: list[int] = []
    rx = [Receiver(660.0), Receiver(880.0)]
    for i, r in enumerate(rx):
        ans = await station.answer(f"p{i}", await r.offer(), "mentor", f"dr{i}")
        assert sdp_candidate_addresses(ans) == {"127.0.0.1"}
        await r.pc.setRemoteDescription(RTCSessionDescription(ans, "answer"))
    # count PLIs reaching the sender hook of viewer 0, and which encode follows each
    sender0 = [s for s in station.peers["p0"].pc.getSenders() if s.track is not None
               and s.track.kind == "video"][0]
    hooked = sender0._send_keyframe

    since_forced: list[float] = []

    def on_pli() -> None:
        plis.append(enc.frames)  # index of the next picture to be encoded
        # forced IDRs are spaced min_keyframe_gap_s apart: how long since the last one
        since_forced.append(time.monotonic() - enc._last_forced)
        hooked()
    sender0._send_keyframe = on_pli

    published: list[int] = []
    keyflags: list[bool] = []
    stop = threading.Event()

    def frame_loop() -> None:
        # a camera-like picture (smooth texture, moving): full-frame noise at this bit rate
        # starves the P-frame after the IDR and the CRC then (rightly) rejects its strip
        rng = np.random.default_rng(0)
        base = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 3)
        base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
        fid = 5000
        while not stop.is_set():
            view = np.roll(base, fid, axis=1)
            station.publish(view, _meta(fid, time.time()))
            keyflags.append(any(p.is_keyframe for p in station.fanout.encoder._last))
            published.append(fid)
            fid += 3  # ids need not be consecutive
            time.sleep(1 / 30)

    orig = enc.encode

    def enc_keep(img, pts):  # keep the last packets for the key-frame check
        enc._last = orig(img, pts)
        return enc._last
    enc.encode = enc_keep
    th = threading.Thread(target=frame_loop, daemon=True)
    th.start()
    t_end = time.time() + 20
    while time.time() < t_end and not all(len(r.ids) >= 30 and len(r.meta) >= 30
                                          and len(r.audio) >= 75 for r in rx):
        await asyncio.sleep(0.1)
    # a real RTCP PLI from receiver 0
    ssrc = rx[0].video_receiver.getSynchronizationSources()[0].source
    n_before = len(plis)
    await rx[0].video_receiver._send_rtcp_pli(ssrc)
    t_end = time.time() + 5
    while time.time() < t_end and len(plis) == n_before:
        await asyncio.sleep(0.02)
    t_end = time.time() + 5
    while time.time() < t_end and plis and len(keyflags) < plis[n_before] + 20:
        await asyncio.sleep(0.05)
    stop.set()
    th.join()
    out = {"published": published, "keyflags": keyflags, "plis": plis, "n_before": n_before,
           "since_forced": since_forced, "gap": enc.min_keyframe_gap_s,
           "ids": [r.ids for r in rx], "bad": [r.bad_strips for r in rx],
           "meta": [r.meta for r in rx], "encodes": enc.frames,
           "audio_hz": [_dominant_hz(r.audio) if r.audio else None for r in rx],
           "station_audio": {p.peer_id: (p.audio_in.frames if p.audio_in else 0)
                             for p in station.peers.values()}}
    for r in rx:
        await r.close()
    await station.close()
    restrict_host_addresses(None)
    return out


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("voice")


@pytest.fixture(scope="module")
def run(record_dir) -> dict:
    return asyncio.run(_scenario(record_dir))


def test_one_encoder_feeds_both_viewers(run: dict) -> None:
    assert run["encodes"] == len(run["published"])  # one encode per frame, not per viewer
    pub = set(run["published"])
    for ids, bad in zip(run["ids"], run["bad"], strict=True):
        assert len(ids) >= 30
        assert set(ids) <= pub and ids == sorted(ids)
        assert bad == 0


def test_meta_channel_keyed_by_strip_ids(run: dict) -> None:
    for ids, meta in zip(run["ids"], run["meta"], strict=True):
        shown = [i for i in ids if i in meta]
        assert len(shown) >= 0.8 * len(ids)
        m = meta[shown[-1]]
        assert m["type"] == "frame" and m["width"] == W and m["tracking"] == "LIVE"
        assert len(m["T_camera_ref"]) == 16 and "encode" in m["stages_ms"]


def test_pli_yields_keyframe(run: dict) -> None:
    assert len(run["plis"]) > run["n_before"]
    nxt = run["plis"][run["n_before"]]
    assert nxt + 20 <= len(run["keyflags"])
    wait = max(0.0, run["gap"] - run["since_forced"][run["n_before"]])   # s, spacing left
    # the picture encoded after the PLI is an IDR (the next but one if an encode was under
    # way), or, when another forced IDR came less than min_keyframe_gap_s before, the first
    # one after the gap (frames are paced at 30 fps; 3 frames' slack for a loaded machine)
    n = 2 + (0 if wait == 0 else int(wait * 30) + 3)
    assert any(run["keyflags"][nxt:nxt + n]), (wait, run["keyflags"][nxt:nxt + 20])


def test_voice_both_ways(run: dict) -> None:
    # the station's tone, Opus-decoded (440 Hz exactly on a quiet machine; 425 Hz seen with a
    # load average of 10 on 2 cores: 25 Hz still tells it from the viewers' 660 / 880 Hz)
    assert run["audio_hz"][0] == pytest.approx(440, abs=25)
    assert run["audio_hz"][1] == pytest.approx(440, abs=25)
    assert all(n > 10 for n in run["station_audio"].values())  # the viewers' voices arrive


def test_mentor_voice_recorded(run: dict, record_dir) -> None:
    import av

    for pid, hz in (("p0", 660.0), ("p1", 880.0)):
        with av.open(str(record_dir / f"{pid}.ogg")) as c:
            chunks = [f.to_ndarray()[0] if f.format.is_planar else
                      f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0]
                      for f in c.decode(audio=0)]
        assert len(chunks) > 10
        assert _dominant_hz(chunks) == pytest.approx(hz, abs=25)


def test_offer_without_h264_refused() -> None:
    async def go() -> None:
        from aiortc import RTCRtpSender

        pc = RTCPeerConnection(ice_configuration())
        tr = pc.addTransceiver("video", direction="recvonly")
        tr.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                if c.mimeType == "video/VP8"])
        await pc.setLocalDescription(await pc.createOffer())
        st = SurgeonStation(VideoFanout(StreamEncoder(64, 48)))
        try:
            with pytest.raises(SignalError, match="no H.264"):
                await st.answer("x", pc.localDescription.sdp)
        finally:
            await pc.close()
            await st.close()
    asyncio.run(go())


@pytest.mark.parametrize("kw, msg", [({"width": 641}, "width"), ({"bitrate": 10}, "bitrate"),
                                     ({"preset": "placebo"}, "preset")])
def test_encoder_rejects_bad_settings(kw: dict, msg: str) -> None:
    args = {"width": 640, "height": 376} | kw
    with pytest.raises(MediaError, match=msg):
        StreamEncoder(**args)
