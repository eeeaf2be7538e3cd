"""Registration error: FRE, leave-one-out, predicted TRE (Fitzpatrick, West & Maurer 1998).

Vocabulary (Fitzpatrick, West & Maurer, "Predicting error in rigid-body point-based
registration", IEEE TMI 17(5):694–702, 1998):

* FLE — fiducial localisation error: RMS 3-D error of a fiducial's measured position (the
  combined error of both point sets). For isotropic Gaussian noise the per-axis σ is
  ``FLE/√3``.
* FRE — fiducial registration error: RMS distance between registered fiducials. Its expected
  value ``⟨FRE²⟩ ≈ (1 − 2/N)·FLE²`` depends on FLE and N only.
* TRE — target registration error at a point that is not a fiducial. FRE and TRE are
  uncorrelated for a given FLE (Fitzpatrick 2009, "Fiducial registration error and target
  registration error are uncorrelated", Proc. SPIE 7261; Danilchenko & Fitzpatrick 2011,
  IEEE TMI 30(3)): a small FRE is **not** evidence of accuracy. Report predicted TRE from
  FLE and the fiducial geometry instead (eq. 46)::

      TRE²(r) ≈ FLE²/N · (1 + ⅓ Σₖ dₖ²/fₖ²)

  with ``dₖ`` the distance of the target from principal axis ``k`` of the fiducial
  configuration and ``fₖ`` the RMS distance of the fiducials from that axis.

Eq. 46 is derived for rigid registration; with a scale estimate it does not apply and these
functions refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from scrubin.registration.errors import RegistrationError
from scrubin.registration.points import as_points, check_configuration, check_pair, fit_batch

#: Default false-alarm probability per fiducial of the leave-one-out test.
LOO_ALPHA = 1e-3


def _check_fle(fle_mm: float) -> float:
    fle = float(fle_mm)
    if not np.isfinite(fle) or fle <= 0:
        raise RegistrationError(f"FLE must be a positive RMS distance in mm, got {fle_mm!r}")
    return fle


def residuals_mm(
    fixed_mm: np.ndarray, moving_mm: np.ndarray, matrix: np.ndarray
) -> np.ndarray:
    """Residual vectors ``T·moving_i − fixed_i`` (mm, fixed frame) for a 4x4 ``T_fixed_moving``."""
    fixed = as_points(fixed_mm, "fixed points", 1)
    moving = as_points(moving_mm, "moving points", 1)
    if fixed.shape != moving.shape:
        raise RegistrationError(
            f"residuals need paired points: {moving.shape[0]} moving vs {fixed.shape[0]} fixed"
        )
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise RegistrationError(f"transform matrix must be 4x4, got {m.shape}")
    return moving @ m[:3, :3].T + m[:3, 3] - fixed


def fre_mm(residuals: np.ndarray) -> float:
    """Fiducial registration error: RMS residual distance (mm). Not a measure of accuracy."""
    r = as_points(residuals, "residuals", 1)
    return float(np.sqrt(np.mean(np.sum(r**2, axis=1))))


def expected_fre_mm(fle_mm: float, n: int) -> float:
    """Expected RMS FRE for N fiducials: ``sqrt((1 − 2/N)) · FLE`` (FWM 1998)."""
    fle = _check_fle(fle_mm)
    if n < 3:
        raise RegistrationError(f"FRE needs at least 3 fiducials, got {n}")
    return float(np.sqrt(1.0 - 2.0 / n) * fle)


def principal_axes(fiducials_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, principal axes (rows) and RMS fiducial distance ``fₖ`` from each axis.

    ``fₖ² = mean_i (|xᵢ|² − (xᵢ·vₖ)²)`` for centred fiducials ``xᵢ`` and unit axis ``vₖ``
    (FWM 1998, eq. 46's definition).
    """
    centroid = fiducials_mm.mean(axis=0)
    x = fiducials_mm - centroid
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    if vt.shape[0] < 3:  # fewer than 3 points: complete the basis
        vt = np.linalg.svd(np.vstack([x, np.zeros((3 - vt.shape[0], 3))]))[2]
    proj = x @ vt.T  # (N, 3) coordinates along each axis
    total = np.sum(x**2, axis=1)[:, None]
    f2 = np.mean(total - proj**2, axis=0)
    return centroid, vt, np.sqrt(f2)


