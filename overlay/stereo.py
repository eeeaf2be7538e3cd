"""Per-eye rendering for an optical see-through headset, from a display calibration.

``display.json``::

    {
      "model": "stereo_display",
      "ipd_mm": 63.0,                          # eyes at x = -ipd/2 (left), +ipd/2 (right)
      "eye": {"image_size": [1280, 720], "fov_deg": [40.0, 23.0]},   # both eyes, or:
      "left":  {"camera_matrix": [[...]], "dist_coeffs": [], "image_size": [w, h]},
      "right": {"image_size": [w, h], "fov_deg": [h_fov, v_fov]},
      "eye_offsets_mm": {"left": [-31.5, 0, 0], "right": [31.5, 0, 0]},   # optional
      "T_DISPLAY_CAMERA": [[4x4]]              # optional: headset camera -> display, mm
    }

Frames (``registration.frames``): ``DISPLAY`` is the headset frame between the eyes with
OpenCV axes (x right, y down, z forward, mm). Each eye frame ``LEFT_EYE`` / ``RIGHT_EYE`` has
the same axes, its origin at the eye's projection centre: ``eye_offsets_mm`` (default
(-ipd/2, 0, 0) and (+ipd/2, 0, 0)) are those centres in DISPLAY, so
``T_EYE_DISPLAY = [I | -offset]``. Per-eye intrinsics are either a camera matrix (with optional
distortion of the eye piece) or a field of view (degrees, full angles) plus resolution, giving
``fx = (w / 2) / tan(h_fov / 2)`` and the principal point at the image centre
``((w - 1) / 2, (h - 1) / 2)`` in the ``cv2.projectPoints`` pixel-centre convention.

Output: RGBA ``uint8`` per eye with a transparent background (alpha 0), premultiplied by
default (what an additive see-through display shows: black is see-through), straight alpha on
request; or both eyes side by side in one ``(h, 2w, 4)`` image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.fileio import read_json
from scrubin.overlay.composite import premultiplied_to_rgba
from scrubin.overlay.errors import OverlayError
from scrubin.overlay.renderer import OverlayRenderer, Structure
from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import CAMERA, CT, DISPLAY, LEFT_EYE, RIGHT_EYE, Transform


def _eye_camera(spec: Any, where: str) -> CameraModel:
    if not isinstance(spec, dict):
        raise OverlayError(f"{where} must be an object with image_size and camera_matrix or "
                           f"fov_deg, got {spec!r}")
    try:
        if "camera_matrix" in spec:
            return CameraModel.from_json(spec)
        w, h = (int(x) for x in spec["image_size"])
        hf, vf = (float(x) for x in spec["fov_deg"])
    except (KeyError, TypeError, ValueError) as exc:
        raise OverlayError(f"{where} needs image_size [w, h] and camera_matrix or fov_deg "
                           f"[horizontal, vertical] ({exc!r})") from None
    except RegistrationError as exc:
        raise OverlayError(f"{where}: {exc}") from None
    if w <= 0 or h <= 0 or not (0 < hf < 180 and 0 < vf < 180):
        raise OverlayError(f"{where}: image_size must be positive and fov_deg within (0, 180), "
                           f"got {[w, h]} and {[hf, vf]}")
    fx = (w / 2.0) / math.tan(math.radians(hf) / 2.0)
    fy = (h / 2.0) / math.tan(math.radians(vf) / 2.0)
    k = np.array([[fx, 0.0, (w - 1) / 2.0], [0.0, fy, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    return CameraModel(k, np.zeros(0), w, h)


def _vec3(v: Any, where: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1) if v is not None else np.zeros(0)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise OverlayError(f"{where} must be 3 finite numbers (mm), got {v!r}")
    return a


@dataclass(frozen=True)
class DisplayCalibration:
    """Both eyes of a see-through display (see module docstring)."""

    left: CameraModel
    right: CameraModel
    left_offset_mm: np.ndarray
    right_offset_mm: np.ndarray
    T_display_camera: Transform | None = None

    @property
    def ipd_mm(self) -> float:
        """Distance between the eye centres."""
        return float(np.linalg.norm(self.right_offset_mm - self.left_offset_mm))

    def T_eye_display(self, eye: str) -> Transform:
        """``T_LEFT_EYE_DISPLAY`` or ``T_RIGHT_EYE_DISPLAY`` (pure translation)."""
        off = self.left_offset_mm if eye == LEFT_EYE else self.right_offset_mm
        return Transform.from_rt(np.eye(3), -off, DISPLAY, eye)

    @classmethod
    def from_json(cls, data: Any) -> DisplayCalibration:
        """Parse the ``display.json`` form."""
        if not isinstance(data, dict):
            raise OverlayError("display calibration must be a JSON object")
        shared = data.get("eye")
        left = _eye_camera(data.get("left", shared), "display 'left' (or 'eye')")
        right = _eye_camera(data.get("right", shared), "display 'right' (or 'eye')")
        offsets = data.get("eye_offsets_mm")
        if offsets is not None:
            if not isinstance(offsets, dict):
                raise OverlayError("display eye_offsets_mm must be {'left': [x,y,z], 'right': ..}")
            lo = _vec3(offsets.get("left"), "display eye_offsets_mm.left")
            ro = _vec3(offsets.get("right"), "display eye_offsets_mm.right")
        else:
            ipd = data.get("ipd_mm")
            if isinstance(ipd, bool) or not isinstance(ipd, int | float) or not (
                    math.isfinite(ipd) and 40.0 <= ipd <= 90.0):
                raise OverlayError(f"display ipd_mm must be a number of millimetres in 40..90, "
                                   f"got {ipd!r}")
            lo = np.array([-ipd / 2.0, 0.0, 0.0])
            ro = np.array([ipd / 2.0, 0.0, 0.0])
        if np.linalg.norm(ro - lo) <= 0:
            raise OverlayError("display eye offsets must differ (zero IPD)")
        tdc = None
        if data.get("T_DISPLAY_CAMERA") is not None:
            m = data["T_DISPLAY_CAMERA"]
            m = m.get("matrix") if isinstance(m, dict) else m
            try:
                tdc = Transform(np.asarray(m, dtype=np.float64), CAMERA, DISPLAY)
            except (RegistrationError, ValueError, TypeError) as exc:
                raise OverlayError(f"display T_DISPLAY_CAMERA: {exc}") from None
        return cls(left, right, lo, ro, tdc)

    @classmethod
    def load(cls, path: str | Path) -> DisplayCalibration:
        """Read ``display.json``; errors name the file."""
        p = Path(path)
        data = read_json(p, OverlayError, "display calibration file not found",
                         "not a readable display JSON")
        try:
            return cls.from_json(data)
        except OverlayError as exc:
            raise OverlayError(f"{p}: {exc}") from None


@dataclass
class StereoFrame:
    """One RGBA image per eye (``(h, w, 4)`` uint8, transparent background)."""

    left: np.ndarray
    right: np.ndarray
    premultiplied: bool

    def side_by_side(self) -> np.ndarray:
        """Left | right in one image (eyes must share a height)."""
        if self.left.shape[0] != self.right.shape[0]:
            raise OverlayError("side-by-side output needs eyes of the same image height")
        return np.concatenate([self.left, self.right], axis=1)


class StereoRenderer:
    """Renders the structures for both eyes of a :class:`DisplayCalibration`.

    ``renderer_kw`` are passed to :class:`OverlayRenderer` (scale, near_mm, outline_px, ...).
    ``annotators``: callables ``f(eye, canvas_bgra, camera, T_eye_ct)`` run on each eye's
    premultiplied BGRA canvas after the structures are drawn, with that eye's own camera and
    pose (``LEFT_EYE`` / ``RIGHT_EYE``, ``T_EYE_CT = T_EYE_DISPLAY @ T_DISPLAY_CT``): the
    surgeon station draws the mentor's anchored annotations there
    (``scrubin.mentor.station_sink.StationSink.annotate_eye``).
    """

    def __init__(self, display: DisplayCalibration, structures: Sequence[Structure],
                 **renderer_kw: Any) -> None:
        if not isinstance(display, DisplayCalibration):
            raise OverlayError(f"display must be a DisplayCalibration, got "
                               f"{type(display).__name__}")
        self.display = display
        self.eyes = {
            LEFT_EYE: OverlayRenderer(display.left, structures, frame=LEFT_EYE, **renderer_kw),
            RIGHT_EYE: OverlayRenderer(display.right, structures, frame=RIGHT_EYE,
                                       **renderer_kw),
        }
        self.annotators: list[Callable[[str, np.ndarray, CameraModel, Transform], Any]] = []

    def warm_up(self) -> None:
        """Load the kernels before the first live frame (see ``OverlayRenderer.warm_up``)."""
        for r in self.eyes.values():
            r.warm_up()

    def render(self, T_display_ct: Transform, *, premultiplied: bool = True,
               warning: bool = False) -> StereoFrame:
        """Both eye images for the pose of CT in the DISPLAY frame."""
        if not isinstance(T_display_ct, Transform) or T_display_ct.src != CT or \
                T_display_ct.dst != DISPLAY:
            raise OverlayError("stereo pose must be a Transform from CT to DISPLAY (use "
                               "render_from_camera for a T_CAMERA_CT pose)")
        out = {}
        for eye, r in self.eyes.items():
            T = self.display.T_eye_display(eye) @ T_display_ct
            canvas = r.render(T, warning=warning).canvas()
            for annotate in self.annotators:
                annotate(eye, canvas, r.camera, T)
            out[eye] = premultiplied_to_rgba(canvas, premultiplied)
        return StereoFrame(out[LEFT_EYE], out[RIGHT_EYE], premultiplied)

    def render_from_camera(self, T_camera_ct: Transform, **kw: Any) -> StereoFrame:
        """Same, from the headset camera's pose of CT via ``T_DISPLAY_CAMERA``."""
        if self.display.T_display_camera is None:
            raise OverlayError("display calibration has no T_DISPLAY_CAMERA; pass a "
                               "T_DISPLAY_CT pose to render() instead")
        return self.render(self.display.T_display_camera @ T_camera_ct, **kw)
