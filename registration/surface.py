"""Surface registration: a model surface (moving, CT LPS mm) onto a measured cloud (fixed).

Pipeline (:func:`register_surface`)
-----------------------------------
1. Global initialisation when no start pose is given (:mod:`registration.global_init`:
   FPFH + RANSAC + verification), several distinct hypotheses kept.
2. Multi-scale robust point-to-plane ICP (:func:`robust_icp`) by successive halving: every
   hypothesis runs the coarsest level, the best three (by score: share of cloud points within
   a tolerance of the model) the middle level, the best two full resolution; the best final
   score wins. With a start pose (``init``) there is a single candidate.
3. Quality: RMS point-to-plane residual, inlier fraction, and an ambiguity warning when two
   distinct poses fit about equally well or when the geometry lets the cloud slide (small
   eigenvalues of the point-to-plane normal matrix, Gelfand et al. 2003).

References: Chen & Medioni, Image Vis. Comput. 10(3) 1992; Low, UNC TR04-004, 2004; Zhang,
IJCV 13(2) 1994; Gelfand, Ikemoto, Rusinkiewicz & Levoy, 3DIM 2003; Rusinkiewicz & Levoy,
3DIM 2001 (coarse-to-fine, sampling variants).

ICP, as implemented
-------------------
Correspondences: every (downsampled) cloud point ``s_i`` is paired with its nearest model point
``q_i`` (KD-tree of the model, built once), unless farther than ``max_distance_mm`` (the gate).
The point-to-plane error ``sum_i w_i (n_i . (R s_i + t - q_i))^2`` (Chen & Medioni 1992) is
linearised for small rotations (Low 2004, eqs. 6-9): with ``x = (omega, t)`` and
``J_i = [s_i x n_i, n_i]`` (points centred on their centroid for conditioning), solve the 6x6
normal equations ``(sum w J J^T) x = -sum w J r``. Weights are Tukey's biweight
``w = (1 - (r/c)^2)^2`` for ``|r| < c`` (an M-estimator by iteratively reweighted least squares;
Zhang 1994 for robust, adaptive rejection in ICP) with ``c = 4.685 * 1.4826 * MAD(r)``, kept
within ``[min_kernel_mm, max_distance_mm]``. Coarse-to-fine: the cloud is voxel-averaged at
coarse levels (few points, long strides), then refined at full resolution; each level stops
early when the update moves the cloud by less than a tolerance.

Direction and convention: internally the cloud is moved onto the model (every cloud point has a
counterpart on the complete model, not the other way round for a partial cloud), giving
``T_model_cloud``; the result is its inverse, ``T_fixed_moving`` (e.g. ``T_REF_CT``), the same
convention as point registration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial import cKDTree

from registration.clouds import PointSet, as_points, extent
from registration.errors import RegistrationError
from registration.frames import Transform, _merge_source
from registration.global_init import (
    FeatureCloud,
    fpfh_cloud,
    pose_difference,
    ransac_hypotheses,
)
from registration.nn_grid import ClosestPointGrid

#: A distinct second solution whose score (share of cloud points fitting within the tolerance)
#: is within this margin of the best one makes the result "ambiguous".
AMBIGUITY_MARGIN = 0.03
#: Margin (mm) of the optional closest-point grid around the model; the grid serves coarse
#: ICP levels only while the correspondence gate is within it.
GRID_MARGIN_MM = 20.0
#: Cloud points used to score candidate poses (evenly strided subsample).
SCORE_POINTS = 5000


class SurfaceRegistrationError(RegistrationError):
    """Surface registration cannot run or found no acceptable pose."""


@dataclass
class PreparedModel:
    """A model surface ready for registration: KD-tree and (lazily) FPFH features.

    Build once per model and reuse it for many clouds (tracking, trials).
    """

    points: np.ndarray  # (M, 3) model frame mm
    normals: np.ndarray  # (M, 3) outward unit normals
    tree: cKDTree
    extent_mm: float
    grid: ClosestPointGrid | None = None
    _features: dict[float, tuple[FeatureCloud, cKDTree]] = field(default_factory=dict)

    @classmethod
    def build(cls, model: PointSet, coarse_grid: bool = False) -> PreparedModel:
        """Index ``model`` (must have normals).

        ``coarse_grid`` also builds a closest-point map (:mod:`registration.nn_grid`, cells of
        extent/150, margin :data:`GRID_MARGIN_MM`) used on the coarse ICP levels: a few hundred
        ms once, worth it when the model is registered to many clouds (tracking, trials).
        """
        if model.normals is None:
            raise SurfaceRegistrationError("the model surface needs normals (read it as a mesh)")
        if len(model) < 10:
            raise SurfaceRegistrationError(f"model surface has only {len(model)} points")
        # unbalanced, non-compact nodes: about half the build time, same query speed
        tree = cKDTree(model.points, balanced_tree=False, compact_nodes=False)
        ext = extent(model.points)
        grid = None
        if coarse_grid:
            grid = ClosestPointGrid.build(model.points, max(ext / 150.0, 0.5), GRID_MARGIN_MM)
        return cls(model.points, model.normals, tree, ext, grid)

    def features(self, voxel_mm: float) -> tuple[FeatureCloud, cKDTree]:
        """FPFH features of the model at ``voxel_mm`` and a KD-tree of their points (cached)."""
        key = round(float(voxel_mm), 6)
        if key not in self._features:
            fc = fpfh_cloud(self.points, self.normals, key)
            self._features[key] = (fc, cKDTree(fc.points))
        return self._features[key]


@dataclass(frozen=True)
class IcpResult:
    """Outcome of :func:`robust_icp`."""

    matrix: np.ndarray  # T_model_cloud, 4x4
    rms_mm: float  # RMS point-to-plane residual of the inliers (last iteration, its level)
    inlier_fraction: float  # share of that level's points within the gate and the kernel
    iterations: int
    normal_matrix: np.ndarray  # 6x6 normalised point-to-plane normal matrix (last iteration)
    weight_sum: float  # sum of the robust weights of that iteration
    kernel_mm: float  # final Tukey width c


@dataclass(frozen=True)
class SurfaceRegistration:
    """Result of :func:`register_surface`.

    Attributes
    ----------
    transform
        ``T_fixed_moving`` (e.g. ``T_REF_CT``): maps model points onto the cloud, in mm.
    rms_mm
        RMS point-to-plane residual of the inlier cloud points (mm). Not an accuracy measure:
        a wrong pose can fit a smooth patch well.
    inlier_fraction
        Share of cloud points within the gate and the robust kernel of the model.
    iterations
        ICP iterations of the chosen solution (all levels).
    ambiguous
        True when the solution is not unique (see ``warnings``).
    warnings
        Human-readable reasons (ambiguous alternatives, sliding directions, low inliers).
    eigen_ratio
        Smallest / largest eigenvalue of the normalised point-to-plane normal matrix.
    candidates
        Distinct solutions tried: ``{"score", "rms_mm", "rotation_deg", "offset_mm"}`` relative
        to the chosen one.
    method
        ``"global"`` (FPFH + RANSAC) or ``"init"`` (start pose given).
    timing_s
        Seconds per stage.
    """

    transform: Transform
    rms_mm: float
    inlier_fraction: float
    iterations: int
    ambiguous: bool
    warnings: list[str]
    eigen_ratio: float
    candidates: list[dict[str, float]]
    method: str
    timing_s: dict[str, float]

    def to_json(self) -> dict[str, object]:
        """JSON-ready summary (transform in the project's form)."""
        return {
            "transform": self.transform.to_json(),
            "rms_mm": self.rms_mm,
            "inlier_fraction": self.inlier_fraction,
            "iterations": self.iterations,
            "ambiguous": self.ambiguous,
            "warnings": list(self.warnings),
            "eigen_ratio": self.eigen_ratio,
            "candidates": list(self.candidates),
            "method": self.method,
            "timing_s": dict(self.timing_s),
        }


def _rodrigues(omega: np.ndarray) -> np.ndarray:
    a = float(np.linalg.norm(omega))
    if a < 1e-15:
        return np.eye(3)
    k = omega / a
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * (kx @ kx)


def _voxel_mean(points_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    if voxel_mm <= 0:
        return points_mm
    keys = np.floor(points_mm / voxel_mm).astype(np.int64)
    keys -= keys.min(axis=0)
    dims = keys.max(axis=0) + 1
    lin = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, inv, counts = np.unique(lin, return_inverse=True, return_counts=True)
    out = np.zeros((len(counts), 3))
    for d in range(3):
        out[:, d] = np.bincount(inv, weights=points_mm[:, d], minlength=len(counts))
    return out / counts[:, None]


def default_levels(extent_mm: float) -> tuple[float, ...]:
    """Voxel sizes (mm) of the coarse-to-fine schedule: extent/50, extent/100, full (0)."""
    v = max(extent_mm / 50.0, 0.5)
    return (v, v / 2.0, 0.0)


def robust_icp(
    cloud_points_mm: np.ndarray,
    model: PreparedModel,
    init_model_cloud: np.ndarray,
    max_distance_mm: float = 10.0,
    levels: tuple[float, ...] | None = None,
    max_iterations: tuple[int, ...] = (30, 20, 15),
    tolerance_mm: float = 0.01,
    min_kernel_mm: float = 1.0,
    kernel: str = "tukey",
    workers: int | None = None,
    pyramid: dict[float, np.ndarray] | None = None,
) -> IcpResult:
    """Multi-scale robust point-to-plane ICP moving the cloud onto the model.

    Parameters
    ----------
    cloud_points_mm
        ``(N, 3)`` cloud points in the fixed frame (mm).
    model
        Prepared model (points, outward normals, KD-tree) in the model frame (mm).
    init_model_cloud
        4x4 start ``T_model_cloud``.
    max_distance_mm
        Correspondence gate (the same at every level): pairs farther apart are ignored.
    levels
        Voxel sizes of the cloud per level, coarse to fine; 0 = full resolution.
    max_iterations
        Iteration cap per level (the last value repeats for extra levels).
    tolerance_mm
        A level ends when an update moves the cloud by less than this (rotation times RMS
        radius plus translation); coarse levels use ``voxel / 20`` if larger.
    min_kernel_mm
        Lower bound of the robust kernel width ``c`` (keeps noise-level residuals in).
    kernel
        ``"tukey"`` (biweight), ``"huber"`` or ``"none"`` (least squares within the gate).
    workers
        Threads of the KD-tree queries (default: 2 for clouds over 20 000 points, else 1:
        starting threads costs more than it saves on small clouds).
    pyramid
        Precomputed voxel-averaged clouds by voxel size (a cache for repeated calls).
    """
    p = as_points(cloud_points_mm, "cloud points", min_count=6)
    m0 = np.asarray(init_model_cloud, dtype=np.float64)
    if m0.shape != (4, 4) or not np.all(np.isfinite(m0)):
        raise SurfaceRegistrationError(f"start pose must be a finite 4x4 matrix, got {m0.shape}")
    if not max_distance_mm > 0:
        raise SurfaceRegistrationError(f"max distance must be > 0 mm, got {max_distance_mm}")
    if kernel not in ("tukey", "huber", "none"):
        raise SurfaceRegistrationError(f"kernel must be tukey, huber or none, got {kernel!r}")
    if levels is None:
        levels = default_levels(model.extent_mm)
    if workers is None:
        workers = 2 if len(p) > 20_000 else 1
    R, t = m0[:3, :3].copy(), m0[:3, 3].copy()
    total = 0
    a_norm = np.zeros((6, 6))
    w_sum = 0.0
    c = max_distance_mm
    rms, inlier_fraction = float("inf"), 0.0
    for li, voxel in enumerate(levels):
        src = pyramid[voxel] if pyramid and voxel in pyramid else _voxel_mean(p, voxel)
        if len(src) < 6:
            continue
        cap = max_iterations[min(li, len(max_iterations) - 1)]
        tol = max(tolerance_mm, voxel / 20.0)
        grid = model.grid if voxel > 0 and max_distance_mm <= GRID_MARGIN_MM else None
        # annealed kernel: wide on coarse levels (far starts have large true residuals),
        # down to the data's own scale at full resolution
        c_floor = min(max(min_kernel_mm, 2.0 * voxel), max_distance_mm)
        for _ in range(cap):
            s = src @ R.T + t
            if grid is not None:  # coarse level: approximate closest point (one lookup)
                d, idx = grid.query(s, max_distance_mm)
            else:
                d, idx = model.tree.query(s, k=1, distance_upper_bound=max_distance_mm,
                                          workers=workers)
            ok = np.isfinite(d)
            if ok.sum() < 6:
                raise SurfaceRegistrationError(
                    f"fewer than 6 cloud points within {max_distance_mm:g} mm of the model: "
                    "start pose too far off (use global initialisation or a larger "
                    "--max-distance)"
                )
            sv, j = s[ok], idx[ok]
            n = model.normals[j]
            r = np.einsum("ij,ij->i", n, sv - model.points[j])
            ar = np.abs(r)
            mad = 1.4826 * np.median(ar)
            if kernel == "tukey":
                c = float(np.clip(4.685 * mad, c_floor, max_distance_mm))
                u = np.clip(r / c, -1.0, 1.0)
                w = (1.0 - u * u) ** 2
            elif kernel == "huber":
                c = float(np.clip(1.345 * mad, c_floor, max_distance_mm))
                w = np.minimum(1.0, c / np.maximum(np.abs(r), 1e-12))
            else:
                c = max_distance_mm
                w = np.ones_like(r)
            # fit statistics of this iteration's correspondences (before its update)
            inl = ar < max(c, min_kernel_mm)
            rms = float(np.sqrt(np.mean(r[inl] ** 2))) if inl.any() else float("inf")
            inlier_fraction = float(inl.sum() / len(src))
            ctr = (w[:, None] * sv).sum(axis=0) / max(w.sum(), 1e-12)
            sc = sv - ctr
            J = np.empty((len(sv), 6))
            J[:, :3] = np.cross(sc, n)  # Low 2004, eq. 8: (s x n) for the rotation part
            J[:, 3:] = n
            Jw = J * w[:, None]
            A = Jw.T @ J
            b = -Jw.T @ r
            try:
                x = np.linalg.solve(A + 1e-9 * np.trace(A) * np.eye(6), b)
            except np.linalg.LinAlgError:
                raise SurfaceRegistrationError("point-to-plane system is singular") from None
            dR = _rodrigues(x[:3])
            # s' = dR (s - ctr) + ctr + x_t
            R = dR @ R
            t = dR @ (t - ctr) + ctr + x[3:]
            total += 1
            radius = float(np.sqrt(np.mean(np.sum(sc * sc, axis=1))))
            L = max(radius, 1e-9)
            scale = np.array([1 / L, 1 / L, 1 / L, 1, 1, 1])
            w_sum = float(w.sum())
            a_norm = A * np.outer(scale, scale) / max(w_sum, 1e-12)
            if np.linalg.norm(x[:3]) * radius + np.linalg.norm(x[3:]) < tol:
                break
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, t
    return IcpResult(m, rms, inlier_fraction, total, a_norm, w_sum, c)


def sliding_directions(
    normal_matrix: np.ndarray, weight_sum: float, rms_mm: float, tolerance_mm: float = 0.5
) -> tuple[float, float, list[str]]:
    """Eigen-analysis of the normalised point-to-plane normal matrix (Gelfand et al. 2003).

    The normal matrix ``A / sum(w)`` (rotation rows scaled by the cloud's RMS radius, so every
    entry is in mm-equivalents) has eigenvalues ``lambda_k``; the least-squares pose along
    eigen-direction ``k`` has standard deviation ``rms / sqrt(sum(w) lambda_k)`` (the inverse
    of the Gauss-Newton Hessian as covariance). A direction whose standard deviation exceeds
    ``tolerance_mm`` (or whose eigenvalue is below 1e-4 of the largest) lets the cloud slide
    along the surface: rotation about an axis, translation along one, or a screw.

    Returns
    -------
    ratio, worst_sd_mm, descriptions
        Smallest / largest eigenvalue, the largest standard deviation (mm at the cloud's
        radius), and one description per sliding direction.
    """
    evals, evecs = np.linalg.eigh(normal_matrix)
    if evals[-1] <= 0:
        return 0.0, float("inf"), ["no constraint at all"]
    lam = np.maximum(evals, 1e-300)
    ratio = float(max(evals[0], 0.0) / evals[-1])
    sd = max(rms_mm, 0.05) / np.sqrt(max(weight_sum, 1.0) * lam)
    out = []
    for k, v in enumerate(evecs.T):
        if sd[k] > tolerance_mm or evals[k] < 1e-4 * evals[-1]:
            rot, tr = v[:3], v[3:]
            if np.linalg.norm(rot) >= np.linalg.norm(tr):
                ax = rot / np.linalg.norm(rot)
                kind = f"rotation about axis ({ax[0]:+.2f}, {ax[1]:+.2f}, {ax[2]:+.2f})"
            else:
                ax = tr / np.linalg.norm(tr)
                kind = f"translation along ({ax[0]:+.2f}, {ax[1]:+.2f}, {ax[2]:+.2f})"
            out.append(f"{kind}, sd {min(sd[k], 1e6):.3g} mm")
    return ratio, float(sd[0]), out


def _score(
    res: IcpResult, cloud_mm: np.ndarray, model: PreparedModel, tol_mm: float,
    approximate: bool = False,
) -> float:
    """Share of cloud points within ``tol_mm`` (point-to-plane, and 3 tol point-to-point),
    on at most :data:`SCORE_POINTS` evenly strided points. ``approximate`` uses the model's
    closest-point grid when it has one (ranking intermediate candidates)."""
    cloud_mm = cloud_mm[:: max(1, len(cloud_mm) // SCORE_POINTS)]
    s = cloud_mm @ res.matrix[:3, :3].T + res.matrix[:3, 3]
    if approximate and model.grid is not None and 3 * tol_mm <= GRID_MARGIN_MM:
        d, idx = model.grid.query(s, 3 * tol_mm)
    else:
        d, idx = model.tree.query(s, k=1, distance_upper_bound=3 * tol_mm,
                                  workers=2 if len(s) > 20_000 else 1)
    ok = np.isfinite(d)
    r = np.einsum("ij,ij->i", model.normals[idx[ok]], s[ok] - model.points[idx[ok]])
    return float(np.sum(np.abs(r) < tol_mm) / len(cloud_mm))


def _rank_distinct(
    results: list[IcpResult],
    cloud_mm: np.ndarray,
    model: PreparedModel,
    centre: np.ndarray,
    min_tol_mm: float,
) -> tuple[list[IcpResult], np.ndarray]:
    """Results and their scores, best first, dropping results within 5 deg / 5 mm of a better
    one (converged to the same pose). Score tolerance: 2.5 times the smallest RMS residual, at
    least ``min_tol_mm``."""
    if len(results) == 1:
        return results, np.ones(1)  # nothing to rank (a start pose was given)
    tol = max(min_tol_mm, 2.5 * min(r.rms_mm for r in results))
    sc = np.array([_score(r, cloud_mm, model, tol, approximate=True) for r in results])
    kept: list[int] = []
    for i in np.argsort(-sc, kind="stable"):
        r = results[i]
        if all(max(pose_difference(r.matrix, results[k].matrix, centre)) > 5.0 for k in kept):
            kept.append(int(i))
    return [results[i] for i in kept], sc[kept]


def register_surface(
    moving: PointSet | PreparedModel,
    fixed: PointSet,
    init: Transform | None = None,
    max_distance_mm: float = 10.0,
    kernel: str = "tukey",
    seed: int = 0,
    n_hypotheses: int = 20,
    n_candidates: int = 4,
    slide_tolerance_mm: float = 0.5,
    ambiguity_margin: float = AMBIGUITY_MARGIN,
    min_score_tol_mm: float = 1.0,
    moving_frame: str = "CT",
    moving_source: dict[str, str] | None = None,
) -> SurfaceRegistration:
    """Register a model surface (moving) to a measured cloud (fixed).

    Parameters
    ----------
    moving
        Model surface with outward normals (model frame, e.g. CT LPS mm), or a
        :class:`PreparedModel` of it (reused across calls).
    fixed
        Measured cloud (fixed frame, e.g. REF, mm). Normals are optional.
    init
        Start ``T_fixed_moving``; when given, global initialisation is skipped.
    max_distance_mm
        Correspondence gate of ICP (mm).
    kernel
        Robust kernel: ``"tukey"`` (default), ``"huber"`` or ``"none"``.
    seed
        Seed of the RANSAC sampling (results are deterministic for a seed).
    n_hypotheses
        Distinct global (RANSAC) hypotheses refined at the coarsest ICP level.
    n_candidates
        How many of them (best scores) go on to the middle level; the best two of those are
        refined at full resolution and compared.
    slide_tolerance_mm
        Predicted pose standard deviation (mm at the cloud's radius) above which a direction
        is reported as sliding (see :func:`sliding_directions`).
    ambiguity_margin
        A distinct solution whose score is within this margin of the chosen one's makes the
        result ambiguous (scores are shares of cloud points, 0-1).
    min_score_tol_mm
        Smallest tolerance of the final score (share of cloud points within it).
    moving_frame, moving_source
        Frame and provenance of a :class:`PreparedModel` (a :class:`PointSet` carries its own).

    Returns
    -------
    SurfaceRegistration
        ``transform`` is ``T_fixed_moving`` with the provenance of both inputs.
    """
    t0 = time.perf_counter()
    if isinstance(moving, PointSet):
        moving_frame, moving_source = moving.frame, dict(moving.source)
        model = PreparedModel.build(moving)
    elif isinstance(moving, PreparedModel):
        model = moving
    else:
        raise SurfaceRegistrationError("moving must be a PointSet or a PreparedModel")
    if not isinstance(fixed, PointSet):
        raise SurfaceRegistrationError("fixed must be a PointSet")
    if len(fixed) < 10:
        raise SurfaceRegistrationError(f"the cloud has only {len(fixed)} points (need >= 10)")
    if init is not None and (init.src != moving_frame or init.dst != fixed.frame):
        raise SurfaceRegistrationError(
            f"start transform maps {init.src} to {init.dst}; expected {moving_frame} to "
            f"{fixed.frame} (T_fixed_moving)"
        )
    timing: dict[str, float] = {"prepare": time.perf_counter() - t0}
    cloud = fixed.points
    levels = default_levels(model.extent_mm)
    warnings: list[str] = []
    t1 = time.perf_counter()
    if init is not None:
        method = "init"
        starts = [np.linalg.inv(init.matrix)]
    else:
        method = "global"
        voxel = max(model.extent_mm / 40.0, 0.5)
        mfeat, mtree = model.features(voxel)
        cfeat = fpfh_cloud(cloud, fixed.normals, voxel)
        hyps = ransac_hypotheses(cfeat, mfeat, mtree, np.random.default_rng(seed),
                                 n_keep=max(n_hypotheses, 1))
        if not hyps:
            raise SurfaceRegistrationError(
                "global initialisation found no consistent feature matches: the cloud may not "
                "show this surface (or pass a start pose with --init)"
            )
        starts = [h.matrix for h in hyps]
    timing["global_init"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    # Successive halving over the starts (candidates go on only while their score -- share of
    # cloud points within a tolerance of the model -- is within `gap` of the best one's):
    # every start runs 3 coarse iterations; the best 8 continue on the coarse level, the best
    # `n_candidates` of those run the middle level and the best 3 full resolution.
    single = len(starts) == 1
    first = levels[:1]
    pyr = {v: _voxel_mean(cloud, v) for v in levels}
    results: list[IcpResult] = []
    for m in starts:
        try:
            results.append(robust_icp(cloud, model, m, max_distance_mm, first,
                                      (50 if single else 3,), kernel=kernel, pyramid=pyr))
        except SurfaceRegistrationError:
            if single:
                raise
    if not results:
        raise SurfaceRegistrationError("ICP failed from every global hypothesis")
    centre = cloud.mean(axis=0)
    schedule = [(1, 20, n_candidates, 0.2, levels[0]), (2, 20, 3, 0.1, levels[1])]
    if not single:
        schedule.insert(0, (0, 12, 8, 0.3, levels[0]))
    for lvl, cap, keep, gap, score_voxel in schedule:
        results, sc = _rank_distinct(results, pyr[score_voxel], model, centre, min_score_tol_mm)
        keep = max(1, min(keep, int(np.sum(sc >= sc[0] - gap))))
        refined = [
            robust_icp(cloud, model, r.matrix, max_distance_mm, levels[lvl : lvl + 1],
                       max_iterations=(cap,), kernel=kernel, pyramid=pyr)
            for r in results[:keep]
        ]
        refined = [replace(r, iterations=r.iterations + q.iterations)
                   for r, q in zip(refined, results[:keep], strict=True)]
        results = refined + results[keep:]
    n_fine = keep
    fine_tol = max(min_score_tol_mm, 2.5 * min(r.rms_mm for r in results[:n_fine]))
    scores = [_score(r, cloud, model, fine_tol) for r in results]
    pick = int(np.argmax(scores[:n_fine]))
    final, final_score = results[pick], scores[pick]
    iterations = final.iterations
    timing["icp"] = time.perf_counter() - t2
    alts = [(r.matrix, scores[k], r.rms_mm) for k, r in enumerate(results)]
    candidates: list[dict[str, float]] = []
    ambiguous = False
    seen: list[np.ndarray] = []
    for m, sc, rms in alts:
        ang, off = pose_difference(m, final.matrix, centre)
        candidates.append({"score": sc, "rms_mm": rms, "rotation_deg": ang, "offset_mm": off})
        if ang <= 5.0 and off <= 5.0:
            continue  # the chosen solution (or a copy of it)
        if any(max(pose_difference(m, q, centre)) <= 5.0 for q in seen):
            continue
        seen.append(m)
        if sc >= final_score - ambiguity_margin:
            ambiguous = True
            warnings.append(
                f"ambiguous: a distinct solution {ang:.0f} deg / {off:.0f} mm away fits about as "
                f"well (score {sc:.2f} vs {final_score:.2f})"
            )
    ratio, worst_sd, slides = sliding_directions(
        final.normal_matrix, final.weight_sum, final.rms_mm, slide_tolerance_mm
    )
    if slides:
        ambiguous = True
        warnings.append(
            "degenerate geometry: the cloud can slide along the surface ("
            + "; ".join(slides)
            + f"; eigenvalue ratio {ratio:.3g})"
        )
    if final.inlier_fraction < 0.5:
        warnings.append(
            f"only {final.inlier_fraction:.0%} of the cloud points fit the model: check that "
            "the cloud shows this surface and remove background"
        )
    src = _merge_source(dict(fixed.source), dict(moving_source or {}))
    t_fixed_moving = Transform(
        np.linalg.inv(final.matrix), moving_frame, fixed.frame, source=src
    )
    timing["total"] = time.perf_counter() - t0
    return SurfaceRegistration(
        transform=t_fixed_moving,
        rms_mm=final.rms_mm,
        inlier_fraction=final.inlier_fraction,
        iterations=iterations,
        ambiguous=ambiguous,
        warnings=warnings,
        eigen_ratio=ratio,
        candidates=candidates,
        method=method,
        timing_s=timing,
    )
