"""The fault-test rig: a real server, a live surgeon station, a native viewer behind relays.

Paths (every byte between the mentor's side and the rest goes through a relay):

* media: the viewer (aiortc, a native headset's stand-in) <-> :class:`IceRelay` <-> the
  station's peer connection; the relay rewrites the candidates of the viewer's offer and of
  the station's answer, so no direct pair exists;
* the mentor's gRPC (Signal for the viewer, Annotations for the mentor's strokes):
  :class:`TcpRelay` -> the server;
* the station's gRPC goes straight to the server (the mentor's link is the one impaired).

The viewer follows the page's contract (mentor/DESIGN.md "Link loss"): it sends ``hb`` on
``meta`` every 0.25 s; no packet at all (RTP, RTCP, SCTP: the DTLS transport's
``packetsReceived``) for ``lost_after_s`` (1 s) = link lost (``meta`` alone is not a heartbeat:
SCTP's retransmission timeout is >= 1 s, so one lost message stalls it that long); it then
closes its peer connection and offers again with a new one (aiortc has no ICE restart), one
outstanding offer at a time, a new attempt when one is not flowing within ``attempt_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrubin.mentor.client import MentorClient
from scrubin.mentor.ice import ice_configuration
from scrubin.mentor.impair import Impairer, Impairment
from scrubin.mentor.impair_relay import IceRelay
from scrubin.mentor.station_meta import FrameMeta
from scrubin.mentor.strip import read_strip

HB_S = 0.25


def moving_source(width: int = 640, height: int = 360, step: int = 7,
                  block: tuple[int, int, int] = (100, 180, 80), moving_pose: bool = False):
    """Frames with real content (a gradient and a white block moving ``step`` px per frame;
    ``block`` = first row, end row, width) and LIVE metadata; ``moving_pose``: the camera
    moves 1 mm per frame (REF origin 400 mm + i in front, so each frame's meta differs)."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height),
                     ((xx + yy) * 127 // (width + height))], -1).astype(np.uint8)
    k = (width * 1.2, width * 1.2, width / 2 - 0.5, height / 2 - 0.5)
    y0, y1, bw = block

    def source(i: int) -> tuple[np.ndarray, FrameMeta]:
        img = base.copy()
        x = (i * step) % (width - bw)
        img[y0:y1, x:x + bw] = 255
        t_camera_ref = np.eye(4)
        if moving_pose:
            t_camera_ref[:3, 3] = (0.0, 0.0, 400.0 + i)     # mm
        return img, FrameMeta(0, 0.0, width, height, k, (0.0,) * 5, t_camera_ref, np.eye(4),
                              "LIVE")
    return source


def freeze_stats(times: list[float]) -> dict[str, float]:
    """fps and frozen share of frame arrival times (s); a freeze is an inter-frame gap longer
    than max(3 x mean, mean + 150 ms) (W3C webrtc-stats, ``freezeCount``), counted whole."""
    if len(times) < 3:
        return {"fps": 0.0, "frozen_share": 1.0, "freezes": 0, "span_s": 0.0}
    gaps = np.diff(np.asarray(times))
    span = float(times[-1] - times[0])
    mean = float(gaps.mean())
    frozen = gaps[gaps > max(3 * mean, mean + 0.150)]
    return {"fps": (len(times) - 1) / span, "frozen_share": float(frozen.sum()) / span,
            "freezes": int(frozen.size), "span_s": span}


def playout_stats(frames: list[tuple[float, int]], captures: dict[int, float],
                  playout_s: float) -> dict[str, float]:
    """Frames shown by a receiver that plays each frame at capture time + ``playout_s`` (a
    fixed jitter buffer, as a headset or Chromium's adaptive one does): a station frame of the
    window that arrived later than that, or never, is a frozen frame interval.
    ``captures``: frame id -> capture time (station clock = this machine's) of every frame the
    station sent in the window; ``frames``: (arrival time, frame id) at the viewer."""
    arrived = {fid: t for t, fid in frames}
    lat = np.array([arrived[f] - c for f, c in captures.items() if f in arrived])
    on_time = int((lat <= playout_s).sum()) if lat.size else 0
    return {"sent": len(captures), "decoded": int(lat.size), "on_time": on_time,
            "frozen_share_playout": 1.0 - on_time / max(1, len(captures)),
            "latency_p50_ms": float(np.percentile(lat, 50) * 1e3) if lat.size else float("nan"),
            "latency_p95_ms": float(np.percentile(lat, 95) * 1e3) if lat.size else float("nan")}


@dataclass
class Attempt:
    started: float
    pc: Any
    answered: float | None = None
    first_meta: float | None = None
    first_frame: float | None = None
    lost: float | None = None
    why: str = ""


@dataclass
class NativeViewer:
    """Mentor-side viewer through an :class:`IceRelay` (module docstring)."""

    client: MentorClient
    up: Impairer            # viewer -> station
    down: Impairer          # station -> viewer
    lost_after_s: float = 1.0
    attempt_s: float = 4.0
    answer_s: float = 5.0
    attempts: list[Attempt] = field(default_factory=list)
    frames: list[tuple[float, int]] = field(default_factory=list)   # (time.time(), frame id)
    meta_count: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.relays: list[IceRelay] = []
        self._answers: asyncio.Queue[Any] = asyncio.Queue()   # (call generation, msg|None)
        self._gen = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self.sig: Any = None

    async def start(self) -> None:
        self.sig = self.client.signal()
        await self.sig.wait_open()
        self._tasks.append(asyncio.create_task(self._read_signals()))
        self._tasks.append(asyncio.create_task(self._run()))

    async def _read_signals(self) -> None:
        import grpc

        while True:
            try:
                msg = await self.sig.recv()
            except grpc.aio.AioRpcError as exc:
                msg = None
                self.errors.append(f"{time.time():.2f} signal call failed: {exc.code().name} "
                                   f"{exc.details()}")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing or (task is not None and task.cancelling()):
                    raise
                msg = None          # the call was cancelled by an attempt that gave up
            if msg is None:     # reopen (server restart, connection reset) after a pause
                self._answers.put_nowait((self._gen, None))   # an offer on it is lost
                self._gen += 1
                self.sig.close()
                await asyncio.sleep(0.25)
                self.sig = self.client.signal()
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.TimeoutError):
                    await self.sig.wait_open(5.0)
                continue
            if msg.sdp_type == "answer":
                self._answers.put_nowait((self._gen, msg))
            elif msg.sdp_type == "bye":
                self._answers.put_nowait((self._gen, None))

    @property
    def relay(self) -> IceRelay:
        """The current attempt's relay (one per peer connection, all on the same link)."""
        return self.relays[-1]

    def blackout(self, seconds: float) -> None:
        """Cut the media link both ways for ``seconds`` from now."""
        now = asyncio.get_running_loop().time()
        self.up.blackout(now, seconds)
        self.down.blackout(now, seconds)

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def connected(self) -> bool:
        a = self.current
        return a is not None and a.first_frame is not None and a.lost is None and \
            a.pc.connectionState == "connected"

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._attempt()
            except Exception as exc:  # recorded; the next attempt starts
                self.errors.append(f"{time.time():.2f} {exc!r}")
                await asyncio.sleep(0.2)

    async def _attempt(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(ice_configuration())
        att = Attempt(time.time(), pc)
        if self.relays:
            self.relays[-1].close()
        self.relays.append(IceRelay(self.up, self.down))
        self.attempts.append(att)
        pc.addTransceiver("video", direction="recvonly")
        dc = pc.createDataChannel("meta")
        last_meta = [0.0]

        def on_meta(m: Any) -> None:
            last_meta[0] = time.monotonic()
            self.meta_count += 1
            if att.first_meta is None:
                att.first_meta = time.time()

        dc.on("message", on_meta)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(HB_S)
                if dc.readyState == "open":
                    dc.send(json.dumps({"type": "hb", "t": time.time()}))

        async def consume(track: Any) -> None:
            while True:
                f = await track.recv()
                fid = read_strip(f.to_ndarray(format="gray"))
                if fid is not None:
                    self.frames.append((time.time(), fid))
                    if att.first_frame is None:
                        att.first_frame = time.time()

        tasks = [asyncio.create_task(heartbeat())]
        pc.on("track", lambda tr: tasks.append(asyncio.ensure_future(consume(tr))))
        try:
            await pc.setLocalDescription(await pc.createOffer())
            gen = self._gen
            await self.sig.send("offer", await self.relay.rewrite_offer(pc.localDescription.sdp))
            t_end = time.monotonic() + self.answer_s
            ans = None
            while time.monotonic() < t_end:  # one offer per call at a time: the next answer
                try:
                    g, ans = await asyncio.wait_for(self._answers.get(),
                                                    max(0.01, t_end - time.monotonic()))
                except TimeoutError:
                    break
                if g == gen:
                    break
                ans = None
            else:
                ans = None
            if ans is None and gen == self._gen:
                # no answer in time (a held link): drop this call, so that its late answer
                # cannot be taken for the next offer's, and wait for the new call
                self.sig.close()
                t_end = time.monotonic() + 5.0
                while gen == self._gen and time.monotonic() < t_end:
                    await asyncio.sleep(0.05)
            if ans is None:
                att.lost = time.time()
                return
            att.answered = time.time()
            await pc.setRemoteDescription(RTCSessionDescription(
                await self.relay.rewrite_answer(ans.sdp), "answer"))
            t_end = time.monotonic() + self.attempt_s
            while pc.connectionState != "connected" or (att.first_meta is None
                                                         and att.first_frame is None):
                if time.monotonic() > t_end or self._closing:
                    att.lost = time.time()
                    return
                await asyncio.sleep(0.02)
            rx, silent, last_poll = -1, 0.0, time.monotonic()
            while not self._closing:                 # flowing: watch the link
                await asyncio.sleep(0.1)
                stats = await pc.getStats()
                n = sum(s.packetsReceived for s in stats.values() if s.type == "transport")
                now = time.monotonic()
                # a stalled loop (datagrams waiting unread) is not a silent link
                step, last_poll = min(now - last_poll, 0.2), now
                silent = 0.0 if n != rx else silent + step
                rx = n
                if silent > self.lost_after_s or pc.connectionState in ("failed", "closed"):
                    att.lost = time.time()
                    att.why = "silent" if silent > self.lost_after_s else pc.connectionState
                    return
        finally:
            for t in tasks:
                t.cancel()
            await pc.close()

    async def transport_stats(self) -> dict[str, int]:
        """The current peer connection's ``transport`` bytes (aiortc RTCTransportStats)."""
        a = self.current
        stats = await a.pc.getStats()
        tr = [s for s in stats.values() if s.type == "transport"]
        return {"bytesReceived": sum(s.bytesReceived for s in tr),
                "bytesSent": sum(s.bytesSent for s in tr)}

    async def close(self) -> None:
        self._closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.current is not None:
            await self.current.pc.close()
        if self.sig is not None:
            self.sig.close()
        for r in self.relays:
            r.close()


async def station_transport_stats(live: Any) -> dict[str, int]:
    """Transport bytes of every peer connection of a LiveStation (read on its own loop)."""
    async def read() -> dict[str, int]:
        out = {"bytesReceived": 0, "bytesSent": 0}
        for peer in list(live.station.peers.values()):
            stats = await peer.pc.getStats()
            for s in stats.values():
                if s.type == "transport":
                    out["bytesReceived"] += s.bytesReceived
                    out["bytesSent"] += s.bytesSent
        return out
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(read(), live.loop))


def link(cfg: Impairment) -> Impairer:
    return Impairer(cfg)
