"""Pivot calibration of a tracked pointer: tip offset in the tool frame, pivot in the tracker.

While the pointer's tip rests in a divot and the pointer is swivelled, every tracked pose
``T_TRACKER_TOOL_i = [R_i t_i]`` maps the same tip offset ``p_tip`` (TOOL frame, mm) to the
same pivot point ``p_pivot`` (TRACKER frame, mm): ``R_i p_tip + t_i = p_pivot``. Stacking all
poses gives the algebraic one-step least-squares system (Yaniv, "Which pivot calibration?",
Proc. SPIE 9415, 2015, eq. 2)::

    [R_1  -I] [p_tip  ]   [-t_1]
    [ ... ... ] [p_pivot] = [ ... ]
    [R_N  -I]             [-t_N]

solved with ``numpy.linalg.lstsq``. The RMS of ``|R_i p_tip + t_i - p_pivot|`` is reported
(a consistency measure, not an accuracy). The system is well posed only if the rotations
span two axes; a condition check rejects pivoting that is too small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform


class PivotError(RegistrationError):
    """Pivot input is unusable."""


@dataclass(frozen=True)
class PivotResult:
    """``tip_tool_mm`` (3,), ``pivot_tracker_mm`` (3,), RMS residual (mm), per-pose residuals."""

    tip_tool_mm: np.ndarray
    pivot_tracker_mm: np.ndarray
    rms_mm: float
    residuals_mm: np.ndarray
    n_poses: int


def pivot_calibration(poses: object, min_rotation_deg: float = 10.0) -> PivotResult:
    """Algebraic one-step pivot calibration (Yaniv 2015).

    Parameters
    ----------
    poses
        ``T_TRACKER_TOOL_i``: (N, 4, 4) matrices or Transforms (mm), N >= 4.
    min_rotation_deg
        The poses must swivel by about this angle about two different axes (checked through
        the smallest singular value of the stacked system).
    """
    if isinstance(poses, (list, tuple)) and poses and isinstance(poses[0], Transform):
        m = np.stack([p.matrix for p in poses])
    else:
        m = np.asarray(poses, dtype=np.float64)
    if m.ndim != 3 or m.shape[1:] != (4, 4):
        raise PivotError(f"poses must have shape (N, 4, 4), got {m.shape}")
    if m.shape[0] < 4:
        raise PivotError(f"pivot calibration needs at least 4 poses, got {m.shape[0]}")
    if not np.all(np.isfinite(m)):
        raise PivotError("poses contain NaN or infinite values")
    r = m[:, :3, :3]
    if np.abs(np.einsum("nji,njk->nik", r, r) - np.eye(3)).max() > 1e-4:
        raise PivotError("a pose's rotation part is not orthonormal")
    n = m.shape[0]
    lhs = np.zeros((3 * n, 6))
    lhs[:, :3] = r.reshape(-1, 3)
    lhs[:, 3:] = -np.tile(np.eye(3), (n, 1))
    rhs = -m[:, :3, 3].reshape(-1)
    # pivoting about >= 2 axes: about one axis only, the tip's component along it has no
    # effect (null vector of the system); the smallest singular value per pose grows like
    # ~0.7 x the angular spread in radians (measured), so require a quarter of the minimum
    sv = np.linalg.svd(lhs, compute_uv=False)
    if sv[-1] / np.sqrt(n) < 0.25 * np.radians(min_rotation_deg):
        raise PivotError(
            f"the pointer must swivel by >= {min_rotation_deg:g} deg about two axes; the poses "
            "rotate too little (ill-conditioned pivot system)")
    sol, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    tip, pivot = sol[:3], sol[3:]
    res = np.linalg.norm(np.einsum("nij,j->ni", r, tip) + m[:, :3, 3] - pivot, axis=1)
    return PivotResult(tip, pivot, float(np.sqrt(np.mean(res ** 2))), res, n)
