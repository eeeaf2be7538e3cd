"""Surface registration: a model surface (moving, CT LPS mm) onto a measured cloud (fixed).

Pipeline (:func:`register_surface`)
-----------------------------------
1. Global initialisation when no start pose is given (:mod:`scrubin.registration.global_init`:
   FPFH + RANSAC + verification), several distinct hypotheses kept.
2. Multi-scale robust point-to-plane ICP (:func:`robust_icp`) by successive halving: every
   hypothesis runs 3 coarse iterations, the best 8 (by score: share of cloud points within a
   tolerance of the model) continue on the coarse level, the best ``n_candidates`` run the
   middle level and the best 3 full resolution; the best final score wins. A candidate goes on
   only while its score is close to the best one's. With a start pose (``init``) there is a
   single candidate.
3. Quality: RMS point-to-plane residual, inlier fraction, and an ambiguity warning when two
   distinct poses fit about equally well or when the geometry lets the cloud slide (small
   eigenvalues of the point-to-plane normal matrix, Gelfand et al. 2003).

References: Chen & Medioni, Image Vis. Comput. 10(3) 1992; Low, UNC TR04-004, 2004; Zhang,
IJCV 13(2) 1994; Gelfand, Ikemoto, Rusinkiewicz & Levoy, 3DIM 2003; Rusinkiewicz & Levoy,
3DIM 2001 (coarse-to-fine, sampling variants).

The ICP itself, the model index and the degeneracy analysis are in :mod:`scrubin.registration.icp`.

Direction and convention: internally the cloud is moved onto the model (every cloud point has a
counterpart on the complete model, not the other way round for a partial cloud), giving
``T_model_cloud``; the result is its inverse, ``T_fixed_moving`` (e.g. ``T_REF_CT``), the same
convention as point registration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from scrubin.registration.clouds import PointSet
from scrubin.registration.frames import Transform, merge_source
from scrubin.registration.global_init import fpfh_cloud, pose_difference, ransac_hypotheses
from scrubin.registration.icp import (
    GRID_MARGIN_MM,
    IcpResult,
    PreparedModel,
    SurfaceRegistrationError,
    default_levels,
    robust_icp,
    sliding_directions,
    voxel_mean,
)

__all__ = [
    "AMBIGUITY_MARGIN",
    "PreparedModel",
    "SurfaceRegistration",
    "SurfaceRegistrationError",
    "default_levels",
    "register_surface",
    "robust_icp",
    "sliding_directions",
]

#: A distinct second solution whose score (share of cloud points fitting within the tolerance)
#: is within this margin of the best one makes the result "ambiguous".
AMBIGUITY_MARGIN = 0.03
#: Cloud points used to score candidate poses (evenly strided subsample).
SCORE_POINTS = 2000


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
    pyr = {v: voxel_mean(cloud, v) for v in levels}
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
            + "; ".join(str(d) for d in slides)
            + f"; eigenvalue ratio {ratio:.3g})"
        )
    if final.inlier_fraction < 0.5:
        warnings.append(
            f"only {final.inlier_fraction:.0%} of the cloud points fit the model: check that "
            "the cloud shows this surface and remove background"
        )
    src = merge_source(dict(fixed.source), dict(moving_source or {}))
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
