"""The surgeon's display composite, refreshed when an annotation arrives, not only per frame.

A surgeon's display (the station's window, a headset at 60-90 Hz) refreshes independently of
the camera (30 fps). Drawn only into camera frames, a mentor's stroke that reaches the station
between two frames waits for the next one: up to a camera period (33.3 ms at 30 fps), half of it
on average, the largest step of the annotation latency (issue 8). :class:`DisplayCompositor`
removes that wait:

* the frame loop (:class:`~scrubin.mentor.station_sink.StationSink`) hands it each camera view
  *before* the annotations are drawn into it (overlay + HUD: :meth:`DisplayCompositor.base`)
  and, once drawn, the frame's composite (:meth:`DisplayCompositor.frame`), which goes to the
  display callbacks at once (before it is encoded);
* the :class:`~scrubin.mentor.annotations_draw.AnnotationBoard` calls it after every applied
  event (the station's asyncio thread); when no composite shows that board version yet, its own
  thread copies the latest view, draws the board into it with the sink's own drawing function,
  and hands the result to the display callbacks at once.

The display callbacks get composites in order, (camera frame, board version) increasing: one
drawn from an older view or an older board state than one already shown is not shown, so the
display never steps back (a stroke never blinks out for a frame).

Such a composite is an extra *display* composite of the latest camera frame: same frame id,
pose, tracking state and capture time. It is not encoded and gets no new frame id: the
viewers' video keeps exactly one frame per camera frame (its ids, capture times and the
metadata history used for anchoring name real camera frames), and the next camera frame carries
the stroke to them. A display composite overtaken by a newer camera view while it was drawn is
dropped; the newer view is then composited if its own frame composite does not yet show the
event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from scrubin.mentor.annotations_draw import AnnotationBoard, DrawReport
from scrubin.mentor.station_meta import FrameMeta


@dataclass
class Composite:
    """One composite the surgeon's display got.

    ``kind``: ``"frame"`` (a camera frame, also encoded and sent to the viewers) or
    ``"display"`` (an extra display composite of the latest camera frame after an annotation
    event); ``done``: ``time.time()`` once drawn; ``report``: board version and drawn
    annotations.
    """

    kind: str
    meta: FrameMeta
    image_bgr: np.ndarray
    report: DrawReport
    done: float


class DisplayCompositor:
    """Re-composites the latest camera view when the board changes (module docstring).

    Parameters
    ----------
    board
        The annotations (its ``listeners`` get this compositor).
    compose
        ``compose(image_bgr, meta, report)``: draws the board (and whatever else the frame
        loop draws after it, e.g. the link status) into ``image_bgr`` in place, filling
        ``report`` (the sink's own drawing: both composites are drawn the same way).
    """

    def __init__(self, board: AnnotationBoard,
                 compose: Callable[[np.ndarray, FrameMeta, DrawReport], Any]) -> None:
        self.board, self.compose = board, compose
        #: the surgeon's display: called with every composite, camera frames' and display
        #: ones, in order (module docstring); the image is the callee's (never drawn into
        #: again). None registered: no view is copied, no thread runs.
        self.displays: list[Callable[[Composite], Any]] = []
        self.composites = 0          # display composites handed to the displays
        self.dropped = 0             # overtaken by a newer camera view while being drawn
        self._present_lock = threading.Lock()
        self._presented = (-1, -1)   # (camera view serial, board version) last shown
        self._cond = threading.Condition()
        self._base: np.ndarray | None = None
        self._base_meta: FrameMeta | None = None
        self._base_serial = 0        # bumped per camera view
        self._drawing_frame = False  # the frame loop is drawing the current base's composite
        self._shown = -1             # newest board version a composite (either kind) shows
        self._wanted = -1            # newest board version applied
        self._stop = False
        self._thread: threading.Thread | None = None
        board.listeners.append(self._board_changed)

    # ------------------------------------------------------------------ frame-loop thread
    def base(self, view_bgr: np.ndarray, meta: FrameMeta) -> None:
        """Keep the camera view before the annotations are drawn into it (copied)."""
        if not self.displays:
            return
        self._start()
        view = view_bgr.copy()   # outside the lock: the board's thread never waits for a copy
        with self._cond:
            self._base = view    # never written again (a new one per camera view)
            self._base_meta = meta
            self._base_serial += 1
            self._drawing_frame = True

    def frame(self, c: Composite | None) -> None:
        """The frame loop's composite of the current base (None: drawing it failed): shown."""
        if not self.displays:
            return
        with self._cond:
            serial = self._base_serial
            if c is not None:
                self._shown = max(self._shown, c.report.version)
            self._drawing_frame = False
            self._cond.notify_all()
        if c is not None:
            self._present(serial, c)

    def _present(self, serial: int, c: Composite) -> bool:
        with self._present_lock:
            key = (serial, c.report.version)
            if key <= self._presented:
                return False
            self._presented = key
            for show in list(self.displays):
                show(c)
            return True

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(2.0)
        if self._board_changed in self.board.listeners:
            self.board.listeners.remove(self._board_changed)

    # ------------------------------------------------------------------ board thread
    def _board_changed(self, version: int) -> None:
        with self._cond:
            if version > self._wanted:
                self._wanted = version
                self._cond.notify_all()

    # ------------------------------------------------------------------ own thread
    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="station-display",
                                            daemon=True)
            self._thread.start()

    def _due(self) -> bool:
        # while the frame loop draws the newest view, its composite may show the event: wait
        return self._stop or (self._base is not None and not self._drawing_frame
                              and self._wanted > self._shown)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._due)
                if self._stop:
                    return
                base, meta, serial = self._base, self._base_meta, self._base_serial
            assert base is not None and meta is not None
            work = base.copy()
            report = DrawReport()
            self.compose(work, meta, report)
            c = Composite("display", meta, work, report, time.time())
            with self._cond:
                if serial != self._base_serial:   # a newer camera view came meanwhile
                    self.dropped += 1
                    continue
                self._shown = max(self._shown, report.version)
            if self._present(serial, c):
                self.composites += 1
            else:
                self.dropped += 1
