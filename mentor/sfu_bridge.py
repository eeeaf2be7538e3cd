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
* calls ``audit(session_id, what)`` for every room made and every subscription.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scrubin.mentor import sfu
from scrubin.mentor.sfu import RoomKeys, SfuError


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

    async def subscribe(self, session_id: str, author: str
                        ) -> tuple[sfu.VideoRoomHandle, str]:
        """A subscription for one observer: (its handle, Janus's SDP offer)."""
        feed = self.feeds.get(session_id)
        if feed is None:
            raise SfuError(f"session {session_id}: the station has not published to the SFU")
        keys = await self.room_for(session_id)
        s = sfu.JanusSession(self.url, self.api_secret)
        await s.create()
        self._subs.append(s)
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
        - any other role ``sfu-subscribe``: a subscription to the station's feed; reply
          ``sfu-offer`` (Janus's offer), then the viewer's ``sfu-answer`` -> ``start``; reply
          ``sfu-started``.
        """
        if kind == "sfu-offer":
            if role != "surgeon":
                raise SfuError(f"signal {kind}: only the surgeon station publishes")
            if not sdp.startswith("v=0"):
                raise SfuError("signal sdp: not an SDP (expected it to start with 'v=0')")
            keys = await self.room_for(session_id)
            s = sfu.JanusSession(self.url, self.api_secret)
            await s.create()
            self._subs.append(s)
            h = await s.attach()
            data, _ = await h.message({"request": "join", "ptype": "publisher",
                                       "room": keys.room, "pin": keys.pin,
                                       "display": author})
            h.peer_id = int(data["id"])
            data, jsep = await h.message({"request": "publish", "audio": False,
                                          "video": True, "data": False},
                                         {"type": "offer", "sdp": sdp})
            if jsep is None or jsep.get("type") != "answer":
                raise SfuError(f"VideoRoom publish: no SDP answer ({data})")
            self.set_feed(session_id, h.peer_id)
            if self.audit:
                self.audit(session_id, f"sfu publisher {author}")
            return "sfu-answer", str(jsep["sdp"])
        if kind == "sfu-subscribe":
            h, offer = await self.subscribe(session_id, author)
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
