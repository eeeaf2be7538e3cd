"""Closed-form paired-point rigid registration (Arun 1987 / Horn 1987 / Umeyama 1991).

Given paired points ``moving_mm[i]`` (frame ``src``, e.g. CT LPS mm) and ``fixed_mm[i]``
(frame ``dst``, e.g. the reference marker REF, mm), find the rotation ``R``, translation ``t``
and optionally an isotropic scale ``c`` minimising ``Σ |fixed_i − (c R moving_i + t)|²``.
The result is a :class:`scrubin.registration.frames.Transform` ``T_dst_src``; registering tracked
fiducials (fixed, REF) to CT fiducials (moving, CT) gives ``T_REF_CT``.

References
----------
* K. S. Arun, T. S. Huang, S. D. Blostein, "Least-squares fitting of two 3-D point sets",
  IEEE PAMI 9(5):698–700, 1987 (SVD of the cross-covariance, eq. 11–13).
* B. K. P. Horn, "Closed-form solution of absolute orientation using unit quaternions",
  JOSA A 4(4):629–642, 1987 (same optimum; translation from the centroids).
* S. Umeyama, "Least-squares estimation of transformation parameters between two point
  patterns", IEEE PAMI 13(4):376–380, 1991, eq. 38–42: ``Σ = (1/n) Σ (y−μy)(x−μx)ᵀ = U D Vᵀ``;
  ``S = diag(1, 1, det(U)·det(V))`` (the reflection guard of eq. 39/43); ``R = U S Vᵀ``
  (eq. 40); ``c = tr(D S) / σx²`` (eq. 42); ``t = μy − c R μx`` (eq. 41).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import CT, REF, Transform

#: Ratio of the 2nd to the 1st singular value of a centred configuration below which the
#: points are treated as collinear (the rotation about that line is then undetermined).
COLLINEAR_RATIO = 1e-3


class PointSetError(RegistrationError):
    """A point set cannot be registered (shape, count, NaN, degenerate geometry)."""


def as_points(points: object, name: str = "points", min_points: int = 1) -> np.ndarray:
    """Validate and return an ``(N, 3)`` float64 array of points in mm (the project's one
    point-array validator: registration, clouds, ICP).

    Parameters
    ----------
    points
        Array-like of shape ``(N, 3)``.
    name
        Used in the error messages (e.g. ``"fixed_mm"``).
    min_points
        Fewest points accepted.

    Raises
    ------
    PointSetError
        Wrong shape, too few points, or NaN/infinite coordinates.
    """
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PointSetError(f"{name}: not a numeric array of points, expected numbers ({exc})"
                            ) from None
    if p.ndim != 2 or p.shape[1] != 3:
        raise PointSetError(
            f"{name}: expected an (N, 3) array of x, y, z in mm, got shape {p.shape}")
    if p.shape[0] < min_points:
        raise PointSetError(f"{name}: needs at least {min_points} points, got {p.shape[0]}")
    if not np.isfinite(p).all():
        bad = ~np.all(np.isfinite(p), axis=1)
        raise PointSetError(
            f"{name}: point {int(np.argmax(bad))} has a NaN or infinite coordinate"
        )
    return p


def check_configuration(points_mm: np.ndarray, name: str = "points") -> np.ndarray:
    """Refuse coincident or collinear configurations; return the singular values.

    The rotation is determined only if the centred configuration has rank ≥ 2: the singular
    values ``s1 ≥ s2 ≥ s3`` of ``points − centroid`` must satisfy ``s1 > 0`` (not all
    coincident) and ``s2 / s1 ≥`` :data:`COLLINEAR_RATIO` (not on one line). Planar sets
    (``s3 = 0``) are fine.
    """
    centred = points_mm - points_mm.sum(axis=0) / points_mm.shape[0]
    eig = np.linalg.eigvalsh(centred.T @ centred)  # squared singular values, ascending
    s = np.sqrt(np.maximum(eig[::-1], 0.0))
    scale = max(1.0, float(points_mm.max()), -float(points_mm.min()))
    if s[0] <= 1e-9 * scale:
        raise PointSetError(f"{name}: all {len(points_mm)} points coincide; cannot register")
    if s[1] < COLLINEAR_RATIO * s[0]:
        raise PointSetError(
            f"{name}: the {len(points_mm)} points are collinear (singular values "
            f"{s[0]:.3g}, {s[1]:.3g}); rotation about their line is undetermined"
        )
    return s


def check_pair(
    fixed_mm: object, moving_mm: object, min_points: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a paired point set: shapes, equal counts, ≥ 3 points, finite, not collinear."""
    fixed = as_points(fixed_mm, "fixed points", min_points)
    moving = as_points(moving_mm, "moving points", min_points)
    if fixed.shape[0] != moving.shape[0]:
        raise PointSetError(
            f"paired registration needs equal counts: {moving.shape[0]} moving points vs "
            f"{fixed.shape[0]} fixed points (use unpaired matching for unlabelled points)"
        )
    check_configuration(moving, "moving points")
    check_configuration(fixed, "fixed points")
    return fixed, moving


