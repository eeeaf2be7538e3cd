"""Geometry presets of the sample phantoms (import-light: numpy only).

Each preset: rotation whose columns are the row cosine, column cosine and slice normal
(LPS), PixelSpacing ``[row, column]`` mm, slice spacing mm, and a fixed shape ``(i, j, k)``
or ``None`` for a field of view sized to the anatomy (see :func:`samples.phantom.grid`).
"""

from __future__ import annotations

import numpy as np


def _rot_x(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


#: name -> (rotation whose columns are row cosine, column cosine, normal;
#:          PixelSpacing [row, col]; slice spacing; fixed shape (i, j, k) or None = auto)
PRESETS: dict[str, tuple[np.ndarray, tuple[float, float], float, tuple[int, int, int] | None]] = {
    "small": (np.eye(3), (1.9, 1.7), 2.5, None),
    "small-oblique": (_rot_x(15.0) @ _rot_y(10.0), (1.8, 1.6), 2.4, None),
    "full": (np.eye(3), (0.5, 0.5), 0.8, (512, 512, 300)),
}
