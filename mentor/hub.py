"""The server's live state: who is connected to which session, and routing between them.

One :class:`Hub` per server, used from the event loop only. It is the single path from a
connection (gRPC stream or WebSocket) to the store: every store call runs on one worker
thread (:meth:`Hub.db`), so SQLite's writes and fsyncs never block the loop.

* Annotations: :meth:`Hub.submit` validates, checks the role, appends the event (seq assigned
  in the store's transaction, a resent ``event_id`` returns the original seq) and broadcasts
  it to every :class:`Feed` of the session, under a per-session lock so broadcasts go out in
  seq order; then it syncs the store to disk before returning (the caller acks after that),
  so the disk's flush delays the author's ack, not the other participants. A :class:`Feed`
  registers for live events *before* reading the replay from the store and then drops
  live events with seq <= the last replayed one, so a resuming client sees every event
  exactly once and in order.
* Telemetry: the station's latest frame is fanned out to watchers; each watcher holds one
  frame at most (a slow watcher skips frames, never delays the station).
* Signalling: the surgeon station's open ``Signal`` call receives each viewer's offer with a
  server-made ``peer_id``; its answers are routed back by that id. No media passes here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scrubin.mentor.errors import MentorError
from scrubin.mentor.events import validate_event
from scrubin.mentor.store import ROLES, Appended, Identity, Store
from scrubin.mentor.tokens import CallTokens, TokenRefusedError, looks_like_jwt
from scrubin.mentor.turn import TurnCredentials
from scrubin.protos import mentor_pb2 as pb

T = TypeVar("T")

# Live events a feed may lag behind before it is closed (the client resumes from its seq).
FEED_BACKLOG = 10000


class AuthError(MentorError):
    """A refused token, cookie or role. ``code`` is "unauthenticated" or "permission"."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class FeedClosedError(MentorError):
    """A feed was closed by the server: it fell more than :data:`FEED_BACKLOG` events behind
    (the client may resume from its last seq), or the session ended."""


@dataclass(eq=False)
class Watcher:
    """A telemetry subscriber: holds the latest frame only; at most one per ``min_interval`` s."""

    min_interval: float = 0.0
    last_put: float = 0.0
    queue: asyncio.Queue[pb.TelemetryFrame] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1))

    def offer(self, frame: pb.TelemetryFrame, now: float) -> None:
        if now - self.last_put < self.min_interval:
            return
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(frame)
        self.last_put = now


@dataclass
class _Session:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    feeds: set[Feed] = field(default_factory=set)
    watchers: set[Watcher] = field(default_factory=set)
    latest: pb.TelemetryFrame | None = None
    frames: int = 0
    station: asyncio.Queue[pb.SignalMessage] | None = None
    viewers: dict[str, asyncio.Queue[pb.SignalMessage]] = field(default_factory=dict)
    presence: set[asyncio.Queue[bool]] = field(default_factory=set)


