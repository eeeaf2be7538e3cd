"""Correspondence of unlabelled fiducials from point-set geometry (triangle matching + RANSAC).

Tracked fiducials often arrive unlabelled and in arbitrary order, sometimes with one
missing or one spurious point. Rigid motion preserves distances, so:

1. **Hypotheses** — every moving triangle (3 points, non-degenerate) is compared with every
   ordered fixed triangle; a pair whose three side lengths agree within ``tol_mm`` gives a
   hypothesis (the closed-form rigid fit of the 3 pairs, Umeyama 1991 eq. 39–42).
2. **Verification** (RANSAC-style, Fischler & Bolles 1981, but exhaustive over the few
   triangles): each hypothesis maps all moving points; a one-to-one assignment within
   ``tol_mm`` (Hungarian method on the distance matrix) gives its inlier set; the closed form
   is refitted on the inliers and the assignment repeated.
3. **Choice** — most inliers, then lowest RMS residual. If another labelling with the same
   number of inliers also fits within tolerance the configuration is (near-)symmetric and the
   match is refused (:class:`AmbiguousCorrespondenceError`): which fiducial is which cannot be
   decided from geometry, and a wrong labelling gives a wrong registration with a small FRE.

Tolerance: with per-point RMS 3-D localisation error FLE in both sets, a distance between
two fiducials differs by about ``FLE·√(4/3)`` RMS, so the default ``tol_mm = max(1, 6·FLE)``
leaves a wide margin for FLE ≈ 0.5 mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, permutations

import numpy as np
from scipy.optimize import linear_sum_assignment

from scrubin.registration.errors import RegistrationError
from scrubin.registration.points import as_points, check_configuration, fit_batch

#: Most points per set accepted (hypothesis count grows as N³ · N³).
MAX_POINTS = 20


class CorrespondenceError(RegistrationError):
    """No consistent correspondence between two unlabelled point sets."""


class AmbiguousCorrespondenceError(CorrespondenceError):
    """Several labellings fit equally well: the configuration is (near-)symmetric."""


@dataclass(frozen=True)
class Correspondence:
    """Matched pairs of two unlabelled point sets.

    Attributes
    ----------
    moving_index, fixed_index
        ``(K,)`` indices: ``moving[moving_index[i]]`` corresponds to ``fixed[fixed_index[i]]``
        (sorted by moving index).
    unmatched_moving, unmatched_fixed
        Indices left without a partner (missing or spurious points).
    rms_mm
        RMS residual of the inliers after the rigid refit (mm).
    runner_up_rms_mm
        RMS residual of the best different labelling (it has fewer inliers), or None.
    """

    moving_index: np.ndarray
    fixed_index: np.ndarray
    unmatched_moving: np.ndarray
    unmatched_fixed: np.ndarray
    rms_mm: float
    runner_up_rms_mm: float | None = None


def _triangles(points: np.ndarray, ordered: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index triples and their side lengths (|p0p1|, |p1p2|, |p2p0|)."""
    n = points.shape[0]
    combos = permutations(range(n), 3) if ordered else combinations(range(n), 3)
    tri = np.array(list(combos), dtype=np.intp).reshape(-1, 3)
    p = points[tri]
    sides = np.linalg.norm(p - np.roll(p, -1, axis=1), axis=2)
    return tri, sides


