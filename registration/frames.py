"""Coordinate frames and rigid transforms between them.

A transform is written ``T_dst_src``: it maps a point given in frame ``src`` into frame
``dst`` as ``p_dst = T · [p_src; 1]``. Composition ``T_c_b @ T_b_a`` gives ``T_c_a`` and
refuses frames that do not chain; inversion swaps the frames. Units are millimetres inside
Scrub In; conversions to metres happen only at the edges (glTF, depth clouds).

Frame names
-----------
``CT``        image / patient space of the scan, DICOM LPS mm.
``REF``       the patient reference marker (tracked body fixed to the patient).
``TOOL``      a tracked tool or pointer.
``CAMERA``    a camera, OpenCV convention: x right, y down, z forward (optical axis).
``TRACKER``   an external tracking system's base frame.
``DISPLAY``   a headset / display frame; ``LEFT_EYE`` / ``RIGHT_EYE`` per eye.

JSON form (see :meth:`Transform.to_json`)::

    {"from": "CT", "to": "REF", "unit": "mm", "matrix": [[...4 rows of 4...]],
     "timestamp": 12.345, "source": {"series_instance_uid": ..., "frame_of_reference_uid": ...}}

plus ``"clock"`` when the timestamp's clock is named (e.g. ``"capture"``: a frame source's
capture clock; ``"unix"``: seconds since 1970-01-01 UTC).

Timestamps and clocks
---------------------
A transform's ``timestamp`` is the capture time of the data that produced it, on the clock
named by ``clock`` (None: unnamed). A composition keeps the older timestamp when both inputs
are on one clock (the result is only as recent as its oldest input); when the inputs are on
different clocks their times cannot be compared, so the result gets *no* timestamp rather
than one input's time passed off as the other's. A static transform (a registration) that
should not bound the time of a tracked chain carries no timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.fileio import read_json, write_json_atomic
from scrubin.registration.errors import FrameMismatchError, RegistrationError

CT = "CT"
REF = "REF"
TOOL = "TOOL"
CAMERA = "CAMERA"
TRACKER = "TRACKER"
DISPLAY = "DISPLAY"
LEFT_EYE = "LEFT_EYE"
RIGHT_EYE = "RIGHT_EYE"

_ROTATION_TOL = 1e-6


def _check_rigid(matrix: np.ndarray, allow_scale: bool = False) -> np.ndarray:
    m = np.array(matrix, dtype=np.float64)  # a private copy: the caller's array may change
    if m.shape != (4, 4):
        raise RegistrationError(f"transform matrix must be 4x4, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise RegistrationError("transform matrix contains NaN or infinite values")
    if np.abs(m[3] - _LAST_ROW).max() > 1e-9:
        raise RegistrationError(f"transform matrix last row must be [0, 0, 0, 1], got {m[3]}")
    r = m[:3, :3]
    det = float(np.linalg.det(r))
    if det <= 0:
        raise RegistrationError("transform matrix is a reflection or singular (det <= 0)")
    scale = det ** (1.0 / 3.0)
    if not allow_scale and abs(scale - 1.0) > 1e-5:
        raise RegistrationError(f"transform is not rigid: scale {scale:.6f} (expected 1)")
    rn = r / scale
    if np.abs(rn.T @ rn - _I3).max() > 1e-5:
        raise RegistrationError("transform rotation part is not orthonormal")
    return m


_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_I3 = np.eye(3)


@dataclass(frozen=True)
class Transform:
    """A rigid (optionally isotropically scaled) transform ``T_dst_src`` in millimetres.

    Parameters
    ----------
    matrix
        4x4 homogeneous matrix mapping ``src`` points to ``dst`` points (mm).
    src, dst
        Frame names (see module docstring).
    timestamp
        Capture time of the data that produced it (seconds, capture clock), or None.
    source
        Provenance, e.g. ``{"series_instance_uid": ..., "frame_of_reference_uid": ...}``.
    allow_scale
        Accept an isotropic scale (e.g. Umeyama with scaling); rigid by default.
    clock
        Name of the clock ``timestamp`` is on (e.g. ``"capture"``, ``"unix"``), or None
        (unnamed; see the module docstring for composition).
    """

    matrix: np.ndarray
    src: str
    dst: str
    timestamp: float | None = None
    source: dict[str, str] = field(default_factory=dict)
    allow_scale: bool = False
    clock: str | None = None

    def __post_init__(self) -> None:
        if not self.src or not self.dst:
            raise RegistrationError("transform needs both a source and a destination frame name")
        m = _check_rigid(self.matrix, self.allow_scale)
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    # ------------------------------------------------------------------ builders
    @classmethod
    def identity(cls, src: str, dst: str) -> Transform:
        """The identity from ``src`` to ``dst`` (frames that coincide)."""
        return cls(np.eye(4), src, dst)

    @classmethod
    def from_rt(
        cls, rotation: np.ndarray, translation: np.ndarray, src: str, dst: str, **kw: Any
    ) -> Transform:
        """Build from a 3x3 rotation and a translation in mm."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(rotation, dtype=np.float64)
        m[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
        return cls(m, src, dst, **kw)

    # ------------------------------------------------------------------ algebra
    @property
    def rotation(self) -> np.ndarray:
        """3x3 rotation (times scale, if any)."""
        return self.matrix[:3, :3].copy()

    @property
    def translation(self) -> np.ndarray:
        """Translation in mm."""
        return self.matrix[:3, 3].copy()

    def __matmul__(self, other: Transform) -> Transform:
        """Compose: ``T_c_b @ T_b_a -> T_c_a``; refuses frames or provenance that differ."""
        if not isinstance(other, Transform):
            return NotImplemented
        if self.src != other.dst:
            raise FrameMismatchError(
                f"cannot compose T_{self.dst}_{self.src} with T_{other.dst}_{other.src}: "
                f"frame {self.src!r} != {other.dst!r}"
            )
        source = merge_source(self.source, other.source)
        stamp, clock = compose_time(self, other)
        return Transform(
            self.matrix @ other.matrix,
            other.src,
            self.dst,
            timestamp=stamp,
            source=source,
            allow_scale=self.allow_scale or other.allow_scale,
            clock=clock,
        )

    def inverse(self) -> Transform:
        """``T_src_dst``."""
        return Transform(
            np.linalg.inv(self.matrix),
            self.dst,
            self.src,
            timestamp=self.timestamp,
            source=dict(self.source),
            allow_scale=self.allow_scale,
            clock=self.clock,
        )

    def apply(self, points: np.ndarray, frame: str | None = None) -> np.ndarray:
        """Map ``(N, 3)`` (or ``(3,)``) points in mm from ``src`` to ``dst``.

        ``frame``, when given, must equal ``src``: a guard against passing points of the
        wrong frame.
        """
        if frame is not None and frame != self.src:
            raise FrameMismatchError(
                f"points are in frame {frame!r} but T_{self.dst}_{self.src} expects {self.src!r}"
            )
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1] != 3:
            raise RegistrationError(f"points must have shape (N, 3), got {p.shape}")
        return p @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The project's JSON form: from, to, unit, matrix (row-major 4x4), timestamp, source."""
        d: dict[str, Any] = {
            "from": self.src,
            "to": self.dst,
            "unit": "mm",
            "matrix": self.matrix.tolist(),
            "timestamp": self.timestamp,
            "source": dict(self.source),
        }
        if self.clock is not None:
            d["clock"] = self.clock
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any], allow_scale: bool = False) -> Transform:
        """Parse :meth:`to_json` output; refuses units other than mm."""
        try:
            src, dst, matrix = data["from"], data["to"], data["matrix"]
        except (KeyError, TypeError) as exc:
            raise RegistrationError(
                f"transform JSON needs 'from', 'to' and 'matrix' fields (missing {exc})"
            ) from None
        unit = data.get("unit", "mm")
        if unit != "mm":
            raise RegistrationError(f"transform JSON unit is {unit!r}; expected 'mm'")
        source = data.get("source") or {}
        try:
            matrix = np.asarray(matrix, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise RegistrationError(f"transform JSON 'matrix': expected 4x4 numbers, mm "
                                    f"({type(exc).__name__}: {exc})") from None
        if not isinstance(source, dict):
            raise RegistrationError(f"transform JSON 'source': expected an object, got "
                                    f"{type(source).__name__}")
        return cls(
            matrix,
            str(src),
            str(dst),
            timestamp=data.get("timestamp"),
            source={str(k): str(v) for k, v in source.items()},
            allow_scale=allow_scale,
            clock=None if data.get("clock") is None else str(data["clock"]),
        )

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path`` atomically (no partial file on failure)."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Transform:
        """Read a transform JSON file (the file itself, or an object with a ``transform`` key)."""
        p = Path(path)
        data = read_json(p, RegistrationError, unreadable="not a readable JSON transform")
        if isinstance(data, dict) and "transform" in data:
            data = data["transform"]
        try:
            return cls.from_json(data)
        except RegistrationError as exc:
            raise RegistrationError(f"{p}: {exc}") from None


def compose_time(a: Transform, b: Transform) -> tuple[float | None, str | None]:
    """Timestamp and clock of ``a @ b`` (module docstring, "Timestamps and clocks").

    One input stamped: its time and clock. Both stamped on the same clock: the older time.
    Both stamped on different clocks (a named clock differs from another or from an unnamed
    one): no timestamp, since neither time is a time on the other's clock.
    """
    if a.timestamp is None and b.timestamp is None:
        return None, None
    if a.timestamp is None:
        return b.timestamp, b.clock
    if b.timestamp is None:
        return a.timestamp, a.clock
    if a.clock != b.clock:
        return None, None
    return min(a.timestamp, b.timestamp), a.clock


def merge_source(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    """Union of two provenance dicts; refuses a key (e.g. frame_of_reference_uid) whose
    non-empty values differ, since the data then come from different scans."""
    merged = dict(b)
    for key, value in a.items():
        if key in merged and value and merged[key] and merged[key] != value:
            raise FrameMismatchError(
                f"cannot compose transforms from different sources: {key} {value} != "
                f"{merged[key]}"
            )
        merged[key] = value or merged.get(key, "")
    return merged
