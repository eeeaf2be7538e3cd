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
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from scrubin.mentor.errors import MentorError
from scrubin.mentor.events import event_from_pb, event_to_pb
from scrubin.mentor.tls import read_pair
from scrubin.mentor.tokens import SESSION_HEADER, unverified_lifetime
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

RECONNECT_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
RENEW_AT = 2 / 3          # renew a call token at this fraction of its lifetime ...
RENEW_JITTER = 0.1        # ... +- this fraction (stations do not renew in step)
RENEW_RETRY_S = (0.25, 0.5, 1.0, 2.0, 4.0)   # back-off of a failed renewal (x U(0.5, 1))


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
        self.session_id = ""
        self._role = ""
        self._renewer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._token_changed = asyncio.Event()
        self._token_life = (0.0, 0.0)   # (exp - iat, time.monotonic() on receipt)
        self.token_generation = 0   # +1 per call token taken into use
        self.token_expires = 0.0    # exp of the current call token (Unix s; 0: none)
        self.renewals = 0
        self.refused = ""           # why the server refused a renewal ("" while it has not)
        self.on_refused: Callable[[str], None] | None = None

    def use_call_token(self, reply: pb.JoinReply) -> bool:
        """Send ``reply``'s short-lived call token (and its session) on later calls instead
        of the session token; False when the server issued none. :meth:`use_call_tokens`
        also renews it."""
        if not reply.call_token:
            return False
        self.session_id = reply.session_id
        self._set_call_token(reply.call_token, reply.call_token_expires)
        return True

    def _set_call_token(self, token: str, expires: float) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),
                         (SESSION_HEADER, self.session_id)) + tuple(
            m for m in self._join_metadata if m[0] != "authorization")
        self.token_expires = float(expires)
        self._token_life = (unverified_lifetime(token), time.monotonic())
        self.token_generation += 1
        self._token_changed.set()
        self._token_changed = asyncio.Event()

    async def use_call_tokens(self, role: str = "", renew_at: float = RENEW_AT,
                              jitter: float = RENEW_JITTER,
                              on_refused: Callable[[str], None] | None = None) -> pb.JoinReply:
        """Join, then authenticate every later call with a call token renewed before it
        expires (mentor/DESIGN.md "Renewal").

        A ``Renew`` (authenticated by the session token) is made at ``renew_at`` ± ``jitter``
        of each token's lifetime (``exp - iat``, so a skew between the clocks does not
        matter); a renewal that fails for want of the server (unreachable, restarting) is
        retried with jittered back-off (:data:`RENEW_RETRY_S`) for as long as it takes. A
        renewal the server refuses (the session ended, the token was revoked) stops it:
        :attr:`refused` says why and ``on_refused(message)`` is called once. Calls opened after
        a renewal carry the new token (the reconnecting streams read :attr:`metadata` anew).
        """
        if not 0.1 <= renew_at <= 0.95 or not 0.0 <= jitter <= 0.25 \
                or not 0.05 <= renew_at - jitter or renew_at + jitter > 0.95:
            raise MentorError(f"renew_at {renew_at!r} +- jitter {jitter!r}: expected renew_at in "
                              "0.1..0.95 of the lifetime, jitter 0..0.25, together in 0.05..0.95")
        reply = await self.join(role)
        self._role = role
        self.on_refused = on_refused
        if self.use_call_token(reply) and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(renew_at, jitter))
        return reply

    async def renew(self, timeout: float = 5.0) -> pb.RenewReply:
        """One ``Renew`` with the session token (raises grpc.aio.AioRpcError when refused)."""
        req = pb.RenewRequest(client_name=self.client_name)
        if self._role:
            req.role = pb.Role.Value(f"ROLE_{self._role.upper()}")
        return await self.stub.Renew(req, metadata=self._join_metadata, timeout=timeout)

    async def _renew(self, renew_at: float, jitter: float) -> None:
        while True:
            life, got_at = self._token_life
            due = got_at + life * (renew_at + random.uniform(-jitter, jitter))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - time.monotonic()))
            self._wake.clear()
            attempt = 0
            while True:
                try:
                    reply = await self.renew()
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                      grpc.StatusCode.PERMISSION_DENIED,
                                      grpc.StatusCode.FAILED_PRECONDITION):
                        self._refuse(f"the mentor server refused to renew the call token "
                                     f"({exc.code().name}: {exc.details()})")
                        return
                    pause = RENEW_RETRY_S[min(attempt, len(RENEW_RETRY_S) - 1)]
                    pause *= random.uniform(0.5, 1.0)   # jitter: stations do not retry in step
                    log.warning("call token renewal failed (%s), retrying in %.1f s",
                                exc.code().name, pause)
                    attempt += 1
                    await asyncio.sleep(pause)
            self._set_call_token(reply.call_token, reply.call_token_expires)
            self._wake.clear()   # a wake-up asked during the retries is answered by this one
            self.renewals += 1

    def _refuse(self, message: str) -> None:
        self.refused = message
        log.warning("%s", message)
        self._token_changed.set()
        if self.on_refused is not None:
            self.on_refused(message)

    async def token_refused(self, generation: int, timeout: float = 30.0) -> bool:
        """A call made with the token of ``generation`` was refused UNAUTHENTICATED: renew at
        once (unless a newer token exists) and say whether a retry can succeed (False: no
        renewal here, or the server refused it - :attr:`refused` says why)."""
        if self._renewer is None or self._renewer.done() or self.refused:
            return False
        if generation != self.token_generation:
            return True
        changed = self._token_changed
        self._wake.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        return not self.refused

    async def current_metadata(self, timeout: float = 10.0) -> tuple[tuple[str, str], ...]:
        """The metadata for a call about to open. When the call token is at (or within
        ``min(1 s, 10 %)`` of) the end of its life - a renewal delayed by a network outage -
        renew first (waiting at most ``timeout``) rather than open the call with a token the
        server will refuse."""
        life, got_at = self._token_life
        if self._renewer is not None and not self._renewer.done() and not self.refused \
                and life > 0 and time.monotonic() > got_at + life - min(1.0, 0.1 * life):
            changed = self._token_changed
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        return self.metadata

    async def ice_servers(self, timeout: float = 5.0) -> pb.IceServersReply:
        """``IceServers``: STUN/TURN entries with a TURN credential issued now, for one new
        peer connection (raises grpc.aio.AioRpcError when refused)."""
        return await self.stub.IceServers(pb.IceServersRequest(), metadata=self.metadata,
                                          timeout=timeout)

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
            metadata = await self.client.current_metadata()
            generation = self.client.token_generation   # the token this call goes with
            call = self.client.stub.Annotations(metadata=metadata)
            self._call = call
            try:
                async with self._write_lock:
                    # the server's verdict on the token first: a write racing a refusal would
                    # end the call INTERNAL on this side and hide the refusal's status
                    await call.initial_metadata()
                    if call.done():
                        await call.read()   # raises the refusal (UNAUTHENTICATED, ...)
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
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and \
                        await self.client.token_refused(generation):
                    continue  # a call token that expired while the link was down: renewed
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
        self.generation = client.token_generation
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
        self.generation = client.token_generation   # the call token it was opened with
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
