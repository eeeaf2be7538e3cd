"""The mentoring link's state, shown honestly in the surgeon's composited view (issue 10).

Two links can fail on their own:

* the **server link** (gRPC to the mentor server): probed with ``grpc.health.v1.Health/Check``
  on the station's own channel every ``probe_s`` with a ``timeout_s`` deadline, so a
  blackout that TCP merely stalls (gRPC keepalive would take 30 s) is seen within
  ``probe_s + timeout_s`` (1.0 s by default). While it is down, annotations drawn by mentors
  cannot reach the station: the ones shown may be stale.
* each **viewer's media link** (WebRTC): the station's heartbeat (:mod:`scrubin.mentor.station`,
  no packet for 1.25 s) declares it lost and closes the peer; the viewer's reconnect makes a
  new peer connection.

:func:`status_lines` turns both into text lines with a severity, and :func:`draw_status` draws
them into a BGR frame (bottom right, a coloured marker per line: green OK, amber degraded,
red lost). :class:`StationSink` calls :meth:`LinkMonitor.draw` on every frame, so the view
changes on the first frame after a state change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

#: marker colours (BGR) per severity
COLOURS = {"ok": (0, 200, 0), "warn": (0, 190, 255), "lost": (0, 0, 255)}
#: a probe answer older than this is not taken as "connected" (s)
STALE_PROBE_S = 2.0
#: lost viewers are listed for this long after the loss unless they reconnect (s)
LOST_SHOWN_S = 60.0


@dataclass
class StatusLine:
    """One line of the link status: its text and severity (``ok``, ``warn`` or ``lost``)."""

    text: str
    severity: str


class LinkMonitor:
    """Watches the server link (health probe) and reads the station's viewer links.

    Parameters
    ----------
    station
        The :class:`~scrubin.mentor.station.SurgeonStation` (``peers``, ``link_events``).
    channel
        The station's gRPC channel to the server (``MentorClient.channel``), or None when
        not connected to a server.
    probe_s, timeout_s
        Probe period and per-probe deadline (s).
    link
        The station's :class:`~scrubin.mentor.station_link.StationLink` (its ``ended``: why the
        link ended itself, e.g. the server refused to renew its token), or None.
    """

    def __init__(self, station: Any, channel: Any = None, probe_s: float = 0.5,
                 timeout_s: float = 0.5, link: Any = None) -> None:
        self.station, self.channel, self.link = station, channel, link
        self.probe_s, self.timeout_s = float(probe_s), float(timeout_s)
        self.server_up: bool | None = None   # None until the first probe answers or fails
        self.server_down_since: float | None = None   # time.time() of the first failed probe
        self.last_ok: float | None = None
        self.probes = 0
        self._rx: dict[str, float] = {}   # peer id -> last packet time seen (kept after loss)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ server link
    def start(self) -> None:
        """Start probing on the running loop (no-op without a channel)."""
        if self.channel is not None and self._task is None:
            self._task = asyncio.ensure_future(self._probe())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _probe(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        while True:
            sent = time.time()
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout_s)
                ok = True
            except Exception:   # AioRpcError, or a closed channel: down either way
                ok = False
            self.probes += 1
            if ok:
                self.server_up, self.server_down_since, self.last_ok = True, None, time.time()
            else:
                if self.server_down_since is None:
                    self.server_down_since = sent
                self.server_up = False
            await asyncio.sleep(max(0.0, self.probe_s - (time.time() - sent)))

    # ------------------------------------------------------------------ reading
    def lines(self, now: float | None = None) -> list[StatusLine]:
        """The status now (see :func:`status_lines`)."""
        now = time.time() if now is None else now
        up, since = self.server_up, self.server_down_since
        if up and self.last_ok is not None and now - self.last_ok > STALE_PROBE_S:
            up, since = False, self.last_ok   # the probe itself is stuck: not known to be up
        return status_lines(self.station, up if self.channel is not None else None,
                            since, now, self._rx, getattr(self.link, "ended", ""))

    def draw(self, image_bgr: np.ndarray, now: float | None = None) -> list[StatusLine]:
        """Draw the status into ``image_bgr`` in place; returns the lines drawn."""
        out = self.lines(now)
        draw_status(image_bgr, out)
        return out


def status_lines(station: Any, server_up: bool | None, server_down_since: float | None,
                 now: float | None = None, last_rx: dict[str, float] | None = None,
                 ended: str = "") -> list[StatusLine]:
    """The link status as text lines.

    Parameters
    ----------
    station
        Has ``peers`` (peer id -> Peer with ``rx_at``, ``pc.connectionState``) and
        ``link_events`` ((time.time(), peer id, what) tuples).
    server_up
        True / False from the probe, None before the first probe (or without a server).
    server_down_since
        ``time.time()`` the server link was first found down.
    now
        ``time.time()`` of the frame (default: now).
    last_rx
        Peer id -> ``time.time()`` of its last packet, updated here from ``Peer.rx_at`` and
        kept after the peer is closed (the age shown on a lost viewer's line).
    ended
        Why the mentoring link ended itself ("" while it has not): the server line is then
        ``MENTOR LINK ENDED`` with the reason, whatever the health probe says (the server may
        well answer; it no longer takes this station's calls).

    Returns
    -------
    list of StatusLine
        ``SERVER CONNECTED`` / ``SERVER RECONNECTING n s`` (+ ``ANNOTATIONS MAY BE STALE``),
        ``VIEWERS n connected, last rx n s`` (the oldest last packet among them) and one
        ``VIEWER <id> LOST, last rx n s ago`` line per viewer lost in the last
        :data:`LOST_SHOWN_S` that has not come back.
    """
    now = time.time() if now is None else now
    out: list[StatusLine] = []
    if ended:
        out.append(StatusLine("MENTOR LINK ENDED", "lost"))
        reason = ended.removeprefix("mentoring link ended: ")
        out.append(StatusLine(reason[:48].upper(), "lost"))
    elif server_up is None and server_down_since is None:
        out.append(StatusLine("SERVER ...", "warn"))
    elif server_up:
        out.append(StatusLine("SERVER CONNECTED", "ok"))
    else:
        down = now - (server_down_since if server_down_since is not None else now)
        out.append(StatusLine(f"SERVER RECONNECTING {down:.0f} s", "lost"))
        out.append(StatusLine("ANNOTATIONS MAY BE STALE", "lost"))
    peers: dict[str, Any] = {}
    for _ in range(3):   # read from the frame thread while the loop thread may change them
        with contextlib.suppress(RuntimeError):
            peers = dict(station.peers)
            break
    last_rx = {} if last_rx is None else last_rx
    for pid, p in peers.items():
        if getattr(p, "rx_at", None) is not None:
            last_rx[pid] = p.rx_at
    live = [p for p in peers.values()
            if getattr(p.pc, "connectionState", "") == "connected" and p.lost_at is None]
    ages = [now - p.rx_at for p in live if getattr(p, "rx_at", None) is not None]
    age = f", last rx {max(ages):.1f} s" if ages else ""
    out.append(StatusLine(f"VIEWERS {len(live)} connected{age}", "ok" if live else "warn"))
    lost: dict[str, float] = {}
    for t, pid, what in list(station.link_events):
        if what == "lost" and now - t <= LOST_SHOWN_S:
            lost[pid] = t
    for pid, t in lost.items():
        back = peers.get(pid)
        if back is not None and back.lost_at is None:
            continue   # reconnected under the same id
        rx = last_rx.get(pid)
        age = f"last rx {now - rx:.1f} s ago" if rx is not None and rx <= t else \
            f"lost {now - t:.1f} s ago"
        out.append(StatusLine(f"VIEWER {pid[:12]} LOST, {age}", "lost"))
    return out


def _layout(shape: tuple[int, ...], lines: list[StatusLine], scale: float
            ) -> tuple[int, int, int, int]:
    """(x0, y0, row height, marker size) of the status box at the bottom right (the HUD
    uses the top left and the top centre, overlay/hud.py)."""
    h, w = shape[:2]
    sizes = [cv2.getTextSize(ln.text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0] for ln in lines]
    row = max(s[1] for s in sizes) + 8
    box_w = max(s[0] for s in sizes) + row + 12
    return max(0, w - box_w - 8), max(0, h - row * len(lines) - 14), row, row - 8


def draw_status(image_bgr: np.ndarray, lines: list[StatusLine], scale: float = 0.5) -> None:
    """Draw ``lines`` at the bottom right of ``image_bgr`` (in place): a darkened box, a
    square marker of the line's severity colour at the left of each line, white text."""
    if not lines:
        return
    h, w = image_bgr.shape[:2]
    x0, y0, row, m = _layout(image_bgr.shape, lines, scale)
    y1 = min(h, y0 + row * len(lines) + 6)
    roi = image_bgr[y0:y1, x0:w - 8]
    roi[...] = (roi.astype(np.uint16) // 3).astype(image_bgr.dtype)
    for i, ln in enumerate(lines):
        top = y0 + 4 + i * row
        cv2.rectangle(image_bgr, (x0 + 4, top + 2), (x0 + 4 + m, top + 2 + m),
                      COLOURS.get(ln.severity, COLOURS["warn"]), -1)
        cv2.putText(image_bgr, ln.text, (x0 + row + 4, top + row - 6), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), 1, cv2.LINE_AA)


def marker_colours(image_bgr: np.ndarray, n_lines: int, lines: list[StatusLine],
                   scale: float = 0.5) -> list[tuple[int, int, int]]:
    """Read back the marker colour of each drawn line from the frame (BGR at the marker's
    centre), for checking a rendered frame; ``lines`` gives the layout that was drawn."""
    x0, y0, row, m = _layout(image_bgr.shape, lines, scale)
    out = []
    for i in range(n_lines):
        top = y0 + 4 + i * row
        px = image_bgr[top + 2 + m // 2, x0 + 4 + m // 2]
        out.append((int(px[0]), int(px[1]), int(px[2])))
    return out