def _assign(
    moved: np.ndarray, fixed: np.ndarray, tol_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one assignment of mapped moving points to fixed points within ``tol_mm``."""
    dist = np.linalg.norm(moved[:, None, :] - fixed[None, :, :], axis=2)
    cost = np.where(dist <= tol_mm, dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    ok = dist[rows, cols] <= tol_mm
    return rows[ok], cols[ok], dist[rows[ok], cols[ok]]


def _refine(
    moving: np.ndarray, fixed: np.ndarray, rot: np.ndarray, trans: np.ndarray, tol_mm: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Assign, refit on the inliers, assign again; returns (moving idx, fixed idx, rms)."""
    rows, cols, _ = _assign(moving @ rot.T + trans, fixed, tol_mm)
    for _ in range(3):
        if rows.size < 3:
            break
        r, t, _ = fit_batch(moving[rows], fixed[cols])
        new_rows, new_cols, _ = _assign(moving @ r.T + t, fixed, tol_mm)
        if new_rows.size < rows.size:
            break
        same = np.array_equal(new_rows, rows) and np.array_equal(new_cols, cols)
        rows, cols = new_rows, new_cols
        if same:
            break
    if rows.size < 3:
        return rows, cols, np.inf
    r, t, _ = fit_batch(moving[rows], fixed[cols])
    res = moving[rows] @ r.T + t - fixed[cols]
    if np.linalg.norm(res, axis=1).max() > tol_mm:
        return rows, cols, np.inf
    return rows, cols, float(np.sqrt(np.mean(np.sum(res**2, axis=1))))


def match_points(
    fixed_mm: object,
    moving_mm: object,
    tol_mm: float | None = None,
    fle_mm: float = 0.5,
    max_unmatched: int = 1,
) -> Correspondence:
    """Find which unlabelled moving point corresponds to which fixed point.

    Parameters
    ----------
    fixed_mm
        ``(Nf, 3)`` points in the fixed frame (mm), e.g. tracked fiducials in REF, any order.
    moving_mm
        ``(Nm, 3)`` points in the moving frame (mm), e.g. CT fiducials in LPS.
    tol_mm
        Distance tolerance for side lengths and residuals; default ``max(1, 6·fle_mm)``.
    fle_mm
        Expected RMS fiducial localisation error (mm), used for the default tolerance.
    max_unmatched
        Most points of the smaller set that may stay unmatched (missing in the other set);
        extra points in the larger set are always allowed to stay unmatched.

    Returns
    -------
    Correspondence

    Raises
    ------
    CorrespondenceError
        Invalid input, fewer than 3 matches, or too many unmatched points.
    AmbiguousCorrespondenceError
        Two different labellings fit with the same number of inliers (symmetric layout).
    """
    fixed = as_points(fixed_mm, "fixed points", 3)
    moving = as_points(moving_mm, "moving points", 3)
    for pts, name in ((fixed, "fixed points"), (moving, "moving points")):
        if pts.shape[0] > MAX_POINTS:
            raise CorrespondenceError(
                f"{name}: unpaired matching accepts at most {MAX_POINTS} points, "
                f"got {pts.shape[0]}"
            )
        check_configuration(pts, name)
    tol = max(1.0, 6.0 * float(fle_mm)) if tol_mm is None else float(tol_mm)
    if not np.isfinite(tol) or tol <= 0:
        raise CorrespondenceError(f"tolerance must be a positive distance in mm, got {tol_mm!r}")
    need = max(3, min(fixed.shape[0], moving.shape[0]) - int(max_unmatched))

    m_tri, m_sides = _triangles(moving, ordered=False)
    f_tri, f_sides = _triangles(fixed, ordered=True)
    # skip thin triangles: their rotation is poorly determined (smallest height < tol)
    m_tri, m_sides = _well_shaped(moving, m_tri, m_sides, tol)
    close = np.all(np.abs(m_sides[:, None, :] - f_sides[None, :, :]) <= tol, axis=2)
    mi, fi = np.nonzero(close)
    if mi.size == 0:
        raise CorrespondenceError(
            f"no triangle of the moving points matches one of the fixed points within "
            f"{tol:g} mm: the point sets do not share a rigid configuration"
        )
    rot, trans, _ = fit_batch(moving[m_tri[mi]], fixed[f_tri[fi]])

    results: dict[tuple[tuple[int, int], ...], float] = {}
    seen: set[bytes] = set()
    for h in range(mi.size):
        first_rows, first_cols, _ = _assign(moving @ rot[h].T + trans[h], fixed, tol)
        start = first_rows.tobytes() + b"|" + first_cols.tobytes()
        if first_rows.size < 3 or start in seen:
            continue
        seen.add(start)
        rows, cols, rms = _refine(moving, fixed, rot[h], trans[h], tol)
        if rows.size < 3 or not np.isfinite(rms):
            continue
        key = tuple(sorted(zip(rows.tolist(), cols.tolist(), strict=True)))
        results[key] = min(rms, results.get(key, np.inf))
    if not results:
        raise CorrespondenceError(
            f"no rigid transform maps 3 or more moving points onto fixed points within {tol:g} mm"
        )
    ranked = sorted(results.items(), key=lambda kv: (-len(kv[0]), kv[1]))
    best, best_rms = ranked[0]
    if len(best) < need:
        raise CorrespondenceError(
            f"only {len(best)} of {min(fixed.shape[0], moving.shape[0])} points could be "
            f"matched within {tol:g} mm (at most {max_unmatched} may be missing)"
        )
    runner_up = None
    for key, rms in ranked[1:]:
        if set(key) <= set(best):
            continue
        if len(key) < len(best):
            runner_up = rms
            break
        raise AmbiguousCorrespondenceError(
                f"ambiguous fiducial correspondence: two labellings of {len(best)} points fit "
                f"within {tol:g} mm (RMS {best_rms:.2f} vs {rms:.2f} mm); the layout is "
                f"(near-)symmetric, label the points or make the layout asymmetric"
            )
    mov_idx = np.array([a for a, _ in best], dtype=np.intp)
    fix_idx = np.array([b for _, b in best], dtype=np.intp)
    return Correspondence(
        moving_index=mov_idx,
        fixed_index=fix_idx,
        unmatched_moving=np.setdiff1d(np.arange(moving.shape[0]), mov_idx),
        unmatched_fixed=np.setdiff1d(np.arange(fixed.shape[0]), fix_idx),
        rms_mm=float(best_rms),
        runner_up_rms_mm=runner_up,
    )


def _well_shaped(
    points: np.ndarray, tri: np.ndarray, sides: np.ndarray, tol_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Keep triangles whose smallest height exceeds ``2·tol_mm`` (or the best few if none)."""
    p = points[tri]
    area2 = np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    height = area2 / np.maximum(sides.max(axis=1), 1e-12)
    good = height > 2.0 * tol_mm
    if good.sum() < 1:
        order = np.argsort(-height)[: max(1, min(10, len(height)))]
        good = np.zeros(len(height), dtype=bool)
        good[order] = height[order] > 1e-9
    return tri[good], sides[good]
