"""Pinhole camera with OpenCV lens distortion, and its ``camera.json`` file.

Frame: the camera frame follows OpenCV — x right, y down, z forward along the optical axis,
millimetres. Pixel coordinates follow ``cv2.projectPoints``: the centre of the top-left pixel
is (0, 0) (OpenCV camera model, "Camera Calibration and 3D Reconstruction" documentation).

``camera.json``::

    {"model": "opencv", "camera_matrix": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
     "dist_coeffs": [k1, k2, p1, p2, k3, ...], "image_size": [width, height],
     "rms_px": 0.31}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scrubin.imaging.fileio import read_json, write_json_atomic
from scrubin.registration.errors import RegistrationError

_VALID_DIST_LENGTHS = (0, 4, 5, 8, 12, 14)


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics, distortion and image size of one camera (OpenCV conventions).

    Parameters
    ----------
    matrix
        3x3 camera matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
    dist
        OpenCV distortion coefficients ``(k1, k2, p1, p2[, k3[, k4, k5, k6[, s1..s4[, tx, ty]]]])``.
    width, height
        Image size in pixels.
    rms_px
        RMS reprojection error of the calibration that produced it, or None.
    """

    matrix: np.ndarray
    dist: np.ndarray
    width: int
    height: int
    rms_px: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = np.asarray(self.matrix, dtype=np.float64)
        if k.shape != (3, 3) or not np.all(np.isfinite(k)):
            raise RegistrationError(f"camera matrix must be a finite 3x3 array, got {k.shape}")
        if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
            raise RegistrationError(
                "camera matrix must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0"
            )
        d = np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if d.size not in _VALID_DIST_LENGTHS or not np.all(np.isfinite(d)):
            raise RegistrationError(
                f"distortion must hold 0, 4, 5, 8, 12 or 14 finite values, got {d.size}"
            )
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise RegistrationError(
                f"image size must be positive, got {self.width}x{self.height}"
            )
        object.__setattr__(self, "matrix", k)
        object.__setattr__(self, "dist", d)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return (self.width, self.height)

    def project(self, points_cam_mm: np.ndarray) -> np.ndarray:
        """Project ``(N, 3)`` camera-frame points (mm) to ``(N, 2)`` distorted pixels."""
        p = np.ascontiguousarray(np.asarray(points_cam_mm, dtype=np.float64).reshape(-1, 3))
        uv, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), self.matrix, self.dist)
        return uv.reshape(-1, 2)

    def scaled(self, factor: float) -> CameraModel:
        """The same camera at an image size scaled by ``factor`` (pixel-centre consistent).

        With the centre of pixel (0, 0) at (0, 0), a pixel coordinate u maps to
        ``(u + 0.5) * factor - 0.5``.
        """
        k = self.matrix.copy()
        k[0, 0] *= factor
        k[1, 1] *= factor
        k[0, 1] *= factor
        k[0, 2] = (k[0, 2] + 0.5) * factor - 0.5
        k[1, 2] = (k[1, 2] + 0.5) * factor - 0.5
        return CameraModel(
            k,
            self.dist,
            round(self.width * factor),
            round(self.height * factor),
            self.rms_px,
            dict(self.extra),
        )

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The ``camera.json`` form."""
        data: dict[str, Any] = {
            "model": "opencv",
            "camera_matrix": self.matrix.tolist(),
            "dist_coeffs": self.dist.tolist(),
            "image_size": [self.width, self.height],
            "rms_px": self.rms_px,
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CameraModel:
        """Parse the ``camera.json`` form."""
        try:
            matrix = data["camera_matrix"]
            dist = data.get("dist_coeffs", [])
            width, height = data["image_size"]
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistrationError(
                f"camera JSON needs camera_matrix and image_size [width, height] ({exc})"
            ) from None
        known = {"model", "camera_matrix", "dist_coeffs", "image_size", "rms_px"}
        extra = {k: v for k, v in data.items() if k not in known}
        try:
            matrix, dist = np.asarray(matrix, float), np.asarray(dist, float)
            width, height = int(width), int(height)
        except (TypeError, ValueError, OverflowError) as exc:
            raise RegistrationError(f"camera JSON: camera_matrix, dist_coeffs and image_size must "
                                    f"be numbers ({type(exc).__name__}: {exc})") from None
        return cls(matrix, dist, width, height, data.get("rms_px"), extra)

    def save(self, path: str | Path) -> None:
        """Write ``camera.json`` atomically."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> CameraModel:
        """Read ``camera.json``; errors name the file."""
        p = Path(path)
        data = read_json(p, RegistrationError, "camera file not found",
                         "not a readable camera JSON")
        try:
            return cls.from_json(data)
        except RegistrationError as exc:
            raise RegistrationError(f"{p}: {exc}") from None
