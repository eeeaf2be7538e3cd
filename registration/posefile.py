"""Pose files: sequences of rigid poses (mm) in text (CSV / whitespace) or JSON form.

Text format, one pose per line; columns separated by commas, semicolons, tabs or spaces:

* 16 numbers: the 4x4 matrix ``T`` row-major (``r11 r12 r13 tx r21 ... 0 0 0 1``), mm;
* 7 numbers: ``qw, qx, qy, qz, tx, ty, tz`` — unit quaternion, **scalar first** (w, x, y, z;
  Hamilton convention, as in ``T = [R(q) t; 0 1]``), translation in mm;
* either form with a leading timestamp column (17 or 8 numbers), seconds.

Every data line of a file must have the same number of columns. Empty lines and lines starting
with ``#`` are ignored; the first remaining line may be a header (no numeric field at all).
A pose is ``T_dst_src``: it maps points of the tracked object (``src``) to the reference
(``dst``), e.g. ``T_TRACKER_TOOL`` from a tracker, ``T_CAMERA_MARKER`` from a camera.
Rotations must be orthonormal to 1e-3 (re-orthonormalised by SVD), quaternions unit-norm to
1e-3 (normalised). Errors name the file and the line.

JSON: a list of transform objects (:meth:`scrubin.registration.frames.Transform.to_json`), or the
output of ``scrubin track`` (``{"frames": [...]}``), of which the frames that detected the
target are used (``raw_pose``, the unfiltered measurement, with its timestamp).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from scrubin.imaging.fileio import write_text_atomic
from scrubin.registration.errors import RegistrationError
from scrubin.registration.pointsets import is_number

_SPLIT = re.compile(r"[,;\s]+")
_TOL = 1e-3


class PoseFileError(RegistrationError):
    """A pose file is missing or malformed."""


@dataclass(frozen=True)
class PoseSeries:
    """Poses ``matrices`` (N, 4, 4) mm, optional ``timestamps`` (N,) s, and the file name."""

    matrices: np.ndarray
    timestamps: np.ndarray | None
    source: str = ""

    def __len__(self) -> int:
        return int(self.matrices.shape[0])


def _orthonormal(r: np.ndarray, where: str) -> np.ndarray:
    if np.abs(r.T @ r - np.eye(3)).max() > _TOL or np.linalg.det(r) <= 0:
        raise PoseFileError(f"{where}: rotation part is not a rotation (orthonormal, det +1)")
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def _pose_from_values(v: np.ndarray, where: str) -> np.ndarray:
    m = np.eye(4)
    if v.size == 16:
        m = v.reshape(4, 4).copy()
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
            raise PoseFileError(f"{where}: last matrix row must be 0 0 0 1, got {m[3].tolist()}")
        m[:3, :3] = _orthonormal(m[:3, :3], where)
    else:
        q = v[:4]
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > _TOL:
            raise PoseFileError(f"{where}: quaternion (qw, qx, qy, qz) norm is {norm:.6f}, not 1")
        qw, qx, qy, qz = q / norm
        m[:3, :3] = Rotation.from_quat([qx, qy, qz, qw]).as_matrix()
        m[:3, 3] = v[4:7]
    return m


def parse_pose_text(text: str, name: str = "<text>") -> PoseSeries:
    """Parse the text format (module docstring); ``name`` is used in error messages."""
    rows: list[np.ndarray] = []
    lines: list[int] = []
    header_allowed = True
    n_cols = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f for f in _SPLIT.split(line) if f]
        try:
            values = np.array([float(f) for f in fields])
        except ValueError:
            if header_allowed and not any(is_number(f) for f in fields):
                header_allowed = False
                continue
            raise PoseFileError(f"{name}:{lineno}: non-numeric value in {line[:60]!r}") from None
        header_allowed = False
        if values.size not in (7, 8, 16, 17):
            raise PoseFileError(
                f"{name}:{lineno}: {values.size} columns; expected 16 (4x4 row-major), 7 "
                "(qw qx qy qz tx ty tz) or either with a leading timestamp (17 or 8)")
        if n_cols is None:
            n_cols = values.size
        elif values.size != n_cols:
            raise PoseFileError(f"{name}:{lineno}: {values.size} columns, earlier lines {n_cols}")
        if not np.all(np.isfinite(values)):
            raise PoseFileError(f"{name}:{lineno}: NaN or infinite value")
        rows.append(values)
        lines.append(lineno)
    if not rows:
        raise PoseFileError(f"{name}: no poses found")
    has_t = n_cols in (8, 17)
    mats = np.stack([_pose_from_values(r[1:] if has_t else r, f"{name}:{ln}")
                     for r, ln in zip(rows, lines, strict=True)])
    stamps = np.array([r[0] for r in rows]) if has_t else None
    return PoseSeries(mats, stamps, name)


def _from_json(data: object, name: str) -> PoseSeries:
    from scrubin.registration.frames import Transform

    items: list[tuple[dict, float | None]] = []
    if isinstance(data, dict) and isinstance(data.get("frames"), list):
        for f in data["frames"]:
            if isinstance(f, dict) and f.get("detected") and f.get("raw_pose"):
                items.append((f["raw_pose"], f.get("timestamp")))
    elif isinstance(data, list):
        items = [(d, d.get("timestamp") if isinstance(d, dict) else None) for d in data]
    else:
        raise PoseFileError(f"{name}: JSON must be a list of transforms or scrubin track output")
    if not items:
        raise PoseFileError(f"{name}: no poses found")
    mats, stamps = [], []
    for n, (d, t) in enumerate(items):
        try:
            mats.append(Transform.from_json(d).matrix)
        except RegistrationError as exc:
            raise PoseFileError(f"{name}: pose {n}: {exc}") from None
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float)
                              or not math.isfinite(float(t) if abs(t) < 1e300 else math.inf)):
            raise PoseFileError(f"{name}: pose {n}: timestamp {str(t)[:40]!r} is not a finite "
                                "number (seconds)")
        stamps.append(t)
    ts = None if any(t is None for t in stamps) else np.asarray(stamps, dtype=float)
    return PoseSeries(np.stack(mats), ts, name)


def read_pose_file(path: str | Path) -> PoseSeries:
    """Read a pose file (text or ``.json``); errors name the file and line."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise PoseFileError(f"{p}: pose file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PoseFileError(f"{p}: not a readable text file ({exc})") from None
    if p.suffix.lower() == ".json":
        try:
            return _from_json(json.loads(text), str(p))
        except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise PoseFileError(f"{p}: invalid JSON ({exc})") from None
    return parse_pose_text(text, str(p))


