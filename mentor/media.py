"""Encode once, send to every viewer: one H.264 encoder feeding pre-encoded packets to aiortc.

aiortc's ``MediaRelay`` hands out decoded frames and every ``RTCRtpSender`` owns an encoder, so
N viewers cost N encodes. Here the station encodes each composited frame once
(:class:`StreamEncoder`, PyAV libx264: ``tune=zerolatency``, a fast preset, no B-frames,
Baseline profile, periodic intra refresh, an IDR picture at the start and on request) and
hands the
``av.Packet`` to every viewer's :class:`PacketTrack`. aiortc's sender *packs* a track's
``av.Packet`` (``H264Encoder.pack``: Annex-B split into NAL units, RTP payloads per RFC 6184)
instead of encoding it (aiortc 1.16 ``RTCRtpSender._next_encoded_frame``).

Keyframes: the sender's RTCP handler answers a PLI / FIR (RFC 4585 section 6.3.1, RFC 5104
section 4.3.1) with ``self._send_keyframe()``, which only sets a private flag read when
*encoding* a Frame; :func:`hook_keyframe_requests` replaces that method on the sender instance
so a PLI asks the shared encoder for an IDR picture instead.

Intra refresh instead of periodic IDRs: x264's ``intra-refresh`` codes one sweeping column
of macroblocks intra in every P picture, so the whole picture is refreshed every
``refresh_s`` without a keyframe-sized picture (H.264 recovery point SEI, ITU-T H.264 D.2.8).
A periodic IDR picture costs 3-4x a P picture's bits under the same VBV buffer and came out
starved (SSIM 0.92-0.93 against ~0.98 for the P pictures around it, for ~5 pictures: the
issue's 0.95 floor missed on every keyframe). Decoders still start at an IDR only (Chromium's
WebRTC receiver drops pictures until one; RFC 6184 has no other entry point), so IDRs come at
the start and on request (a new viewer, PLI/FIR, a viewer that dropped a packet), spaced by
``min_keyframe_gap_s``, and coded at a lower QP than P pictures (``ipratio``) so they do not
dip either. ``is_keyframe`` on the packets means *IDR* (libavcodec also flags the first
picture of each refresh cycle, which no decoder can start from).

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
#: thread, SSIM of every decoded picture of a 2 s stretch): the issue's floor is SSIM >= 0.95
#: of what the viewer sees. ultrafast 2.5 Mb/s gave median 0.915 (the old default);
#: superfast 6 Mb/s median 0.975, ~5.5 Mb/s achieved, encode p50 9-15 ms on one core of a
#: loaded 2-core machine (README "Surgeon side"); 8 Mb/s lifts the median to 0.982 for 33 %
#: more bandwidth to every viewer.
DEFAULT_PRESET = "superfast"
DEFAULT_BITRATE = 6_000_000
#: VBV buffer (s of the target rate). It bounds the IDR picture: with 0.2 s x264 kept a forced
#: IDR at ~70 kB (ipratio 2: SSIM 0.930; 0.3 s and ipratio 3: 76 kB, 0.932); 0.4 s lets it
#: reach ~140 kB (0.957). With intra refresh the P pictures stay 20-60 kB, so the buffer is
#: used by IDRs only: at most 0.4 s of queueing for that picture on a link no faster than the
#: target rate (none on a LAN).
DEFAULT_VBV_S = 0.4
#: intra refresh period (s): every macroblock column intra-coded once per period (x264
#: ``intra-refresh``, ``keyint`` = the period in frames); None = periodic IDRs instead. Also
#: the longest a decoder shows damage from a lost packet that neither NACK nor PLI repaired.
DEFAULT_REFRESH_S = 1.0
#: IDR pictures (start and requests only, with intra refresh) at QP - 6 log2(ipratio) of
#: the P pictures (x264 ``ipratio``; x264's default 1.4). Measured, forced IDR at 6 Mb/s with
#: intra refresh, min SSIM over it and the 5 pictures after it: ipratio 1.4 / VBV 0.2 s 0.927
#: (and 0.954 still 7 pictures later); 2.5 / 0.4 s 0.957; 3.0 / 0.5 s 0.954.
DEFAULT_IPRATIO = 2.5


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
        Time between periodic IDR pictures (s); None: IDRs only at the start and on request
        (the default with intra refresh; without it, x264's 2 s).
    threads
        x264 threads (0 = x264's choice).
    vbv_s
        VBV buffer size in seconds at ``bitrate`` (``DEFAULT_VBV_S``).
    refresh_s
        Intra refresh period (s), ``DEFAULT_REFRESH_S``; None: no intra refresh.
    ipratio
        QP ratio of IDR to P pictures (x264 ``ipratio``, ``DEFAULT_IPRATIO``).
    """

    def __init__(self, width: int, height: int, fps: float = 30.0,
                 bitrate: int = DEFAULT_BITRATE, preset: str = DEFAULT_PRESET,
                 keyframe_interval_s: float | None = None, threads: int = 0,
                 vbv_s: float = DEFAULT_VBV_S, refresh_s: float | None = DEFAULT_REFRESH_S,
                 ipratio: float = DEFAULT_IPRATIO) -> None:
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
        for name, v, hi in (("keyframe_interval_s", keyframe_interval_s, 600.0),
                            ("refresh_s", refresh_s, 10.0)):
            if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool)
                                      and math.isfinite(v) and 1 / fps <= v <= hi):
                raise MediaError(f"encoder {name} must be None or 1/fps..{hi:g} s, got {v!r}")
        if not (isinstance(ipratio, int | float) and math.isfinite(ipratio)
                and 1 <= ipratio <= 4):
            raise MediaError(f"encoder ipratio must be in 1..4, got {ipratio!r}")
        self.width, self.height, self.fps = width, height, float(fps)
        self.bitrate, self.preset = bitrate, preset
        self.refresh_s, self.ipratio = refresh_s, float(ipratio)
        if refresh_s is None:   # x264 places the periodic IDRs
            gop = max(1, round((2.0 if keyframe_interval_s is None else keyframe_interval_s)
                               * fps))
            self._idr_every = 0
            refresh = ""
        else:                   # keyint = the refresh period; periodic IDRs forced here
            gop = max(2, round(refresh_s * fps))
            self._idr_every = (0 if keyframe_interval_s is None
                               else max(1, round(keyframe_interval_s * fps)))
            refresh = "intra-refresh=1:"
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
                                      f"{refresh}ipratio={ipratio:g}:colormatrix=smpte170m:"
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
        self._last_idr_frame = 0
        self.idr_frames: list[int] = []   # indices (0-based encode count) of IDR pictures

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
            periodic = (self._idr_every > 0
                        and self.frames - self._last_idr_frame >= self._idr_every)
            if periodic:             # it answers a request waiting for the gap too
                self._force = False
            frame.pict_type = (av.video.frame.PictureType.I if force or periodic
                               else av.video.frame.PictureType.NONE)
            packets = list(self._ctx.encode(frame))
            idr = False
            for p in packets:
                p.time_base = VIDEO_TIME_BASE
                if p.pts is None:
                    p.pts = int(pts_90k)
                # libavcodec flags x264's "keyframe": with intra refresh also the recovery
                # point starting each refresh cycle; only an IDR slice is an entry point
                p.is_keyframe = has_idr(bytes(p))
                idr = idr or p.is_keyframe
            if idr:
                self.keyframes += 1
                self._last_idr_frame = self.frames
                self.idr_frames.append(self.frames)
                del self.idr_frames[:-100]
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


def has_idr(annexb: bytes) -> bool:
    """Whether an H.264 Annex B access unit holds an IDR slice (``nal_unit_type`` 5, ITU-T
    H.264 Table 7-1) after a ``00 00 01`` start code (Annex B.1)."""
    i = annexb.find(b"\x00\x00\x01")
    while 0 <= i < len(annexb) - 3:
        if annexb[i + 3] & 0x1F == 5:
            return True
        i = annexb.find(b"\x00\x00\x01", i + 3)
    return False


def hook_keyframe_requests(sender: Any, request: Callable[[], None]) -> None:
    """Route the sender's PLI/FIR handling (``_send_keyframe``) to ``request``.

    aiortc 1.16 ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()`` for
    PSFB PLI and FIR; assigning the instance attribute overrides the method.
    """
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise MediaError("this aiortc sender has no _send_keyframe hook (aiortc 1.16 expected)")
    sender._send_keyframe = request
