"""A tracked pointer in the overlay pipeline: its tip in the CT and the landmark check.

Per frame (all mm; ``tip_TOOL`` from a pivot calibration, ``registration.pivot``)::

    T_CAMERA_TOOL = tool tracker (its own marker body)
    T_REF_TOOL    = inverse(T_CAMERA_REF) @ T_CAMERA_TOOL
    tip_CT        = inverse(T_CAMERA_CT) @ T_CAMERA_TOOL @ tip_TOOL = T_CT_REF @ T_REF_TOOL @ tip

The check (:func:`scrubin.overlay.hud.landmark_check`: distance to the selected landmark, or to the
nearest of the planned ones) is made only while both the reference and the tool are LIVE
(each by its tracker's state machine, :mod:`scrubin.registration.tracking_state`, on capture
times) *and* both were measured in this very frame: a HELD pose is predicted well enough for
drawing, but a landmark check is a measurement and must not rest on a prediction. Otherwise
the HUD says "pointer not tracked".
Poses for OpenIGTLink (:meth:`PointerResult.igtl_tools`):
``T_REF_TOOL`` and ``T_REF_TIP`` (the tool's axes moved to the tip), sent as
``<Tool>ToReference`` / ``<Tool>TipToReference``.

Input parsing for the command line: :func:`parse_landmark` (``NAME=X,Y,Z``, CT / LPS mm),
:func:`load_tip` (``X,Y,Z`` in TOOL mm, or the JSON of ``scrubin calibrate pivot`` with its
``tip_tool_mm`` field).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.overlay.errors import OverlayError
from scrubin.overlay.hud import LandmarkCheck, landmark_check
from scrubin.overlay.safety import TrackingState
from scrubin.registration.frames import CAMERA, REF, TOOL, Transform
from scrubin.registration.tracker import MarkerTracker

#: OpenIGTLink device-name stem of the pointer ("StylusTipToReference" is 20 bytes, the limit)
IGTL_TOOL = "Stylus"
TIP = "TIP"
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_XYZ = re.compile(rf"^\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*$")


class PointerError(OverlayError):
    """Bad pointer input: tip offset, landmark or pivot file."""


@dataclass(frozen=True)
class Landmark:
    """A planned landmark: name and position (CT / LPS mm)."""

    name: str
    position_ct_mm: np.ndarray


def parse_xyz(text: str, label: str) -> np.ndarray:
    """``"X,Y,Z"`` -> (3,) float; ``label`` names the option in the error."""
    m = _XYZ.match(text) if isinstance(text, str) else None
    if m is None:
        raise PointerError(f"{label} {text!r}: expected three numbers X,Y,Z in mm")
    p = np.array([float(g) for g in m.groups()])
    if not np.all(np.isfinite(p)):
        raise PointerError(f"{label} {text!r}: coordinates must be finite")
    return p


def parse_landmark(text: str) -> Landmark:
    """``"NAME=X,Y,Z"`` (CT / LPS mm) -> :class:`Landmark`."""
    name, sep, xyz = str(text).partition("=")
    if not sep or not name.strip() or not name.strip().isprintable():
        raise PointerError(f"--landmark {text!r}: expected NAME=X,Y,Z (CT LPS mm)")
    return Landmark(name.strip(), parse_xyz(xyz, f"--landmark {name.strip()}:"))


def load_tip(spec: str) -> np.ndarray:
    """Tip offset in TOOL mm from ``"X,Y,Z"`` or a ``scrubin calibrate pivot`` JSON file."""
    if _XYZ.match(str(spec)):
        return parse_xyz(spec, "--tool-tip")
    p = Path(spec)
    if not p.is_file():
        raise PointerError(f"--tool-tip {spec!r}: neither X,Y,Z (expected three numbers in mm) "
                           "nor an existing pivot JSON file")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PointerError(f"--tool-tip {p}: not a readable pivot JSON ({exc})") from None
    tip = data.get("tip_tool_mm") if isinstance(data, dict) else None
    if isinstance(data, dict) and data.get("unit", "mm") != "mm":
        raise PointerError(f"--tool-tip {p}: unit is {data.get('unit')!r}; expected 'mm'")
    try:
        t = np.asarray(tip, np.float64).reshape(-1)
    except (TypeError, ValueError):
        t = np.zeros(0)
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise PointerError(f"--tool-tip {p}: needs a 'tip_tool_mm' field with 3 finite "
                           f"numbers (mm), as written by 'scrubin calibrate pivot'; got {tip!r}")
    return t


class NotTracked(LandmarkCheck):
    """The HUD line while the reference or the pointer is not LIVE (no distance)."""

    def text(self) -> str:
        """``"landmark NAME: pointer not tracked"``."""
        return f"landmark {self.name}: pointer not tracked"


@dataclass(frozen=True)
class PointerResult:
    """One frame of the pointer: tool state, poses, tip (CT mm) and the landmark check."""

    state: str
    detected: bool
    live: bool
    T_ref_tool: Transform | None
    tip_ct_mm: np.ndarray | None
    check: LandmarkCheck | None
    tip_tool_mm: np.ndarray

    def igtl_tools(self) -> dict[str, Transform]:
        """``{Stylus: T_REF_TOOL, StylusTip: T_REF_TIP}`` while live, else empty."""
        if not self.live or self.T_ref_tool is None:
            return {}
        tip = Transform.from_rt(np.eye(3), self.tip_tool_mm, TIP, TOOL)
        return {IGTL_TOOL: self.T_ref_tool, f"{IGTL_TOOL}Tip": self.T_ref_tool @ tip}

    def to_json(self) -> dict[str, Any]:
        """Report fields: tool state, tip (CT mm), landmark and distance (mm) when measured."""
        measured = self.check is not None and not isinstance(self.check, NotTracked)
        return {
            "tool_state": self.state,
            "tool_detected": self.detected,
            "tip_ct_mm": (np.round(self.tip_ct_mm, 4).tolist() if self.tip_ct_mm is not None
                          else None),
            "landmark": self.check.name if self.check is not None else None,
            "landmark_distance_mm": (round(self.check.distance_mm, 4) if measured else None),
        }


class PointerTracking:
    """Tool tracking plus landmark check (module docstring).

    Parameters
    ----------
    tracker
        Tracker of the pointer's marker body (its pose is taken as ``T_CAMERA_TOOL``).
    tip_tool_mm
        Tip offset in the tool frame (mm), e.g. from the pivot calibration.
    landmarks
        Planned landmarks (CT / LPS mm); the check uses ``select`` or the nearest one.
    tolerance_mm
        Distance shown as OK on the HUD.
    select
        Name of the landmark to check against (None: the nearest).

    The tool's tracking state comes from ``tracker`` (its limits: the shared defaults unless
    the tracker was given others).
    """

    def __init__(self, tracker: MarkerTracker, tip_tool_mm: np.ndarray,
                 landmarks: Sequence[Landmark] = (), tolerance_mm: float = 2.0,
                 select: str | None = None) -> None:
        if not isinstance(tracker, MarkerTracker):
            raise PointerError(f"tracker must be a MarkerTracker, got {type(tracker).__name__}")
        tip = np.asarray(tip_tool_mm, np.float64).reshape(-1)
        if tip.shape != (3,) or not np.all(np.isfinite(tip)):
            raise PointerError(f"tip offset must be 3 finite numbers (TOOL mm), got "
                               f"{tip_tool_mm!r}")
        lms = list(landmarks)
        if not all(isinstance(lm, Landmark) for lm in lms):
            raise PointerError("landmarks must be Landmark objects")
        names = [lm.name for lm in lms]
        if len(set(names)) != len(names):
            raise PointerError(f"landmark names must be unique, got {names}")
        if select is not None and select not in names:
            raise PointerError(f"selected landmark {select!r} is not among {names}")
        if not math.isfinite(tolerance_mm) or tolerance_mm <= 0:
            raise PointerError(f"landmark tolerance must be > 0 mm, got {tolerance_mm}")
        self.tracker = tracker
        self.tip_tool_mm = tip
        self.landmarks = lms
        self.tolerance_mm = float(tolerance_mm)
        self.select = select

    def _target(self, tip_ct: np.ndarray | None) -> Landmark:
        if self.select is not None:
            return next(lm for lm in self.landmarks if lm.name == self.select)
        if tip_ct is None or len(self.landmarks) == 1:
            return self.landmarks[0]
        d = [np.linalg.norm(lm.position_ct_mm - tip_ct) for lm in self.landmarks]
        return self.landmarks[int(np.argmin(d))]

    def update(self, image: np.ndarray, capture_time_s: float, T_camera_ref: Transform | None,
               ref_live: bool, T_ref_ct: Transform) -> PointerResult:
        """Track the tool in ``image`` and check the tip against the landmark.

        ``ref_live``: the reference is LIVE *and* ``T_camera_ref`` was measured in this frame.
        """
        tr = self.tracker.update(image, capture_time_s)
        tool_live = tr.state == TrackingState.LIVE.value
        t_ref_tool = tip_ct = None
        live = bool(ref_live and tool_live and tr.detected and tr.pose is not None
                    and T_camera_ref is not None)
        if live:
            t_cam_tool = Transform(tr.pose.matrix, TOOL, CAMERA, timestamp=tr.timestamp_s,
                                   clock=T_camera_ref.clock)
            t_ref_tool = T_camera_ref.inverse() @ t_cam_tool
            tip_ct = T_ref_ct.inverse().apply(t_ref_tool.apply(self.tip_tool_mm), REF)
        check = None
        if self.landmarks:
            lm = self._target(tip_ct)
            if tip_ct is not None:
                check = landmark_check(tip_ct, lm.position_ct_mm, lm.name, self.tolerance_mm)
            else:
                check = NotTracked(lm.name, np.full(3, np.nan), lm.position_ct_mm, math.nan,
                                   self.tolerance_mm)
        return PointerResult(tr.state, tr.detected, live, t_ref_tool, tip_ct, check,
                             self.tip_tool_mm)


def summarize_pointer(pointer: Sequence[dict[str, Any] | None],
                      stats: Any) -> dict[str, Any] | None:
    """Report summary of the per-frame pointer fields (``stats``: the pipeline's statistics)."""
    rows = [p for p in pointer if p is not None]
    if not rows:
        return None
    out: dict[str, Any] = {
        "frames_checked": sum(p["landmark_distance_mm"] is not None for p in rows),
        "landmark_distance_mm": stats([p["landmark_distance_mm"] for p in rows]),
    }
    if any("tip_error_mm" in p for p in rows):
        out["tip_error_mm"] = stats([p.get("tip_error_mm") for p in rows])
        out["landmark_distance_touching_mm"] = stats(
            [p["landmark_distance_mm"] for p in rows if p.get("touching_truth")])
        out["frames_touching_truth"] = sum(bool(p.get("touching_truth")) for p in rows)
    return out
