"""Per-frame tracking of one marker or one rigid multi-marker body, with quality and staleness.

Usage (the AR overlay)::

    tracker = MarkerTracker(camera, "DICT_4X4_50", marker_size_mm=50)      # one marker
    tracker = MarkerTracker(camera, "DICT_4X4_50", body=RigidBody.load(p))  # a body
    for image, t in frames:                 # t = capture / presentation time in seconds
        r = tracker.update(image, t)        # TrackResult
        if r.state in (LIVE, HELD):
            draw(r.pose)                    # Transform T_CAMERA_<target>, mm

States: those of the one tracking-state machine, :mod:`scrubin.registration.tracking_state`
(the overlay's gate uses the same machine and the same defaults, 0.02 / 0.1 / 0.5 s), all
measured on the frames' capture timestamps (never the wall clock):

``LIVE``   the target was measured in this frame (``detected``), or within ``sync_s``;
``HELD``   not measured in this frame, last measured at most ``stale_after_s`` before it:
           ``pose`` is predicted to the frame's capture time
           (:meth:`~scrubin.registration.filters.PoseFilter.predict`, by the pose filter, or
           with filtering off by a filter run only for this; ``predict_held=False``: the last
           pose unchanged, ``predicted`` says which);
``STALE``  last measured more than ``stale_after_s`` ago: ``pose`` is the last known pose,
           to be shown as unreliable (or while recovering, ``recover_frames`` > 1);
``LOST``   never measured, or not for more than ``lost_after_s``: ``pose`` is None.

Speed: markers are detected on an image reduced by 2x2 area averaging (once or twice) so
that the smallest expected marker (``min_marker_ratio`` of the image's larger side on a
full-frame search, the predicted size while tracking) stays at least ``detect_side_px`` pixels
wide; the corners are then re-measured at full resolution by
:func:`scrubin.registration.subpixel.refine_corners_edges`. (This is the idea of ArUco3,
Romero-Ramirez et al. 2018; OpenCV 5.0.0's ``useAruco3Detection`` missed 10-60 % of the
markers in our rendered 1080p scenes, hence the explicit reduction.) While tracking, only a
region around the predicted target (the body's markers projected with the last pose, shifted
by the last image-space motion, plus a margin) is searched; if the target is not found there,
the whole frame is searched in the same call, so re-acquisition costs one full-frame detection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from scrubin.registration.bodies import RigidBody
from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.filters import PoseFilter
from scrubin.registration.frames import Transform
from scrubin.registration.markers import (
    REFINEMENTS,
    MarkerDetections,
    as_gray,
    detect_markers,
    detector_parameters,
    get_dictionary,
)
from scrubin.registration.tracking_state import (
    DEFAULT_LIMITS,
    TrackingLimits,
    TrackingState,
    TrackingStateMachine,
    TrackingVerdict,
)

LIVE, HELD, STALE, LOST = (s.value for s in TrackingState)


class TrackingError(RegistrationError):
    """Bad tracker configuration or input (image size, timestamps)."""


@dataclass(frozen=True)
class TrackResult:
    """The tracker's answer for one frame.

    Attributes
    ----------
    pose
        ``T_CAMERA_<target>`` in mm (filtered when filtering is on); when not detected in this
        frame: predicted to the frame's capture time (LIVE/HELD) or the last known pose
        (STALE); None when LOST.
    raw_pose
        This frame's unfiltered measurement, or None when not detected.
    state
        ``"LIVE"``, ``"HELD"``, ``"STALE"`` or ``"LOST"`` (module docstring).
    timestamp_s
        The frame's capture time (s).
    age_s
        Capture time since the target was last measured (0 when detected now); None if never.
    detected
        Whether this frame measured the target.
    reproj_rms_px, n_markers, n_corners, marker_ids
        Quality of this frame's measurement (None / 0 / () when not detected).
    searched_roi
        Whether the detection came from the predicted region (False: full frame).
    verdict
        The state machine's verdict (state, age, recovery count) for this frame.
    predicted
        Whether ``pose`` was predicted to this frame's capture time (a missed frame).
    """

    pose: Transform | None
    raw_pose: Transform | None
    state: str
    timestamp_s: float
    age_s: float | None
    detected: bool
    reproj_rms_px: float | None = None
    n_markers: int = 0
    n_corners: int = 0
    marker_ids: tuple[int, ...] = ()
    searched_roi: bool = False
    verdict: TrackingVerdict | None = None
    predicted: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON form: poses as :meth:`Transform.to_json` (4x4 row-major, mm) or null."""
        return {
            "timestamp": self.timestamp_s,
            "state": self.state,
            "detected": self.detected,
            "age_s": self.age_s,
            "pose": self.pose.to_json() if self.pose is not None else None,
            "raw_pose": self.raw_pose.to_json() if self.raw_pose is not None else None,
            "reproj_rms_px": self.reproj_rms_px,
            "n_markers": self.n_markers,
            "n_corners": self.n_corners,
            "marker_ids": list(self.marker_ids),
        }


