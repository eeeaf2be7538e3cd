"""Gross FRE test: the chi-square limit against simulation, phantom permutations, outliers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scrubin.registration.errors import RegistrationError
from scrubin.registration.fre_check import (
    ABSOLUTE_FRE_LIMIT_MM,
    fre_limit_mm,
    gross_fre_reason,
)
from scrubin.registration.points import fit_batch


def _rigid(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r)) * np.linalg.det(q * np.sign(np.diag(r)))
    m = np.eye(4)
    m[:3, :3] = q
    m[:3, 3] = rng.uniform(-150, 150, 3)
    return m


def _fiducials(truth: dict) -> np.ndarray:
    return np.array([f["center_lps"] for f in truth["fiducials"]], dtype=np.float64)


def test_limit_matches_simulated_fre_distribution(small_truth) -> None:
    """Isotropic Gaussian FLE on the phantom's 8 fiducials: the mean FRE² is FWM eq. 10's
    (1 - 2/N) FLE² and the 99th percentile of FRE is fre_limit_mm(alpha=0.01)."""
    ct = _fiducials(small_truth)
    n, fle, draws = len(ct), 0.4, 20000
    t = _rigid(3)
    rng = np.random.default_rng(4)
    ref = ct @ t[:3, :3].T + t[:3, 3] + rng.normal(0, fle / np.sqrt(3), (draws, n, 3))
    moving = ct  # all the FLE on the tracked side
    rot, trans, _ = fit_batch(np.broadcast_to(moving, ref.shape), ref)
    res = np.einsum("dij,nj->dni", rot, moving) + trans[:, None, :] - ref
    fre2 = np.mean(np.sum(res**2, axis=2), axis=1)
    assert fre2.mean() == pytest.approx((1 - 2 / n) * fle**2, rel=0.02)  # eq. 10
    q99 = float(np.sqrt(np.quantile(fre2, 0.99)))
    assert q99 == pytest.approx(fre_limit_mm(n, fle, alpha=0.01), rel=0.02)
    # and the default (alpha 1e-6) is the chi-square quantile with 3N - 6 = 18 dof
    expected = np.sqrt(stats.chi2.ppf(1 - 1e-6, 18) * fle**2 / (3 * n))
    assert fre_limit_mm(n, fle) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("perm", [[1, 0, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 7, 6],
                                  [1, 2, 0, 3, 4, 5, 6, 7]])
def test_permuted_phantom_fiducials_are_gross(small_truth, perm) -> None:
    ct = _fiducials(small_truth)
    t = _rigid(5)
    ref = ct @ t[:3, :3].T + t[:3, 3] + np.random.default_rng(6).normal(0, 0.2, ct.shape)
    assert gross_fre_reason(ref, ct, 0.35) is None  # right order: fine
    reason = gross_fre_reason(ref[perm], ct, 0.35)
    assert reason is not None and "far beyond" not in reason  # > 10 mm: the absolute limit
    assert f"absolute limit of {ABSOLUTE_FRE_LIMIT_MM:g} mm" in reason
    assert gross_fre_reason(ref[perm], ct, None) == reason  # no FLE needed for that


def test_small_gross_error_needs_the_fle_and_one_outlier_is_excused(small_truth) -> None:
    ct = _fiducials(small_truth)
    t = _rigid(7)
    ref = ct @ t[:3, :3].T + t[:3, 3] + np.random.default_rng(8).normal(0, 0.2, ct.shape)
    one_bad = ref.copy()
    one_bad[3] += [5.0, -3.0, 2.0]  # one fiducial touched off: the leave-one-out test's case
    assert gross_fre_reason(one_bad, ct, 0.35) is None
    two_bad = one_bad.copy()
    two_bad[6] += [-4.0, 2.0, 4.0]  # two: no single fiducial explains the FRE
    reason = gross_fre_reason(two_bad, ct, 0.35)
    assert reason is not None and "far beyond what FLE 0.35 mm allows" in reason
    assert "eq. 10" in reason and "\n" not in reason
    assert gross_fre_reason(two_bad, ct, None) is None  # < 10 mm: only the FLE can tell


def test_limit_rejections() -> None:
    with pytest.raises(RegistrationError, match="at least 3"):
        fre_limit_mm(2, 0.3)
    with pytest.raises(RegistrationError, match="positive"):
        fre_limit_mm(5, 0.0)