def format_poses(
    matrices: np.ndarray, timestamps: np.ndarray | None = None, quaternion: bool = False
) -> str:
    """Text form (CSV with a header) of (N, 4, 4) poses; see the module docstring."""
    m = np.asarray(matrices, dtype=np.float64)
    if m.ndim != 3 or m.shape[1:] != (4, 4):
        raise PoseFileError(f"poses must have shape (N, 4, 4), got {m.shape}")
    if timestamps is not None and len(timestamps) != len(m):
        raise PoseFileError(f"{len(timestamps)} timestamps for {len(m)} poses")
    cols = (["qw", "qx", "qy", "qz", "tx", "ty", "tz"] if quaternion
            else [f"m{r}{c}" for r in range(4) for c in range(4)])
    out = [",".join((["t"] if timestamps is not None else []) + cols)]
    for n, t in enumerate(m):
        if quaternion:
            x, y, z, w = Rotation.from_matrix(t[:3, :3]).as_quat()
            vals = [w, x, y, z, *t[:3, 3]]
        else:
            vals = list(t.ravel())
        if timestamps is not None:
            vals = [float(timestamps[n]), *vals]
        out.append(",".join(f"{v:.9g}" for v in vals))
    return "\n".join(out) + "\n"


def write_pose_file(
    path: str | Path,
    matrices: np.ndarray,
    timestamps: np.ndarray | None = None,
    quaternion: bool = False,
) -> None:
    """Write poses as text atomically (temporary name, then rename)."""
    p = Path(path)
    text = format_poses(matrices, timestamps, quaternion)
    write_text_atomic(p, text)


def pair_poses(
    a: PoseSeries, b: PoseSeries, max_dt_s: float = 0.005
) -> tuple[np.ndarray, np.ndarray]:
    """Pair two pose series: by nearest timestamp (within ``max_dt_s``) when both have
    timestamps, else row by row (equal lengths required). Returns (K, 4, 4) each."""
    if a.timestamps is not None and b.timestamps is not None:
        order = np.argsort(b.timestamps)
        tb = b.timestamps[order]
        pa, pb = [], []
        for i, t in enumerate(a.timestamps):
            j = int(np.searchsorted(tb, t))
            cands = [k for k in (j - 1, j) if 0 <= k < tb.size]
            k = min(cands, key=lambda c: abs(tb[c] - t))
            if abs(tb[k] - t) <= max_dt_s:
                pa.append(i)
                pb.append(int(order[k]))
        if not pa:
            raise PoseFileError(
                f"no timestamps of {a.source} and {b.source} agree within {max_dt_s} s")
        return a.matrices[pa], b.matrices[pb]
    if len(a) != len(b):
        raise PoseFileError(
            f"{a.source} has {len(a)} poses but {b.source} has {len(b)}; without timestamps "
            "in both files the rows must pair one to one")
    return a.matrices, b.matrices
