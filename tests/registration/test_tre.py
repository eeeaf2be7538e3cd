"""FRE, leave-one-out, Fitzpatrick-West-Maurer predicted TRE (eq. 46) and its validation."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.registration.errors import RegistrationError
from scrubin.registration.points import PointSetError, register_points
from scrubin.registration.tre import VALIDATION_LAYOUTS_MM as LAYOUTS
from scrubin.registration.tre import (
    expected_fre_mm,
    fre_mm,
    leave_one_out,
    predicted_tre_mm,
    residuals_mm,
    simulate_tre_mm,
)
from scrubin.registration.tre import validation_targets_mm as targets_for


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def test_centroid_tre_is_fle_over_sqrt_n():
    rng = np.random.default_rng(0)
    fid = rng.uniform(-50, 50, (7, 3))
    tre = predicted_tre_mm(fid, fid.mean(axis=0), fle_mm=0.7)
    assert tre.shape == (1,)
    assert tre[0] == pytest.approx(0.7 / np.sqrt(7), rel=1e-12)


def test_octahedron_known_answer():
    """±a on each axis: f_k² = 2a²/3, target (0,0,d) → TRE² = FLE²/6 (1 + d²/a²)."""
    a, d, fle = 50.0, 80.0, 0.4
    fid = np.vstack([np.eye(3) * a, -np.eye(3) * a])
    tre = predicted_tre_mm(fid, [[0, 0, d], [d, 0, 0]], fle)
    expected = np.sqrt(fle**2 / 6 * (1 + d**2 / a**2))
    np.testing.assert_allclose(tre, [expected, expected], rtol=1e-12)


def test_prediction_is_invariant_to_rigid_motion():
    rng = np.random.default_rng(1)
    fid = rng.uniform(-50, 50, (6, 3))
    tgt = rng.uniform(-100, 100, (5, 3))
    rot, t = random_rotation(rng), rng.uniform(-100, 100, 3)
    np.testing.assert_allclose(
        predicted_tre_mm(fid, tgt, 0.5),
        predicted_tre_mm(fid @ rot.T + t, tgt @ rot.T + t, 0.5),
        rtol=1e-10,
    )


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_simulated_tre_matches_eq46_as_the_readme_claims(name):
    """README: eq. 46 within 0.6 % of simulation. Isotropic Gaussian FLE (σ = FLE/√3 per axis),
    20000 vectorised trials: the RMS of a ~χ²₃ error has relative SE ≈ 0.41/√20000 = 0.3 %,
    so the bound is the claimed 0.6 % plus two SE (1.2 %); over seeds the worst seen is 0.84 %."""
    fid = LAYOUTS[name]
    targets = targets_for(fid)
    pts = np.array(list(targets.values()))
    rng = np.random.default_rng(list(LAYOUTS).index(name) + 100)
    fle = 0.5
    predicted = predicted_tre_mm(fid, pts, fle)
    simulated = simulate_tre_mm(fid, pts, fle, trials=20000, rng=rng)
    for label, p, s in zip(targets, predicted, simulated, strict=True):
        assert s / p == pytest.approx(1.0, abs=0.012), f"{name}, {label}: {s:.3f} vs {p:.3f}"


def test_expected_fre_matches_simulation():
    rng = np.random.default_rng(2)
    fid = LAYOUTS["6 spread (head)"]
    fle, trials = 0.6, 3000
    noisy = fid + rng.normal(0, fle / np.sqrt(3), (trials, *fid.shape))
    fre2 = [register_points(n, fid).fre_mm ** 2 for n in noisy[:trials]]
    assert np.sqrt(np.mean(fre2)) == pytest.approx(expected_fre_mm(fle, 6), rel=0.03)


def test_residuals_of_a_known_offset():
    # a pure (1, 2, 2) mm translation moves every point by that vector, 3 mm long
    rng = np.random.default_rng(3)
    ct = rng.uniform(-50, 50, (5, 3))
    offset = np.eye(4)
    offset[:3, 3] = [1.0, 2.0, 2.0]
    res = residuals_mm(ct, ct, offset)
    np.testing.assert_allclose(res, np.tile([1.0, 2.0, 2.0], (5, 1)), atol=1e-12)
    assert fre_mm(res) == pytest.approx(3.0, rel=1e-12)
    # RMS of distances 3, 4, 0, 5 mm: sqrt(50 / 4)
    vectors = np.array([[3.0, 0, 0], [0, 4.0, 0], [0, 0, 0], [0, 3.0, 4.0]])
    assert fre_mm(vectors) == pytest.approx(np.sqrt(50 / 4), rel=1e-12)


def test_fre_of_a_symmetric_expansion_is_the_expansion():
    """Octahedron ±a on each axis, every fiducial pushed δ outwards: by symmetry the best rigid
    fit is the true motion (no rotation or translation absorbs a uniform expansion), so every
    residual and the FRE are exactly δ."""
    rng = np.random.default_rng(6)
    a, delta = 50.0, 0.8
    ct = np.vstack([np.eye(3) * a, -np.eye(3) * a])
    rot, t = random_rotation(rng), rng.uniform(-100, 100, 3)
    ref = (ct * (a + delta) / a) @ rot.T + t
    reg = register_points(ref, ct)
    np.testing.assert_allclose(reg.transform.matrix[:3, :3], rot, atol=1e-12)
    np.testing.assert_allclose(reg.transform.matrix[:3, 3], t, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(reg.residuals_mm, axis=1), delta, rtol=1e-9)
    res = residuals_mm(ref, ct, reg.transform.matrix)
    np.testing.assert_allclose(np.linalg.norm(res, axis=1), delta, rtol=1e-9)
    assert reg.fre_mm == pytest.approx(delta, rel=1e-9)


def test_leave_one_out_flags_the_displaced_fiducial():
    rng = np.random.default_rng(4)
    fid = LAYOUTS["6 spread (head)"]
    rot, t = random_rotation(rng), rng.uniform(-100, 100, 3)
    fle = 0.5
    ref = fid @ rot.T + t + rng.normal(0, fle / np.sqrt(3), fid.shape)
    clean_known = leave_one_out(ref, fid, fle_mm=fle)
    clean_est = leave_one_out(ref, fid)
    assert not clean_known.flagged.any() and not clean_est.flagged.any()
    assert clean_est.fle_estimated and not clean_known.fle_estimated
    bad = ref.copy()
    bad[3] += [3.0, -2.0, 1.5]
    for result in (leave_one_out(bad, fid, fle_mm=fle), leave_one_out(bad, fid)):
        assert result.flagged.tolist() == [i == 3 for i in range(6)]
        assert result.errors_mm[3] > 3.0
        assert np.all(result.expected_mm > 0)


def test_leave_one_out_false_alarm_rate_is_small():
    rng = np.random.default_rng(5)
    fid = LAYOUTS["8 on a cube"]
    flags = 0
    for _ in range(100):
        ref = fid + rng.normal(0, 0.5 / np.sqrt(3), fid.shape)
        flags += int(leave_one_out(ref, fid, fle_mm=0.5).flagged.sum())
    assert flags <= 3  # alpha = 1e-3 per fiducial: ~0.8 expected


def test_leave_one_out_rejections():
    fid = LAYOUTS["4 spread (tetrahedron)"]
    with pytest.raises(RegistrationError, match="at least 5"):
        leave_one_out(fid, fid)
    with pytest.raises(RegistrationError, match="at least 4"):
        leave_one_out(fid[:3], fid[:3], fle_mm=0.5)
    with pytest.raises(RegistrationError, match="rigid"):
        leave_one_out(fid, fid, fle_mm=0.5, scale=True)
    with pytest.raises(RegistrationError, match="FLE"):
        leave_one_out(fid, fid, fle_mm=-1.0)
    with pytest.raises(PointSetError, match="equal counts"):
        leave_one_out(fid, LAYOUTS["6 spread (head)"], fle_mm=0.5)


def test_predicted_tre_rejections():
    fid = LAYOUTS["6 spread (head)"]
    with pytest.raises(RegistrationError, match="rigid registration only"):
        predicted_tre_mm(fid, [0, 0, 0], 0.5, scale=True)
    for bad in (0.0, -0.3, np.nan, np.inf):
        with pytest.raises(RegistrationError, match="FLE must be a positive"):
            predicted_tre_mm(fid, [0, 0, 0], bad)
    with pytest.raises(PointSetError, match="collinear"):
        predicted_tre_mm(np.outer(np.arange(4.0), [1, 0, 0]), [0, 0, 0], 0.5)
    with pytest.raises(PointSetError, match="at least 3"):
        predicted_tre_mm(fid[:2], [0, 0, 0], 0.5)
    with pytest.raises(PointSetError, match=r"targets.*\(N, 3\)"):
        predicted_tre_mm(fid, [[0, 0]], 0.5)
    with pytest.raises(PointSetError, match="targets: point 0"):
        predicted_tre_mm(fid, [np.nan, 0, 0], 0.5)


def test_simulation_rejections():
    fid = LAYOUTS["6 spread (head)"]
    with pytest.raises(RegistrationError, match="trials"):
        simulate_tre_mm(fid, [0, 0, 0], 0.5, trials=0)
    with pytest.raises(RegistrationError, match="FLE"):
        simulate_tre_mm(fid, [0, 0, 0], 0.0)


def test_expected_fre_rejections():
    with pytest.raises(RegistrationError, match="at least 3"):
        expected_fre_mm(0.5, 2)
    with pytest.raises(RegistrationError, match="FLE"):
        expected_fre_mm(np.nan, 5)


def test_fre_and_residual_rejections():
    with pytest.raises(PointSetError):
        fre_mm(np.zeros((3, 2)))
    with pytest.raises(RegistrationError, match="4x4"):
        residuals_mm(np.zeros((3, 3)), np.zeros((3, 3)), np.eye(3))
    with pytest.raises(RegistrationError, match="paired"):
        residuals_mm(np.zeros((3, 3)), np.zeros((4, 3)), np.eye(4))
