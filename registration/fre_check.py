"""Gross FRE: a point registration whose FRE the fiducial localisation error cannot explain.

FRE is not accuracy (Fitzpatrick 2009), but an FRE far beyond what the FLE allows says the
registration itself failed - typically fiducials paired in the wrong order (one swap among
eight phantom fiducials gives tens of mm) or points touched on the wrong feature.

Statistics (Fitzpatrick, West & Maurer, "Predicting error in rigid-body point-based
registration", IEEE TMI 17(5):694-702, 1998, eq. 10): ``<FRE²> ≈ (1 - 2/N) FLE²``. For
isotropic Gaussian localisation error (per-axis variance ``σ² = FLE²/3``) the sum of squared
residuals of the least-squares rigid fit is ``σ² χ²`` with ``3N - 6`` degrees of freedom (3N
coordinates, 6 pose parameters; ``3N - 7`` with a scale), whose mean ``(3N - 6) σ²`` is eq. 10
again. So ``N FRE² / σ² ~ χ²(3N - 6)`` and the registration is gross when

    FRE > FRE_limit = sqrt(χ²_{1-α}(3N - 6) · FLE² / (3N)),   α = :data:`GROSS_FRE_ALPHA`

(a false failure once in a million correct registrations when the FLE is right; an FLE
understated by ~1.5-2x still passes). One bad fiducial is the leave-one-out test's business
(it is flagged and warned about, :mod:`scrubin.registration.tre`): when dropping a single
fiducial brings the FRE of the other ``N - 1`` under their limit, the registration is not
called gross. Independently of the FLE, an FRE above :data:`ABSOLUTE_FRE_LIMIT_MM` is always
gross: no fiducial set localised to surgical accuracy fits that badly.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from scrubin.registration.errors import RegistrationError
from scrubin.registration.points import fit_batch

#: False-failure probability of the chi-square test for a correct registration.
GROSS_FRE_ALPHA = 1e-6
#: FRE (mm) above which a point registration is failed whatever the FLE.
ABSOLUTE_FRE_LIMIT_MM = 10.0


class GrossFREError(RegistrationError):
    """The FRE is far beyond what the FLE allows: the registration failed."""


def fre_limit_mm(n: int, fle_mm: float, scale: bool = False,
                 alpha: float = GROSS_FRE_ALPHA) -> float:
    """Largest FRE (mm) that RMS localisation error ``fle_mm`` explains for ``n`` fiducials.

    ``sqrt(χ²_{1-α}(dof) · FLE² / (3N))`` with ``dof = 3N - 6`` (``3N - 7`` with scale); the
    chi-square form of Fitzpatrick, West & Maurer 1998 eq. 10 (module docstring).
    """
    dof = 3 * n - (7 if scale else 6)
    if dof < 1:
        raise RegistrationError(f"the FRE test needs at least 3 fiducials, got {n}")
    if not (np.isfinite(fle_mm) and fle_mm > 0):
        raise RegistrationError(f"FLE must be a positive RMS distance in mm, got {fle_mm!r}")
    return float(np.sqrt(stats.chi2.ppf(1.0 - alpha, dof) * fle_mm**2 / (3.0 * n)))


def _fre(fixed_mm: np.ndarray, moving_mm: np.ndarray, scale: bool) -> np.ndarray:
    """FRE (mm) of the least-squares fit of each ``(..., N, 3)`` paired set."""
    rot, trans, c = fit_batch(moving_mm, fixed_mm, scale=scale)
    mapped = np.einsum("...ij,...nj->...ni", rot, moving_mm) * np.asarray(c)[..., None, None]
    res = mapped + trans[..., None, :] - fixed_mm
    return np.sqrt(np.mean(np.sum(res**2, axis=-1), axis=-1))


def gross_fre_reason(fixed_mm: np.ndarray, moving_mm: np.ndarray, fle_mm: float | None,
                     scale: bool = False) -> str | None:
    """Why the paired registration of ``moving_mm`` onto ``fixed_mm`` failed, or None.

    Parameters
    ----------
    fixed_mm, moving_mm
        ``(N, 3)`` paired fiducials (mm) in the fixed (e.g. REF) and moving (e.g. CT LPS)
        frames, in the order they were paired.
    fle_mm
        RMS 3-D fiducial localisation error (mm), or None (then only the absolute limit).
    scale
        The fit also estimated an isotropic scale (one more parameter).
    """
    fixed = np.asarray(fixed_mm, dtype=np.float64)
    moving = np.asarray(moving_mm, dtype=np.float64)
    n = len(fixed)
    fre = float(_fre(fixed, moving, scale))
    if fre > ABSOLUTE_FRE_LIMIT_MM:
        return (f"FRE {fre:.1f} mm exceeds the absolute limit of {ABSOLUTE_FRE_LIMIT_MM:g} mm "
                f"for {n} fiducials")
    if fle_mm is None:
        return None
    limit = fre_limit_mm(n, fle_mm, scale)
    if fre <= limit:
        return None
    if n - 1 >= 3 and 3 * (n - 1) - (7 if scale else 6) >= 1:
        keep = ~np.eye(n, dtype=bool)  # row k: every fiducial but k
        idx = np.nonzero(keep)[1].reshape(n, n - 1)
        fre_drop = _fre(fixed[idx], moving[idx], scale)
        if float(fre_drop.min()) <= fre_limit_mm(n - 1, fle_mm, scale):
            return None  # one bad fiducial: flagged by the leave-one-out test instead
    return (f"FRE {fre:.2f} mm is far beyond what FLE {fle_mm:g} mm allows for {n} fiducials "
            f"(limit {limit:.2f} mm: chi-square {3 * n - (7 if scale else 6)} dof, "
            f"p = {GROSS_FRE_ALPHA:g}; Fitzpatrick, West & Maurer 1998 eq. 10) and no single "
            "fiducial explains it")
