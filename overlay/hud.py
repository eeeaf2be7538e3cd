"""Heads-up display: tracking state, registration error, rate/latency and a landmark check.

:func:`draw_guarded` is the one call a frame loop needs: it draws the overlay only as the
tracking gate allows (``overlay.safety``) and then the HUD on top::

    status = gate.evaluate(frame_time)
    draw_guarded(frame_bgr, renderer, T_camera_ct, status, HudInfo(fre_mm=0.42, tre_mm=0.9))

Registration numbers are labelled as what they are -- the error of the registration alone
("reg. FRE 0.42 mm, pred. TRE 0.9 mm @ target (registration only)"); FRE does not predict the
overall accuracy (Fitzpatrick 2009, "Fiducial registration error and target registration error
are uncorrelated", Proc. SPIE 7261), and tracking, calibration and latency add to it.
HUD text is ASCII (OpenCV Hershey fonts have no other glyphs).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from scrubin.overlay.errors import OverlayError
from scrubin.overlay.renderer import OverlayRenderer
from scrubin.overlay.safety import TrackingState, TrackingStatus
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform

# BGR colours
GREEN = (60, 200, 60)
AMBER = (0, 170, 255)
RED = (0, 0, 255)
WHITE = (255, 255, 255)
_STATE_COLOUR = {TrackingState.LIVE: GREEN, TrackingState.HELD: AMBER, TrackingState.STALE: AMBER,
                 TrackingState.LOST: RED}


@dataclass(frozen=True)
class LandmarkCheck:
    """A tracked pointer's tip against a planned landmark (both CT / LPS mm)."""

    name: str
    tip_ct_mm: np.ndarray
    landmark_ct_mm: np.ndarray
    distance_mm: float
    tolerance_mm: float

    @property
    def ok(self) -> bool:
        """Tip within the tolerance of the landmark."""
        return self.distance_mm <= self.tolerance_mm

    def text(self) -> str:
        """HUD line, e.g. ``"landmark nasion: tip 1.3 mm (tol 2.0) OK"``."""
        verdict = "OK" if self.ok else "CHECK"
        return (f"landmark {self.name}: tip {self.distance_mm:.1f} mm "
                f"(tol {self.tolerance_mm:.1f}) {verdict}")


def _point(name: str, p: np.ndarray) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise OverlayError(f"{name} must be 3 finite coordinates (CT mm), got {p!r}")
    return a


def landmark_check(
    tip_ct_mm: np.ndarray, landmark_ct_mm: np.ndarray, name: str = "landmark",
    tolerance_mm: float = 2.0,
) -> LandmarkCheck:
    """Distance from the pointer tip to a planned landmark, both in CT (LPS) mm.

    The tip in CT is ``T_CT_REF @ T_REF_TOOL`` applied to the pivot-calibrated tip offset.
    """
    tip = _point("pointer tip", tip_ct_mm)
    lm = _point("landmark", landmark_ct_mm)
    if not math.isfinite(tolerance_mm) or tolerance_mm <= 0:
        raise OverlayError(f"landmark tolerance must be > 0 mm, got {tolerance_mm}")
    return LandmarkCheck(str(name), tip, lm, float(np.linalg.norm(tip - lm)), float(tolerance_mm))


def registration_text(fre_mm: float | None, tre_mm: float | None, target: str = "target") -> str:
    """``"reg. FRE 0.42 mm, pred. TRE 0.9 mm @ target (registration only)"``."""
    parts = []
    for label, v, fmt in (("reg. FRE", fre_mm, "{:.2f}"), ("pred. TRE", tre_mm, "{:.1f}")):
        if v is not None:
            if not math.isfinite(v) or v < 0:
                raise OverlayError(f"{label} must be a finite number >= 0 mm, got {v!r}")
            parts.append(f"{label} {fmt.format(v)} mm" + (f" @ {target}" if "TRE" in label
                                                           else ""))
    if not parts:
        return "registration error unknown"
    if parts[0].startswith("pred."):
        parts[0] = "reg. " + parts[0]
    return ", ".join(parts) + " (registration only)"


class FrameRate:
    """Frame rate from capture timestamps over the last ``window`` frames."""

    def __init__(self, window: int = 30) -> None:
        if window < 2:
            raise OverlayError(f"frame-rate window must be >= 2 frames, got {window}")
        self._t: deque[float] = deque(maxlen=window)

    def update(self, capture_time_s: float) -> float | None:
        """Add a frame; returns frames per second (None until two frames are known)."""
        if not math.isfinite(capture_time_s):
            raise OverlayError(f"capture time must be finite, got {capture_time_s!r}")
        if self._t and capture_time_s <= self._t[-1]:
            self._t.clear()
        self._t.append(float(capture_time_s))
        return self.fps

    @property
    def fps(self) -> float | None:
        """Current estimate."""
        if len(self._t) < 2:
            return None
        return (len(self._t) - 1) / (self._t[-1] - self._t[0])


@dataclass(frozen=True)
class HudInfo:
    """What the HUD shows besides the tracking state (None = not shown)."""

    fre_mm: float | None = None
    tre_mm: float | None = None
    target_name: str = "target"
    fps: float | None = None
    latency_ms: float | None = None
    landmark: LandmarkCheck | None = None


