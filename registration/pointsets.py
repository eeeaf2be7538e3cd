"""Point CSV files: one point per line, ``x,y,z`` in millimetres.

Format
------
* One point per line: three comma-separated numbers ``x,y,z`` (mm, in the frame the caller
  names — e.g. CT LPS for fiducials found in a scan, REF for tracked points).
* An optional header on the first non-blank line (e.g. ``x,y,z`` or ``x_mm,y_mm,z_mm``): a
  first line with letters and no numeric field is taken as a header.
* Blank lines and lines starting with ``#`` are ignored. Whitespace around fields is ignored.

Every problem is reported as one line ``FILE:LINE: what is wrong (expected ...)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scrubin.imaging import fileio
from scrubin.registration.errors import RegistrationError


class PointFileError(RegistrationError):
    """A point CSV file cannot be read or written."""


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a float (tells a header line from data in text files)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_points_csv(path: str | Path, min_points: int = 1) -> np.ndarray:
    """Read an ``(N, 3)`` float64 array of points (mm) from a CSV file.

    Parameters
    ----------
    path
        The CSV file (see module docstring for the format).
    min_points
        Fewest points accepted.

    Raises
    ------
    PointFileError
        Missing/unreadable file, a line without exactly three numbers, a NaN/infinite value,
        or fewer than ``min_points`` points; the message names the file and line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PointFileError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise PointFileError(f"{p}: is a directory, expected a CSV file of x,y,z points") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PointFileError(f"{p}: cannot read as text ({exc})") from None
    points: list[list[float]] = []
    seen_content = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if not seen_content:
            seen_content = True
            if not any(is_number(f) for f in fields) and any(c.isalpha() for c in line):
                continue  # header line (names, no numbers)
        if len(fields) != 3:
            raise PointFileError(
                f"{p}:{lineno}: expected 3 comma-separated values x,y,z in mm, "
                f"got {len(fields)}: {line[:60]!r}"
            )
        values: list[float] = []
        for name, field in zip("xyz", fields, strict=True):
            if not is_number(field):
                raise PointFileError(
                    f"{p}:{lineno}: {name} value {field[:30]!r} is not a number (expected mm)"
                )
            v = float(field)
            if not np.isfinite(v):
                raise PointFileError(f"{p}:{lineno}: {name} value {field!r} is not finite")
            values.append(v)
        points.append(values)
    if len(points) < min_points:
        raise PointFileError(
            f"{p}: expected at least {min_points} points (lines x,y,z), found {len(points)}"
        )
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def write_points_csv(
    path: str | Path, points_mm: np.ndarray, header: str | None = "x_mm,y_mm,z_mm"
) -> None:
    """Write ``(N, 3)`` points (mm) as CSV atomically (temp file then rename).

    Parameters
    ----------
    path
        Destination file.
    points_mm
        ``(N, 3)`` finite coordinates in mm.
    header
        First line, or None for none.
    """
    pts = np.asarray(points_mm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise PointFileError(f"{path}: points must have shape (N, 3), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise PointFileError(f"{path}: refusing to write NaN or infinite coordinates")
    lines = [header] if header else []
    lines += [f"{x:.6f},{y:.6f},{z:.6f}" for x, y, z in pts]
    write_text_atomic(Path(path), "\n".join(lines) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    fileio.write_text_atomic(path, text, error=PointFileError, make_parents=True)
