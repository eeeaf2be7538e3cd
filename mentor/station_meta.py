"""Per-frame metadata of the surgeon station and its >= 2 s history keyed by frame id.

One :class:`FrameMeta` per sent frame travels on the ``meta`` data channel (JSON, mentor/
DESIGN.md "meta data channel"); the station keeps them in a :class:`MetaHistory` so a stroke
drawn by the mentor on frame N is ray-cast at frame N's pose, not at the current one (callbacks
skip frames and strokes arrive late).

Frames and units: ``K = [fx, fy, cx, cy]`` (px), ``dist`` OpenCV ``[k1, k2, p1, p2, k3]``,
``T_camera_ref`` maps REF (patient reference marker, mm) to CAMERA (mm), ``T_ref_ct`` maps CT
(LPS mm) to REF (mm); matrices 4x4 row-major. ``capture_time`` is Unix time (s, float64) on the
station's one clock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrubin.mentor.errors import MentorError

TRACKING_STATES = ("LIVE", "HELD", "STALE", "LOST")


@dataclass
class FrameMeta:
    """What the page (and the station's anchoring) needs to know about one sent frame."""

    frame_id: int
    capture_time: float
    width: int
    height: int
    K: tuple[float, float, float, float]
    dist: tuple[float, ...]
    T_camera_ref: np.ndarray | None
    T_ref_ct: np.ndarray | None
    tracking: str
    fre_mm: float | None = None
    tre_mm: float | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tracking not in TRACKING_STATES:
            raise MentorError(f"frame {self.frame_id}: tracking must be one of "
                              f"{'/'.join(TRACKING_STATES)}, got {self.tracking!r}")
        for name in ("T_camera_ref", "T_ref_ct"):
            m = getattr(self, name)
            if m is not None:
                m = np.asarray(m, np.float64)
                if m.shape != (4, 4) or not np.all(np.isfinite(m)):
                    raise MentorError(f"frame {self.frame_id}: {name} must be a finite 4x4, got "
                                      f"shape {m.shape}")
                setattr(self, name, m)

    @property
    def camera_matrix(self) -> np.ndarray:
        """3x3 intrinsic matrix (px)."""
        fx, fy, cx, cy = self.K
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def to_json(self) -> dict[str, Any]:
        """The ``meta`` channel message (``{"type": "frame", ...}``)."""
        def mat(m: np.ndarray | None) -> list[float] | None:
            return None if m is None else [round(float(v), 6) for v in m.ravel()]

        return {"type": "frame", "frame_id": int(self.frame_id),
                "capture_time": float(self.capture_time), "width": int(self.width),
                "height": int(self.height), "K": [float(v) for v in self.K],
                "dist": [float(v) for v in self.dist],
                "T_camera_ref": mat(self.T_camera_ref), "T_ref_ct": mat(self.T_ref_ct),
                "tracking": self.tracking, "fre_mm": self.fre_mm, "tre_mm": self.tre_mm,
                "stages_ms": {k: round(float(v), 3) for k, v in self.stages_ms.items()}}


class MetaHistory:
    """Thread-safe frame-id -> :class:`FrameMeta` map holding at least ``keep_s`` seconds.

    Entries older than ``keep_s`` (by capture time, relative to the newest) are dropped, but
    never the newest ``min_frames``.
    """

    def __init__(self, keep_s: float = 3.0, min_frames: int = 8) -> None:
        if not keep_s >= 2.0:
            raise MentorError(f"metadata history must keep >= 2 s, got {keep_s}")
        self.keep_s, self.min_frames = float(keep_s), int(min_frames)
        self._d: OrderedDict[int, FrameMeta] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, meta: FrameMeta) -> None:
        """Store (frame ids must increase)."""
        with self._lock:
            if self._d and meta.frame_id <= next(reversed(self._d)):
                raise MentorError(f"frame id {meta.frame_id} is not after "
                                  f"{next(reversed(self._d))}")
            self._d[meta.frame_id] = meta
            while len(self._d) > self.min_frames:
                oldest = next(iter(self._d.values()))
                if meta.capture_time - oldest.capture_time <= self.keep_s:
                    break
                self._d.popitem(last=False)

    def get(self, frame_id: int) -> FrameMeta | None:
        """The frame's metadata, or None when unknown or expired."""
        with self._lock:
            return self._d.get(int(frame_id))

    def latest(self) -> FrameMeta | None:
        """The newest frame's metadata."""
        with self._lock:
            return next(reversed(self._d.values())) if self._d else None

    def __len__(self) -> int:
        return len(self._d)

    def span_s(self) -> float:
        """Capture-time span held (s)."""
        with self._lock:
            if len(self._d) < 2:
                return 0.0
            vals = list(self._d.values())
            return vals[-1].capture_time - vals[0].capture_time