def predicted_tre_mm(
    fiducials_mm: object, targets_mm: object, fle_mm: float, scale: bool = False
) -> np.ndarray:
    """Predicted RMS TRE at each target, Fitzpatrick, West & Maurer 1998, eq. 46.

    Parameters
    ----------
    fiducials_mm
        ``(N, 3)`` fiducial positions (mm) in the frame of the targets (e.g. CT LPS).
    targets_mm
        ``(M, 3)`` target points (mm), same frame; a single ``(3,)`` point is accepted.
    fle_mm
        RMS 3-D fiducial localisation error (mm) — eq. 46's FLE, not a per-axis σ.
    scale
        Must be False: eq. 46 holds for rigid registration only.

    Returns
    -------
    numpy.ndarray
        ``(M,)`` predicted RMS TRE in mm: ``sqrt(FLE²/N · (1 + ⅓ Σₖ dₖ²/fₖ²))``.
    """
    if scale:
        raise RegistrationError(
            "predicted TRE (Fitzpatrick-West-Maurer eq. 46) holds for rigid registration only; "
            "it is not available with scale estimation"
        )
    fle = _check_fle(fle_mm)
    fid = as_points(fiducials_mm, "fiducials", 3)
    check_configuration(fid, "fiducials")
    t = np.asarray(targets_mm, dtype=np.float64)
    t = as_points(t.reshape(1, 3) if t.shape == (3,) else t, "targets", 1)
    centroid, axes, f = principal_axes(fid)
    r = t - centroid
    proj = r @ axes.T
    d2 = np.sum(r**2, axis=1)[:, None] - proj**2  # squared distance from each axis
    ratio = np.sum(np.clip(d2, 0.0, None) / f**2, axis=1)
    return np.sqrt(fle**2 / fid.shape[0] * (1.0 + ratio / 3.0))


@dataclass(frozen=True)
class LeaveOneOut:
    """Leave-one-out check of each fiducial.

    Attributes
    ----------
    errors_mm
        ``(N,)`` distance between fixed fiducial ``k`` and moving fiducial ``k`` mapped by the
        registration computed without ``k``.
    expected_mm
        ``(N,)`` expected RMS of that distance for a good fiducial:
        ``sqrt(FLE² + TRE²_{N−1}(k))`` (its own localisation error plus the predicted TRE of
        the other fiducials' registration at its position, eq. 46).
    flagged
        ``(N,)`` True where the error is improbably large for a good fiducial (false-alarm
        probability ``alpha`` each).
    fle_mm
        The FLE used (given, or estimated from the other fiducials' FRE).
    fle_estimated
        True if no FLE was given and it was estimated per fiducial from the remaining N−1.
    """

    errors_mm: np.ndarray
    expected_mm: np.ndarray
    flagged: np.ndarray
    fle_mm: np.ndarray
    fle_estimated: bool


def leave_one_out(
    fixed_mm: object,
    moving_mm: object,
    fle_mm: float | None = None,
    alpha: float = LOO_ALPHA,
    scale: bool = False,
) -> LeaveOneOut:
    """Detect a bad fiducial by leave-one-out prediction error.

    For each fiducial ``k`` register the other ``N−1`` pairs, map moving ``k`` and measure
    its distance ``eₖ`` to fixed ``k``. For a good fiducial ``eₖ`` combines its own FLE and
    the TRE of the ``N−1`` registration at its position, so ``⟨eₖ²⟩ = FLE² + TRE²_{N−1}``.
    Treating ``3eₖ²/⟨eₖ²⟩`` as χ²₃ (known FLE) or ``eₖ²/⟨eₖ²⟩`` as F(3, 3(N−1)−6) (FLE
    estimated from the other fiducials' FRE via ``⟨FRE²⟩ = (1 − 2/(N−1))·FLE²``), a fiducial
    is flagged when its error exceeds the ``1 − alpha`` quantile. One bad fiducial also
    spoils the others' leave-one-out fits, so only the worst offender is flagged per pass and
    the test is repeated without it (values reported are from the pass that flagged a point,
    or from the last pass).

    Requires N ≥ 4 with a known FLE, N ≥ 5 when FLE is estimated (the remaining N−1 must
    over-determine the fit). Rigid only. This finds a fiducial that disagrees with the
    others; it says nothing about the accuracy of the registration (FRE is not TRE).
    """
    if scale:
        raise RegistrationError("leave-one-out analysis is implemented for rigid registration only")
    fixed, moving = check_pair(fixed_mm, moving_mm)
    n = fixed.shape[0]
    need = 4 if fle_mm is not None else 5
    if n < need:
        raise RegistrationError(
            f"leave-one-out needs at least {need} fiducials "
            f"({'with' if fle_mm is not None else 'without'} a given FLE), got {n}"
        )
    errors = np.zeros(n)
    expected = np.ones(n)
    fle = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    active = np.arange(n)
    while True:  # flag the worst offender, then re-test the rest without it
        e, x, f, q = _loo_round(fixed[active], moving[active], fle_mm, alpha)
        errors[active], expected[active], fle[active] = e, x, f
        stat = e**2 / x**2
        worst = int(np.argmax(stat))
        if stat[worst] <= q:
            break
        flagged[active[worst]] = True
        active = np.delete(active, worst)
        if active.size < need:
            break
    return LeaveOneOut(errors, expected, flagged, fle, fle_mm is None)


