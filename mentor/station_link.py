"""The surgeon station's link to ``scrubin serve`` over gRPC: join, signalling, annotations.

One :class:`StationLink` per station (mentor/DESIGN.md "gRPC"), on the station's event loop:

* ``Join`` with the surgeon token: the session, and the ICE servers / host addresses the
  server advises (used unless the station was given its own);
* ``Signal``: every viewer's offer arrives with a server-made ``peer_id``; the station
  answers it (:meth:`SurgeonStation.answer`) and sends the answer back; ``bye`` closes it;
* ``Annotations``: every event, exactly once and in ``seq`` order (``MentorClient``'s
  resuming stream), goes to the :class:`~scrubin.mentor.annotations_draw.AnnotationBoard`
  drawn into each frame; a mentor's stroke (``create``/``update``, not laser) is anchored
  once it has been still for ``settle_s`` (one ``anchor`` event per settled stroke, not one
  per pointer move), by ray casting at the pose of the frame it was drawn on (its
  ``frame_id`` looked up in the station's >= 2 s metadata history), and the ``anchor`` event
  goes back to the server, which stores and broadcasts it to every page and headset;
* ``PublishTelemetry``: the newest frame's metadata, never a backlog (a slow server skips
  frames);
* the surgeon's own actions :meth:`hide_all` / :meth:`show_all` / :meth:`clear_all` (the
  server refuses them from anyone else).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from scrubin.mentor.anchor import Anchorer, AnchorError
from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.errors import MentorError
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_meta import FrameMeta

log = logging.getLogger(__name__)

RESIGNAL_S = (0.1, 0.25, 0.5, 1.0, 2.0)  # back-off of reopening the Signal call


def telemetry_pb(meta: FrameMeta, latency_ms: float = 0.0) -> Any:
    """The ``TelemetryFrame`` of one frame's metadata."""
    from scrubin.protos import mentor_pb2 as pb

    fx, fy, cx, cy = meta.K
    msg = pb.TelemetryFrame(frame_id=int(meta.frame_id), capture_time=float(meta.capture_time),
                            width=int(meta.width), height=int(meta.height),
                            intrinsics=pb.Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy,
                                                     dist=[float(d) for d in meta.dist]),
                            tracking=pb.TrackingState.Value(f"TRACKING_{meta.tracking}"),
                            latency_ms=float(latency_ms))
    if meta.T_camera_ref is not None:
        msg.T_camera_ref.m.extend(float(v) for v in meta.T_camera_ref.ravel())
    if meta.T_ref_ct is not None:
        msg.T_ref_ct.m.extend(float(v) for v in meta.T_ref_ct.ravel())
    if meta.fre_mm is not None:
        msg.fre_mm = float(meta.fre_mm)
    if meta.tre_mm is not None:
        msg.tre_mm = float(meta.tre_mm)
    for k, v in meta.stages_ms.items():
        msg.stages_ms[k] = float(v)
    return msg


