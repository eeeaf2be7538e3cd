"""Global initialisation of surface registration: FPFH features + RANSAC, then verification.

No start pose is needed: the cloud and the model are voxel-downsampled, described by Fast Point
Feature Histograms (FPFH; Rusu, Blodow & Beetz, ICRA 2009, computed with open3d), matched by
nearest neighbour in feature space, and rigid hypotheses are drawn from random triples of
matches (RANSAC; Fischler & Bolles 1981). The sampling is vectorised numpy: many triples at once,
pre-filtered by edge-length consistency (a rigid motion keeps pairwise distances; the check of
open3d's ``CorrespondenceCheckerBasedOnEdgeLength``), fitted in a batch by the SVD method (Arun,
Huang & Blostein 1987, eqs. 11-13), scored by their match inliers. The best hypotheses are
refitted on their inliers and verified against the model surface (fraction of cloud points
within a tolerance of the model: the fitness); distinct poses are kept apart so the caller can
refine several and detect ambiguity (several distinct solutions that fit about equally well).

Direction: hypotheses map the *cloud* (fixed frame, e.g. REF) into the *model* frame (CT):
``T_model_cloud``. A partial cloud has a true counterpart for nearly every point on the
complete model, so fitness counts cloud points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from scrubin.registration.clouds import estimate_normals, voxel_downsample
from scrubin.registration.errors import RegistrationError
from scrubin.registration.points import fit_batch


@dataclass(frozen=True)
class FeatureCloud:
    """Downsampled points (mm, own frame), outward unit normals and their FPFH descriptors."""

    points: np.ndarray  # (K, 3) mm
    normals: np.ndarray  # (K, 3)
    features: np.ndarray  # (K, 33) FPFH
    voxel_mm: float


@dataclass(frozen=True)
class Hypothesis:
    """A verified rigid hypothesis ``T_model_cloud`` (4x4, maps cloud points into the model)."""

    matrix: np.ndarray
    fitness: float  # fraction of downsampled cloud points within the tolerance of the model
    rms_mm: float  # RMS distance of those inliers
    votes: int  # match inliers that supported it in RANSAC


def fpfh_cloud(
    points_mm: np.ndarray, normals: np.ndarray | None, voxel_mm: float
) -> FeatureCloud:
    """Downsample to ``voxel_mm``, estimate normals if absent, compute FPFH (radius 5 voxels).

    Normals: radius 2 voxels (Rusu 2009 uses a normal radius smaller than the feature radius);
    FPFH: radius 5 voxels, at most 100 neighbours (open3d's recommended setting).
    """
    import open3d as o3d

    if voxel_mm <= 0:
        raise RegistrationError(f"feature voxel size must be > 0 mm, got {voxel_mm}")
    pts, nrm = voxel_downsample(np.asarray(points_mm, dtype=np.float64), normals, voxel_mm)
    if len(pts) < 10:
        raise RegistrationError(
            f"only {len(pts)} points left after {voxel_mm:.2g} mm downsampling: "
            "the cloud is too small for global initialisation"
        )
    if nrm is None:
        nrm = estimate_normals(pts, 2.0 * voxel_mm)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.array(pts, dtype=np.float64)))
    pc.normals = o3d.utility.Vector3dVector(np.array(nrm, dtype=np.float64))
    feat = o3d.pipelines.registration.compute_fpfh_feature(
        pc, o3d.geometry.KDTreeSearchParamHybrid(radius=5.0 * voxel_mm, max_nn=100)
    )
    return FeatureCloud(pts, nrm, np.asarray(feat.data).T.copy(), voxel_mm)


def _batch_kabsch(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Least-squares rigid transforms mapping ``p`` onto ``q`` for a batch ``(H, K, 3)``, as
    ``(H, 4, 4)`` matrices: the project's one Kabsch/Umeyama fit,
    :func:`scrubin.registration.points.fit_batch` (Arun et al. 1987; Umeyama 1991 eq. 39-41)."""
    rot, trans, _ = fit_batch(p, q)
    m = np.zeros((len(p), 4, 4))
    m[:, :3, :3] = rot
    m[:, :3, 3] = trans
    m[:, 3, 3] = 1.0
    return m


def match_features(cloud: FeatureCloud, model: FeatureCloud) -> tuple[np.ndarray, np.ndarray]:
    """Nearest model descriptor of every cloud descriptor (L2), both directions.

    Returns ``(pairs, mutual)``: ``(K, 2)`` index pairs (cloud, model) and a boolean mask of
    the pairs that are mutual nearest neighbours.
    """
    tree = cKDTree(model.features)
    _, j = tree.query(cloud.features, k=1)
    _, back = cKDTree(cloud.features).query(model.features[j], k=1)
    i = np.arange(len(cloud.features))
    return np.stack([i, j], axis=1), back == i


def ransac_hypotheses(
    cloud: FeatureCloud,
    model: FeatureCloud,
    model_tree: cKDTree,
    rng: np.random.Generator,
    n_samples: int = 80_000,
    tolerance_mm: float | None = None,
    n_keep: int = 10,
    distinct_deg: float = 10.0,
    distinct_mm: float = 10.0,
) -> list[Hypothesis]:
    """Distinct verified rigid hypotheses ``T_model_cloud``, most match inliers first.

    Parameters
    ----------
    cloud, model
        Feature clouds of the measured cloud and the model (same voxel size).
    model_tree
        KD-tree of ``model.points`` (verification).
    rng
        Random generator (deterministic results for a given seed).
    n_samples
        Random match triples drawn (vectorised; typically 5-15 % survive the edge check).
    tolerance_mm
        Inlier distance for voting and verification (default 1.5 voxels).
    n_keep
        Maximum number of distinct hypotheses returned.
    distinct_deg, distinct_mm
        Two poses are distinct when their rotations differ by more than ``distinct_deg`` or
        they move the cloud centroid to places more than ``distinct_mm`` apart.
    """
    tol = 1.5 * cloud.voxel_mm if tolerance_mm is None else float(tolerance_mm)
    pairs, mutual = match_features(cloud, model)
    if len(pairs) < 3:
        raise RegistrationError("fewer than 3 feature matches: cannot initialise")
    pc, pm = cloud.points[pairs[:, 0]], model.points[pairs[:, 1]]
    # draw triples; half of the draws from the mutual matches when there are enough of them
    mutual_idx = np.flatnonzero(mutual)
    if len(mutual_idx) >= 6:
        half = n_samples // 2
        tri = np.concatenate(
            [
                rng.integers(0, len(pairs), size=(n_samples - half, 3)),
                mutual_idx[rng.integers(0, len(mutual_idx), size=(half, 3))],
            ]
        )
    else:
        tri = rng.integers(0, len(pairs), size=(n_samples, 3))
    a, b = pc[tri], pm[tri]  # (S, 3, 3)
    ea = np.linalg.norm(a - a[:, [1, 2, 0]], axis=2)
    eb = np.linalg.norm(b - b[:, [1, 2, 0]], axis=2)
    min_edge = 3.0 * cloud.voxel_mm
    ok = np.all(ea > min_edge, axis=1) & np.all(
        np.minimum(ea, eb) > 0.9 * np.maximum(ea, eb), axis=1
    )
    if not np.any(ok):
        return []
    mats = _batch_kabsch(a[ok], b[ok])
    # votes: match inliers of each hypothesis, in chunks to bound memory
    votes = np.empty(len(mats), dtype=np.int64)
    rt = np.ascontiguousarray(mats[:, :3, :3].transpose(0, 2, 1))
    for s in range(0, len(mats), 256):
        moved = np.matmul(pc, rt[s : s + 256]) + mats[s : s + 256, None, :3, 3]
        moved -= pm
        votes[s : s + 256] = (np.einsum("hki,hki->hk", moved, moved) < tol**2).sum(axis=1)
    order = np.argsort(-votes, kind="stable")[: 8 * n_keep]
    order = order[votes[order] >= 3]
    centroid = cloud.points.mean(axis=0)
    # distinct poses first (cheap), best-voted representative of each
    reps: list[int] = []
    for h in order:
        if all(
            max(_pair(pose_difference(mats[h], mats[k], centroid), distinct_deg, distinct_mm))
            for k in reps
        ):
            reps.append(int(h))
        if len(reps) == n_keep:
            break
    hyps: list[Hypothesis] = []
    for h in reps:
        m, n_inl = mats[h], int(votes[h])
        for _ in range(2):  # refit on the match inliers (Arun et al.)
            moved = pc @ m[:3, :3].T + m[:3, 3]
            inl = np.sum((moved - pm) ** 2, axis=1) < tol**2
            if inl.sum() < 3:
                break
            m, n_inl = _batch_kabsch(pc[inl][None], pm[inl][None])[0], int(inl.sum())
        fit, rms = verify(m, cloud.points, model_tree, tol)
        hyps.append(Hypothesis(m, fit, rms, n_inl))
    # rank by match consensus: on smooth surfaces the loose surface fitness barely separates
    # a sliding pose from the true one; the caller refines and re-scores them tightly
    hyps.sort(key=lambda hy: (-hy.votes, -hy.fitness))
    return hyps


def _pair(ad: tuple[float, float], min_deg: float, min_mm: float) -> tuple[bool, bool]:
    return ad[0] > min_deg, ad[1] > min_mm


def verify(
    matrix: np.ndarray, cloud_points_mm: np.ndarray, model_tree: cKDTree, tolerance_mm: float
) -> tuple[float, float]:
    """Fitness (fraction of cloud points within ``tolerance_mm`` of a model point after
    ``matrix``) and the RMS distance of those inliers."""
    moved = cloud_points_mm @ matrix[:3, :3].T + matrix[:3, 3]
    workers = 2 if len(moved) > 20_000 else 1
    d, _ = model_tree.query(moved, k=1, distance_upper_bound=tolerance_mm, workers=workers)
    inl = np.isfinite(d)
    fit = float(inl.mean())
    rms = float(np.sqrt(np.mean(d[inl] ** 2))) if inl.any() else float("inf")
    return fit, rms


def pose_difference(m1: np.ndarray, m2: np.ndarray, centre: np.ndarray) -> tuple[float, float]:
    """Rotation angle (deg) between two poses and the distance (mm) between where they put
    ``centre``."""
    r = m1[:3, :3].T @ m2[:3, :3]
    ang = np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))
    dist = np.linalg.norm((m1[:3, :3] - m2[:3, :3]) @ centre + m1[:3, 3] - m2[:3, 3])
    return float(ang), float(dist)


def distinct(
    hyps: list[Hypothesis], centre: np.ndarray, min_deg: float, min_mm: float
) -> list[Hypothesis]:
    """Greedy non-maximum suppression: keep a hypothesis only if it differs from every kept one
    by more than ``min_deg`` or ``min_mm`` (see :func:`pose_difference`)."""
    kept: list[Hypothesis] = []
    for h in hyps:
        if all(
            (lambda ad: ad[0] > min_deg or ad[1] > min_mm)(
                pose_difference(h.matrix, k.matrix, centre)
            )
            for k in kept
        ):
            kept.append(h)
    return kept
