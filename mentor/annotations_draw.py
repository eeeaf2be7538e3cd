"""The surgeon's view of the mentor's annotations: event state and drawing into each frame.

:class:`AnnotationBoard` applies the server's ordered events (``{"seq", "event"}``, mentor/
DESIGN.md "Annotations"): events with ``seq`` <= the last one seen are dropped (replays after a
resume). :meth:`AnnotationBoard.draw` draws the visible annotations into a BGR view:

* anchored annotations (``anchors_ref_mm``, REF mm) are re-projected with the frame's
  ``T_CAMERA_REF`` and intrinsics (:func:`scrubin.mentor.anchor.project_anchors`) and drawn
  solid; like the overlay model they are hidden unless tracking is ``LIVE`` or ``HELD`` (the
  gate's stale/lost states hide them);
* a stroke not yet anchored (``pending``) is drawn solid in screen space at once (the
  station's display compositor re-composites the latest view as soon as an event is applied,
  :mod:`scrubin.mentor.station_display`; the next camera frame carries it too), then
  follows the anatomy once the station's ``anchor`` event lands;
* a stroke that hit nothing (``2d``) stays in screen space, drawn dashed, so it cannot be
  mistaken for one fixed to the anatomy;
* a laser point fades out over 1.5 s and is never anchored;
* :meth:`AnnotationBoard.draw_eye` draws the anchored ones into a headset eye's overlay,
  projected with that eye's camera and pose (``overlay.stereo.StereoRenderer.annotators``);
* every annotation carries its author's name; ``hide_all`` (surgeon only, enforced by the
  server) hides every mentor annotation until ``show_all``; ``clear_all`` removes them.

Pixel convention: normalised ``(x, y)`` -> ``(x * W - 0.5, y * H - 0.5)`` (OpenCV centres).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrubin.mentor.anchor import normalised_to_pixels, project_anchors
from scrubin.mentor.station_meta import FrameMeta

LASER_FADE_S = 1.5
SHOWN_STATES = ("LIVE", "HELD")
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing
_ONE = 1 << _SHIFT


@dataclass
class Annotation:
    """One annotation's current state (points normalised; anchors REF mm or None)."""

    annotation_id: str
    kind: str
    color: str
    author: str
    role: str
    points: list[list[float]]
    frame_id: int
    text: str = ""
    anchors_ref_mm: list[list[float] | None] | None = None
    anchor_state: str = "pending"
    received: float = field(default_factory=time.time)

    @property
    def anchored(self) -> bool:
        """Whether any point is anchored in REF."""
        return self.anchor_state == "anchored" and bool(self.anchors_ref_mm) and any(
            a is not None for a in self.anchors_ref_mm)


@dataclass
class DrawReport:
    """What one :meth:`AnnotationBoard.draw` showed: the board version and, per drawn
    annotation id, how many points it had."""

    version: int = -1
    points: dict[str, int] = field(default_factory=dict)


