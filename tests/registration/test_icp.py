"""Robust multi-scale point-to-plane ICP and its degeneracy analysis: registration/icp.py."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.registration.clouds import PointSet
from scrubin.registration.icp import (
    PreparedModel,
    SurfaceRegistrationError,
    robust_icp,
    sliding_directions,
)
from scrubin.samples.surface_sim import phantom_skin_mesh, random_pose


@pytest.fixture(scope="module")
def prepared(small_truth):
    skin = phantom_skin_mesh(small_truth, 3.0)
    return PreparedModel.build(PointSet(skin.vertices, skin.normals, frame="CT"))


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:3, :3].T + m[:3, 3]


def test_prepared_model_grid_is_optional(prepared):
    assert prepared.grid is None
    with_grid = PreparedModel.build(PointSet(prepared.points, prepared.normals),
                                    coarse_grid=True)
    rng = np.random.default_rng(15)
    cloud_ct = prepared.points[rng.choice(len(prepared.points), 2000, replace=False)]
    t_ref_ct = random_pose(10.0, 10.0, cloud_ct.mean(0), rng)
    res = robust_icp(_apply(t_ref_ct, cloud_ct), with_grid, np.eye(4))
    np.testing.assert_allclose(res.matrix, np.linalg.inv(t_ref_ct), atol=1e-4)


def test_robust_icp_exact_data_known_answer(prepared):
    rng = np.random.default_rng(9)
    idx = rng.choice(len(prepared.points), 3000, replace=False)
    cloud_ct = prepared.points[idx]
    t_ref_ct = random_pose(3.0, 4.0, cloud_ct.mean(0), rng)
    cloud_ref = _apply(t_ref_ct, cloud_ct)
    res = robust_icp(cloud_ref, prepared, np.eye(4))
    # cloud points are model vertices: ICP must return T_CT_REF exactly (to 1e-3 mm)
    err = np.linalg.norm(_apply(res.matrix, cloud_ref) - cloud_ct, axis=1).max()
    assert err < 1e-3 and res.rms_mm < 1e-3 and res.inlier_fraction == 1.0


@pytest.mark.parametrize("kernel", ["tukey", "huber"])
def test_robust_kernels_resist_outliers_better_than_least_squares(prepared, kernel):
    rng = np.random.default_rng(10)
    idx = rng.choice(len(prepared.points), 3000, replace=False)
    cloud_ct = prepared.points[idx] + rng.normal(scale=0.3, size=(3000, 3))
    # 20 % structured outliers: a slab 4-8 mm off the surface (e.g. a drape)
    out = rng.choice(3000, 600, replace=False)
    cloud_ct[out] += prepared.normals[idx[out]] * rng.uniform(4, 8, size=(600, 1))
    t_ref_ct = random_pose(3.0, 4.0, cloud_ct.mean(0), rng)
    cloud_ref = _apply(t_ref_ct, cloud_ct)
    truth = np.linalg.inv(t_ref_ct)
    c = prepared.points.mean(0)

    def err(r):
        return np.linalg.norm(_apply(r.matrix, c) - _apply(truth, c))

    robust = robust_icp(cloud_ref, prepared, np.eye(4), kernel=kernel)
    plain = robust_icp(cloud_ref, prepared, np.eye(4), kernel="none")
    assert err(robust) < 0.3 and err(robust) < 0.5 * err(plain)


def test_robust_icp_rejections(prepared):
    pts = prepared.points[:100]
    with pytest.raises(SurfaceRegistrationError, match="4x4"):
        robust_icp(pts, prepared, np.eye(3))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(SurfaceRegistrationError, match="finite"):
        robust_icp(pts, prepared, bad)
    with pytest.raises(SurfaceRegistrationError, match="max distance"):
        robust_icp(pts, prepared, np.eye(4), max_distance_mm=0.0)
    with pytest.raises(SurfaceRegistrationError, match="kernel"):
        robust_icp(pts, prepared, np.eye(4), kernel="cauchy")
    with pytest.raises(Exception, match="at least 6"):
        robust_icp(pts[:5], prepared, np.eye(4))
    with pytest.raises(Exception, match="NaN"):
        robust_icp(np.full((10, 3), np.nan), prepared, np.eye(4))
    far = np.eye(4)
    far[:3, 3] = [500.0, 0.0, 0.0]
    with pytest.raises(SurfaceRegistrationError, match="start pose too far off"):
        robust_icp(pts, prepared, far)


def test_sliding_directions_of_a_plane_known_answer():
    """Points on the plane z = 0 with normal +z: translations in x, y and the rotation about z
    are unconstrained (Gelfand et al. 2003)."""
    rng = np.random.default_rng(13)
    p = np.c_[rng.uniform(-50, 50, (500, 2)), np.zeros(500)]
    n = np.tile([0.0, 0.0, 1.0], (500, 1))
    J = np.c_[np.cross(p - p.mean(0), n) / 30.0, n]
    ratio, sd, slides = sliding_directions(J.T @ J / 500, 500.0, 0.5)
    assert ratio < 1e-9 and sd > 1e3 and len(slides) == 3
    rotations = [d for d in slides if d.kind == "rotation"]
    translations = [d for d in slides if d.kind == "translation"]
    assert len(rotations) == 1 and len(translations) == 2
    np.testing.assert_allclose(rotations[0].axis, [0.0, 0.0, 1.0], atol=1e-9)
    # the two translations span the plane's x-y directions and nothing along its normal
    span = np.array([d.axis for d in translations])
    np.testing.assert_allclose(span[:, 2], 0.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(np.linalg.det(np.c_[span.T, [0, 0, 1]])), 1.0, atol=1e-9)
    assert "rotation about axis (+0.00, +0.00, +1.00)" in str(rotations[0])
