"""gRPC client of ``scrubin.mentor.v1.Mentor`` (surgeon station, headsets, tests).

TLS always: the client trusts exactly the server's certificate file (``scrubin serve``
prints its path and SHA-256 fingerprint). Every call carries ``authorization: Bearer
<token>``. Example::

    async with MentorClient("127.0.0.1:50051", token, cert_path, "station") as client:
        reply = await client.join()
        stream = client.annotations()
        await stream.start()
        seq = await stream.send({"event_id": ..., "op": "create", ...})   # acked seq
        seq, event = await stream.events.get()

:class:`AnnotationStream` delivers every event exactly once and in seq order across
reconnects: it resumes with ``hello{after_seq = last seq seen}``, drops replayed events with
seq <= that, and resends unacknowledged events (the server dedupes them by ``event_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from scrubin.mentor.errors import MentorError
from scrubin.mentor.events import event_from_pb, event_to_pb
from scrubin.mentor.tls import read_pair
from scrubin.mentor.tokens import SESSION_HEADER
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

RECONNECT_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class MentorClient:
    """A TLS gRPC channel to the server, authenticated by one session token.

    Parameters
    ----------
    target
        ``HOST:PORT`` of the server's gRPC side.
    token
        The session token of this participant's role.
    cert_path
        PEM certificate the server presents (its self-signed one, or a CA bundle).
    client_name
        Display name; the author becomes ``role:client_name``.
    client_cert, client_key
        PEM client certificate and key for a server with mutual TLS (``scrubin certs``).
    """

    def __init__(self, target: str, token: str, cert_path: str | Path,
                 client_name: str = "", client_cert: str | Path | None = None,
                 client_key: str | Path | None = None) -> None:
        cert = Path(cert_path)
        if not cert.is_file():
            raise MentorError(f"{cert}: server certificate not found")
        if (client_cert is None) != (client_key is None):
            raise MentorError("client certificate and key go together")
        pair = read_pair(Path(client_cert), Path(client_key)) \
            if client_cert is not None and client_key is not None else (None, None)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes(),
                                             certificate_chain=pair[0], private_key=pair[1])
        self.channel = grpc.aio.secure_channel(target, creds, options=[
            ("grpc.keepalive_time_ms", 20000), ("grpc.keepalive_timeout_ms", 10000),
            ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.min_reconnect_backoff_ms", 250)])
        self.stub = pb_grpc.MentorStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
        if client_name:
            self.metadata += (("x-scrubin-client-name", client_name),)
        self._join_metadata = self.metadata  # Join always goes with the session token
        self.client_name = client_name
        self._renewer: asyncio.Task[None] | None = None

    def use_call_token(self, reply: pb.JoinReply) -> bool:
        """Send ``reply``'s short-lived call token (and its session) on later calls instead
        of the session token; False when the server issued none. Join again to renew it."""
        if not reply.call_token:
            return False
        self.metadata = (("authorization", f"Bearer {reply.call_token}"),
                         (SESSION_HEADER, reply.session_id)) + tuple(
            m for m in self._join_metadata if m[0] != "authorization")
        return True

    async def use_call_tokens(self, role: str = "", renew_at: float = 0.8) -> pb.JoinReply:
        """Join, then authenticate every later call with a call token, renewed by a new Join
        (with the session token) at ``renew_at`` of each token's lifetime until closed.

        Calls opened after a renewal carry the new token; a reconnecting stream picks it up.
        """
        if not 0.1 <= renew_at <= 0.95:
            raise MentorError(f"renew_at {renew_at!r}: expected 0.1..0.95 of the lifetime")
        reply = await self.join(role)
        if self.use_call_token(reply) and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(role, renew_at, reply))
        return reply

    async def _renew(self, role: str, renew_at: float, reply: pb.JoinReply) -> None:
        while True:
            await asyncio.sleep(max(0.05, renew_at * (reply.call_token_expires - time.time())))
            while True:
                try:
                    reply = await self.join(role)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                      grpc.StatusCode.PERMISSION_DENIED):
                        log.warning("call token renewal refused: %s", exc.details())
                        return  # ended session or revoked token: calls will say so
                    log.warning("call token renewal failed (retrying in 1 s): %s",
                                exc.code().name)  # server restarting: streams retry too
                    await asyncio.sleep(1.0)
            self.use_call_token(reply)

    async def __aenter__(self) -> MentorClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (open calls are cancelled)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self.channel.close()

    async def join(self, role: str = "", timeout: float = 10.0) -> pb.JoinReply:
        """``Join``: the session's facts (raises grpc.aio.AioRpcError when refused)."""
        req = pb.JoinRequest(client_name=self.client_name)
        if role:
            req.role = pb.Role.Value(f"ROLE_{role.upper()}")
        return await self.stub.Join(req, metadata=self._join_metadata, timeout=timeout)

    def annotations(self, after_seq: int = 0) -> AnnotationStream:
        """An annotation stream that resumes after ``after_seq`` (call ``start()``)."""
        return AnnotationStream(self, after_seq)

    def telemetry_publisher(self) -> TelemetryPublisher:
        """A ``PublishTelemetry`` call (surgeon token)."""
        return TelemetryPublisher(self)

    async def watch_telemetry(self) -> AsyncIterator[pb.TelemetryFrame]:
        """The session's telemetry frames as they arrive."""
        call = self.stub.WatchTelemetry(pb.WatchRequest(), metadata=self.metadata)
        try:
            async for frame in call:
                yield frame
        finally:
            call.cancel()

    def signal(self) -> SignalStream:
        """A ``Signal`` call (the station's, or a native viewer's)."""
        return SignalStream(self)