class Hub:
    """Live routing plus the store (on one worker thread).

    Parameters
    ----------
    store
        The server's :class:`Store`; the hub closes it in :meth:`close`.
    ice_servers
        STUN/TURN URLs handed to clients (empty: host candidates only).
    ice_hosts
        Addresses host candidates are limited to (advisory, handed to clients).
    """

    def __init__(self, store: Store, ice_servers: list[str] | None = None,
                 ice_hosts: list[str] | None = None, call_tokens: CallTokens | None = None,
                 turn: TurnCredentials | None = None) -> None:
        self.store = store
        self.ice_servers = list(ice_servers or [])
        self.ice_hosts = list(ice_hosts or [])
        self.call_tokens = call_tokens  # short-lived JWTs (mentor/tokens.py), None: off
        self.turn = turn  # per-participant TURN credentials (mentor/turn.py), None: off
        self._sfu: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scrubin-store")
        # fsyncs on a thread of their own: the next commit does not wait behind one
        self._sync_executor = ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="scrubin-store-sync")
        #: the last accepted events' timing, ``(event_id, received, committed, broadcast)``
        #: (``time.time()``; the latency bench's breakdown)
        self.submit_times: deque[tuple[str, float, float, float]] = deque(maxlen=2000)
        self._sessions: dict[str, _Session] = {}

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        """Stop the store thread (after its pending calls) and close the store."""
        self._sync_executor.shutdown(wait=True)
        self._executor.submit(self.store.close).result()
        self._executor.shutdown(wait=True)

    def _state(self, session_id: str) -> _Session:
        state = self._sessions.get(session_id)
        if state is None:
            state = self._sessions[session_id] = _Session()
        return state

    @property
    def sfu(self) -> Any:
        """``serve --sfu``: the Janus bridge (mentor/sfu_bridge.SfuBridge), or None."""
        return self._sfu

    @sfu.setter
    def sfu(self, bridge: Any) -> None:
        self._sfu = bridge   # stations already attached publish now (mentor/sfu_station.py)
        for state in self._sessions.values():
            if bridge is not None and state.station is not None:
                state.station.put_nowait(pb.SignalMessage(sdp_type="sfu-available"))

    # -- identity ------------------------------------------------------------------------
    async def identify(self, secret: str, kind: str, action: str, peer: str,
                       roles: tuple[str, ...] = ROLES, session_id: str = "") -> Identity:
        """Check a token (``kind`` "token") or browser cookie (``kind`` "cookie").

        Refusals are audited and raise :class:`AuthError`: unknown/ended/expired ->
        unauthenticated, a role not in ``roles`` or a token of another session than the
        ``session_id`` the call names -> permission. A token in JWT form is a call token
        (:mod:`scrubin.mentor.tokens`; its ``aud`` must be ``session_id``).
        """
        if kind == "token" and self.call_tokens is not None and looks_like_jwt(secret):
            ident = await self._identify_call_token(secret, action, peer, session_id)
        else:
            lookup = self.store.identify_token if kind == "token" else self.store.identify_cookie
            ident = await self.db(lookup, secret) if secret else None
        if ident is not None and session_id and ident.session_id != session_id:
            await self.db(self.store.audit, ident.session_id, ident.role, ident.author or None,
                          "refused", f"{action}: {kind} of another session", peer)
            raise AuthError(f"{action}: the {kind} is for another session", "permission")
        if ident is None or ident.ended or ident.revoked:
            state = "unknown" if not ident else "ended session" if ident.ended else "revoked"
            why = f"{state} {kind}"
            await self.db(self.store.audit, ident.session_id if ident else None,
                          ident.role if ident else None, None, "refused", f"{action}: {why}", peer)
            raise AuthError(f"{action}: {why}", "unauthenticated")
        if ident.role not in roles:
            await self.db(self.store.audit, ident.session_id, ident.role, ident.author or None,
                          "refused", f"{action}: role {ident.role} may not", peer)
            raise AuthError(f"{action}: the {ident.role} role may not do this", "permission")
        return ident

    async def _identify_call_token(self, token: str, action: str, peer: str,
                                   session_id: str) -> Identity | None:
        assert self.call_tokens is not None
        try:
            claims = self.call_tokens.verify(token, session_id)
        except TokenRefusedError as exc:
            await self.db(self.store.audit, exc.session_id or session_id or None, exc.role,
                          None, "refused", f"{action}: {exc}", peer)
            raise AuthError(f"{action}: {exc}", exc.code) from None
        row = await self.db(self.store.session, claims.session_id)
        if row is None:
            return None
        revoked = await self.db(self.store.role_revoked, claims.session_id, claims.role)
        return Identity(claims.session_id, claims.role, bool(row["recording"]), claims.author,
                        ended=row["ended"] is not None, revoked=revoked)

    def issue_call_token(self, ident: Identity, author: str) -> tuple[str, float]:
        """A call token for ``author`` (``("", 0.0)`` when call tokens are off)."""
        if self.call_tokens is None:
            return "", 0.0
        return self.call_tokens.issue(ident.session_id, ident.role, author)

    def surgeon_online(self, session_id: str) -> bool:
        """Whether the session's surgeon station has its Signal call open."""
        state = self._sessions.get(session_id)
        return state is not None and state.station is not None

    async def welcome(self, ident: Identity, author: str) -> dict[str, Any]:
        """The facts a participant gets on joining (WebSocket ``welcome``, gRPC JoinReply)."""
        return {
            "session_id": ident.session_id, "role": ident.role, "author": author,
            "recording": ident.recording, "surgeon_online": self.surgeon_online(ident.session_id),
            "last_seq": await self.db(self.store.last_seq, ident.session_id),
            "ice_servers": [{"urls": [u]} for u in self.ice_servers] + (
                [self.turn.issue(ident.session_id, ident.role)] if self.turn else []),
            "ice_hosts": list(self.ice_hosts),
        }

    # -- annotations ---------------------------------------------------------------------
    async def submit(self, ident: Identity, author: str, raw: Any, peer: str) -> Appended:
        """Validate, store and broadcast one client event; a refusal is audited and raises."""
        state = self._state(ident.session_id)
        t_in = time.time()
        try:
            event = validate_event(raw, ident.role, author)
            async with state.lock:  # broadcasts leave in seq order
                done = await self.db(self.store.append_event, ident.session_id, event, peer,
                                     ident.role == "surgeon")
                t_stored = time.time()
                if not done.duplicate:
                    for feed in list(state.feeds):
                        feed.push(done.seq, done.event)
                    self.submit_times.append((event["event_id"], t_in, t_stored, time.time()))
            # on disk before the author's ack (store docstring)
            await asyncio.get_running_loop().run_in_executor(self._sync_executor,
                                                             self.store.sync)
        except MentorError as exc:
            event_id = raw.get("event_id", "") if isinstance(raw, dict) else ""
            await self.db(self.store.audit, ident.session_id, ident.role, author, "refused",
                          f"annotate {event_id!r}: {exc}", peer)
            raise
        return done

    def end_session(self, session_id: str) -> None:
        """The session was ended: close its feeds (their connections end) and telemetry."""
        state = self._sessions.pop(session_id, None)
        if state is None:
            return
        for feed in list(state.feeds):
            feed.end("the session has ended")

    def open_feed(self, session_id: str) -> Feed:
        """A feed of the session's events (call :meth:`Feed.run`; close it when done)."""
        feed = Feed(self, session_id)
        self._state(session_id).feeds.add(feed)
        return feed

    def _close_feed(self, feed: Feed) -> None:
        state = self._sessions.get(feed.session_id)
        if state is not None:
            state.feeds.discard(feed)

    # -- telemetry -----------------------------------------------------------------------
    def publish_telemetry(self, session_id: str, frame: pb.TelemetryFrame) -> None:
        """Make ``frame`` the session's latest and offer it to every watcher.

        A frame whose id is not newer than the latest's (RFC 1982 serial arithmetic on the
        uint32 ids, which only grow in a session: DESIGN "Frame ids") is dropped: a frame
        resent or delivered late on a publisher call reopened after a link loss."""
        state = self._state(session_id)
        if state.latest is not None and \
                not 0 < (frame.frame_id - state.latest.frame_id) % 2**32 < 2**31:
            return
        state.latest = frame
        state.frames += 1
        now = time.monotonic()
        for w in list(state.watchers):
            w.offer(frame, now)

    def watch(self, session_id: str, min_interval: float = 0.0) -> Watcher:
        """A telemetry watcher (offered the latest frame at once if there is one)."""
        state = self._state(session_id)
        w = Watcher(min_interval)
        if state.latest is not None:
            w.offer(state.latest, time.monotonic())
        state.watchers.add(w)
        return w

    def unwatch(self, session_id: str, watcher: Watcher) -> None:
        """Stop a watcher."""
        self._state(session_id).watchers.discard(watcher)

    # -- presence ------------------------------------------------------------------------
    def presence_queue(self, session_id: str) -> asyncio.Queue[bool]:
        """A queue that receives ``surgeon_online`` each time it changes."""
        q: asyncio.Queue[bool] = asyncio.Queue()
        self._state(session_id).presence.add(q)
        return q

    def drop_presence_queue(self, session_id: str, q: asyncio.Queue[bool]) -> None:
        """Stop a presence queue."""
        self._state(session_id).presence.discard(q)

    def _presence_changed(self, state: _Session) -> None:
        for q in list(state.presence):
            q.put_nowait(state.station is not None)

    # -- signalling ----------------------------------------------------------------------
    def attach_station(self, session_id: str) -> asyncio.Queue[pb.SignalMessage]:
        """Make a new Signal call the session's station (replacing an older one)."""
        state = self._state(session_id)
        q: asyncio.Queue[pb.SignalMessage] = asyncio.Queue()
        state.station = q
        if self.sfu is not None:  # the station publishes into Janus (mentor/sfu_station.py)
            q.put_nowait(pb.SignalMessage(sdp_type="sfu-available"))
        self._presence_changed(state)
        return q

    def detach_station(self, session_id: str, q: asyncio.Queue[pb.SignalMessage]) -> None:
        """The station's Signal call ended (no-op if it had been replaced)."""
        state = self._state(session_id)
        if state.station is q:
            state.station = None
            if self.sfu is not None:  # its Janus feed goes with it
                self.sfu.station_left(session_id)
            self._presence_changed(state)

    def add_viewer(self, session_id: str) -> tuple[str, asyncio.Queue[pb.SignalMessage]]:
        """A new viewer peer: its server-made ``peer_id`` and the queue of its answers."""
        peer_id = uuid.uuid4().hex[:16]
        q: asyncio.Queue[pb.SignalMessage] = asyncio.Queue()
        self._state(session_id).viewers[peer_id] = q
        return peer_id, q

    def forget_viewer(self, session_id: str, peer_id: str) -> None:
        """Drop a viewer the station never heard of (no "bye")."""
        self._state(session_id).viewers.pop(peer_id, None)

    def remove_viewer(self, session_id: str, peer_id: str) -> None:
        """A viewer left: forget it and tell the station ("bye")."""
        state = self._state(session_id)
        if self.sfu is not None:  # its Janus subscription, if any, ends too
            self.sfu.drop_viewer(session_id, peer_id)
        if state.viewers.pop(peer_id, None) is not None and state.station is not None:
            state.station.put_nowait(pb.SignalMessage(peer_id=peer_id, sdp_type="bye"))

    def signal_to_station(self, ident: Identity, author: str, peer_id: str, sdp_type: str,
                          sdp: str) -> None:
        """Forward a viewer's offer to the station (MentorError when it is not connected)."""
        if sdp_type not in ("offer", "bye"):
            raise MentorError(f"signal sdp_type {sdp_type!r}: a viewer sends 'offer' or 'bye'")
        if sdp_type == "offer" and not sdp.startswith("v=0"):
            raise MentorError("signal sdp: not an SDP (expected it to start with 'v=0')")
        state = self._state(ident.session_id)
        if peer_id not in state.viewers:
            raise MentorError(f"signal peer_id {peer_id!r} is not this connection's")
        if state.station is None:
            raise MentorError("the surgeon station is not connected")
        state.station.put_nowait(pb.SignalMessage(
            peer_id=peer_id, sdp_type=sdp_type, sdp=sdp,
            role=pb.Role.Value(f"ROLE_{ident.role.upper()}"), author=author))

    def signal_to_viewer(self, session_id: str, msg: pb.SignalMessage) -> bool:
        """Route the station's answer to the viewer ``msg.peer_id`` (False if it left)."""
        q = self._state(session_id).viewers.get(msg.peer_id)
        if q is None:
            return False
        q.put_nowait(msg)
        return True


