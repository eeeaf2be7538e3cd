"""Geometry presets of the sample phantoms (import-light: numpy only).

Each preset: rotation whose columns are the row cosine, column cosine and slice normal
(LPS), PixelSpacing ``[row, column]`` mm, slice spacing mm, and a fixed shape ``(i, j, k)``
or ``None`` for a field of view sized to the anatomy (see :func:`scrubin.samples.phantom.grid`).
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
    "sharp": (np.eye(3), (0.48, 0.48), 0.48, (512, 512, 300)),  # + sharp kernel (phantom.py)
}

#: Geometry of a preset: rotation, PixelSpacing [row, col], slice spacing, fixed shape or None.
Geometry = tuple[np.ndarray, tuple[float, float], float, tuple[int, int, int] | None]

CUSTOM_SYNTAX = ("custom:ROW,COL,SLICE[:TILT_X,TILT_Y][:sharp] (mm; degrees about x then y; "
                 "sharp reconstruction kernel)")


def parse_geometry(name: str) -> Geometry:
    """Geometry of a named preset, or of ``custom:ROW,COL,SLICE[:TILT_X,TILT_Y]``.

    A custom name sets PixelSpacing ``[ROW, COL]`` and the slice spacing in mm, and optionally
    a double-oblique orientation (rotation ``TILT_X`` degrees about x, then ``TILT_Y`` about
    y); the field of view is sized to the anatomy. Raises ``ValueError`` with a one-line
    message naming the bad part.
    """
    if name in PRESETS:
        return PRESETS[name]
    if not name.startswith("custom:"):
        raise ValueError(
            f"unknown sample {name!r}; expected one of {', '.join(PRESETS)} or {CUSTOM_SYNTAX}"
        )
    parts = name.split(":")[1:]
    if len(parts) not in (1, 2):
        raise ValueError(f"sample {name!r}: expected {CUSTOM_SYNTAX}")
    try:
        spacing = [float(v) for v in parts[0].split(",")]
        tilt = [float(v) for v in parts[1].split(",")] if len(parts) == 2 else [0.0, 0.0]
    except ValueError:
        raise ValueError(f"sample {name!r}: spacing and tilt must be numbers; expected "
                         f"{CUSTOM_SYNTAX}") from None
    if len(spacing) != 3 or len(tilt) != 2:
        raise ValueError(f"sample {name!r}: expected {CUSTOM_SYNTAX}")
    if not all(np.isfinite(spacing)) or not all(0.2 <= s <= 10.0 for s in spacing):
        raise ValueError(f"sample {name!r}: spacings must lie in 0.2..10 mm, got {spacing}")
    if not all(np.isfinite(tilt)) or not all(abs(t) <= 45.0 for t in tilt):
        raise ValueError(f"sample {name!r}: tilts must lie in -45..45 degrees, got {tilt}")
    return (_rot_x(tilt[0]) @ _rot_y(tilt[1]), (spacing[0], spacing[1]), spacing[2], None)
