"""The server's side of the Janus path: one locked room per session, subscriptions on demand.

``scrubin serve --sfu URL --sfu-secrets F`` builds an :class:`SfuBridge`. Janus only forwards
media; our server keeps tokens, signalling, annotations and audit. The bridge:

* refuses a Janus API URL that is not on a loopback address (Janus's HTTP API must listen on
  127.0.0.1 only, see :mod:`scrubin.mentor.sfu_janus`) and a secrets file without
  ``api_secret`` / ``admin_key`` (written by :func:`scrubin.mentor.sfu_janus.write_config`);
* checks at start that Janus answers and accepts our ``api_secret`` (a Janus that accepts a
  session *without* it is refused: anyone on the host could then make rooms);
* makes one private room per mentoring session, locked with a random ``pin`` (join) and
  ``secret`` (edit/destroy) that never leave the server except to the session's own station
  (publisher) and, per subscription, inside the server (:meth:`subscribe` returns Janus's SDP
  offer; the observer answers through our signalling);
* calls ``audit(session_id, what)`` for every room made and every subscription;
* keeps one publisher per session: a new ``sfu-offer`` of the station (it republishes after
  its ``Signal`` call was reopened) replaces the room's old publisher, and
  :meth:`SfuBridge.station_left` drops it when the station's call ends; the pages that
  follow the session (:meth:`SfuBridge.listen`) are told each time the feed comes or goes;
* serves the mentor page's subscription over its WebSocket (:class:`PageSfu`, mentor/web.py):
  the same ``sfu-subscribe`` -> ``sfu-offer`` -> ``sfu-answer`` -> ``sfu-started`` exchange
  as the ``Signal`` call's, as JSON ``{"type": "sfu", "sdp_type": ..., "sdp": ...}``, plus
  ``{"type": "sfu", "feed": true|false}`` whenever the station's feed comes or goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scrubin.mentor import sfu
from scrubin.mentor.errors import MentorError
from scrubin.mentor.sfu import RoomKeys, SfuError

PUBLISHER_UP_S = 15.0   # a publisher's WebRTC must be up within this long (s)


def read_secrets(path: Path) -> tuple[str, str]:
    """``(api_secret, admin_key)`` from the JSON file ``scrubin serve --sfu-secrets`` names."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SfuError(f"--sfu-secrets {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise SfuError(f"--sfu-secrets {path}: not JSON") from None
    if not isinstance(data, dict):
        raise SfuError(f"--sfu-secrets {path}: expected a JSON object")
    for key in ("api_secret", "admin_key"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise SfuError(f"--sfu-secrets {path}: field {key!r} missing or empty")
    return data["api_secret"], data["admin_key"]


def check_url(url: str) -> str:
    """The URL if it is ``http(s)://<loopback address>:PORT/...``, else :class:`SfuError`."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SfuError(f"--sfu {url!r}: expected http://127.0.0.1:PORT/janus")
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if not loopback:
        raise SfuError(f"--sfu {url!r}: Janus's API must be on a loopback address "
                       "(127.0.0.1), not reachable from the network")
    return url


class SfuBridge:
    """Rooms and subscriptions on one Janus (module docstring)."""

    def __init__(self, url: str, api_secret: str, admin_key: str,
                 audit: Callable[[str, str], Any] | None = None) -> None:
        self.url = check_url(url)
        self.api_secret, self.admin_key = api_secret, admin_key
        self.audit = audit
        self.rooms: dict[str, RoomKeys] = {}
        self.feeds: dict[str, int] = {}         # session id -> the station's publisher id
        self._session: sfu.JanusSession | None = None
        self._handle: sfu.VideoRoomHandle | None = None
        self._subs: list[sfu.JanusSession] = []
        self._pending: dict[tuple[str, str], sfu.VideoRoomHandle] = {}
        self._publishers: dict[str, sfu.JanusSession] = {}     # session id -> its publisher
        self._viewers: dict[tuple[str, str], sfu.JanusSession] = {}   # (session, peer) -> sub
        self._listeners: dict[str, set[asyncio.Queue[bool]]] = {}

    async def start(self) -> None:
        """Check Janus answers and insists on the API secret; open the admin session."""
        open_session = sfu.JanusSession(self.url)
        try:
            await open_session.create()
        except SfuError as exc:
            if "error 403" not in str(exc):
                raise SfuError(f"--sfu {self.url}: Janus not reachable ({exc})") from None
        else:
            await open_session.destroy()
            raise SfuError(f"--sfu {self.url}: Janus accepts sessions without an api_secret; "
                           "configure it with scrubin.mentor.sfu_janus.write_config")
        self._session = sfu.JanusSession(self.url, self.api_secret)
        await self._session.create()
        self._handle = await self._session.attach()

    async def room_for(self, session_id: str) -> RoomKeys:
        """The session's locked room (made on first use)."""
        if self._handle is None:
            raise SfuError("SFU bridge not started")
        keys = self.rooms.get(session_id)
        if keys is None:
            keys = await sfu.create_room(self._handle, self.admin_key, f"scrubin {session_id}")
            self.rooms[session_id] = keys
            if self.audit:
                self.audit(session_id, f"sfu room {keys.room} created (private, pin, secret)")
        return keys

    def set_feed(self, session_id: str, feed: int) -> None:
        """The station's publisher id in the session's room (after it published)."""
        self.feeds[session_id] = int(feed)
        self._notify(session_id, True)

    # -- who follows the feed --------------------------------------------------------------
    def listen(self, session_id: str) -> asyncio.Queue[bool]:
        """A queue that gets whether the session has a feed now and each time that changes."""
        q: asyncio.Queue[bool] = asyncio.Queue()
        q.put_nowait(session_id in self.feeds)
        self._listeners.setdefault(session_id, set()).add(q)
        return q

    def unlisten(self, session_id: str, q: asyncio.Queue[bool]) -> None:
        """Stop a :meth:`listen` queue."""
        self._listeners.get(session_id, set()).discard(q)

    def _notify(self, session_id: str, ready: bool) -> None:
        for q in list(self._listeners.get(session_id, ())):
            q.put_nowait(ready)

    def _drop(self, s: sfu.JanusSession | None) -> None:
        """Destroy a Janus session in the background (its handles and peers go with it)."""
        if s is not None:
            with contextlib.suppress(ValueError):
                self._subs.remove(s)
            asyncio.ensure_future(s.destroy())

    async def _feed_when_up(self, session_id: str, s: sfu.JanusSession,
                            h: sfu.VideoRoomHandle) -> None:
        """The feed is offered to viewers once Janus says the publisher's WebRTC is up
        (``webrtcup``): before that a subscriber's join is refused (428 "No such feed")."""
        q = s._queues[h.handle_id]
        try:
            async with asyncio.timeout(PUBLISHER_UP_S):
                while (await q.get()).get("janus") != "webrtcup":
                    pass
        except TimeoutError:
            if self.audit and self._publishers.get(session_id) is s:
                self.audit(session_id, f"sfu publisher not up within {PUBLISHER_UP_S:.0f} s")
            return
        if self._publishers.get(session_id) is s and h.peer_id is not None:
            self.set_feed(session_id, h.peer_id)

    def station_left(self, session_id: str) -> None:
        """The station's Signal call ended: its publisher leaves the room, pages are told."""
        had = self.feeds.pop(session_id, None) is not None
        self._drop(self._publishers.pop(session_id, None))
        if had:
            self._notify(session_id, False)

    def drop_viewer(self, session_id: str, peer_id: str) -> None:
        """A viewer left: its subscription's Janus session is destroyed."""
        self._pending.pop((session_id, peer_id), None)
        self._drop(self._viewers.pop((session_id, peer_id), None))

    async def subscribe(self, session_id: str, author: str, peer_id: str = ""
                        ) -> tuple[sfu.VideoRoomHandle, str]:
        """A subscription for one observer: (its handle, Janus's SDP offer). A viewer's
        (``peer_id``) earlier subscription is ended first."""
        feed = self.feeds.get(session_id)
        if feed is None and session_id in self._publishers:   # published, not yet up
            q = self.listen(session_id)
            try:
                async with asyncio.timeout(PUBLISHER_UP_S):
                    while not await q.get():
                        pass
            except TimeoutError:
                pass
            finally:
                self.unlisten(session_id, q)
            feed = self.feeds.get(session_id)
        if feed is None:
            raise SfuError(f"session {session_id}: the station has not published to the SFU")
        keys = await self.room_for(session_id)
        if peer_id:
            self.drop_viewer(session_id, peer_id)
        s = sfu.JanusSession(self.url, self.api_secret)
        await s.create()
        self._subs.append(s)
        if peer_id:
            self._viewers[(session_id, peer_id)] = s
        h = await s.attach()
        offer = await sfu.subscribe_offer(h, keys, feed)
        if self.audit:
            self.audit(session_id, f"sfu subscription for {author}")
        return h, offer

    async def signal(self, session_id: str, role: str, author: str, peer_id: str, kind: str,
                     sdp: str) -> tuple[str, str]:
        """One ``sfu-*`` message of a ``Signal`` call; the reply ``(sdp_type, sdp)``.

        - surgeon ``sfu-offer`` (the station's sendonly H.264 offer): joined as the room's
          publisher, ``publish``; reply ``sfu-answer`` (Janus's answer);
        - mentor or observer ``sfu-subscribe``: a subscription to the station's feed; reply
          ``sfu-offer`` (Janus's offer), then the viewer's ``sfu-answer`` -> ``start``; reply
          ``sfu-started``.
        """
        if kind == "sfu-offer":
            if role != "surgeon":
                raise SfuError(f"signal {kind}: only the surgeon station publishes")
            if not sdp.startswith("v=0"):
                raise SfuError("signal sdp: not an SDP (expected it to start with 'v=0')")
            keys = await self.room_for(session_id)
            # one publisher per room: a station that publishes again replaces its old one
            old = self._publishers.pop(session_id, None)
            if old is not None:
                self.feeds.pop(session_id, None)
                self._notify(session_id, False)
                with contextlib.suppress(ValueError):
                    self._subs.remove(old)
                await old.destroy()
            s = sfu.JanusSession(self.url, self.api_secret)
            await s.create()
            self._subs.append(s)
            self._publishers[session_id] = s
            h = await s.attach()
            data, _ = await h.message({"request": "join", "ptype": "publisher",
                                       "room": keys.room, "pin": keys.pin,
                                       "display": author})
            h.peer_id = int(data["id"])
            data, jsep = await h.message({"request": "publish", "audio": "m=audio" in sdp,
                                          "video": True, "data": "m=application" in sdp},
                                         {"type": "offer", "sdp": sdp})
            if jsep is None or jsep.get("type") != "answer":
                raise SfuError(f"VideoRoom publish: no SDP answer ({data})")
            asyncio.ensure_future(self._feed_when_up(session_id, s, h))
            if self.audit:
                self.audit(session_id, f"sfu publisher {author}")
            return "sfu-answer", str(jsep["sdp"])
        if kind == "sfu-subscribe":
            if role == "surgeon":
                raise SfuError(f"signal {kind}: the surgeon station publishes, not subscribes")
            h, offer = await self.subscribe(session_id, author, peer_id)
            self._pending[(session_id, peer_id)] = h
            return "sfu-offer", offer
        if kind == "sfu-answer":
            h = self._pending.pop((session_id, peer_id), None)
            if h is None:
                raise SfuError("signal sfu-answer without an sfu-subscribe on this call")
            await sfu.subscribe_answer(h, self.rooms[session_id], sdp)
            return "sfu-started", ""
        raise SfuError(f"signal sdp_type {kind!r}: expected sfu-offer, sfu-subscribe or "
                       "sfu-answer")

    async def close(self) -> None:
        """Destroy the rooms and sessions this bridge made."""
        for keys in self.rooms.values():
            if self._handle is not None:
                try:
                    await self._handle.request({"request": "destroy", "room": keys.room,
                                                "secret": keys.secret})
                except SfuError:
                    pass
        for s in self._subs:
            await s.destroy()
        if self._session is not None:
            await self._session.destroy()
        self.rooms.clear()


class PageSfu:
    """One mentor page's Janus subscription over its WebSocket (mentor/web.py ``/api/ws``).

    The page (mentor/static/sfu.js) sends ``{"type": "sfu", "sdp_type": "sfu-subscribe"}``
    and gets ``{"type": "sfu", "sdp_type": "sfu-offer", "sdp": Janus's offer}``; it answers
    ``{"type": "sfu", "sdp_type": "sfu-answer", "sdp": ...}`` and gets ``sfu-started``; an
    integer ``req`` of the page's message is echoed in the reply (a page that asked again
    ignores the answers to its earlier requests). A refusal is ``{"type": "sfu", "sdp_type":
    "sfu-error", "message": ...}`` and audited
    ``sfu_refused`` (as on the ``Signal`` call). :meth:`follow` sends ``{"type": "sfu",
    "feed": bool}`` at once and whenever the station's feed comes or goes. The WebSocket was
    authenticated by the join cookie before any of this (no cookie, no subscription).

    Parameters
    ----------
    hub
        The server's :class:`~scrubin.mentor.hub.Hub` (``hub.sfu`` is the bridge).
    ident, author, peer
        The page's identity, author name and network peer (for the audit log).
    send
        Queues one JSON message to the page.
    """

    def __init__(self, hub: Any, ident: Any, author: str, peer: str,
                 send: Callable[[dict[str, Any]], None]) -> None:
        self.hub, self.ident, self.author, self.peer, self.send = hub, ident, author, peer, send
        self.bridge: SfuBridge = hub.sfu
        self.key = f"ws-{id(self):x}"
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def follow(self) -> None:
        """Tell the page whether the station's feed is there, now and on each change."""
        sid = self.ident.session_id
        q = self.bridge.listen(sid)
        try:
            while True:
                self.send({"type": "sfu", "feed": await q.get()})
        finally:
            self.bridge.unlisten(sid, q)

    def handle(self, msg: dict[str, Any]) -> None:
        """One ``sfu`` message of the page (answered in the background, in order)."""
        task = asyncio.ensure_future(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind, sdp, req = msg.get("sdp_type"), msg.get("sdp", ""), msg.get("req")
        if not isinstance(req, int) or isinstance(req, bool):
            req = None
        async with self._lock:
            try:
                if kind not in ("sfu-subscribe", "sfu-answer") or not isinstance(sdp, str):
                    raise SfuError(f"sfu sdp_type {kind!r}: a page sends sfu-subscribe or "
                                   "sfu-answer (with an SDP string)")
                reply, out = await self.bridge.signal(
                    self.ident.session_id, self.ident.role, self.author, self.key, kind, sdp)
            except MentorError as exc:
                await self.hub.db(self.hub.store.audit, self.ident.session_id, self.ident.role,
                                  self.author, "sfu_refused", str(exc), self.peer)
                self.send({"type": "sfu", "sdp_type": "sfu-error", "message": str(exc),
                           "req": req})
                return
            self.send({"type": "sfu", "sdp_type": reply, "sdp": out, "req": req})

    async def close(self) -> None:
        """The page left: its subscription ends (after any request still being answered)."""
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        self.bridge.drop_viewer(self.ident.session_id, self.key)