class AnnotationStream:
    """Exactly-once, in-order annotation events over a reconnecting ``Annotations`` call.

    ``events`` receives ``(seq, event_dict)``; ``errors`` the server's refusals
    ``(event_id, message)``. ``send`` returns the event's seq once the server acknowledges it
    (raises MentorError if the server refuses it).
    """

    def __init__(self, client: MentorClient, after_seq: int = 0) -> None:
        self.client = client
        self.last_seq = int(after_seq)
        self.events: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self.errors: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.connects = 0
        self.dropped_replays = 0
        self._pending: dict[str, tuple[pb.AnnotationEvent, asyncio.Future[int]]] = {}
        self._call: Any = None
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False

    async def start(self, timeout: float = 10.0) -> None:
        """Connect (and keep reconnecting); returns once the first hello is sent."""
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def send(self, event: dict[str, Any]) -> int:
        """Send an event (kept until acknowledged, resent after a reconnect); its seq."""
        msg = event_to_pb(event)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[msg.event_id] = (msg, fut)
        await self._write(msg)
        return await fut

    async def _write(self, msg: pb.AnnotationEvent) -> None:
        # Under the lock the reconnect also takes: either the reconnect's resend of the
        # pending events sees this one, or this write sees the new call connected.
        async with self._write_lock:
            call = self._call
            if call is None or not self._connected.is_set():
                return  # sent with the other pending events on (re)connection
            try:
                await call.write(pb.AnnotationClientMessage(event=msg))
            except (grpc.aio.AioRpcError, grpc.aio.UsageError,
                    asyncio.InvalidStateError) as exc:
                log.debug("annotation write failed (resent after reconnect): %s", exc)

    def drop_connection(self) -> None:
        """Cancel the current call as a network failure would (the stream reconnects)."""
        if self._call is not None:
            self._call.cancel()

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            call = self.client.stub.Annotations(metadata=self.client.metadata)
            self._call = call
            try:
                async with self._write_lock:
                    await call.write(pb.AnnotationClientMessage(
                        hello=pb.Hello(after_seq=self.last_seq)))
                    for msg, _ in list(self._pending.values()):
                        await call.write(pb.AnnotationClientMessage(event=msg))
                    self.connects += 1
                    self._connected.set()
                while True:
                    reply = await call.read()
                    if reply is grpc.aio.EOF:
                        break
                    attempt = 0
                    self._on_reply(reply)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.PERMISSION_DENIED):
                    self._fail_all(MentorError(f"annotations refused: {exc.details()}"))
                    self._connected.set()
                    raise MentorError(f"annotations refused: {exc.details()}") from None
                log.debug("annotation stream dropped: %s", exc.code())
            except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                log.debug("annotation stream dropped while writing: %s", exc)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing or (task is not None and task.cancelling()):
                    raise  # our task is being cancelled; only the call was cancelled otherwise
            finally:
                self._connected.clear()
                self._call = None
            if self._closing:
                break
            await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
            attempt += 1

    def _on_reply(self, reply: pb.AnnotationServerMessage) -> None:
        which = reply.WhichOneof("msg")
        if which == "event":
            seq = reply.event.seq
            if seq <= self.last_seq:
                self.dropped_replays += 1
                return
            self.last_seq = seq
            event = event_from_pb(reply.event.event)
            self._resolve(event["event_id"], seq)
            self.events.put_nowait((seq, event))
        elif which == "ack":
            self._resolve(reply.ack.event_id, reply.ack.seq)
        elif which == "error":
            pending = self._pending.pop(reply.error.event_id, None)
            if pending is not None and not pending[1].done():
                pending[1].set_exception(MentorError(reply.error.message))
            self.errors.put_nowait((reply.error.event_id, reply.error.message))

    def _resolve(self, event_id: str, seq: int) -> None:
        pending = self._pending.pop(event_id, None)
        if pending is not None and not pending[1].done():
            pending[1].set_result(seq)

    def _fail_all(self, exc: Exception) -> None:
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    async def close(self) -> None:
        """End the stream (pending sends fail)."""
        self._closing = True
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MentorError):
                await self._task
        self._fail_all(MentorError("annotation stream closed"))


class TelemetryPublisher:
    """The station's ``PublishTelemetry`` call: ``send`` frames, ``finish`` for the summary."""

    def __init__(self, client: MentorClient) -> None:
        self._call = client.stub.PublishTelemetry(metadata=client.metadata)

    async def send(self, frame: pb.TelemetryFrame) -> None:
        """Write one frame (waits for flow control)."""
        await self._call.write(frame)

    async def finish(self) -> pb.TelemetrySummary:
        """Half-close and return the server's summary."""
        await self._call.done_writing()
        return await self._call


class SignalStream:
    """A ``Signal`` call: ``send`` offers/answers, ``recv`` the other side's messages."""

    def __init__(self, client: MentorClient) -> None:
        self._call = client.stub.Signal(metadata=client.metadata)

    async def send(self, sdp_type: str, sdp: str = "", peer_id: str = "") -> None:
        """Send an offer (viewer), an answer (station, with the offer's peer_id) or bye."""
        await self._call.write(pb.SignalMessage(peer_id=peer_id, sdp_type=sdp_type, sdp=sdp))

    async def recv(self) -> pb.SignalMessage | None:
        """The next message (None when the call ended)."""
        msg = await self._call.read()
        return None if msg is grpc.aio.EOF else msg

    async def wait_open(self, timeout: float = 10.0) -> None:
        """Wait until the server has accepted the call (its headers arrived)."""
        await asyncio.wait_for(self._call.initial_metadata(), timeout)

    def close(self) -> None:
        """Cancel the call."""
        self._call.cancel()