class MarkerTracker:
    """Track one square marker (``marker_size_mm``) or one :class:`RigidBody` (``body``).

    Parameters
    ----------
    camera
        Calibrated camera; frames must have its image size.
    dictionary
        ArUco dictionary name (e.g. ``"DICT_4X4_50"``).
    marker_size_mm
        Side of a single marker's black square (mm); with ``marker_id`` None the tracker
        locks onto the lowest id it sees first.
    marker_id
        Id of the single marker to track.
    body
        A rigid body to track instead of a single marker.
    limits
        Limits of the state machine (default: :data:`DEFAULT_LIMITS`, shared with the overlay).
    stale_after_s, lost_after_s
        Override ``limits.stale_after_s`` / ``limits.lost_after_s`` (seconds).
    filter
        True (a default :class:`PoseFilter`: 1€ smoothing at rest, no added lag in fast
        motion, applied to ``pose``; ``raw_pose`` stays unfiltered), False/None (raw poses) or
        a :class:`PoseFilter`.
    predict_held
        Predict the pose of a missed frame (HELD) to its capture time (default); False holds
        the last pose unchanged.
    refinement
        Corner refinement (:data:`scrubin.registration.markers.REFINEMENTS`), ``"edge"`` by default.
    roi_search
        Search around the predicted target first (full-frame fallback on a miss).
    min_marker_ratio
        Smallest marker side expected on a full-frame search, as a fraction of the image's
        larger side (0.035: 67 px at 1920, a 40 mm marker at 0.8 m with fx 1400 px).
    detect_side_px
        Marker width aimed at in the downscaled detection image.
    name
        Frame name of a single marker (``src`` of its pose).
    """

    def __init__(
        self,
        camera: CameraModel,
        dictionary: str = "DICT_4X4_50",
        marker_size_mm: float | None = None,
        marker_id: int | None = None,
        body: RigidBody | None = None,
        stale_after_s: float | None = None,
        lost_after_s: float | None = None,
        filter: bool | PoseFilter | None = True,
        predict_held: bool = True,
        refinement: str = "edge",
        roi_search: bool = True,
        min_marker_ratio: float = 0.035,
        detect_side_px: float = 24.0,
        name: str = "MARKER",
        limits: TrackingLimits | None = None,
    ) -> None:
        if not isinstance(camera, CameraModel):
            raise TrackingError("camera must be a CameraModel")
        self.camera = camera
        self.dictionary = get_dictionary(dictionary)
        if (body is None) == (marker_size_mm is None):
            raise TrackingError("give either marker_size_mm (one marker) or body, not both")
        if marker_size_mm is not None:
            size = float(marker_size_mm)
            if not math.isfinite(size) or size <= 0:
                raise TrackingError(f"marker size must be > 0 mm, got {marker_size_mm}")
        if marker_id is not None and (not isinstance(marker_id, int) or marker_id < 0):
            raise TrackingError(f"marker id must be an integer >= 0, got {marker_id!r}")
        if limits is not None and not isinstance(limits, TrackingLimits):
            raise TrackingError(f"limits must be TrackingLimits, got {type(limits).__name__}")
        lim = limits or DEFAULT_LIMITS
        over = {k: v for k, v in (("stale_after_s", stale_after_s),
                                  ("lost_after_s", lost_after_s)) if v is not None}
        try:
            lim = replace(lim, **over)
        except RegistrationError as exc:
            raise TrackingError(str(exc)) from None
        self.limits = lim
        self.machine = TrackingStateMachine(lim)
        if refinement not in REFINEMENTS:
            raise TrackingError(f"unknown refinement {refinement!r}; expected {list(REFINEMENTS)}")
        self.marker_size_mm = marker_size_mm
        self.name = body.name if body is not None else name
        self.body = body
        self._auto_lock = body is None and marker_id is None
        if body is None and marker_id is not None:
            self.body = RigidBody.single(marker_id, float(marker_size_mm), self.name)
        self.stale_after_s = float(lim.stale_after_s)
        self.lost_after_s = float(lim.lost_after_s)
        # restart the filter only across a STALE gap (the sync tolerance absorbs the rounding
        # of frame times: 3 frames at 30 Hz are not 0.1 s + 1e-17)
        gap = max(self.stale_after_s + lim.sync_s, 1e-3)
        if filter is True:
            self.filter: PoseFilter | None = PoseFilter(max_gap_s=gap)
        elif isinstance(filter, PoseFilter):
            self.filter = filter
        else:
            self.filter = None
        #: predicts held poses: the filter, or one fed the raw poses only for this
        self.predictor: PoseFilter | None = None
        if predict_held:
            self.predictor = self.filter or PoseFilter(max_gap_s=gap)
        self.refinement = refinement
        self.roi_search = bool(roi_search)
        if not 0 < min_marker_ratio < 1 or not detect_side_px >= 12:
            raise TrackingError("min_marker_ratio must be in (0, 1) and detect_side_px >= 12")
        cv_ref = "none" if refinement == "edge" else refinement
        self._detector = cv2.aruco.ArucoDetector(
            self.dictionary, detector_parameters(cv_ref, fast_threshold=True))
        self.detect_side_px = float(detect_side_px)
        longest = max(camera.width, camera.height)
        self._full_scale = self._scale(min_marker_ratio * longest)
        self.reset()

    def reset(self) -> None:
        """Forget the track (new stream): state ``lost`` until the target is seen again.

        A single marker chosen automatically (no ``marker_id``) is chosen again.
        """
        if getattr(self, "_auto_lock", False):
            self.body = None
        self._last_pose: Transform | None = None
        self._last_raw: Transform | None = None
        self._last_seen_t: float | None = None
        self._last_t: float | None = None
        self._centroid: tuple[float, np.ndarray] | None = None  # (t, px) last measurement
        self._velocity_px_s = np.zeros(2)
        self.machine.reset()
        for f in {id(x): x for x in (self.filter, self.predictor) if x is not None}.values():
            f.reset()

    # ------------------------------------------------------------------ per frame
    def update(self, image: np.ndarray, timestamp_s: float) -> TrackResult:
        """Track in ``image`` (gray or BGR uint8) captured at ``timestamp_s`` (s).

        Timestamps must not decrease (call :meth:`reset` for a new stream).
        """
        t = self._check_time(timestamp_s)
        gray = as_gray(image)
        if gray.shape != (self.camera.height, self.camera.width):
            raise TrackingError(
                f"frame is {gray.shape[1]}x{gray.shape[0]} but the camera is "
                f"{self.camera.width}x{self.camera.height}"
            )
        self._last_t = t
        found, used_roi = None, False
        roi = self._predicted_roi(t) if self.roi_search else None
        if roi is not None:
            x0, y0, x1, y1 = roi
            det = detect_markers(gray[y0:y1, x0:x1], self._detector, self.refinement,
                                 self.camera, offset_px=(x0, y0),
                                 scale=self._scale(self._min_side_px()))
            found = self._measure(det, t)
            used_roi = found is not None
        if found is None:
            det = detect_markers(gray, self._detector, self.refinement, self.camera,
                                 scale=self._full_scale)
            found = self._measure(det, t)
        if found is not None:
            return self._live(found, t, used_roi)
        return self._missed(t)

    def _check_time(self, timestamp_s: float) -> float:
        try:
            t = float(timestamp_s)
        except (TypeError, ValueError):
            raise TrackingError(
                f"timestamp must be a number of seconds, got {timestamp_s!r}") from None
        if not math.isfinite(t):
            raise TrackingError(f"timestamp must be finite, got {timestamp_s}")
        if self._last_t is not None and t < self._last_t:
            raise TrackingError(
                f"timestamp {t:.6f} s is earlier than the previous frame's {self._last_t:.6f} s "
                "(capture times must not decrease; reset() starts a new stream)"
            )
        return t

    def _measure(self, det: MarkerDetections, t: float) -> tuple[Any, np.ndarray] | None:
        if len(det) == 0:
            return None
        if self.body is None:  # lock onto the lowest id seen first
            mid = int(det.ids.min())
            self.body = RigidBody.single(mid, float(self.marker_size_mm), self.name)
        recent = (self._last_seen_t is not None and self._last_raw is not None
                  and t - self._last_seen_t <= self.stale_after_s)
        bp = self.body.estimate_pose(det, self.camera, timestamp=t,
                                     prior=self._last_raw if recent else None)
        if bp is None:
            return None
        mask = np.isin(det.ids, bp.marker_ids)
        return bp, det.corners_px[mask]

    def _live(self, found: tuple[Any, np.ndarray], t: float, used_roi: bool) -> TrackResult:
        bp, corners = found
        raw = bp.estimate.pose
        pose = self.filter(raw, t) if self.filter is not None else raw
        if self.predictor is not None and self.predictor is not self.filter:
            self.predictor(raw, t)
        c = corners.reshape(-1, 2).mean(axis=0)
        if self._centroid is not None and t > self._centroid[0]:
            dt = t - self._centroid[0]
            self._velocity_px_s = (
                (c - self._centroid[1]) / dt if dt <= self.stale_after_s else np.zeros(2))
        else:
            self._velocity_px_s = np.zeros(2)
        self._centroid = (t, c)
        self._last_pose, self._last_raw, self._last_seen_t = pose, raw, t
        self.machine.observe(t, True)
        v = self.machine.evaluate(t)
        return TrackResult(pose, raw, v.state.value, t, 0.0, True, bp.estimate.reproj_rms_px,
                           bp.n_markers, bp.n_corners, bp.marker_ids, used_roi, v)

    def _missed(self, t: float) -> TrackResult:
        self.machine.observe(t, False)
        v = self.machine.evaluate(t)
        if v.state is TrackingState.LOST or self._last_seen_t is None or self._last_pose is None:
            return TrackResult(None, None, LOST, t, v.age_s, False, verdict=v)
        pose, predicted = self._last_pose, False
        if v.state.shown and self.predictor is not None:  # LIVE within sync_s, or HELD
            p = self.predictor.predict(t)
            if p is not None:
                pose, predicted = p, True
        return TrackResult(pose, None, v.state.value, t, v.age_s, False, verdict=v,
                           predicted=predicted)

    # ------------------------------------------------------------------ search region
    def _scale(self, marker_side_px: float) -> float:
        """Detection scale bringing a marker of ``marker_side_px`` to ``detect_side_px``."""
        if self.refinement != "edge":
            return 1.0
        ratio = max(marker_side_px, 1.0) / self.detect_side_px
        halvings = int(np.clip(np.floor(np.log2(max(ratio, 1.0))), 0, 2))
        return 0.5 ** halvings  # 1, 1/2 or 1/4: fast 2x2 area reductions

    def _min_side_px(self) -> float:
        corners = self._predicted_corners(self._last_t or 0.0)
        if corners is None:
            return 32.0
        sides = np.linalg.norm(np.roll(corners, -1, axis=1) - corners, axis=2)
        return float(max(sides.min(), 8.0))

    def _predicted_corners(self, t: float) -> np.ndarray | None:
        """(M, 4, 2) body marker corners projected with the last raw pose, moved by velocity."""
        if self._last_raw is None or self.body is None or self._last_seen_t is None:
            return None
        pts = np.stack([self.body.markers[m] for m in self.body.ids])  # (M, 4, 3) body mm
        cam_pts = self._last_raw.apply(pts.reshape(-1, 3))
        if np.any(cam_pts[:, 2] <= 1.0):
            return None
        uv = self.camera.project(cam_pts).reshape(-1, 4, 2)
        return uv + self._velocity_px_s * (t - self._last_seen_t)

    def _predicted_roi(self, t: float) -> tuple[int, int, int, int] | None:
        if self._last_seen_t is None or t - self._last_seen_t > self.stale_after_s:
            return None
        uv = self._predicted_corners(t)
        if uv is None:
            return None
        lo, hi = uv.reshape(-1, 2).min(axis=0), uv.reshape(-1, 2).max(axis=0)
        size = hi - lo
        margin = 0.15 * size.max() + 32.0 + np.abs(self._velocity_px_s) * 0.02
        x0, y0 = np.floor(lo - margin).astype(int)
        x1, y1 = np.ceil(hi + margin).astype(int)
        w, h = self.camera.width, self.camera.height
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 32 or y1 - y0 < 32:
            return None
        # a large region is still searched at the predicted marker size (cheaper than the
        # full-frame search, which must find the smallest expected marker)
        return int(x0), int(y0), int(x1), int(y1)