def fit_batch(
    moving_mm: np.ndarray, fixed_mm: np.ndarray, scale: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Umeyama least-squares similarity/rigid fit for a batch of paired sets, no validation.

    Parameters
    ----------
    moving_mm, fixed_mm
        ``(..., N, 3)`` paired points (source and destination frames).
    scale
        Estimate an isotropic scale (Umeyama eq. 42); otherwise ``c = 1`` (Arun/Horn).

    Returns
    -------
    rotation, translation, scale
        ``(..., 3, 3)``, ``(..., 3)``, ``(...)`` such that ``fixed ≈ c R moving + t``.
    """
    if moving_mm.ndim == 2:
        return _fit_single(moving_mm, fixed_mm, scale)
    mu_x = moving_mm.mean(axis=-2)
    mu_y = fixed_mm.mean(axis=-2)
    x = moving_mm - mu_x[..., None, :]
    y = fixed_mm - mu_y[..., None, :]
    n = moving_mm.shape[-2]
    sigma = np.einsum("...ni,...nj->...ij", y, x) / n  # Umeyama eq. 38 (Arun's H transposed)
    u, d, vt = np.linalg.svd(sigma)
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    sign = np.where(sign == 0, 1.0, sign)
    s_diag = np.ones(d.shape)
    s_diag[..., 2] = sign  # Umeyama eq. 39/43: S = diag(1, 1, det U det V)
    rotation = (u * s_diag[..., None, :]) @ vt  # eq. 40: R = U S V^T
    if scale:
        var_x = np.einsum("...ni,...ni->...", x, x) / n  # eq. 36 (σx²)
        c = np.einsum("...i,...i->...", d, s_diag) / var_x  # eq. 42: c = tr(DS) / σx²
    else:
        c = np.ones(d.shape[:-1])
    translation = mu_y - c[..., None] * np.einsum("...ij,...j->...i", rotation, mu_x)  # eq. 41
    return rotation, translation, c


def _fit_single(
    moving_mm: np.ndarray, fixed_mm: np.ndarray, scale: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fit_batch` for one ``(N, 3)`` pair, with plain 2-D operations (faster)."""
    n = moving_mm.shape[0]
    mu_x = moving_mm.sum(axis=0) / n
    mu_y = fixed_mm.sum(axis=0) / n
    x = moving_mm - mu_x
    y = fixed_mm - mu_y
    u, d, vt = np.linalg.svd(y.T @ x / n)  # Umeyama eq. 38
    s_diag = np.ones(3)
    if np.linalg.det(u @ vt) < 0:  # eq. 39/43: S = diag(1, 1, -1) when det U det V < 0
        s_diag[2] = -1.0
    rotation = (u * s_diag) @ vt  # eq. 40
    c = float(d @ s_diag / (np.sum(x * x) / n)) if scale else 1.0  # eq. 42
    translation = mu_y - c * (rotation @ mu_x)  # eq. 41
    return rotation, translation, np.asarray(c)


@dataclass(frozen=True)
class PointRegistration:
    """Result of a paired-point registration.

    Attributes
    ----------
    transform
        ``T_dst_src`` mapping moving (``src``) points onto fixed (``dst``) points.
    residuals_mm
        ``(N, 3)`` per-fiducial residual vectors ``T(moving_i) − fixed_i`` in the fixed frame.
    scale
        Isotropic scale (1.0 for rigid).
    """

    transform: Transform
    residuals_mm: np.ndarray
    scale: float = 1.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def residual_norms_mm(self) -> np.ndarray:
        """Per-fiducial residual distance in mm (the fiducial registration error of each)."""
        return np.linalg.norm(self.residuals_mm, axis=1)

    @property
    def fre_mm(self) -> float:
        """FRE: RMS of the residual distances (mm). Not a measure of accuracy at a target."""
        return float(np.sqrt(np.mean(np.sum(self.residuals_mm**2, axis=1))))


def register_points(
    fixed_mm: object,
    moving_mm: object,
    scale: bool = False,
    src: str = CT,
    dst: str = REF,
    source: dict[str, str] | None = None,
    timestamp: float | None = None,
) -> PointRegistration:
    """Closed-form registration of paired points: ``fixed ≈ T_dst_src · moving``.

    Parameters
    ----------
    fixed_mm
        ``(N, 3)`` points in frame ``dst`` (mm), e.g. tracked fiducials in REF.
    moving_mm
        ``(N, 3)`` corresponding points in frame ``src`` (mm), e.g. CT fiducials in LPS.
    scale
        Also estimate an isotropic scale (Umeyama 1991 eq. 42). Off for surgical use.
    src, dst
        Frame names of the moving and fixed points.
    source
        Provenance (series/frame-of-reference UIDs) carried by the transform.
    timestamp
        Capture time of the tracked data, if any.

    Returns
    -------
    PointRegistration
        Transform ``T_dst_src`` plus per-fiducial residuals and FRE.

    Raises
    ------
    PointSetError
        Wrong shapes, unequal counts, fewer than 3 points, NaN/inf, coincident or collinear
        points (checked on the singular values of each centred configuration).
    """
    fixed, moving = check_pair(fixed_mm, moving_mm)
    rotation, translation, c = fit_batch(moving, fixed, scale=scale)
    matrix = np.eye(4)
    matrix[:3, :3] = c * rotation
    matrix[:3, 3] = translation
    transform = Transform(
        matrix, src, dst, timestamp=timestamp, source=dict(source or {}), allow_scale=scale
    )
    residuals = transform.apply(moving) - fixed
    return PointRegistration(transform, residuals, float(c))
