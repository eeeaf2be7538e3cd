"""The HTTPS side of ``scrubin serve`` (aiohttp): the mentor page, join, WebSocket, admin.

Routes (mentor/DESIGN.md):

``GET /m/<session_id>``
    The page (``mentor/static/index.html``). The join token is in the URL *fragment*
    (``#token=...``), which browsers never send, so it is in no request line or log.
``GET /static/*``
    The page's files (``mentor/static/``), nothing from a CDN.
``POST /api/join``  ``{"token": T, "name": optional}``
    Exchanges the token for a cookie ``scrubin_session`` (HttpOnly, Secure, SameSite=Strict,
    path /) bound to the session and role (stored hashed); answers ``{session_id, role,
    author, recording}``. Unknown/ended tokens: 401; audited either way.
``POST /api/ice-servers``
    (cookie) ICE servers with a TURN credential issued now, fetched by the page before each
    new peer connection (the welcome's may have expired during a long session).
``GET /api/ws``
    WebSocket authenticated by that cookie (401 before the upgrade without it). JSON text
    messages as in DESIGN.md "WebSocket /api/ws".
``POST /api/admin/sessions`` ``{"record": bool, "label": str}``, ``POST
/api/admin/sessions/<id>/end``, ``POST /api/admin/sessions/<id>/revoke`` ``{"role": R}``
    For ``scrubin session new|end``: ``Authorization: Bearer <admin token>`` (the secret the
    server keeps in its state folder at mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from scrubin.mentor.errors import MentorError
from scrubin.mentor.grpc_service import author_name
from scrubin.mentor.hub import AuthError, FeedClosedError, Hub
from scrubin.mentor.sfu_bridge import PageSfu
from scrubin.mentor.store import Identity
from scrubin.mentor.telemetry import frame_to_json
from scrubin.mentor.turn import ice_server_entries

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
COOKIE = "scrubin_session"
TELEMETRY_INTERVAL_S = 0.1  # WebSocket telemetry throttle (10 Hz)
MAX_WS_MESSAGE = 4 * 1024 * 1024
HUB_KEY: web.AppKey[Hub] = web.AppKey("hub", Hub)
ADMIN_KEY: web.AppKey[str] = web.AppKey("admin_token", str)
URL_KEY: web.AppKey[Callable[[], str]] = web.AppKey("public_url")
SOCKETS_KEY: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self' wss:; frame-ancestors 'none'"
    ),
}


def _peer(request: web.Request) -> str:
    return str(request.remote or "")


def _check_origin(request: web.Request) -> None:
    """Refuse a browser request made by another site's page (Origin header, RFC 6454
    section 7; RFC 6455 section 10.2 for WebSockets): join and WebSocket are same-origin."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"https://{request.host}":
        raise web.HTTPForbidden(text=f"Origin {origin!r} is not this server")


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        _check_origin(request)
    response = await handler(request)
    if not response.prepared:
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
    return response


async def _page(request: web.Request) -> web.StreamResponse:
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        raise web.HTTPNotFound(text="mentor page not installed (mentor/static/index.html)")
    return web.FileResponse(index)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # Recursion: too deep
        raise web.HTTPBadRequest(text="expected a JSON object body") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object body")
    return body


