"""A seeded network-impairment model (loss, delay, jitter, reordering, rate limit, blackouts).

There is no ``tc netem`` on the test machines (no root qdisc), so the mentoring fault tests and
benchmarks put a userspace relay (:mod:`scrubin.mentor.impair_relay`) on the path between the
surgeon station, the server and the mentor. This module is the relay's decision part, free of
sockets: :class:`Impairer` takes each packet (or TCP chunk) in arrival order and says when it
leaves, or that it is dropped. Its semantics follow netem (tc-netem(8)):

* ``loss`` - independent (Bernoulli) loss probability per packet;
* ``delay_ms`` / ``jitter_ms`` - per-packet one-way delay ``delay + jitter * N(0, 1)``, cut at
  0 and at ``delay + 3 jitter`` (netem's "normal" distribution table); with jitter, packets
  overtake each other (reordering) unless ``keep_order`` is set, as in netem without a rate;
* ``reorder`` - probability that a packet skips the delay and leaves at once (netem's
  ``reorder`` with gap 1);
* ``rate_kbps`` - a serialising link: each packet occupies ``size * 8 / rate`` on the wire,
  queued behind the previous ones; a packet that would wait more than ``queue_ms`` is dropped
  (tail drop, a bounded router queue);
* blackouts - intervals ``(start_s, duration_s)`` relative to :meth:`Impairer.start`, or begun
  at run time with :meth:`Impairer.blackout`: every packet arriving inside one is dropped (a
  link that carries nothing). TCP relays instead hold their bytes until the link returns or
  reset the connections (see the relay).

Determinism: every random draw comes from ``random.Random(seed)`` in packet order (four draws
per packet whatever the outcome), so the same packet sequence meets the same fate; the wall
clock only decides which packets fall inside a blackout.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from scrubin.mentor.errors import MentorError


class ImpairError(MentorError):
    """A malformed impairment option."""


@dataclass(frozen=True)
class Impairment:
    """One direction of a link (see the module docstring for each field's meaning)."""

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    rate_kbps: float = 0.0          # 0: unlimited
    queue_ms: float = 300.0         # bound of the rate limiter's queue
    blackouts: tuple[tuple[float, float], ...] = ()
    keep_order: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "reorder"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ImpairError(f"impairment {name}={v!r}: expected a probability in [0, 1]")
        for name in ("delay_ms", "jitter_ms", "rate_kbps", "queue_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ImpairError(f"impairment {name}={v!r}: expected a finite number >= 0")
        for b in self.blackouts:
            if len(b) != 2 or not all(math.isfinite(x) and x >= 0 for x in b):
                raise ImpairError(f"impairment blackout {b!r}: expected (start_s >= 0, "
                                  "duration_s >= 0)")


@dataclass
class DirectionStats:
    """Counters of one direction (packets for UDP, chunks for TCP; bytes are payload bytes)."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    lost: int = 0                   # dropped by ``loss``
    blacked_out: int = 0            # dropped inside a blackout
    queue_dropped: int = 0          # dropped by the rate limiter's full queue
    reordered: int = 0              # sent ahead by ``reorder``
    delays_ms: list[float] = field(default_factory=list)  # scheduled delay of each sent packet

    @property
    def dropped(self) -> int:
        return self.lost + self.blacked_out + self.queue_dropped


class Impairer:
    """Decides the fate of each packet of one direction (module docstring).

    Times are seconds on one monotonic clock chosen by the caller (the relay passes
    ``loop.time()``).
    """

    def __init__(self, config: Impairment, keep_delays: bool = True) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats = DirectionStats()
        self.keep_delays = keep_delays
        self.t0: float | None = None
        self._runtime_blackouts: list[tuple[float, float]] = []   # absolute (start, end)
        self._wire_free = 0.0        # rate limiter: when the link is free again
        self._last_departure = 0.0   # keep_order: no packet leaves before the previous one

    def start(self, now: float) -> None:
        """Set time zero of the configured blackouts (called once by the relay)."""
        if self.t0 is None:
            self.t0 = now

    def blackout(self, now: float, duration_s: float) -> None:
        """Begin a blackout of ``duration_s`` seconds at ``now``."""
        self._runtime_blackouts.append((now, now + float(duration_s)))

    def blackout_end(self, now: float) -> float | None:
        """End time of the blackout covering ``now``, or None when the link is up."""
        ends = [e for s, e in self._runtime_blackouts if s <= now < e]
        if self.t0 is not None:
            ends += [self.t0 + s + d for s, d in self.config.blackouts
                     if self.t0 + s <= now < self.t0 + s + d]
        return max(ends) if ends else None

    def _draw_delay(self) -> float:
        c = self.config
        z = self.rng.gauss(0.0, 1.0)
        d = c.delay_ms + c.jitter_ms * max(-3.0, min(3.0, z))
        return max(0.0, d) / 1e3

    def decide(self, now: float, size: int) -> float | None:
        """Departure time of a ``size``-byte packet arriving at ``now``, or None (dropped)."""
        c, s = self.config, self.stats
        s.packets_in += 1
        s.bytes_in += size
        # Always four draws, whatever happens, so the n-th packet's fate depends on n only.
        u_loss, u_reorder = self.rng.random(), self.rng.random()
        delay = self._draw_delay()
        self.rng.random()  # reserved (keeps the draw count fixed if a model is added)
        if self.blackout_end(now) is not None:
            s.blacked_out += 1
            return None
        if u_loss < c.loss:
            s.lost += 1
            return None
        start = now
        if c.rate_kbps > 0:
            if self._wire_free - now > c.queue_ms / 1e3:
                s.queue_dropped += 1
                return None
            start = max(now, self._wire_free) + size * 8 / (c.rate_kbps * 1e3)
            self._wire_free = start
        if u_reorder < c.reorder:
            s.reordered += 1
            delay = 0.0
        depart = start + delay
        if c.keep_order:
            # strictly after the previous one: the loop's timer heap does not order ties
            depart = max(depart, self._last_departure + 1e-6)
        self._last_departure = max(self._last_departure, depart)
        s.packets_out += 1
        s.bytes_out += size
        if self.keep_delays:
            s.delays_ms.append((depart - now) * 1e3)
        return depart