class Feed:
    """One connection's view of a session's annotation events: replay, then live, each seq
    exactly once and in increasing order."""

    def __init__(self, hub: Hub, session_id: str) -> None:
        self.hub = hub
        self.session_id = session_id
        self._live: asyncio.Queue[tuple[int, dict[str, Any]] | str] = asyncio.Queue(
            maxsize=FEED_BACKLOG)
        self.last_seq = 0
        self.replayed = asyncio.Event()

    def push(self, seq: int, event: dict[str, Any]) -> None:
        """Called by the hub for each new event (in seq order)."""
        try:
            self._live.put_nowait((seq, event))
        except asyncio.QueueFull:
            self.end(f"more than {FEED_BACKLOG} events behind; resume from seq "
                     f"{self.last_seq}")

    def end(self, reason: str) -> None:
        """Close the feed: :meth:`run` raises FeedClosedError(reason) next."""
        self.hub._close_feed(self)
        while not self._live.empty():  # the reader waits on this queue: drain, not replace
            self._live.get_nowait()
        self._live.put_nowait(reason)

    async def run(self, after_seq: int,
                  emit: Callable[[int, dict[str, Any]], Any]) -> None:
        """Emit every stored event with seq > ``after_seq``, then live ones, until cancelled.

        Raises
        ------
        FeedClosedError
            The consumer fell too far behind (it should resume from :attr:`last_seq`), or the
            session ended.
        """
        self.last_seq = int(after_seq)
        while True:  # the replay is paged: a long session is not read into memory at once
            page = await self.hub.db(self.hub.store.events_after, self.session_id,
                                     self.last_seq, 1000)
            for seq, event in page:
                await emit(seq, event)
                self.last_seq = seq
            if len(page) < 1000:
                break
        self.replayed.set()
        while True:
            item = await self._live.get()
            if isinstance(item, str):
                raise FeedClosedError(item)
            seq, event = item
            if seq <= self.last_seq:
                continue
            await emit(seq, event)
            self.last_seq = seq

    def close(self) -> None:
        """Stop receiving live events."""
        self.hub._close_feed(self)
