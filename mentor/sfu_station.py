"""The surgeon station's stream into Janus: published once, republished after a reconnect.

When ``scrubin serve`` runs with ``--sfu``, the server tells the station so on the station's
own ``Signal`` call: each time a station call is attached (the first one and every reopened
one after a server restart or link loss) the server queues an ``sfu-available`` message
(mentor/hub.py ``attach_station``; no proto change, ``sdp_type`` is a string).
:class:`~scrubin.mentor.station_link.StationLink` hands it to an :class:`SfuPublisher`, which

* publishes one more :class:`~scrubin.mentor.media.PacketTrack` of the station's shared encoder
  (encode once: the same packets as every direct viewer) through
  :func:`scrubin.mentor.sfu.publish_via_link` (``sfu-offer`` / ``sfu-answer``; the station
  never sees Janus's API, room or pin), with the theatre voice when the station has one;
* routes Janus's PLI/FIR (Janus forwards a subscriber's keyframe request to the publisher,
  RFC 4585 section 6.3.1) to the shared encoder (:meth:`StreamEncoder.request_keyframe`,
  which spaces forced IDRs by ``min_keyframe_gap_s``), counted in :attr:`keyframe_requests`;
* sends every frame's ``meta`` JSON (mentor/DESIGN.md "meta data channel": frame id,
  capture time, intrinsics, ``T_camera_ref``, ``T_ref_ct``, tracking) on a publisher data
  channel labelled ``meta``: Janus VideoRoom relays a publisher's data channel messages to
  each subscriber under the same label, so an observer's page anchors and projects from the
  same per-frame metadata as on the direct path (not the server's 10 Hz telemetry, which
  skips frames);
* on a new ``sfu-available`` closes its old publisher connection and publishes again (the
  server has replaced the room's publisher; Janus gives the new one a new feed id and our
  server tells the pages to subscribe again); a publish that fails, or a publisher connection
  that fails later, is tried again after 1, 2, 5, 10 and 30 s (:data:`RETRY_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from scrubin.mentor.errors import MentorError

log = logging.getLogger(__name__)

META_LABEL = "meta"
CONNECT_TIMEOUT_S = 15.0
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)   # back-off of publishing again after a failure


class SfuPublisher:
    """One station's publisher into its session's Janus room (module docstring).

    Parameters
    ----------
    link
        The station's :class:`~scrubin.mentor.station_link.StationLink` (its ``station`` gives
        the shared encoder's fan-out, the ICE settings and the voice; its ``signal`` the call).
    """

    def __init__(self, link: Any, timeout: float = 20.0) -> None:
        self.link = link
        self.timeout = float(timeout)
        self.pc: Any = None
        self.track: Any = None
        self.channel: Any = None
        self.publishes = 0            # publisher connections that reached "connected"
        self.keyframe_requests = 0    # PLI/FIR received from Janus
        self.meta_sent = 0            # meta messages sent on the publisher's data channel
        self.errors: list[str] = []
        self.state = "new"            # new | publishing | connected | failed | closed
        self._task: asyncio.Task[Any] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._failures = 0

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """(Re)publish: an attempt still running is cancelled first (event loop)."""
        if self.state == "closed":
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.ensure_future(self._publish())

    async def _close_pc(self) -> None:
        pc, track = self.pc, self.track
        self.pc = self.track = self.channel = None
        if track is not None:
            track.stop()
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    def _keyframe(self) -> None:
        self.keyframe_requests += 1
        self.link.station.fanout.encoder.request_keyframe()

    async def _publish(self) -> None:
        from aiortc import RTCPeerConnection

        from scrubin.mentor.ice import ice_configuration
        from scrubin.mentor.sfu import publish_via_link

        await self._close_pc()
        station = self.link.station
        self.state = "publishing"
        await self.link.fresh_ice()   # a TURN credential issued now, not the last one's
        pc = RTCPeerConnection(ice_configuration(station.ice_servers, *station.ice_credentials))
        channel = pc.createDataChannel(META_LABEL)
        track = station.fanout.add_viewer("janus")
        audio = station.audio.track() if station.audio is not None else None
        self.pc, self.track, self.channel = pc, track, channel
        try:
            await publish_via_link(self.link, track, self._keyframe, timeout=self.timeout,
                                   audio_track=audio, pc=pc)
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while pc.connectionState != "connected":
                if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                    raise MentorError(f"publisher connection to Janus {pc.connectionState}")
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # the direct viewers' path goes on without Janus
            await self._failed(pc, f"sfu publish: {exc}")
            return
        self.publishes += 1
        self._failures = 0
        self.state = "connected"
        log.info("published the station's stream into the session's Janus room")

        @pc.on("connectionstatechange")
        def _on_state() -> None:   # Janus gone or the path failed: publish again
            if pc is self.pc and pc.connectionState == "failed":
                asyncio.ensure_future(self._failed(pc, "sfu publisher connection failed"))

    async def _failed(self, pc: Any, why: str) -> None:
        """Record ``why``, drop ``pc`` and publish again after a back-off."""
        if pc is not self.pc or self.state == "closed":
            return
        self.state = "failed"
        self.errors.append(why)
        log.warning("%s", why)
        await self._close_pc()
        if self._failures < len(RETRY_S):   # then only a new sfu-available publishes again
            self._retry = asyncio.get_running_loop().call_later(RETRY_S[self._failures],
                                                                self.start)
        self._failures += 1

    async def close(self) -> None:
        """Stop publishing."""
        self.state = "closed"
        if self._retry is not None:
            self._retry.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._close_pc()

    # ------------------------------------------------------------------ frames
    def frame_sent(self, meta: Any) -> None:
        """Frame-loop thread: queue the frame's ``meta`` JSON for the data channel."""
        loop = self.link.loop
        if self.channel is None or loop is None or loop.is_closed():
            return
        msg = json.dumps(meta.to_json(), separators=(",", ":"))
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._send, msg)

    def _send(self, msg: str) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(msg)
                self.meta_sent += 1
            except Exception as exc:   # closing: the next publish makes a new channel
                log.debug("sfu meta: %s", exc)
