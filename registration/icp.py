"""Multi-scale robust point-to-plane ICP, the prepared model it runs against, and the
degeneracy (sliding) analysis of its normal matrix.

Correspondences: every (downsampled) cloud point ``s_i`` is paired with its nearest model point
``q_i`` (KD-tree of the model, built once), unless farther than ``max_distance_mm`` (the gate).
The point-to-plane error ``sum_i w_i (n_i . (R s_i + t - q_i))^2`` (Chen & Medioni 1992) is
linearised for small rotations (Low 2004, eqs. 6-9): with ``x = (omega, t)`` and
``J_i = [s_i x n_i, n_i]`` (points centred on their centroid for conditioning), solve the 6x6
normal equations ``(sum w J J^T) x = -sum w J r``. Weights are Tukey's biweight
``w = (1 - (r/c)^2)^2`` for ``|r| < c`` (an M-estimator by iteratively reweighted least squares;
Zhang 1994 for robust, adaptive rejection in ICP) with ``c = 4.685 * 1.4826 * MAD(r)``, kept
within ``[max(min_kernel_mm, 2 voxel), max_distance_mm]``: annealed, wide on the coarse levels
(far starts have large true residuals) and down to the data's own scale at full resolution
(Huber or plain least squares on request). Coarse-to-fine: the cloud is voxel-averaged at
coarse levels (few points, long strides), then refined at full resolution; each level stops
early when the update moves the cloud by less than a tolerance.

References: Chen & Medioni, Image Vis. Comput. 10(3) 1992; Low, UNC TR04-004, 2004; Zhang,
IJCV 13(2) 1994; Gelfand et al., 3DIM 2003; Rusinkiewicz & Levoy, 3DIM 2001.

Direction: the cloud (fixed frame) is moved onto the model (moving frame): results are
``T_model_cloud``; :mod:`scrubin.registration.surface` inverts them into ``T_fixed_moving``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from scrubin.registration.clouds import PointSet, extent
from scrubin.registration.errors import RegistrationError
from scrubin.registration.global_init import FeatureCloud, fpfh_cloud
from scrubin.registration.nn_grid import ClosestPointGrid
from scrubin.registration.points import as_points

#: Margin (mm) of the optional closest-point grid around the model; the grid serves coarse
#: ICP levels only while the correspondence gate is within it.
GRID_MARGIN_MM = 20.0


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

        ``coarse_grid`` also builds a closest-point map (:mod:`~registration.nn_grid`, cells of
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


def _rodrigues(omega: np.ndarray) -> np.ndarray:
    a = float(np.linalg.norm(omega))
    if a < 1e-15:
        return np.eye(3)
    k = omega / a
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * (kx @ kx)


def voxel_mean(points_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Mean of the points in each cubic voxel of ``voxel_mm`` (the points as given if 0)."""
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
    p = as_points(cloud_points_mm, "cloud points", min_points=6)
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
        src = pyramid[voxel] if pyramid and voxel in pyramid else voxel_mean(p, voxel)
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


@dataclass(frozen=True)
class SlidingDirection:
    """One pose direction that the surface does not constrain (Gelfand et al. 2003).

    ``kind`` is ``"rotation"`` (about ``axis``) or ``"translation"`` (along ``axis``);
    ``axis`` is a unit vector in the frame of the registered cloud, its sign chosen so that
    its largest-magnitude component is positive; ``sd_mm`` the pose's standard deviation
    along it (mm at the cloud's RMS radius).
    """

    kind: str
    axis: np.ndarray
    sd_mm: float

    def __str__(self) -> str:
        ax = np.round(self.axis, 2) + 0.0  # no "-0.00" in messages
        what = "rotation about axis" if self.kind == "rotation" else "translation along"
        return (f"{what} ({ax[0]:+.2f}, {ax[1]:+.2f}, {ax[2]:+.2f}), "
                f"sd {min(self.sd_mm, 1e6):.3g} mm")


def sliding_directions(
    normal_matrix: np.ndarray, weight_sum: float, rms_mm: float, tolerance_mm: float = 0.5
) -> tuple[float, float, list[SlidingDirection]]:
    """Eigen-analysis of the normalised point-to-plane normal matrix (Gelfand et al. 2003).

    The normal matrix ``A / sum(w)`` (rotation rows scaled by the cloud's RMS radius, so every
    entry is in mm-equivalents) has eigenvalues ``lambda_k``; the least-squares pose along
    eigen-direction ``k`` has standard deviation ``rms / sqrt(sum(w) lambda_k)`` (the inverse
    of the Gauss-Newton Hessian as covariance). A direction whose standard deviation exceeds
    ``tolerance_mm`` (or whose eigenvalue is below 1e-4 of the largest) lets the cloud slide
    along the surface: rotation about an axis, translation along one, or a screw (reported
    by its dominant part).

    Returns
    -------
    ratio, worst_sd_mm, directions
        Smallest / largest eigenvalue, the largest standard deviation (mm at the cloud's
        radius), and one :class:`SlidingDirection` per sliding direction (``str()`` of each
        is the user-facing description).
    """
    evals, evecs = np.linalg.eigh(normal_matrix)
    if evals[-1] <= 0:
        return 0.0, float("inf"), [
            SlidingDirection(k, np.eye(3)[i], float("inf"))
            for k in ("rotation", "translation") for i in range(3)
        ]
    lam = np.maximum(evals, 1e-300)
    ratio = float(max(evals[0], 0.0) / evals[-1])
    sd = max(rms_mm, 0.05) / np.sqrt(max(weight_sum, 1.0) * lam)
    out: list[SlidingDirection] = []
    for k, v in enumerate(evecs.T):
        if sd[k] > tolerance_mm or evals[k] < 1e-4 * evals[-1]:
            rot, tr = v[:3], v[3:]
            kind, part = ("rotation", rot) if np.linalg.norm(rot) >= np.linalg.norm(tr) else (
                "translation", tr)
            ax = part / np.linalg.norm(part)
            ax = ax if ax[np.argmax(np.abs(ax))] > 0 else -ax
            out.append(SlidingDirection(kind, ax, float(sd[k])))
    return ratio, float(sd[0]), out
