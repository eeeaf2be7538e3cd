"""Light viewers for the load tests: aiortc receivers that count frames without decoding.

Ten Chromium tabs on two cores would measure Chromium, not the server, so all but one viewer
are :class:`CountingViewer` s: a real aiortc ``RTCPeerConnection`` (ICE, DTLS-SRTP, RTCP
NACK/PLI/receiver reports as any viewer) whose video receiver hands each *reassembled* H.264
frame (aiortc's jitter buffer output) to a counter instead of the decoder thread. A frame's
arrival time is when its last packet completed it.

Latency without decoding: the station stamps RTP timestamps from its capture clock (90 kHz,
mentor/DESIGN.md "Media"; RFC 3550 section 5.1), so arrival - capture needs one constant
per stream. The viewer decodes only until :data:`CALIBRATE_FRAMES` frames have given their
frame id through the strip (``scrubin.mentor.strip.read_strip``); with the station's capture
times of those ids (reported by the host afterwards), ``capture(ts) = c + ts / 90000`` where
``c`` is the median over the calibration frames. Everything is computed after the run
(:func:`viewer_stats`).
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrubin.mentor.strip import read_strip

CALIBRATE_FRAMES = 5
_START = re.compile(b"\x00\x00\x00\x01|\x00\x00\x01")


def nal_digest(annexb: bytes) -> str:
    """SHA-256 of an access unit's NAL units, start codes removed (RFC 6184 carries NAL units,
    not start codes: a forwarder that does not re-encode keeps these bytes)."""
    h = hashlib.sha256()
    for nal in _START.split(annexb):
        if nal:
            h.update(len(nal).to_bytes(4, "big") + nal)
    return h.hexdigest()


class _CountingQueue:
    """Stands in for the receiver's decoder queue; ``None`` (stop) goes to the real one so
    aiortc's decoder thread ends."""

    def __init__(self, real: queue.Queue, viewer: CountingViewer) -> None:
        self.real, self.viewer = real, viewer

    def get(self) -> Any:
        return self.real.get()

    def put(self, item: Any) -> None:
        if item is None:
            self.real.put(None)
            return
        self.viewer._frame(item[1])


@dataclass
class CountingViewer:
    """One light viewer; ``frames``: (arrival ``time.time()``, RTP timestamp mapped to start
    at 0, in 1/90000 s); ``calib``: (mapped timestamp, frame id) from decoded frames."""

    name: str
    frames: list[tuple[float, int]] = field(default_factory=list)
    calib: list[tuple[int, int]] = field(default_factory=list)
    digests: dict[int, str] = field(default_factory=dict)   # frame id -> nal_digest
    pc: Any = None
    bytes_in: int = 0

    def __post_init__(self) -> None:
        import av

        self._dec = av.CodecContext.create("h264", "r")
        self._dec.thread_count = 1   # no frame threading: each output is the packet just fed
        self._ts_unwrap: int | None = None

    def _frame(self, enc: Any) -> None:
        now = time.time()
        self.frames.append((now, int(enc.timestamp)))
        self.bytes_in += len(enc.data)
        if len(self.calib) >= CALIBRATE_FRAMES:
            return
        import av

        try:
            for f in self._dec.decode(av.Packet(enc.data)):
                fid = read_strip(f.to_ndarray(format="gray"))
                if fid is not None:
                    self.calib.append((int(enc.timestamp), fid))
                    self.digests[fid] = nal_digest(bytes(enc.data))
        except av.error.FFmpegError:
            pass    # a P-frame before the first keyframe

    def attach(self, pc: Any) -> None:
        """Divert the video receiver's frames to the counter (call before media flows)."""
        self.pc = pc
        for tr in pc.getTransceivers():
            if tr.kind == "video":
                rx = tr.receiver
                real = rx._RTCRtpReceiver__decoder_queue
                rx._RTCRtpReceiver__decoder_queue = _CountingQueue(real, self)


async def answer_offer(viewer: CountingViewer, offer_sdp: str, ice_config: Any) -> str:
    """Viewer as the answerer (Janus subscribers): returns the answer SDP."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(ice_config)
    await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
    viewer.attach(pc)
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp


async def offer_via_station(viewer: CountingViewer, sig: Any, ice_config: Any,
                            timeout: float = 20.0) -> None:
    """Viewer as the offerer through our server's ``Signal`` call (as a headset does)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(ice_config)
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("meta")
    await pc.setLocalDescription(await pc.createOffer())
    await sig.send("offer", pc.localDescription.sdp)
    while True:
        msg = await asyncio.wait_for(sig.recv(), timeout)
        if msg is None:
            raise RuntimeError(f"{viewer.name}: signal call ended before an answer")
        if msg.sdp_type == "answer":
            break
    await pc.setRemoteDescription(RTCSessionDescription(msg.sdp, "answer"))
    viewer.attach(pc)


def viewer_stats(v: CountingViewer, captures: dict[int, float], t0: float,
                 t1: float) -> dict[str, float]:
    """Delivered fps and capture-to-arrival latency (ms) of the frames *captured* in [t0, t1]
    (each frame's capture time from its RTP timestamp, see the module docstring); frames
    of the window that arrive after it count too, frames captured before it do not.

    ``captures``: frame id -> capture time (station clock = this machine's clock)."""
    good = [(ts, fid) for ts, fid in v.calib if fid in captures]
    out: dict[str, float] = {"calibrated": float(len(good))}
    if not good:
        win = [t for t, _ in v.frames if t0 <= t <= t1]
        return {**out, "frames": float(len(win)), "fps": len(win) / (t1 - t0),
                "latency_p50_ms": float("nan"), "latency_p95_ms": float("nan")}
    c = float(np.median([captures[fid] - ts / 90000 for ts, fid in good]))
    lat = np.array([(t - (c + ts / 90000)) * 1e3 for t, ts in v.frames
                    if t0 <= c + ts / 90000 <= t1])
    if lat.size == 0:
        return {**out, "frames": 0.0, "fps": 0.0, "latency_p50_ms": float("nan"),
                "latency_p95_ms": float("nan")}
    return {**out, "frames": float(lat.size), "fps": lat.size / (t1 - t0),
            "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p95_ms": float(np.percentile(lat, 95)),
            "late_150ms_share": float((lat > 150).mean())}
