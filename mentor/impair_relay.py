"""Userspace impairment relays on 127.0.0.1: UDP forwarders, a TCP relay, SDP candidate rewriting.

The decisions (loss, delay, jitter, reordering, rate, blackouts) are
:class:`scrubin.mentor.impair.Impairer`'s; this module moves the bytes on an asyncio loop.

* :class:`UdpForwarder` listens on ``127.0.0.1:port`` and forwards each datagram to one target;
  every distinct source gets its own outbound socket (a port-restricted NAT), so the target's
  replies go back to that source through the forwarder. ``forward`` impairs source -> target,
  ``reverse`` target -> source.
* :class:`IceRelay` makes the relay the only path between two WebRTC peers by rewriting the
  ``a=candidate`` lines (RFC 8839 section 5.1) of the offer and the answer in signalling: each
  UDP candidate ``127.x.y.z PORT`` becomes a forwarder's ``127.0.0.1 PORT'`` that leads to it,
  and every other candidate (TCP, IPv6, mDNS, other interfaces) is removed. A peer therefore
  only ever learns relay addresses; the replies it sees come from the forwarder's outbound
  sockets, which ICE learns as peer-reflexive candidates (RFC 8445 section 7.3.1.3), behind
  the same relay.
  Datagrams are counted apart by their first byte (RFC 7983 section 7: 0-3 STUN, 20-63 DTLS,
  128-191 RTP/RTCP), so the DTLS/SRTP bytes a forwarder delivers can be compared with the
  ``transport`` stats (bytesSent/bytesReceived) of the peers' ``RTCPeerConnection``.
* :class:`TcpRelay` accepts on ``127.0.0.1:port`` and connects each client to the target
  (gRPC, HTTPS/WebSocket). A TCP stream cannot lose bytes: a "lost" chunk is delivered one
  retransmission timeout (``rto_ms``) late, delivery keeps the stream's order, and a blackout
  either holds the bytes until the link returns (``"stall"``: what TCP does across a short
  outage) or resets every connection it carries (``"reset"``).

Only 127.0.0.1 is bound; nothing here reaches another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scrubin.mentor.impair import Impairer, ImpairError, Impairment

HOST = "127.0.0.1"
RCVBUF = 4 << 20   # bytes; a busy loop must not lose datagrams in the kernel (rmem_max caps)


def _big_buffers(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)


@dataclass
class ClassCounts:
    """Datagrams/bytes delivered, split by RFC 7983 class."""

    stun_packets: int = 0
    stun_bytes: int = 0
    media_packets: int = 0          # DTLS, SRTP, SRTCP (everything but STUN)
    media_bytes: int = 0
    rtcp: dict[tuple[int, int], int] = field(default_factory=dict)   # (PT, FMT) -> count

    def add(self, data: bytes) -> None:
        if data and data[0] <= 3:
            self.stun_packets += 1
            self.stun_bytes += len(data)
            return
        self.media_packets += 1
        self.media_bytes += len(data)
        if len(data) >= 8 and 128 <= data[0] <= 191 and 192 <= data[1] <= 223:
            # SRTCP leaves the first RTCP header in clear (RFC 3711 section 3.4); RTCP vs RTP
            # by RFC 5761 section 4: (205, 1) generic NACK, (206, 1) PLI, (206, 15) REMB
            key = (data[1], data[0] & 0x1F)
            self.rtcp[key] = self.rtcp.get(key, 0) + 1


class _Listen(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpForwarder) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner._from_source(data, addr)


class _Out(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpForwarder, source: tuple[str, int]) -> None:
        self.owner, self.source = owner, source

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner._from_target(data, self.source)


class UdpForwarder:
    """One listening UDP port forwarding to ``target`` (module docstring)."""

    def __init__(self, target: tuple[str, int], forward: Impairer, reverse: Impairer) -> None:
        self.target = target
        self.forward, self.reverse = forward, reverse
        self.port = 0
        self.delivered_forward = ClassCounts()   # source -> target
        self.delivered_reverse = ClassCounts()   # target -> source
        self._listen: asyncio.DatagramTransport | None = None
        self._outs: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._opening: dict[tuple[str, int], list[bytes]] = {}
        self._open_tasks: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        self.forward.start(self._loop.time())
        self.reverse.start(self._loop.time())
        transport, _ = await self._loop.create_datagram_endpoint(lambda: _Listen(self),
                                                                 local_addr=(HOST, 0))
        self._listen = transport  # type: ignore[assignment]
        _big_buffers(transport)
        self.port = transport.get_extra_info("sockname")[1]
        return self.port

    def _schedule(self, imp: Impairer, data: bytes, send: Callable[[bytes], None]) -> None:
        assert self._loop is not None
        now = self._loop.time()
        depart = imp.decide(now, len(data))
        if depart is None:
            return
        if depart <= now:
            send(data)
        else:
            self._loop.call_at(depart, send, data)

    def _from_source(self, data: bytes, source: tuple[str, int]) -> None:
        def send(d: bytes) -> None:
            if self._closed:        # a delayed packet due after close(): nothing is opened
                return
            out = self._outs.get(source)
            if out is None:
                if source not in self._opening:
                    self._opening[source] = []
                    task = asyncio.ensure_future(self._open(source))
                    self._open_tasks.add(task)
                    task.add_done_callback(self._open_tasks.discard)
                self._opening[source].append(d)
                return
            if not self._closed:
                out.sendto(d, self.target)
                self.delivered_forward.add(d)
        self._schedule(self.forward, data, send)

    async def _open(self, source: tuple[str, int]) -> None:
        assert self._loop is not None
        out, _ = await self._loop.create_datagram_endpoint(lambda: _Out(self, source),
                                                           local_addr=(HOST, 0))
        if self._closed:
            out.close()
            return
        _big_buffers(out)
        self._outs[source] = out  # type: ignore[assignment]
        for d in self._opening.pop(source, []):
            out.sendto(d, self.target)
            self.delivered_forward.add(d)

    def _from_target(self, data: bytes, source: tuple[str, int]) -> None:
        def send(d: bytes) -> None:
            if not self._closed and self._listen is not None:
                self._listen.sendto(d, source)
                self.delivered_reverse.add(d)
        self._schedule(self.reverse, data, send)

    def close(self) -> None:
        self._closed = True
        for t in list(self._open_tasks):   # a socket still opening: its loop may stop next
            t.cancel()
        if self._listen is not None:
            self._listen.close()
        for out in self._outs.values():
            out.close()
        self._outs.clear()


_CANDIDATE = re.compile(r"^a=candidate:(\S+) (\d+) (\S+) (\d+) (\S+) (\d+) typ (\S+)(.*)$",
                        re.IGNORECASE)


class IceRelay:
    """The only path between two WebRTC peers, "a" (offerer) and "b" (answerer).

    ``a_to_b`` / ``b_to_a`` impair the two directions (one :class:`Impairer` each, shared by
    all forwarders, so rate limits and seeded draws cover the whole link). Pass every offer
    through :meth:`rewrite_offer` and every answer through :meth:`rewrite_answer` before the
    other side sees it.
    """

    def __init__(self, a_to_b: Impairment | Impairer, b_to_a: Impairment | Impairer,
                 keep_delays: bool = True) -> None:
        self.a_to_b = a_to_b if isinstance(a_to_b, Impairer) else Impairer(a_to_b, keep_delays)
        self.b_to_a = b_to_a if isinstance(b_to_a, Impairer) else Impairer(b_to_a, keep_delays)
        self.forwarders: list[UdpForwarder] = []
        self.forwarders_to_a: list[UdpForwarder] = []
        self.forwarders_to_b: list[UdpForwarder] = []
        self.removed_candidates = 0

    async def _rewrite(self, sdp: str, toward_a: bool) -> str:
        lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
        sep = "\r\n" if "\r\n" in sdp else "\n"
        out = []
        made: dict[tuple[str, int], int] = {}
        for line in lines:
            m = _CANDIDATE.match(line)
            if m is None:
                out.append(line)
                continue
            foundation, comp, proto, prio, addr, port, typ, rest = m.groups()
            if proto.lower() != "udp" or not addr.startswith("127."):
                # TCP, IPv6, mDNS and other interfaces' candidates: the relay reaches loopback
                # addresses only, and a candidate left in place would be a direct path
                self.removed_candidates += 1
                continue
            key = (addr, int(port))
            if key not in made:
                # a forwarder toward peer a carries b -> a forward and a -> b in reverse
                fwd = UdpForwarder(key, self.b_to_a, self.a_to_b) if toward_a else \
                    UdpForwarder(key, self.a_to_b, self.b_to_a)
                made[key] = await fwd.start()
                self.forwarders.append(fwd)
                (self.forwarders_to_a if toward_a else self.forwarders_to_b).append(fwd)
            out.append(f"a=candidate:{foundation} {comp} {proto} {prio} {HOST} {made[key]} "
                       f"typ {typ}{rest}")
        if not made:
            raise ImpairError("SDP has no UDP candidate to relay (a=candidate lines)")
        return sep.join(out)

    async def rewrite_offer(self, sdp: str) -> str:
        """The offer of peer a, as peer b must see it."""
        return await self._rewrite(sdp, toward_a=True)

    async def rewrite_answer(self, sdp: str) -> str:
        """The answer of peer b, as peer a must see it."""
        return await self._rewrite(sdp, toward_a=False)

    def blackout(self, duration_s: float) -> None:
        """Cut both directions for ``duration_s`` from now."""
        now = asyncio.get_running_loop().time()
        self.a_to_b.blackout(now, duration_s)
        self.b_to_a.blackout(now, duration_s)

    def rtcp_counts(self, toward_b: bool) -> dict[tuple[int, int], int]:
        """RTCP packets delivered toward peer b (or a), by (PT, FMT) of the first header."""
        out: dict[tuple[int, int], int] = {}
        fwd, rev = (self.forwarders_to_b, self.forwarders_to_a) if toward_b else (
            self.forwarders_to_a, self.forwarders_to_b)
        for c in [f.delivered_forward for f in fwd] + [f.delivered_reverse for f in rev]:
            for k, v in c.rtcp.items():
                out[k] = out.get(k, 0) + v
        return out

    def delivered_media_bytes(self) -> dict[str, int]:
        """Non-STUN bytes delivered to each peer (``to_a``, ``to_b``) by every forwarder."""
        to_a = sum(f.delivered_forward.media_bytes for f in self.forwarders_to_a) + sum(
            f.delivered_reverse.media_bytes for f in self.forwarders_to_b)
        to_b = sum(f.delivered_forward.media_bytes for f in self.forwarders_to_b) + sum(
            f.delivered_reverse.media_bytes for f in self.forwarders_to_a)
        return {"to_a": to_a, "to_b": to_b}

    def close(self) -> None:
        for f in self.forwarders:
            f.close()
        self.forwarders.clear()


class TcpRelay:
    """``127.0.0.1:port`` -> ``target`` for every connection (module docstring).

    ``up`` impairs client -> target, ``down`` target -> client. ``mode`` says what a blackout
    does: ``"stall"`` holds the bytes until it ends, ``"reset"`` closes every connection at
    its start and refuses new ones until it ends.
    """

    def __init__(self, target: tuple[str, int], up: Impairment | None = None,
                 down: Impairment | None = None, mode: str = "stall",
                 rto_ms: float = 200.0, chunk: int = 16384) -> None:
        if mode not in ("stall", "reset"):
            raise ImpairError(f"TCP relay mode {mode!r}: expected 'stall' or 'reset'")
        self.target, self.mode, self.rto_s, self.chunk = target, mode, rto_ms / 1e3, chunk
        self.up = Impairer(_ordered(up or Impairment()))
        self.down = Impairer(_ordered(down or Impairment()))
        self.port = 0
        self.connections = 0
        self.resets = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.up.start(loop.time())
        self.down.start(loop.time())
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def target_str(self) -> str:
        return f"{HOST}:{self.port}"

    def blackout(self, duration_s: float) -> None:
        """Cut the link for ``duration_s`` from now (both directions)."""
        now = asyncio.get_running_loop().time()
        self.up.blackout(now, duration_s)
        self.down.blackout(now, duration_s)
        if self.mode == "reset":
            self.reset_all()

    def reset_all(self) -> None:
        """Close every relayed connection now (both ends see the connection drop)."""
        for a, b in list(self._conns):
            for w in (a, b):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self.resets += 1
        self._conns.clear()

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        if self.mode == "reset" and self.up.blackout_end(loop.time()) is not None:
            cw.transport.abort()
            return
        try:
            tr, tw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        self.connections += 1
        pair = (cw, tw)
        self._conns.add(pair)
        for reader, writer, imp in ((cr, tw, self.up), (tr, cw, self.down)):
            t = asyncio.create_task(self._pump(reader, writer, imp, pair))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    imp: Impairer, pair: tuple[Any, Any]) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def sender() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    break
                depart, data = item
                wait = depart - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                end = imp.blackout_end(loop.time())
                while end is not None:        # stall: the link carries nothing until it ends
                    await asyncio.sleep(end - loop.time())
                    end = imp.blackout_end(loop.time())
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(Exception):
                writer.write_eof()

        send_task = asyncio.create_task(sender())
        try:
            while True:
                data = await reader.read(self.chunk)
                if not data:
                    break
                now = loop.time()
                end = imp.blackout_end(now)
                depart = imp.decide(now if end is None else end, len(data))
                if depart is None:    # "lost": TCP resends it one RTO later
                    depart = now + self.rto_s
                    imp.stats.packets_out += 1
                    imp.stats.bytes_out += len(data)
                queue.put_nowait((depart, data))
            queue.put_nowait(None)
            await send_task
        except (ConnectionError, OSError, asyncio.CancelledError):
            send_task.cancel()
        finally:
            self._conns.discard(pair)
            for w in pair:
                with contextlib.suppress(Exception):
                    w.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset_all()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t


def _ordered(c: Impairment) -> Impairment:
    """The same impairment with delivery in order (a TCP byte stream never reorders)."""
    from dataclasses import replace

    return replace(c, keep_order=True, reorder=0.0)