async def _join(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    body = await _json_body(request)
    token = body.get("token")
    if not isinstance(token, str):
        raise web.HTTPBadRequest(text="'token' must be a string")
    try:
        ident = await hub.identify(token, "token", "web join", _peer(request))
    except AuthError as exc:
        raise web.HTTPUnauthorized(text=str(exc)) from None
    name = body.get("name", "")
    author = author_name(ident.role, name if isinstance(name, str) else "")
    cookie = await hub.db(hub.store.new_cookie, ident, author)
    await hub.db(hub.store.audit, ident.session_id, ident.role, author, "join",
                 f"web recording={'on' if ident.recording else 'off'}", _peer(request))
    response = web.json_response({"session_id": ident.session_id, "role": ident.role,
                                  "author": author, "recording": ident.recording})
    response.set_cookie(COOKIE, cookie, httponly=True, secure=True, samesite="Strict", path="/")
    return response


async def _cookie_ident(request: web.Request, what: str) -> Any:
    """The session cookie's identity for ``what`` (audited by the hub), else 401."""
    try:
        return await request.app[HUB_KEY].identify(request.cookies.get(COOKIE, ""), "cookie",
                                                   what, _peer(request))
    except AuthError as exc:
        raise web.HTTPUnauthorized(text=str(exc)) from None


async def _ws(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    ident = await _cookie_ident(request, "websocket")
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_WS_MESSAGE)
    await ws.prepare(request)
    request.app[SOCKETS_KEY].add(ws)
    await _WsConnection(hub, ident, ws, _peer(request)).run()
    return ws


class _WsConnection:
    """One page's WebSocket: a single writer task drains ``outbox`` (aiohttp sends are not
    to be interleaved from several tasks)."""

    def __init__(self, hub: Hub, ident: Identity, ws: web.WebSocketResponse, peer: str) -> None:
        self.hub, self.ident, self.ws, self.peer = hub, ident, ws, peer
        self.author = ident.author or ident.role
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.tasks: list[asyncio.Task[Any]] = []
        self.feed = hub.open_feed(ident.session_id)
        self.peers: list[str] = []
        # serve --sfu: this page's Janus subscription (mentor/sfu_bridge.PageSfu)
        self.sfu = PageSfu(hub, ident, self.author, peer, self.send) if hub.sfu else None

    def send(self, msg: dict[str, Any]) -> None:
        self.outbox.put_nowait(msg)

    async def _writer(self) -> None:
        while True:
            msg = await self.outbox.get()
            if msg is None:
                await self.ws.close()
                return
            await self.ws.send_str(json.dumps(msg, separators=(",", ":")))

    async def _follow(self, after_seq: int) -> None:
        async def emit(seq: int, event: dict[str, Any]) -> None:
            self.send({"type": "event", "seq": seq, "event": event})
        try:
            await self.feed.run(after_seq, emit)
        except FeedClosedError as exc:
            self.send({"type": "error", "message": str(exc)})
            self.outbox.put_nowait(None)

    async def _telemetry(self) -> None:
        watcher = self.hub.watch(self.ident.session_id, TELEMETRY_INTERVAL_S)
        try:
            while True:
                frame = await watcher.queue.get()
                self.send({"type": "telemetry", **frame_to_json(frame)})
        finally:
            self.hub.unwatch(self.ident.session_id, watcher)

    async def _presence(self) -> None:
        q = self.hub.presence_queue(self.ident.session_id)
        try:
            while True:
                self.send({"type": "presence", "surgeon_online": await q.get()})
        finally:
            self.hub.drop_presence_queue(self.ident.session_id, q)

    async def _signals(self, q: asyncio.Queue[Any]) -> None:
        while True:
            msg = await q.get()
            self.send({"type": "signal", "peer_id": msg.peer_id, "sdp": msg.sdp,
                       "sdp_type": msg.sdp_type})

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "hello":
            if any(t.get_name() == "follow" for t in self.tasks):
                return
            after = msg.get("after_seq", 0)
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise MentorError(f"hello after_seq: {after!r} is not a non-negative integer")
            self.send({"type": "welcome", **await self.hub.welcome(self.ident, self.author),
                       **({"sfu": True} if self.sfu is not None else {})})
            self.tasks.append(asyncio.create_task(self._follow(after), name="follow"))
            if self.sfu is not None:
                self.tasks.append(asyncio.create_task(self.sfu.follow()))
            self.tasks.append(asyncio.create_task(self._telemetry()))
            self.tasks.append(asyncio.create_task(self._presence()))
        elif kind == "annotation":
            event = msg.get("event")
            event_id = event.get("event_id", "") if isinstance(event, dict) else ""
            try:
                done = await self.hub.submit(self.ident, self.author, event, self.peer)
            except MentorError as exc:
                self.send({"type": "error", "message": str(exc), "event_id": event_id})
                return
            self.send({"type": "ack", "event_id": done.event["event_id"], "seq": done.seq,
                       "duplicate": done.duplicate})
        elif kind == "signal":
            sdp_type = msg.get("sdp_type", "offer")
            peer_id = msg.get("peer_id")
            if sdp_type == "offer" and peer_id not in self.peers:
                for old in self.peers:  # a new offer replaces this page's earlier peer
                    self.hub.remove_viewer(self.ident.session_id, old)
                peer_id, q = self.hub.add_viewer(self.ident.session_id)
                self.peers = [peer_id]
                self.tasks.append(asyncio.create_task(self._signals(q)))
            try:
                self.hub.signal_to_station(self.ident, self.author, str(peer_id),
                                           str(sdp_type), str(msg.get("sdp", "")))
            except MentorError:
                if sdp_type == "offer":  # never forwarded: the station never hears of it
                    self.hub.forget_viewer(self.ident.session_id, str(peer_id))
                    self.peers = [p for p in self.peers if p != peer_id]
                raise
        elif kind == "ping":
            self.send({"type": "pong", "t": msg.get("t")})
        elif kind == "sfu" and self.sfu is not None:
            self.sfu.handle(msg)
        else:
            raise MentorError(f"message type {kind!r}: expected hello, annotation, signal "
                              "or ping")

    async def run(self) -> None:
        await self.hub.db(self.hub.store.audit, self.ident.session_id, self.ident.role,
                          self.author, "connect", "websocket", self.peer)
        writer = asyncio.create_task(self._writer())
        try:
            async for raw in self.ws:
                if raw.type != WSMsgType.TEXT:
                    continue
                try:
                    msg = json.loads(raw.data)
                    if not isinstance(msg, dict):
                        raise MentorError("expected a JSON object message")
                    await self._handle(msg)
                except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
                    self.send({"type": "error", "message": "not JSON"})
                except MentorError as exc:
                    self.send({"type": "error", "message": str(exc)})
        finally:
            self.feed.close()
            for peer_id in self.peers:
                self.hub.remove_viewer(self.ident.session_id, peer_id)
            if self.sfu is not None:
                await self.sfu.close()
            for task in (*self.tasks, writer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _admin(request: web.Request) -> None:
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not given or not hmac.compare_digest(given, request.app[ADMIN_KEY]):
        raise web.HTTPUnauthorized(text="admin token missing or wrong")


async def _new_session(request: web.Request) -> web.StreamResponse:
    _admin(request)
    hub = request.app[HUB_KEY]
    body = await _json_body(request)
    record = body.get("record", False)
    label = body.get("label", "")
    if not isinstance(record, bool) or not isinstance(label, str):
        raise web.HTTPBadRequest(text="'record' must be a boolean and 'label' a string")
    made = await hub.db(hub.store.new_session, record, label)
    base = request.app[URL_KEY]().rstrip("/")
    return web.json_response({
        "session_id": made.session_id, "recording": made.recording,
        "tokens": made.tokens,
        "links": {role: f"{base}/m/{made.session_id}#token={tok}"
                  for role, tok in made.tokens.items()},
    })


async def _ice_servers(request: web.Request) -> web.StreamResponse:
    """``POST /api/ice-servers`` (cookie): ``{ice_servers, turn_expires}`` with a TURN
    credential issued now, for the page's next peer connection (DESIGN "Renewal"); audited."""
    hub = request.app[HUB_KEY]
    ident = await _cookie_ident(request, "ice-servers")
    entries = ice_server_entries(hub.ice_servers, hub.turn, ident.session_id, ident.role)
    turn = next((e for e in entries if e.get("username")), None)
    if turn is not None:
        await hub.db(hub.store.audit, ident.session_id, ident.role, ident.author or None,
                     "turn_credential", f"web username={turn['username']}", _peer(request))
    return web.json_response({"ice_servers": entries,
                              "turn_expires": turn["expires"] if turn is not None else 0})


async def _end_session(request: web.Request) -> web.StreamResponse:
    _admin(request)
    hub = request.app[HUB_KEY]
    session_id = request.match_info["session_id"]
    if not await hub.db(hub.store.end_session, session_id):
        raise web.HTTPNotFound(text=f"session {session_id}: unknown or already ended")
    hub.end_session(session_id)
    return web.json_response({"session_id": session_id, "ended": True})


async def _revoke_role(request: web.Request) -> web.StreamResponse:
    """Revoke one role's token (``{"role": R}``): its joins, renewals (the station's link ends
    at its next renewal), call tokens and cookies are refused from now on; audited."""
    _admin(request)
    hub = request.app[HUB_KEY]
    session_id = request.match_info["session_id"]
    role = (await _json_body(request)).get("role")
    if role not in ("surgeon", "mentor", "observer"):
        raise web.HTTPBadRequest(text=f"'role' {role!r}: expected surgeon, mentor or observer")
    if not await hub.db(hub.store.revoke_role, session_id, role):
        raise web.HTTPNotFound(text=f"session {session_id}: no {role} token to revoke")
    return web.json_response({"session_id": session_id, "role": role, "revoked": True})


async def _close_sockets(app: web.Application) -> None:
    """On shutdown, close open WebSockets (1001 going away) so the pages reconnect later."""
    for ws in list(app[SOCKETS_KEY]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def make_app(hub: Hub, admin_token: str, public_url: Callable[[], str]) -> web.Application:
    """The aiohttp application of the server (``public_url()``: its https://HOST:PORT)."""
    app = web.Application(middlewares=[_headers], client_max_size=MAX_WS_MESSAGE)
    app[HUB_KEY] = hub
    app[ADMIN_KEY] = admin_token
    app[URL_KEY] = public_url
    app[SOCKETS_KEY] = weakref.WeakSet()
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/m/{session_id}", _page)
    app.router.add_post("/api/join", _join)
    app.router.add_post("/api/ice-servers", _ice_servers)
    app.router.add_get("/api/ws", _ws)
    app.router.add_post("/api/admin/sessions", _new_session)
    app.router.add_post("/api/admin/sessions/{session_id}/end", _end_session)
    app.router.add_post("/api/admin/sessions/{session_id}/revoke", _revoke_role)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app
