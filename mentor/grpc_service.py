"""The gRPC service ``scrubin.mentor.v1.Mentor`` on grpc.aio (protos/scrubin/mentor/v1).

Every call is authenticated from its metadata ``authorization: Bearer <token>``: unknown or
ended tokens end the call with UNAUTHENTICATED, a role that may not make it with
PERMISSION_DENIED (both audited). Health checking (``grpc.health.v1``) and reflection are
registered next to it by :class:`scrubin.mentor.server.MentorServer` and need no token.

``Annotations``: the client sends ``hello{after_seq}`` to receive the replay of every event
with seq > after_seq and then live events; each ``event`` it sends is answered by an
``ack{event_id, seq, duplicate}`` or an ``error``. When the client half-closes, the server
finishes the replay, sends what is queued and ends the call (a listen-once client such as
``grpcurl`` gets the history and an end).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from scrubin.mentor.errors import MentorError
from scrubin.mentor.events import PB_TO_ROLE, event_from_pb, event_to_pb
from scrubin.mentor.hub import AuthError, FeedClosedError, Hub
from scrubin.mentor.store import Identity
from scrubin.mentor.telemetry import check_frame
from scrubin.mentor.tokens import SESSION_HEADER, looks_like_jwt
from scrubin.mentor.turn import ice_server_entries
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc

_END = object()


def author_name(role: str, client_name: str) -> str:
    """The author string of a participant: ``role`` or ``role:client_name``."""
    name = " ".join(client_name.split())[:64]
    return f"{role}:{name}" if name else role


def _bearer(context: grpc.aio.ServicerContext) -> str:
    """The token of the call's ``authorization: Bearer`` metadata ("" when none)."""
    meta = {m.key: m.value for m in context.invocation_metadata() or ()}
    auth = str(meta.get("authorization", ""))
    return auth[7:].strip() if auth.lower().startswith("bearer ") else ""