class StationLink:
    """gRPC side of a surgeon station (module docstring).

    Parameters
    ----------
    station
        The media side (peers, encoder, metadata history).
    client
        A :class:`scrubin.mentor.client.MentorClient` made with the surgeon token.
    board
        The annotations drawn into the surgeon's frames.
    anchorer
        Ray caster over the registered models, or None (strokes then stay 2-D).
    settle_s
        A stroke is anchored once no update has arrived for this long (s).
    """

    def __init__(self, station: SurgeonStation, client: Any, board: AnnotationBoard,
                 anchorer: Anchorer | None, settle_s: float = 0.15) -> None:
        self.station, self.client, self.board = station, client, board
        self.anchorer, self.settle_s = anchorer, float(settle_s)
        self.session_id = ""
        self.author = ""
        self.recording = False
        self.anchored = 0
        self.anchor_failures: list[str] = []
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._latest: FrameMeta | None = None
        self._new_meta = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.signal: Any = None
        self.on_sfu: Any = None   # called with each sfu-* SignalMessage (issue 10, Janus)
        self.sfu: Any = None      # mentor/sfu_station.SfuPublisher once the server has an SFU
        self.ann: Any = None
        self.on_join: Any = None  # called with the link once joined, before any event
        self.ended = ""           # why the link ended itself (renewal refused), "" while up
        self._server_ice = False  # ICE servers from the server: a fresh TURN credential per peer

    async def start(self, ice_hosts: list[str] | None = None) -> None:
        """Join, open Signal / Annotations / PublishTelemetry (raises MentorError if refused)."""
        import grpc

        from scrubin.mentor.ice import restrict_host_addresses

        self.loop = asyncio.get_running_loop()
        self.station.loop = self.loop
        try:
            # call tokens renewed before they expire (DESIGN "Renewal"); a refusal ends the link
            reply = await self.client.use_call_tokens("surgeon", on_refused=self._renewal_refused)
        except grpc.aio.AioRpcError as exc:
            raise MentorError(f"mentor server refused the station: {exc.code().name} "
                              f"({exc.details()})") from None
        self.session_id, self.author, self.recording = (reply.session_id, reply.author,
                                                        reply.recording)
        if self.on_join is not None:
            self.on_join(self)
        self._server_ice = not self.station.ice_servers
        if self._server_ice:
            self._use_ice(reply.ice_servers)
        hosts = ice_hosts or list(reply.ice_hosts)
        if hosts:
            restrict_host_addresses(hosts)
        self.signal = self.client.signal()
        await self.signal.wait_open()
        self.ann = self.client.annotations(0)
        await self.ann.start()
        self._tasks = [asyncio.create_task(self._signals()),
                       asyncio.create_task(self._annotations()),
                       asyncio.create_task(self._telemetry())]

    async def close(self) -> None:
        """Stop every call and close the viewers' connections."""
        for h in self._pending.values():
            h.cancel()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.sfu is not None:
            await self.sfu.close()
        await self.station.close()
        if self.signal is not None:
            self.signal.close()
        if self.ann is not None:
            with contextlib.suppress(Exception):
                await self.ann.close()

    # ------------------------------------------------------------------ frames
    def frame_sent(self, meta: FrameMeta) -> None:
        """Frame-loop thread: the newest frame's metadata for telemetry (never queued up)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        self._latest = meta
        if self.sfu is not None:
            self.sfu.frame_sent(meta)   # per-frame meta on the Janus publisher's data channel
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._new_meta.set)

    async def _telemetry(self) -> None:
        while True:  # a failed call (server restart, link loss) is reopened after a pause
            await self.client.current_metadata()   # not on a token at its end of life
            pub = self.client.telemetry_publisher()
            try:
                while True:
                    await self._new_meta.wait()
                    self._new_meta.clear()
                    meta = self._latest
                    if meta is not None:
                        await pub.send(telemetry_pb(meta,
                                                    (time.time() - meta.capture_time) * 1e3))
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pub.finish(), 1.0)
                raise
            except Exception as exc:  # telemetry loss must not stop the video
                self.errors.append(f"telemetry: {exc}")
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ signalling
    async def _signals(self) -> None:
        import grpc

        from scrubin.protos import mentor_pb2 as pb

        attempt = 0
        while True:
            try:
                msg = await self.signal.recv()
            except grpc.aio.AioRpcError as exc:
                msg = None
                self.errors.append(f"signalling call failed: {exc.code().name}")
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:  # expired during an outage
                    await self.client.token_refused(self.signal.generation)
            if msg is None:
                # the server restarted or the link dropped: open a new Signal call (a newer
                # station call replaces an older one on the server), backing off to 2 s
                self.errors.append("signalling call ended; reopening")
                self.signal.close()
                await asyncio.sleep(RESIGNAL_S[min(attempt, len(RESIGNAL_S) - 1)])
                attempt += 1
                await self.client.current_metadata()
                self.signal = self.client.signal()
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.TimeoutError):
                    await self.signal.wait_open(5.0)
                    attempt = 0
                continue
            if msg.sdp_type == "offer":
                try:
                    role = pb.Role.Name(msg.role).removeprefix("ROLE_").lower()
                    await self.fresh_ice()
                    sdp = await self.station.answer(msg.peer_id, msg.sdp, role, msg.author)
                    await self.signal.send("answer", sdp, msg.peer_id)
                except MentorError as exc:
                    self.errors.append(f"peer {msg.peer_id}: {exc}")
                    await self.signal.send("bye", "", msg.peer_id)
            elif msg.sdp_type == "bye":
                await self.station.close_peer(msg.peer_id)
            elif msg.sdp_type == "sfu-available":   # serve --sfu: publish once (or again)
                from scrubin.mentor.sfu_station import SfuPublisher
                self.sfu = self.sfu or SfuPublisher(self)
                self.sfu.start()
            elif msg.sdp_type.startswith("sfu-") and self.on_sfu is not None:
                self.on_sfu(msg)   # the server's SFU answer (mentor/sfu.publish_via_link)

    # ------------------------------------------------------------------ annotations
    async def _annotations(self) -> None:
        while True:
            seq, ev = await self.ann.events.get()
            if self.board.apply(seq, ev) and self.station.recorder is not None:
                self.station.recorder.add_event(seq, ev)
            op, aid = ev.get("op"), ev.get("annotation_id", "")
            if op in ("create", "update") and ev.get("kind") != "laser" and ev.get(
                    "role") != "surgeon":
                h = self._pending.pop(aid, None)
                if h is not None:
                    h.cancel()
                self._pending[aid] = asyncio.get_running_loop().call_later(
                    self.settle_s, lambda a=aid, e=ev: asyncio.ensure_future(self._anchor(a, e)))
            elif op in ("delete",):
                h = self._pending.pop(aid, None)
                if h is not None:
                    h.cancel()

    async def _anchor(self, aid: str, ev: dict[str, Any]) -> None:
        self._pending.pop(aid, None)
        item = self.board.items.get(aid)
        if item is None or item.points != ev.get("points"):
            return  # deleted or changed since (a newer update is pending)
        fid = int(ev.get("frame_id", 0))
        meta = self.station.history.get(fid)
        anchors: list[Any] = [None] * len(item.points)
        if self.anchorer is not None and meta is not None:
            try:
                anchors = await asyncio.to_thread(self.anchorer.anchor, meta, item.points)
            except AnchorError as exc:
                self.anchor_failures.append(f"{aid}: {exc}")
        elif meta is None:
            self.anchor_failures.append(f"{aid}: frame {fid} not in the last "
                                        f"{self.station.history.keep_s:.0f} s of metadata")
        state = "anchored" if any(a is not None for a in anchors) else "2d"
        try:
            await self.ann.send({"event_id": str(uuid.uuid4()), "op": "anchor",
                                 "annotation_id": aid, "frame_id": fid,
                                 "capture_time": float(ev.get("capture_time", 0.0)),
                                 "anchors_ref_mm": anchors, "anchor_state": state,
                                 "client_time": time.time()})
            self.anchored += 1
        except MentorError as exc:
            self.anchor_failures.append(f"{aid}: server refused the anchor ({exc})")

    async def _session_op(self, op: str) -> int:
        return int(await self.ann.send({"event_id": str(uuid.uuid4()), "op": op,
                                        "client_time": time.time()}))

    async def hide_all(self) -> int:
        """Hide every mentor annotation (surgeon only); the event's seq."""
        return await self._session_op("hide_all")

    async def show_all(self) -> int:
        """Show the annotations again; the event's seq."""
        return await self._session_op("show_all")

    async def clear_all(self) -> int:
        """Remove every annotation; the event's seq."""
        return await self._session_op("clear_all")

    # ------------------------------------------------------------------ renewal (DESIGN)
    def _use_ice(self, servers: Any) -> None:
        self.station.ice_servers = [u for s in servers for u in s.urls]
        for s in servers:  # a TURN entry carries this station's credential
            if s.username:
                self.station.ice_credentials = (s.username, s.credential)

    async def fresh_ice(self) -> None:
        """A TURN credential issued now for the peer connection about to be made (each viewer's
        offer; call it before any other new peer connection, e.g. into an SFU), so a viewer
        reconnecting hours into the session (or after a blackout) never meets an expired one;
        on failure the last credential is kept (an allocation needs it only while valid)."""
        if not self._server_ice:
            return
        import grpc

        try:
            self._use_ice((await self.client.ice_servers()).ice_servers)
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"fresh ICE servers: {exc.code().name} ({exc.details()})")

    def _renewal_refused(self, message: str) -> None:
        """The server refused to renew the station's call token (the session ended, the token
        was revoked): end the mentoring link - its calls and the viewers' connections - and
        say why. The surgeon's own view goes on."""
        self.ended = f"mentoring link ended: {message}"
        self.errors.append(self.ended)
        log.error("%s", self.ended)
        self._tasks.append(asyncio.ensure_future(self._end()))

    async def _end(self) -> None:
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        for h in self._pending.values():
            h.cancel()
        if self.signal is not None:
            self.signal.close()
        if self.ann is not None:
            with contextlib.suppress(Exception):
                await self.ann.close()
        for pid in list(self.station.peers):
            await self.station.close_peer(pid)
