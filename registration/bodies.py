"""Rigid multi-marker bodies: several ArUco markers fixed on one object, one pose.

Body file (JSON, mm in the body frame)::

    {
      "name": "REF",                     # frame name of the body (pose is T_CAMERA_REF)
      "dictionary": "DICT_4X4_50",       # optional: dictionary the markers come from
      "unit": "mm",                      # optional; only "mm" is accepted
      "markers": [
        {"id": 3, "corners": [[-20, 20, 0], [20, 20, 0], [20, -20, 0], [-20, -20, 0]]},
        {"id": 7, "corners": [[40, 20, 5], [80, 20, 5], [80, -20, 5], [40, -20, 5]]}
      ]
    }

``corners`` are the four corners of the marker's black square in the body frame, in the
order OpenCV reports them: the printed marker's top-left, top-right, bottom-right,
bottom-left (clockwise when the marker is seen upright from the front). Markers may lie on
different planes (a cube, a tool). Ids must be unique.

The body pose ``T_CAMERA_<name>`` is solved from all corners of the visible markers at once
(:func:`scrubin.registration.markers.solve_pose`: IPPE for coplanar, SQPnP otherwise, then LM).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.fileio import read_json, write_json_atomic
from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform
from scrubin.registration.markers import (
    MarkerDetections,
    MarkerError,
    PoseEstimate,
    get_dictionary,
    marker_object_points,
    solve_pose,
)


class BodyError(RegistrationError):
    """Malformed body description."""


@dataclass(frozen=True)
class BodyPose:
    """A body pose with its quality: markers and corners used, reprojection RMS (px)."""

    estimate: PoseEstimate
    marker_ids: tuple[int, ...]

    @property
    def n_markers(self) -> int:
        """Markers used."""
        return len(self.marker_ids)

    @property
    def n_corners(self) -> int:
        """Corners used (4 per marker)."""
        return self.estimate.n_points


class RigidBody:
    """Markers with known corner positions in one body frame (mm).

    Parameters
    ----------
    name
        Frame name of the body (``src`` of the pose ``T_CAMERA_<name>``).
    markers
        ``{marker_id: (4, 3) corners in mm}``, OpenCV corner order (see module docstring).
    dictionary
        Optional dictionary name the ids refer to.
    """

    def __init__(
        self, name: str, markers: dict[int, np.ndarray], dictionary: str | None = None
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise BodyError(f"body name must be a non-empty string, got {name!r}")
        if not markers:
            raise BodyError("a body needs at least one marker")
        checked: dict[int, np.ndarray] = {}
        for mid, corners in markers.items():
            if isinstance(mid, bool) or not isinstance(mid, (int, np.integer)) or mid < 0:
                raise BodyError(f"marker id must be an integer >= 0, got {mid!r}")
            c = np.asarray(corners, dtype=np.float64)
            if c.shape != (4, 3):
                raise BodyError(
                    f"marker {mid}: corners must be 4 points [x, y, z] mm, got {c.shape}")
            if not np.all(np.isfinite(c)):
                raise BodyError(f"marker {mid}: corners contain NaN or infinite values")
            sides = np.linalg.norm(np.roll(c, -1, axis=0) - c, axis=1)
            area = 0.5 * np.linalg.norm(np.cross(c[2] - c[0], c[3] - c[1]))
            if sides.min() <= 1e-6 or area <= 1e-6:
                raise BodyError(f"marker {mid}: corners are degenerate (zero side or area)")
            checked[int(mid)] = c
        if dictionary is not None:
            get_dictionary(dictionary)
        self.name = name.strip()
        self.markers = checked
        self.dictionary = dictionary

    @classmethod
    def single(cls, marker_id: int, size_mm: float, name: str = "MARKER") -> RigidBody:
        """A body made of one square marker, frame = the marker's own (IPPE_SQUARE) frame."""
        try:
            pts = marker_object_points(size_mm)
        except MarkerError as exc:
            raise BodyError(str(exc)) from None
        return cls(name, {int(marker_id): pts})

    @classmethod
    def grid_2x2(
        cls, marker_ids: tuple[int, int, int, int], marker_mm: float, gap_mm: float,
        name: str, dictionary: str = "DICT_4X4_50",
    ) -> RigidBody:
        """A flat plate of 2x2 markers (ids TL, TR, BL, BR), ``gap_mm`` apart, centred on the
        body origin in its z = 0 plane; corners TL, TR, BR, BL as printed (OpenCV order)."""
        if marker_mm <= 0 or gap_mm < 0:
            raise BodyError(f"plate needs marker size > 0 and gap >= 0 mm, got {marker_mm}, "
                            f"{gap_mm}")
        h = marker_mm / 2
        c = (marker_mm + gap_mm) / 2
        markers = {}
        for mid, (cx, cy) in zip(marker_ids, [(-c, c), (c, c), (-c, -c), (c, -c)], strict=True):
            markers[int(mid)] = np.array([[cx - h, cy + h, 0], [cx + h, cy + h, 0],
                                          [cx + h, cy - h, 0], [cx - h, cy - h, 0]], np.float64)
        return cls(name, markers, dictionary)

    @property
    def ids(self) -> tuple[int, ...]:
        """Marker ids of the body, sorted."""
        return tuple(sorted(self.markers))

    def estimate_pose(
        self,
        detections: MarkerDetections,
        camera: CameraModel,
        timestamp: float | None = None,
        prior: Transform | None = None,
    ) -> BodyPose | None:
        """Pose from the body's markers among ``detections``; None if none is visible.

        ``prior`` (e.g. the previous frame's pose) resolves the planar flip ambiguity of
        coplanar markers (:func:`scrubin.registration.markers.solve_pose`).
        """
        obj, img, used = [], [], []
        for mid, corners in zip(detections.ids.tolist(), detections.corners_px, strict=True):
            if mid in self.markers and mid not in used:
                obj.append(self.markers[mid])
                img.append(corners)
                used.append(mid)
        if not used:
            return None
        o = np.concatenate(obj)
        i = np.concatenate(img)
        square = len(used) == 1 and np.allclose(
            o, marker_object_points(np.linalg.norm(o[1] - o[0])), atol=1e-9
        )
        est = solve_pose(o, i, camera, self.name, timestamp=timestamp, square=square,
                         prior=prior)
        return BodyPose(est, tuple(used))

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The body-file form (module docstring)."""
        data: dict[str, Any] = {"name": self.name, "unit": "mm"}
        if self.dictionary:
            data["dictionary"] = self.dictionary
        data["markers"] = [{"id": m, "corners": self.markers[m].tolist()} for m in self.ids]
        return data

    @classmethod
    def from_json(cls, data: Any) -> RigidBody:
        """Parse the body-file form."""
        if not isinstance(data, dict):
            raise BodyError("body JSON must be an object with 'name' and 'markers'")
        if data.get("unit", "mm") != "mm":
            raise BodyError(f"body unit is {data.get('unit')!r}; expected 'mm'")
        items = data.get("markers")
        if not isinstance(items, list) or not items:
            raise BodyError("body JSON needs a non-empty 'markers' list")
        markers: dict[int, np.ndarray] = {}
        for n, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item or "corners" not in item:
                raise BodyError(f"markers[{n}] needs 'id' and 'corners' (4 points [x, y, z] mm)")
            mid = item["id"]
            if not isinstance(mid, int) or isinstance(mid, bool):
                raise BodyError(f"markers[{n}].id must be an integer, got {mid!r}")
            if mid in markers:
                raise BodyError(f"marker id {mid} appears twice")
            try:
                markers[mid] = np.asarray(item["corners"], dtype=np.float64)
            except (TypeError, ValueError):
                raise BodyError(f"markers[{n}].corners must be 4 points [x, y, z] mm") from None
        try:
            return cls(str(data.get("name", "BODY")), markers, data.get("dictionary"))
        except MarkerError as exc:
            raise BodyError(str(exc)) from None

    def save(self, path: str | Path) -> None:
        """Write the body file atomically."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> RigidBody:
        """Read a body file; errors name the file."""
        p = Path(path)
        data = read_json(p, BodyError, "body file not found", "not a readable body JSON")
        try:
            return cls.from_json(data)
        except RegistrationError as exc:
            raise BodyError(f"{p}: {exc}") from None