def _text(img: np.ndarray, s: str, org: tuple[int, int], colour: tuple[int, int, int],
          scale: float, thick: int) -> int:
    (w, h), base = cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = org
    cv2.rectangle(img, (x - 4, y - h - 4), (x + w + 4, y + base + 2), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, s, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return h + base + 10


def draw_hud(frame_bgr: np.ndarray, status: TrackingStatus, info: HudInfo | None = None
             ) -> np.ndarray:
    """Draw the HUD onto ``frame_bgr`` in place (and return it).

    LIVE: the state line in green in the top-left block. HELD (the overlay is drawn with the
    pose predicted to the frame's time): the state line in amber with the pose's age, e.g.
    "POSE HELD 67 ms (PREDICTED)", no border. STALE / LOST: a red (LOST, or the warning look)
    or amber (STALE) border of ~1.5 % of the image height and the state message in a banner
    at the top centre, e.g. "TRACKING LOST - OVERLAY HIDDEN".
    """
    if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise OverlayError(f"frame must be an (H, W, 3) uint8 BGR image, got {frame_bgr.shape}")
    if not isinstance(status, TrackingStatus):
        raise OverlayError(f"status must be a TrackingStatus, got {type(status).__name__}")
    info = info or HudInfo()
    h, w = frame_bgr.shape[:2]
    scale = max(0.35, h / 1200.0)
    thick = max(1, round(h / 500))
    colour = _STATE_COLOUR[status.state]
    x = max(12, round(h * 0.03))
    y = max(24, round(h * 0.03)) + round(h * 0.06)
    shown = status.state in (TrackingState.LIVE, TrackingState.HELD)
    if not shown or status.warn_overlay:
        border = max(4, round(h * 0.015))
        cv2.rectangle(frame_bgr, (0, 0), (w - 1, h - 1), RED if status.state is
                      TrackingState.LOST or status.warn_overlay else AMBER, 2 * border)
        big = scale * 1.6
        (tw, th), _ = cv2.getTextSize(status.message, cv2.FONT_HERSHEY_SIMPLEX, big, thick + 1)
        top = 2 * border + th + 12
        y = top + _text(frame_bgr, status.message, (max(4, (w - tw) // 2), top), colour, big,
                        thick + 1) + round(h * 0.03)
    if shown:
        y += _text(frame_bgr, status.message, (x, y), colour, scale, thick)
    y += _text(frame_bgr, registration_text(info.fre_mm, info.tre_mm, info.target_name), (x, y),
               WHITE, scale, thick)
    rate = []
    if info.fps is not None:
        rate.append(f"{info.fps:.1f} fps")
    if info.latency_ms is not None:
        rate.append(f"latency {info.latency_ms:.0f} ms")
    if rate:
        y += _text(frame_bgr, "  ".join(rate), (x, y), WHITE, scale, thick)
    if info.landmark is not None:
        y += _text(frame_bgr, info.landmark.text(), (x, y),
                   GREEN if info.landmark.ok else AMBER, scale, thick)
    return frame_bgr


def draw_landmark(frame_bgr: np.ndarray, camera: CameraModel, T_camera_ct: Transform,
                  check: LandmarkCheck) -> np.ndarray:
    """Mark the planned landmark (cross) and the pointer tip (circle) in the image."""
    pts = T_camera_ct.apply(np.stack([check.landmark_ct_mm, check.tip_ct_mm]))
    if np.any(pts[:, 2] <= 0):
        return frame_bgr
    uv = camera.project(pts)
    if not np.all(np.isfinite(uv)) or np.abs(uv).max() > 1e5:
        return frame_bgr
    r = max(6, round(frame_bgr.shape[0] / 80))
    (lu, lv), (tu, tv) = np.round(uv).astype(int)
    cv2.drawMarker(frame_bgr, (int(lu), int(lv)), WHITE, cv2.MARKER_CROSS, 2 * r, 2)
    cv2.circle(frame_bgr, (int(tu), int(tv)), r, GREEN if check.ok else AMBER, 2, cv2.LINE_AA)
    return frame_bgr


def draw_guarded(
    frame_bgr: np.ndarray,
    renderer: OverlayRenderer,
    T_camera_ct: Transform | None,
    status: TrackingStatus,
    info: HudInfo | None = None,
) -> np.ndarray:
    """Overlay (only as the tracking gate allows) plus HUD, in place.

    LIVE or HELD: the model is drawn normally. STALE with ``stale_policy="warn"``: red outlines only
    (:meth:`OverlayRenderer.render` ``warning=True``) under a "NOT CURRENT" banner. Otherwise no
    model pixel is drawn. ``T_camera_ct`` may be None when there is no pose.
    """
    if status.show_overlay or status.warn_overlay:
        if T_camera_ct is None:
            raise OverlayError("tracking status allows drawing but no pose T_camera_ct was given")
        renderer.draw(frame_bgr, T_camera_ct, warning=not status.show_overlay)
        if status.show_overlay and info is not None and info.landmark is not None:
            draw_landmark(frame_bgr, renderer.camera, T_camera_ct, info.landmark)
    return draw_hud(frame_bgr, status, info)
