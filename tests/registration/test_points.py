"""Closed-form paired-point registration: known answers and every input rejection."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.registration.frames import CT, REF, Transform
from scrubin.registration.points import PointSetError, fit_batch, register_points


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def layout(rng: np.random.Generator, n: int = 6) -> np.ndarray:
    return rng.uniform(-60.0, 60.0, size=(n, 3))


@pytest.mark.parametrize("n", [3, 4, 8, 20])
def test_exact_recovery_of_random_rigid_transforms(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        ct_mm = layout(rng, n)
        rot, t = random_rotation(rng), rng.uniform(-300, 300, 3)
        ref_mm = ct_mm @ rot.T + t
        reg = register_points(ref_mm, ct_mm)
        assert reg.transform.src == CT and reg.transform.dst == REF
        np.testing.assert_allclose(reg.transform.rotation, rot, atol=1e-10)
        np.testing.assert_allclose(reg.transform.translation, t, atol=1e-8)
        assert reg.fre_mm < 1e-9
        assert reg.scale == 1.0


def test_planar_configuration_is_not_reflected():
    """Coplanar points admit a reflection with zero residual; det correction must avoid it."""
    rng = np.random.default_rng(1)
    ct_mm = np.c_[rng.uniform(-50, 50, (5, 2)), np.zeros(5)]
    rot = random_rotation(rng)
    ref_mm = ct_mm @ rot.T + [10, 20, 30]
    reg = register_points(ref_mm, ct_mm)
    assert np.linalg.det(reg.transform.rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(reg.transform.rotation, rot, atol=1e-10)


def test_reflected_data_gives_a_proper_rotation():
    """Umeyama eq. 39: mirrored data still yields det(R) = +1 (least-squares rotation)."""
    rng = np.random.default_rng(2)
    ct_mm = layout(rng, 6)
    ref_mm = ct_mm * [-1, 1, 1]
    reg = register_points(ref_mm, ct_mm)
    assert np.linalg.det(reg.transform.rotation) == pytest.approx(1.0)
    assert reg.fre_mm > 1.0


def test_scale_is_recovered_and_flagged():
    rng = np.random.default_rng(3)
    ct_mm = layout(rng, 5)
    rot = random_rotation(rng)
    ref_mm = 1.07 * ct_mm @ rot.T + [5, -4, 3]
    reg = register_points(ref_mm, ct_mm, scale=True)
    assert reg.scale == pytest.approx(1.07, rel=1e-10)
    assert reg.transform.allow_scale
    assert reg.fre_mm < 1e-9
    # the rigid fit of the same data is not exact
    assert register_points(ref_mm, ct_mm).fre_mm > 0.1


def test_residuals_and_fre_match_definition():
    rng = np.random.default_rng(4)
    ct_mm = layout(rng, 7)
    ref_mm = ct_mm + rng.normal(0, 0.5, ct_mm.shape)
    reg = register_points(ref_mm, ct_mm)
    res = reg.transform.apply(ct_mm) - ref_mm
    np.testing.assert_allclose(reg.residuals_mm, res, atol=1e-12)
    assert reg.fre_mm == pytest.approx(np.sqrt(np.mean(np.sum(res**2, axis=1))))
    np.testing.assert_allclose(reg.residual_norms_mm, np.linalg.norm(res, axis=1))
    # least squares: the residuals sum to zero (translation from centroids)
    np.testing.assert_allclose(res.sum(axis=0), 0.0, atol=1e-9)


def test_transform_json_roundtrip_and_frames():
    rng = np.random.default_rng(5)
    ct_mm = layout(rng, 4)
    reg = register_points(ct_mm + 1.0, ct_mm, src="CT", dst="TRACKER",
                          source={"series_instance_uid": "1.2.3"})
    t = Transform.from_json(reg.transform.to_json())
    assert (t.src, t.dst) == ("CT", "TRACKER")
    assert t.source == {"series_instance_uid": "1.2.3"}
    np.testing.assert_allclose(t.matrix, reg.transform.matrix)


def test_fit_batch_matches_single_fits():
    rng = np.random.default_rng(6)
    moving = rng.normal(0, 30, (10, 5, 3))
    fixed = moving + rng.normal(0, 1, moving.shape)
    rot, trans, _ = fit_batch(moving, fixed)
    for b in range(10):
        reg = register_points(fixed[b], moving[b])
        np.testing.assert_allclose(rot[b], reg.transform.rotation, atol=1e-12)
        np.testing.assert_allclose(trans[b], reg.transform.translation, atol=1e-9)


# ------------------------------------------------------------------ rejections
def test_rejects_wrong_shape():
    with pytest.raises(PointSetError, match=r"\(N, 3\)"):
        register_points(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(PointSetError, match=r"\(N, 3\)"):
        register_points(np.zeros(12), np.zeros(12))


def test_rejects_non_numeric():
    with pytest.raises(PointSetError, match="numeric"):
        register_points([["a", "b", "c"]] * 3, np.zeros((3, 3)))


def test_rejects_mismatched_counts():
    rng = np.random.default_rng(7)
    with pytest.raises(PointSetError, match="equal counts"):
        register_points(layout(rng, 5), layout(rng, 4))


def test_rejects_fewer_than_three_points():
    with pytest.raises(PointSetError, match="at least 3"):
        register_points(np.eye(3)[:2], np.eye(3)[:2])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_nan_and_inf(bad):
    rng = np.random.default_rng(8)
    pts = layout(rng, 4)
    broken = pts.copy()
    broken[2, 1] = bad
    with pytest.raises(PointSetError, match="point 2 has a NaN or infinite"):
        register_points(broken, pts)
    with pytest.raises(PointSetError, match="point 2"):
        register_points(pts, broken)


def test_rejects_collinear_points():
    line = np.outer(np.arange(5.0), [1.0, 2.0, 3.0])
    with pytest.raises(PointSetError, match="collinear"):
        register_points(line + 1.0, line)
    # nearly collinear (1e-5 mm off a 100 mm line) is still refused
    line2 = line.copy()
    line2[2, 0] += 1e-5
    with pytest.raises(PointSetError, match="collinear"):
        register_points(line2, line2)


def test_rejects_coincident_points():
    same = np.tile([10.0, 20.0, 30.0], (4, 1))
    with pytest.raises(PointSetError, match="coincide"):
        register_points(same, same)