def hex_to_bgr(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` -> (b, g, r); invalid -> red."""
    try:
        r, g, b = (int(color[i: i + 2], 16) for i in (1, 3, 5))
        return b, g, r
    except (ValueError, TypeError, IndexError):
        return 0, 0, 255


class AnnotationBoard:
    """Annotations of a session as the surgeon station sees them (thread-safe: events are
    applied on the event loop, frames drawn on the frame-loop thread)."""

    def __init__(self) -> None:
        self.items: dict[str, Annotation] = {}
        self.hidden = False
        self.last_seq = 0
        self.applied = 0
        #: bumped by every applied event (a composite drawn at version v shows every event
        #: applied before it)
        self.version = 0
        #: called with the new :attr:`version` after each applied event, on the applying
        #: thread, outside the lock (the station's display compositor wakes on it)
        self.listeners: list[Callable[[int], Any]] = []
        self._lock = threading.Lock()

    def apply(self, seq: int, event: dict[str, Any]) -> bool:
        """Apply one ordered event; False when it was already seen (``seq`` <= last)."""
        with self._lock:
            done = self._apply(seq, event)
            if done:
                self.version += 1
            version = self.version
        if done:
            for fn in list(self.listeners):
                fn(version)
        return done

    def _apply(self, seq: int, event: dict[str, Any]) -> bool:
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        self.applied += 1
        op = event.get("op")
        aid = str(event.get("annotation_id", ""))
        if op == "hide_all":
            self.hidden = True
        elif op == "show_all":
            self.hidden = False
        elif op == "clear_all":
            self.items.clear()
        elif op == "delete":
            self.items.pop(aid, None)
        elif op in ("create", "update"):
            old = self.items.get(aid)
            pts = [list(map(float, p)) for p in event.get("points") or []]
            a = Annotation(aid, str(event.get("kind", "freehand")),
                           str(event.get("color", "#ff0000")), str(event.get("author", "")),
                           str(event.get("role", "")), pts, int(event.get("frame_id", 0)),
                           str(event.get("text", "")))
            if old is not None and old.points == pts and old.frame_id == a.frame_id:
                a.anchors_ref_mm, a.anchor_state = old.anchors_ref_mm, old.anchor_state
            if a.kind == "laser":
                a.anchor_state = "2d"
            self.items[aid] = a
        elif op == "anchor":
            a = self.items.get(aid)
            if a is not None and a.kind != "laser":
                a.anchors_ref_mm = event.get("anchors_ref_mm")
                a.anchor_state = str(event.get("anchor_state", "anchored"))
        return True

    # ------------------------------------------------------------------ drawing
    def draw(self, image_bgr: np.ndarray, meta: FrameMeta, now: float | None = None,
             report: DrawReport | None = None) -> int:
        """Draw the visible annotations into the view; returns how many were drawn.

        ``report``, when given, is filled with the board :attr:`version` drawn and each drawn
        annotation's number of points (one consistent state: events apply under the same lock).
        """
        with self._lock:
            if report is not None:
                report.version = self.version
                report.points.clear()
            return self._draw(image_bgr, meta, now,
                              drawn=report.points if report is not None else None)

    def draw_eye(self, canvas_bgra: np.ndarray, camera: Any, T_eye_ref: np.ndarray,
                 now: float | None = None) -> int:
        """Draw the *anchored* annotations into one headset eye's overlay image.

        The anchors (REF mm) are projected with that eye's own camera (intrinsics and eye-piece
        distortion of ``camera``, a :class:`~scrubin.registration.camera.CameraModel`) at
        ``T_eye_ref`` (4x4, REF -> eye frame, mm): ``cv2.projectPoints(T_EYE_REF @ p_REF)``,
        so each eye sees the stroke on the anatomy with the stereo disparity ``f * IPD / Z``.
        Strokes not anchored (pending / 2-D / laser) are screen-space marks of the camera
        view and have no place in a see-through eye; they are not drawn there.
        ``canvas_bgra`` is the eye's premultiplied BGRA overlay (transparent background):
        the marks are drawn opaque (alpha 255), anti-aliased edges stay premultiplied.
        The caller shows the eyes only while tracking is LIVE / HELD (the pipeline renders
        the stereo views only while the overlay is shown). Returns how many were drawn.
        """
        k = np.asarray(camera.matrix, np.float64)
        dist = tuple(float(d) for d in np.ravel(camera.dist)) or (0.0,) * 5
        meta = FrameMeta(0, 0.0, int(camera.width), int(camera.height),
                         (float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])),
                         dist, np.asarray(T_eye_ref, np.float64), None, "LIVE")
        with self._lock:
            return self._draw(canvas_bgra, meta, now, anchored_only=True)

    def _draw(self, image_bgr: np.ndarray, meta: FrameMeta, now: float | None,
              anchored_only: bool = False, drawn: dict[str, int] | None = None) -> int:
        import cv2

        now = time.time() if now is None else now
        h, w = image_bgr.shape[:2]
        alpha = (255,) if image_bgr.ndim == 3 and image_bgr.shape[2] == 4 else ()
        if self.hidden:
            if self.items and not anchored_only:
                _label(image_bgr, "mentor annotations hidden", (w - 300, 24), cv2)
            return 0
        show_anchored = meta.tracking in SHOWN_STATES and meta.T_camera_ref is not None
        n = 0
        for a in list(self.items.values()):
            if not a.points or (anchored_only and not a.anchored):
                continue
            colour = hex_to_bgr(a.color) + alpha
            if a.kind == "laser":
                age = now - a.received
                if age > LASER_FADE_S:
                    continue
                colour = tuple(int(c * (1 - age / LASER_FADE_S)) for c in colour)
            if a.anchored:
                if not show_anchored:
                    continue
                px = project_anchors(meta, a.anchors_ref_mm or [])
                dashed = False
            else:
                px = normalised_to_pixels(a.points, w, h)
                dashed = a.anchor_state == "2d" and a.kind != "laser"
            if not np.isfinite(px).any():
                continue
            _draw_kind(image_bgr, a, px, colour, dashed, cv2)
            first = px[np.isfinite(px).all(axis=1)][0]
            _label(image_bgr, a.author or a.role or "?", (int(first[0]) + 8, int(first[1]) - 8),
                   cv2, alpha)
            n += 1
            if drawn is not None:
                drawn[a.annotation_id] = len(a.points)
        return n


def _fp(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * _ONE)), int(round(p[1] * _ONE))


def _segments(px: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive finite points (a stroke is broken where a point did not anchor)."""
    ok = np.isfinite(px).all(axis=1)
    out, cur = [], []
    for p, good in zip(px, ok, strict=True):
        if good:
            cur.append(p)
        elif cur:
            out.append(np.array(cur))
            cur = []
    if cur:
        out.append(np.array(cur))
    return out


def _polyline(img: np.ndarray, pts: np.ndarray, colour: tuple[int, ...], dashed: bool,
              cv2: Any, thickness: int = 3) -> None:
    if len(pts) == 1:
        cv2.circle(img, _fp(pts[0]), 4 * _ONE, colour, -1, cv2.LINE_AA, _SHIFT)
        return
    if not dashed:
        cv2.polylines(img, [np.round(pts * _ONE).astype(np.int32)], False, colour, thickness,
                      cv2.LINE_AA, _SHIFT)
        return
    # dashes of 10 px, gaps of 8 px along the polyline
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total, pos = s[-1], 0.0
    while pos < total:
        a, b = pos, min(pos + 10.0, total)
        pa = np.array([np.interp(a, s, pts[:, 0]), np.interp(a, s, pts[:, 1])])
        pb = np.array([np.interp(b, s, pts[:, 0]), np.interp(b, s, pts[:, 1])])
        cv2.line(img, _fp(pa), _fp(pb), colour, thickness, cv2.LINE_AA, _SHIFT)
        pos += 18.0


def _draw_kind(img: np.ndarray, a: Annotation, px: np.ndarray, colour: tuple[int, ...],
               dashed: bool, cv2: Any) -> None:
    good = px[np.isfinite(px).all(axis=1)]
    if a.kind == "arrow" and len(good) >= 2:
        p0, p1 = good[0], good[-1]
        _polyline(img, np.array([p0, p1]), colour, dashed, cv2)
        d = p1 - p0
        ln = float(np.hypot(*d))
        if ln > 1:
            u = d / ln
            for ang in (2.6, -2.6):
                r = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
                tip = p1 + (r @ u) * min(18.0, 0.4 * ln)
                cv2.line(img, _fp(p1), _fp(tip), colour, 3, cv2.LINE_AA, _SHIFT)
    elif a.kind == "circle" and len(good) >= 2:
        c, r = good[0], float(np.hypot(*(good[1] - good[0])))
        if dashed:
            t = np.linspace(0, 2 * math.pi, 73)
            _polyline(img, c + r * np.column_stack([np.cos(t), np.sin(t)]), colour, True, cv2)
        else:
            cv2.circle(img, _fp(c), int(round(r * _ONE)), colour, 3, cv2.LINE_AA, _SHIFT)
    elif a.kind == "text":
        p = good[0]
        cv2.putText(img, a.text[:80], (int(p[0]), int(p[1])), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    colour, 2, cv2.LINE_AA)
    else:
        for run in _segments(px):
            _polyline(img, run, colour, dashed, cv2)


def _label(img: np.ndarray, text: str, org: tuple[int, int], cv2: Any,
           alpha: tuple[int, ...] = ()) -> None:
    """Author name: white on a black outline (readable on any background); ``alpha`` (255,)
    for a BGRA canvas."""
    cv2.putText(img, text[:40], org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0) + alpha, 3,
                cv2.LINE_AA)
    cv2.putText(img, text[:40], org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255) + alpha, 1,
                cv2.LINE_AA)
