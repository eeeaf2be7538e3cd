"""The overlay pipeline's sink that feeds the surgeon station (frame-loop thread).

Placed first among the pipeline's sinks, :class:`StationSink` gets each composited view
(overlay + HUD) and:

1. gives it a session-unique frame id (:class:`FrameIds`) and a Unix capture time on the
   station's one clock;
2. builds its :class:`~scrubin.mentor.station_meta.FrameMeta` (intrinsics, ``T_CAMERA_REF`` =
   ``T_CAMERA_CT @ inverse(T_REF_CT)`` while the overlay is drawn as current, ``T_REF_CT``,
   tracking state, registration FRE / predicted TRE);
3. draws the mentor's annotations into the view *in place* (so the surgeon's own window and
   recording, the sinks after it, show them too; anchored ones follow the anatomy and are
   hidden with the model when tracking is stale or lost);
4. publishes it (strip, one encode, every viewer, ``meta`` channel) and hands the metadata to
   the gRPC link for telemetry.

Between camera frames, :attr:`StationSink.display` (a
:class:`~scrubin.mentor.station_display.DisplayCompositor`) re-composites the latest view as
soon as an annotation event is applied and hands it to the surgeon's display callbacks
(``display.displays``; :meth:`StationSink.attach_display` makes the station's window that
display), with the same drawing as the frame's; it is shown, not encoded (no new frame id).

With a headset display (``--stereo``) :meth:`StationSink.annotate_eye` draws the anchored
annotations into each eye's view with that eye's camera and pose.

Sources that run faster than real time (a video file, the synthetic scene) are paced to their
capture clock (``pace=True``): a frame is not sent before its capture time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from scrubin.mentor.annotations_draw import AnnotationBoard, DrawReport
from scrubin.mentor.errors import MentorError
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_display import Composite, DisplayCompositor
from scrubin.mentor.station_meta import FrameMeta
from scrubin.overlay.sinks import Sink, SinkItem

#: frame-id clock origin (2026-01-01T00:00:00Z) and rate (ticks/s)
ID_EPOCH_UNIX = 1767225600.0
ID_RATE_HZ = 60.0


class FrameIds:
    """Session-unique, monotonic uint32 frame ids.

    ``id = max(previous + 1, floor((time.time() - ID_EPOCH_UNIX) * 60))``: as long as the
    station sends at most 60 frames/s on average, a restarted station (same session) starts
    above every id it sent before, so a stroke's ``frame_id`` never names two frames. The
    counter wraps after 2^32 / 60 s = 2.27 years from the epoch.
    """

    def __init__(self) -> None:
        self.last = -1

    def next(self, now: float | None = None) -> int:
        """The next id."""
        now = time.time() if now is None else now
        tick = int((now - ID_EPOCH_UNIX) * ID_RATE_HZ) % (2 ** 32)
        self.last = tick if tick > self.last else (self.last + 1) % (2 ** 32)
        if self.last == 0:   # reserved: an all-black strip reads as 0 (mentor/strip.py)
            self.last = 1
        return self.last


class StationSink(Sink):
    """Feeds a :class:`SurgeonStation` from the overlay pipeline (module docstring).

    Parameters
    ----------
    station, board
        The media side and the annotations to draw.
    camera
        The pipeline's camera model (intrinsics of every frame).
    registration
        The pipeline's :class:`~scrubin.overlay.pipeline.Registration` (``T_REF_CT``, FRE, TRE).
    on_frame
        Called with each frame's metadata after it is sent (telemetry).
    pace
        Hold frames until their capture time (sources faster than real time).
    """

    name = "mentor"

    def __init__(self, station: SurgeonStation, board: AnnotationBoard, camera: Any,
                 registration: Any, on_frame: Any = None, pace: bool = False) -> None:
        self.station, self.board = station, board
        self.camera, self.registration = camera, registration
        self.on_frame, self.pace = on_frame, bool(pace)
        k = camera.matrix
        self._K = (float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
        self._dist = tuple(float(d) for d in np.ravel(camera.dist))
        self._T_ref_ct = np.asarray(registration.T_ref_ct.matrix, np.float64)
        self._T_ct_ref = np.linalg.inv(self._T_ref_ct)
        self.ids = FrameIds()
        self._offset: float | None = None
        self._last_capture: float | None = None
        self.sent = 0
        self.annotated = 0
        #: a :class:`~scrubin.mentor.link_status.LinkMonitor` drawing the mentoring link's
        #: state into every frame after the annotations (None: not drawn)
        self.status: Any = None
        self._status_lock = threading.Lock()   # drawn by the frame loop and the display
        #: the between-frames display composites (module docstring); its ``displays`` are
        #: the surgeon's display callbacks (none: nothing is re-composited)
        self.display = DisplayCompositor(board, self.compose)

    def _unix(self, capture_time_s: float) -> float:
        """Capture clock -> Unix time: one offset, renewed when the source clock restarts."""
        if (self._offset is None or self._last_capture is None
                or capture_time_s < self._last_capture):
            self._offset = time.time() - capture_time_s
        self._last_capture = capture_time_s
        return capture_time_s + self._offset

    def meta_of(self, item: SinkItem) -> FrameMeta:
        """The frame's metadata (a new frame id each call)."""
        extra = item.extra or {}
        unix = extra.get("capture_time_unix")
        cap = float(unix) if isinstance(unix, int | float) else self._unix(item.capture_time_s)
        t_cam_ref = None
        if item.T_camera_ct is not None:
            t_cam_ct = np.asarray(item.T_camera_ct["matrix"], np.float64)
            t_cam_ref = t_cam_ct @ self._T_ct_ref
        h, w = item.image_bgr.shape[:2]
        return FrameMeta(self.ids.next(cap), cap, w, h, self._K, self._dist, t_cam_ref,
                         self._T_ref_ct, item.state if item.state else "LOST",
                         self.registration.fre_mm, self.registration.tre_mm)

    def annotate_eye(self, eye: str, canvas_bgra: np.ndarray, camera: Any, T_eye_ct: Any
                     ) -> None:
        """A :class:`~scrubin.overlay.stereo.StereoRenderer` annotator: the anchored
        annotations in one headset eye, ``T_EYE_REF = T_EYE_CT @ inverse(T_REF_CT)``."""
        self.board.draw_eye(canvas_bgra, camera,
                            np.asarray(T_eye_ct.matrix, np.float64) @ self._T_ct_ref)

    def write(self, item: SinkItem) -> None:
        """Annotate in place, publish, report (module docstring)."""
        h, w = item.image_bgr.shape[:2]
        if (w, h) != (self.camera.width, self.camera.height):
            raise MentorError(f"frame {item.frame_id} is {w}x{h}, the station streams "
                              f"{self.camera.width}x{self.camera.height}")
        meta = self.meta_of(item)
        if self.pace:
            wait = meta.capture_time - time.time()
            if 0 < wait < 1.0:
                time.sleep(wait)
        t = time.perf_counter()
        report = DrawReport()
        self.display.base(item.image_bgr, meta)
        c = None
        try:
            if self.compose(item.image_bgr, meta, report):
                self.annotated += 1
            c = Composite("frame", meta, item.image_bgr, report, time.time())
        finally:
            self.display.frame(c)   # to the surgeon's display before the encode
        meta.stages_ms["annotate"] = (time.perf_counter() - t) * 1e3
        self.station.publish(item.image_bgr, meta)
        self.sent += 1
        if self.on_frame is not None:
            self.on_frame(meta)

    def compose(self, image_bgr: np.ndarray, meta: FrameMeta, report: DrawReport) -> int:
        """Draw the annotations, then the link status, into ``image_bgr`` (in place); the
        number of annotations drawn. Used for camera frames and display composites alike."""
        n = self.board.draw(image_bgr, meta, report=report)
        if self.status is not None:
            with self._status_lock:
                self.status.draw(image_bgr)
        return n

    def attach_display(self, window: Any) -> None:
        """Make ``window`` (a :class:`~scrubin.overlay.sinks.WindowSink`) the surgeon's display
        fed by this sink: every camera frame's composite (before it is encoded) and every
        display composite between frames, in order; the window's own :meth:`write` then shows
        nothing (it would show the frame again, after the encode)."""
        window.frames_from_write = False
        self.display.displays.append(lambda c: window.show(c.image_bgr))

    def close(self) -> None:
        """Stop the display compositor."""
        self.display.close()
