"""Encode once, send to every viewer: one H.264 encoder feeding pre-encoded packets to aiortc.

aiortc's ``MediaRelay`` hands out decoded frames and every ``RTCRtpSender`` owns an encoder, so
N viewers cost N encodes. Here the station encodes each composited frame once
(:class:`StreamEncoder`, PyAV libx264: ``tune=zerolatency``, a fast preset, no B-frames,
Baseline profile, a keyframe every ``keyframe_interval_s`` and on request) and hands the
``av.Packet`` to every viewer's :class:`PacketTrack`. aiortc's sender *packs* a track's
``av.Packet`` (``H264Encoder.pack``: Annex-B split into NAL units, RTP payloads per RFC 6184)
instead of encoding it (aiortc 1.16 ``RTCRtpSender._next_encoded_frame``).

Keyframes: the sender's RTCP handler answers a PLI / FIR (RFC 4585 section 6.3.1, RFC 5104
section 4.3.1) with ``self._send_keyframe()``, which only sets a private flag read when
*encoding* a Frame; :func:`hook_keyframe_requests` replaces that method on the sender instance
so a PLI asks the shared encoder for an IDR picture instead.

Per-viewer queues hold one packet at most (the newest; never a backlog). A viewer that
missed a packet cannot decode the following P-frames, so it skips packets until the next
keyframe and asks the encoder for one. A new viewer also starts at a keyframe.

RTP timestamps: packet ``pts`` in 1/90000 s (RFC 6184 section 5.1: 90 kHz clock) from the
station clock (capture time minus the stream's start), the same for every viewer.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from scrubin.mentor.errors import MentorError

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
#: chosen from benchmarks/bench_encode.py (1280x736 synthetic overlay frames, one x264
#: thread, SSIM of the decoded view): the issue's floor is SSIM >= 0.95 of what the viewer
#: sees. ultrafast 2.5 Mb/s gave median 0.915 (the old default), ultrafast 6 Mb/s 0.955;
#: superfast 6 Mb/s with a 0.2 s VBV buffer median 0.979, p10 0.961 over a stretch that
#: starts at a periodic IDR (min 0.933: the IDR picture itself), ~5 Mb/s achieved, encode
#: p50 20-30 ms on one core of a loaded 2-core machine (README "Surgeon side").
DEFAULT_PRESET = "superfast"
DEFAULT_BITRATE = 6_000_000
#: VBV buffer (s of the target rate): 1.5 frame intervals starved each periodic IDR (its
#: SSIM 0.916, 1 s to recover); 0.2 s lets the IDR be ~4x a P-frame. Costs at most 0.2 s of
#: queueing for that picture on a link no faster than the target rate (none on a LAN).
DEFAULT_VBV_S = 0.2


class MediaError(MentorError):
    """The media path cannot be set up (bad encoder settings, bad frame)."""


class StreamEncoder:
    """One libx264 encoder for the station's view (thread-safe ``encode`` / ``request_keyframe``).

    Parameters
    ----------
    width, height
        Picture size in px (even numbers; 1280x736 = 720p view + frame-id strip).
    fps
        Nominal frame rate (rate control and keyframe interval).
    bitrate
        Target bit rate (bit/s, VBV-capped at the same rate over a ``vbv_s`` buffer).
    preset
        x264 preset (``ultrafast``, ``superfast``, ``veryfast``, ...).
    keyframe_interval_s
        Time between periodic IDR pictures (s).
    threads
        x264 threads (0 = x264's choice).
    vbv_s
        VBV buffer size in seconds at ``bitrate`` (``DEFAULT_VBV_S``).
    """

    def __init__(self, width: int, height: int, fps: float = 30.0,
                 bitrate: int = DEFAULT_BITRATE, preset: str = DEFAULT_PRESET,
                 keyframe_interval_s: float = 2.0, threads: int = 0,
                 vbv_s: float = DEFAULT_VBV_S) -> None:
        import av

        for name, v in (("width", width), ("height", height)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 16 or v % 2:
                raise MediaError(f"encoder {name} must be an even integer >= 16, got {v!r}")
        if not (isinstance(fps, int | float) and math.isfinite(fps) and 1 <= fps <= 240):
            raise MediaError(f"encoder fps must be in 1..240, got {fps!r}")
        if isinstance(bitrate, bool) or not isinstance(bitrate, int) or not (
                100_000 <= bitrate <= 50_000_000):
            raise MediaError(f"encoder bitrate must be 100000..50000000 bit/s, got {bitrate!r}")
        if preset not in ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"):
            raise MediaError(f"x264 preset must be ultrafast|superfast|veryfast|faster|fast|"
                             f"medium, got {preset!r}")
        self.width, self.height, self.fps = width, height, float(fps)
        self.bitrate, self.preset = bitrate, preset
        gop = max(1, round(keyframe_interval_s * fps))
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = VIDEO_TIME_BASE
        ctx.framerate = fractions.Fraction(round(fps * 1000), 1000)
        ctx.bit_rate = bitrate
        ctx.gop_size = gop
        ctx.max_b_frames = 0
        ctx.thread_count = threads
        ctx.profile = "Baseline"
        if not (isinstance(vbv_s, int | float) and math.isfinite(vbv_s) and 0 < vbv_s <= 2):
            raise MediaError(f"encoder vbv_s must be in (0, 2] s, got {vbv_s!r}")
        vbv = max(1, round(bitrate / 1000 * vbv_s))
        ctx.options = {"preset": preset, "tune": "zerolatency", "level": "31" if
                       width * height <= 1280 * 720 else "40", "bf": "0",
                       "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:"
                                      "colormatrix=smpte170m:"
                                      f"vbv-maxrate={bitrate // 1000}:vbv-bufsize={vbv}:"
                                      "repeat-headers=1:aud=0",
                       "forced-idr": "1"}
        ctx.open()
        self._ctx = ctx
        self._lock = threading.Lock()
        self._force = True
        self.frames = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.encode_ms: list[float] = []
        # forced IDRs at most this often (s); a request inside the gap waits, is not lost.
        # Many viewers each asking after a drop otherwise make most pictures IDRs (measured,
        # benchmarks/bench_mentor_load.py, 20 viewers: 197 of 519 pictures IDRs and median
        # latency 6.0 s with no gap; 15 of 443 and 0.71 s with 0.5 s). 0 = at once.
        self.min_keyframe_gap_s = 0.5
        self._last_forced = -math.inf

    def request_keyframe(self) -> None:
        """Make the next encoded picture an IDR (PLI/FIR, a new viewer, a viewer that dropped)."""
        self.keyframe_requests += 1
        self._force = True

    def encode(self, image_bgr: np.ndarray, pts_90k: int) -> list[Any]:
        """Encode one ``(height, width, 3)`` uint8 BGR picture; the ``av.Packet`` s out.

        ``pts_90k`` is the presentation time in 1/90000 s (monotonic). Colour: BT.601
        limited range (``cv2.COLOR_BGR2YUV_I420``, the same values as swscale's ``yuv420p``
        within 1 code, ~0.5 ms instead of ~7 ms at 1280x736).
        """
        import av
        import cv2

        if image_bgr.shape != (self.height, self.width, 3) or image_bgr.dtype != np.uint8:
            raise MediaError(f"encoder expects ({self.height}, {self.width}, 3) uint8, got "
                             f"{image_bgr.shape} {image_bgr.dtype}")
        t = time.perf_counter()
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2YUV_I420),
                                           format="yuv420p")
        frame.pts = int(pts_90k)
        frame.time_base = VIDEO_TIME_BASE
        with self._lock:
            now = time.monotonic()
            force = self._force and now - self._last_forced >= self.min_keyframe_gap_s
            if force:
                self._force, self._last_forced = False, now
            frame.pict_type = (av.video.frame.PictureType.I if force
                               else av.video.frame.PictureType.NONE)
            packets = list(self._ctx.encode(frame))
        for p in packets:
            p.time_base = VIDEO_TIME_BASE
            if p.pts is None:
                p.pts = int(pts_90k)
            if p.is_keyframe:
                self.keyframes += 1
        self.frames += 1
        self.encode_ms.append((time.perf_counter() - t) * 1e3)
        if len(self.encode_ms) > 1000:
            del self.encode_ms[:500]
        return packets


class PacketTrack(MediaStreamTrack):
    """A video track whose ``recv()`` returns the shared encoder's ``av.Packet`` s.

    Built by :meth:`VideoFanout.add_viewer` on the event loop. The queue holds one packet: a
    newer one replaces an unsent one (counted in ``dropped``); after a drop (or at the start)
    non-key packets are skipped until a keyframe, and a keyframe is requested.
    """

    kind = "video"

    def __init__(self, fanout: VideoFanout, name: str) -> None:
        super().__init__()
        self.fanout, self.name = fanout, name
        self._loop = asyncio.get_running_loop()
        self._slot: Any = None
        self._event = asyncio.Event()
        self._waiting_key = True
        self.sent = 0
        self.dropped = 0
        self.skipped = 0

    def _offer(self, packet: Any) -> None:
        """Event-loop side: keep the newest packet (called via call_soon_threadsafe)."""
        if self.readyState != "live":
            return
        if self._slot is not None:
            self.dropped += 1
            self._waiting_key = True
        if self._waiting_key and not packet.is_keyframe:
            self.skipped += 1
            self._slot = None
            self.fanout.encoder.request_keyframe()
            return
        self._waiting_key = False
        self._slot = packet
        self._event.set()

    async def recv(self) -> Any:
        """The newest packet (waits for one)."""
        while self._slot is None:
            if self.readyState != "live":
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        if self.readyState != "live":
            raise MediaStreamError
        p, self._slot = self._slot, None
        self.sent += 1
        return p

    def stop(self) -> None:
        """End the track and leave the fan-out."""
        super().stop()
        self._event.set()
        self.fanout._remove(self)


class VideoFanout:
    """The shared encoder and its viewers' packet tracks.

    :meth:`publish` runs on the frame-loop thread (encode there, off the event loop); packets
    are handed to each track on its event loop with ``call_soon_threadsafe``.
    """

    def __init__(self, encoder: StreamEncoder, t_origin: float | None = None) -> None:
        self.encoder = encoder
        self.t_origin = time.time() if t_origin is None else float(t_origin)
        self._tracks: list[PacketTrack] = []
        self._lock = threading.Lock()
        self._last_pts = -1

    @property
    def viewers(self) -> int:
        """Number of live tracks."""
        return len(self._tracks)

    def add_viewer(self, name: str = "viewer") -> PacketTrack:
        """A new :class:`PacketTrack` (call on the event loop); a keyframe is requested."""
        tr = PacketTrack(self, name)
        with self._lock:
            self._tracks.append(tr)
        self.encoder.request_keyframe()
        return tr

    def _remove(self, track: PacketTrack) -> None:
        with self._lock:
            if track in self._tracks:
                self._tracks.remove(track)

    def pts_of(self, capture_time_s: float) -> int:
        """90 kHz timestamp of a capture time (station clock), strictly increasing."""
        pts = max(self._last_pts + 1, round((capture_time_s - self.t_origin) * 90000))
        self._last_pts = pts
        return pts

    def publish(self, image_bgr: np.ndarray, capture_time_s: float) -> list[Any]:
        """Encode once and hand the packets to every viewer; returns the packets."""
        packets = self.encoder.encode(image_bgr, self.pts_of(capture_time_s))
        with self._lock:
            tracks = list(self._tracks)
        for tr in tracks:
            for p in packets:
                try:
                    tr._loop.call_soon_threadsafe(tr._offer, p)
                except RuntimeError:  # loop closed: the viewer is gone
                    self._remove(tr)
        return packets


def hook_keyframe_requests(sender: Any, request: Callable[[], None]) -> None:
    """Route the sender's PLI/FIR handling (``_send_keyframe``) to ``request``.

    aiortc 1.16 ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()`` for
    PSFB PLI and FIR; assigning the instance attribute overrides the method.
    """
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise MediaError("this aiortc sender has no _send_keyframe hook (aiortc 1.16 expected)")
    sender._send_keyframe = request