def _loo_round(
    fixed: np.ndarray, moving: np.ndarray, fle_mm: float | None, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One leave-one-out pass: errors, expected RMS errors, FLE used, threshold on e²/⟨e²⟩."""
    n = fixed.shape[0]
    idx = np.array([np.flatnonzero(row) for row in ~np.eye(n, dtype=bool)])  # (N, N-1)
    rot, trans, _ = fit_batch(moving[idx], fixed[idx])
    pred = np.einsum("kij,kj->ki", rot, moving) + trans
    errors = np.linalg.norm(pred - fixed, axis=1)
    if fle_mm is not None:
        fle = np.full(n, _check_fle(fle_mm))
        quantile = float(stats.chi2.ppf(1.0 - alpha, 3) / 3.0)
    else:
        sub_res = np.einsum("kij,knj->kni", rot, moving[idx]) + trans[:, None, :] - fixed[idx]
        fre2 = np.mean(np.sum(sub_res**2, axis=2), axis=1)
        fle = np.maximum(np.sqrt(fre2 / (1.0 - 2.0 / (n - 1))), 1e-12)
        quantile = float(stats.f.ppf(1.0 - alpha, 3, 3 * (n - 1) - 6))
    expected = np.empty(n)
    for k in range(n):
        others = moving[idx[k]]
        check_configuration(others, f"fiducials without #{k}")
        tre = predicted_tre_mm(others, moving[k], float(fle[k]))[0]
        expected[k] = np.sqrt(fle[k] ** 2 + tre**2)
    return errors, expected, fle, quantile


def simulate_tre_mm(
    fiducials_mm: object,
    targets_mm: object,
    fle_mm: float,
    trials: int = 2000,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Monte-Carlo RMS TRE at each target with isotropic Gaussian FLE of RMS ``fle_mm``.

    Each trial perturbs every fiducial with independent N(0, (FLE/√3)² I) noise (so the RMS
    3-D error is FLE), registers the true fiducials onto the perturbed ones with the closed
    form (all trials in one batched SVD) and measures how far each target moves.

    Returns
    -------
    numpy.ndarray
        ``(M,)`` RMS TRE over the trials (mm); compare with :func:`predicted_tre_mm`.
    """
    fle = _check_fle(fle_mm)
    fid = as_points(fiducials_mm, "fiducials", 3)
    check_configuration(fid, "fiducials")
    t = np.asarray(targets_mm, dtype=np.float64)
    t = as_points(t.reshape(1, 3) if t.shape == (3,) else t, "targets", 1)
    if trials < 1:
        raise RegistrationError(f"trials must be >= 1, got {trials}")
    rng = np.random.default_rng() if rng is None else rng
    noisy = fid + rng.normal(0.0, fle / np.sqrt(3.0), size=(trials, *fid.shape))
    rot, trans, _ = fit_batch(np.broadcast_to(fid, noisy.shape), noisy)
    moved = np.einsum("tij,mj->tmi", rot, t) + trans[:, None, :]
    err2 = np.sum((moved - t) ** 2, axis=2)
    return np.sqrt(err2.mean(axis=0))


#: Fiducial layouts (mm) for validating eq. 46 against :func:`simulate_tre_mm`, used by the
#: tests and ``benchmarks/bench_registration_points.py``: well spread (4, 6), a perturbed
#: cube (8) and an elongated, nearly planar layout (5).
VALIDATION_LAYOUTS_MM: dict[str, np.ndarray] = {
    "4 spread (tetrahedron)": np.array(
        [[60, 0, -30], [-30, 52, -30], [-30, -52, -30], [0, 0, 60]], float
    ),
    "6 spread (head)": np.array(
        [[70, 10, 20], [-70, 5, 25], [0, 90, 30], [5, -90, 20], [20, 30, 95], [-25, -20, -40]],
        float,
    ),
    "8 on a cube": np.array(
        [[x, y, z] for x in (-50, 50) for y in (-40, 40) for z in (-45, 45)], float
    ) + np.array([[3, -2, 1], [0, 4, -3], [-2, 0, 2], [1, 1, 0],
                  [4, -1, 2], [-3, 2, 0], [0, -4, 1], [2, 3, -2]]),
    "5 elongated near-planar": np.array(
        [[0, 0, 0], [120, 4, 1], [40, 20, -2], [80, -18, 2], [60, 2, 6]], float
    ),
}


def validation_targets_mm(fiducials_mm: np.ndarray) -> dict[str, np.ndarray]:
    """Three targets (same frame, mm) for a fiducial layout, by label.

    ``centroid`` (TRE = FLE/√N there), ``deep 40 mm`` (40 mm from the centroid along the
    minor principal axis) and ``off-axis 150 mm`` (150 mm along the bisector of the two
    smaller principal axes), the axes from the SVD of the centred fiducials.
    """
    c = fiducials_mm.mean(axis=0)
    _, _, vt = np.linalg.svd(fiducials_mm - c)
    return {
        "centroid": c,
        "deep 40 mm": c + 40.0 * vt[2],
        "off-axis 150 mm": c + 150.0 * (vt[1] + vt[2]) / np.sqrt(2),
    }