class MentorService(pb_grpc.MentorServicer):
    """Implementation of ``scrubin.mentor.v1.Mentor`` over a :class:`Hub`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def _identify(self, context: grpc.aio.ServicerContext, action: str,
                        roles: tuple[str, ...] = ("surgeon", "mentor", "observer")
                        ) -> tuple[Identity, str]:
        meta = {m.key: m.value for m in context.invocation_metadata() or ()}
        token = _bearer(context)
        session_id = str(meta.get(SESSION_HEADER, ""))
        try:
            ident = await self.hub.identify(token, "token", action, context.peer(), roles,
                                            session_id)
        except AuthError as exc:
            code = (grpc.StatusCode.UNAUTHENTICATED if exc.code == "unauthenticated"
                    else grpc.StatusCode.PERMISSION_DENIED)
            await context.abort(code, str(exc))
            raise  # pragma: no cover  (abort raises)
        author = ident.author or author_name(ident.role,
                                             str(meta.get("x-scrubin-client-name", "")))
        return ident, author

    async def Join(self, request: pb.JoinRequest,
                   context: grpc.aio.ServicerContext) -> pb.JoinReply:
        """Check the token; audit the join; return the session's facts."""
        ident, _ = await self._identify(context, "Join")
        await self._session_token_only(context, ident, "Join", request.role)
        author = author_name(ident.role, request.client_name)
        # Under mutual TLS the client certificate's CN is part of the audited join.
        cn = b",".join((context.auth_context() or {}).get("x509_common_name", [])).decode(
            "utf-8", "replace")
        await self.hub.db(self.hub.store.audit, ident.session_id, ident.role, author, "join",
                          f"grpc recording={'on' if ident.recording else 'off'}"
                          + (f" client-cert={cn}" if cn else ""), context.peer())
        w = await self.hub.welcome(ident, author)
        call_token, expires = self.hub.issue_call_token(ident, author)
        return pb.JoinReply(
            session_id=w["session_id"], role=pb.Role.Value(f"ROLE_{ident.role.upper()}"),
            author=author, recording=w["recording"], last_seq=w["last_seq"],
            ice_servers=[pb.IceServer(urls=s["urls"], username=s.get("username", ""),
                                      credential=s.get("credential", ""))
                         for s in w["ice_servers"]],
            surgeon_online=w["surgeon_online"], ice_hosts=w["ice_hosts"],
            call_token=call_token, call_token_expires=expires,
        )

    async def _session_token_only(self, context: grpc.aio.ServicerContext, ident: Identity,
                                  action: str, role: int) -> None:
        """Refuse (audited) a call token or another role where the session token is needed."""
        if looks_like_jwt(_bearer(context)):  # else a call token could renew itself forever
            await self.hub.db(self.hub.store.audit, ident.session_id, ident.role,
                              ident.author or None, "refused",
                              f"{action}: a call token cannot renew itself", context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{action}: needs the session token, not a call token")
        if role != pb.ROLE_UNSPECIFIED and PB_TO_ROLE.get(role) != ident.role:
            await self.hub.db(self.hub.store.audit, ident.session_id, ident.role, None, "refused",
                              f"{action}: asked for role {pb.Role.Name(role)}", context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{action}: the token is a {ident.role} token, not "
                                f"{pb.Role.Name(role)}")

    async def Renew(self, request: pb.RenewRequest,
                    context: grpc.aio.ServicerContext) -> pb.RenewReply:
        """A new call token for a participant whose session token still holds (audited).

        The session token, not the call token, authenticates the renewal (mentor/DESIGN.md
        "Renewal"): a stolen call token dies at its ``exp``, and a station whose call token
        expired during a network outage longer than its lifetime can still renew. The session
        is looked up, so an ended session or a revoked token is refused (UNAUTHENTICATED).
        """
        ident, _ = await self._identify(context, "Renew")
        await self._session_token_only(context, ident, "Renew", request.role)
        if self.hub.call_tokens is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "Renew: this server issues no call tokens")
        author = author_name(ident.role, request.client_name)
        token, expires = self.hub.issue_call_token(ident, author)
        jti = self.hub.call_tokens.verify(token, ident.session_id).token_id
        await self.hub.db(self.hub.store.audit, ident.session_id, ident.role, author, "renew",
                          f"grpc call token jti={jti} exp={int(expires)}", context.peer())
        return pb.RenewReply(call_token=token, call_token_expires=expires)

    async def IceServers(self, request: pb.IceServersRequest,
                         context: grpc.aio.ServicerContext) -> pb.IceServersReply:
        """ICE servers with a TURN credential issued now, for one new peer connection."""
        ident, author = await self._identify(context, "IceServers")
        entries = ice_server_entries(self.hub.ice_servers, self.hub.turn, ident.session_id,
                                     ident.role)
        turn = next((e for e in entries if e.get("username")), None)
        if turn is not None:
            await self.hub.db(self.hub.store.audit, ident.session_id, ident.role, author,
                              "turn_credential", f"grpc username={turn['username']}",
                              context.peer())
        return pb.IceServersReply(
            ice_servers=[pb.IceServer(urls=e["urls"], username=e.get("username", ""),
                                      credential=e.get("credential", "")) for e in entries],
            turn_expires=float(turn["expires"]) if turn is not None else 0.0)

    async def Annotations(self, request_iterator: AsyncIterator[pb.AnnotationClientMessage],
                          context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[pb.AnnotationServerMessage]:
        """Bidirectional annotation stream (see the module docstring)."""
        ident, author = await self._identify(context, "Annotations")
        # accepted: say so before anything else, so a client can wait for the verdict before
        # it writes (a write racing a refusal hides the refusal's status behind INTERNAL)
        await context.send_initial_metadata(())
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        feed = self.hub.open_feed(ident.session_id)
        follower: asyncio.Task[None] | None = None
        peer = context.peer()

        async def emit(seq: int, event: dict[str, Any]) -> None:
            await outbox.put(pb.AnnotationServerMessage(
                event=pb.SequencedEvent(seq=seq, event=event_to_pb(event))))

        async def follow(after_seq: int) -> None:
            try:
                await feed.run(after_seq, emit)
            except FeedClosedError as exc:
                await outbox.put(pb.AnnotationServerMessage(error=pb.Error(message=str(exc))))
                await outbox.put(_END)

        async def read() -> None:
            try:
                await read_requests()
            finally:  # whatever ends the reading ends the response stream too
                outbox.put_nowait(_END)

        async def read_requests() -> None:
            nonlocal follower
            async for msg in request_iterator:
                which = msg.WhichOneof("msg")
                if which == "hello":
                    if follower is None:
                        follower = asyncio.create_task(follow(msg.hello.after_seq))
                elif which == "event":
                    raw = event_from_pb(msg.event)
                    try:
                        done = await self.hub.submit(ident, author, raw, peer)
                    except MentorError as exc:
                        await outbox.put(pb.AnnotationServerMessage(
                            error=pb.Error(message=str(exc), event_id=msg.event.event_id)))
                        continue
                    await outbox.put(pb.AnnotationServerMessage(ack=pb.Ack(
                        event_id=msg.event.event_id, seq=done.seq, duplicate=done.duplicate)))
            if follower is not None:  # half-closed: finish the replay, then end
                await feed.replayed.wait()

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await outbox.get()
                if item is _END:
                    break
                yield item
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            feed.close()
            for task in (reader, follower):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def PublishTelemetry(self, request_iterator: AsyncIterator[pb.TelemetryFrame],
                               context: grpc.aio.ServicerContext) -> pb.TelemetrySummary:
        """The station's frames become the session's latest telemetry (surgeon only)."""
        ident, _ = await self._identify(context, "PublishTelemetry", ("surgeon",))
        frames, last = 0, 0
        async for frame in request_iterator:
            try:
                check_frame(frame)
            except MentorError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            self.hub.publish_telemetry(ident.session_id, frame)
            frames += 1
            last = frame.frame_id
        return pb.TelemetrySummary(frames=frames, last_frame_id=last)

    async def WatchTelemetry(self, request: pb.WatchRequest,
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[pb.TelemetryFrame]:
        """The session's telemetry frames as they arrive (a slow reader skips frames)."""
        ident, _ = await self._identify(context, "WatchTelemetry")
        watcher = self.hub.watch(ident.session_id)
        try:
            while True:
                yield await watcher.queue.get()
        finally:
            self.hub.unwatch(ident.session_id, watcher)

    async def _sfu(self, context: grpc.aio.ServicerContext, ident: Any, author: str,
                   peer_id: str, msg: pb.SignalMessage, queue: asyncio.Queue) -> None:
        """An ``sfu-*`` message: the server's SfuBridge answers (``serve --sfu``)."""
        bridge = getattr(self.hub, "sfu", None)
        if bridge is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "this server has no SFU (scrubin serve --sfu)")
        try:
            kind, sdp = await bridge.signal(ident.session_id, ident.role, author, peer_id,
                                            msg.sdp_type, msg.sdp)
        except MentorError as exc:
            await self.hub.db(self.hub.store.audit, ident.session_id, ident.role, author,
                              "sfu_refused", str(exc), context.peer())
            if ident.role == "surgeon":
                # the station's one Signal call also carries every direct viewer's offer: a
                # refused publish (Janus down, a bad offer) is answered, not the call ended
                queue.put_nowait(pb.SignalMessage(peer_id=peer_id, sdp_type="sfu-error",
                                                  sdp=str(exc)))
                return
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        queue.put_nowait(pb.SignalMessage(peer_id=peer_id, sdp_type=kind, sdp=sdp))

    async def Signal(self, request_iterator: AsyncIterator[pb.SignalMessage],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SignalMessage]:
        """WebRTC signalling: the surgeon station's call, or a native viewer's."""
        ident, author = await self._identify(context, "Signal")
        sid = ident.session_id
        if ident.role == "surgeon":
            queue = self.hub.attach_station(sid)
            await self.hub.db(self.hub.store.audit, sid, ident.role, author, "station_online",
                              "", context.peer())

            async def read() -> None:
                async for msg in request_iterator:
                    if msg.sdp_type.startswith("sfu-"):   # issue 10: Janus, mentor/sfu_bridge.py
                        await self._sfu(context, ident, author, "", msg, queue)
                    elif msg.sdp_type == "answer":
                        self.hub.signal_to_viewer(sid, msg)
        else:
            peer_id, queue = self.hub.add_viewer(sid)

            async def read() -> None:
                async for msg in request_iterator:
                    if msg.sdp_type.startswith("sfu-"):
                        await self._sfu(context, ident, author, peer_id, msg, queue)
                        continue
                    try:
                        self.hub.signal_to_station(ident, author, peer_id, msg.sdp_type or
                                                   "offer", msg.sdp)
                    except MentorError as exc:
                        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

        await context.send_initial_metadata(())  # the caller knows it is attached
        reader = asyncio.create_task(read())
        getter: asyncio.Task[pb.SignalMessage] | None = None
        try:
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, reader},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                reader.result()  # re-raise an abort from the reader
                break
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
            if not reader.done():
                reader.cancel()
            if ident.role == "surgeon":
                self.hub.detach_station(sid, queue)
            else:
                self.hub.remove_viewer(sid, peer_id)
