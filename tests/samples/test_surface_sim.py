"""Simulated surfaces and partial views: samples/surface_sim.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from scrubin.registration.errors import RegistrationError
from scrubin.samples.surface_sim import (
    ellipsoid_mesh,
    head_sdf,
    partial_view,
    phantom_skin_mesh,
    random_pose,
    random_rotation,
    synthetic_head_mesh,
)


def test_random_pose_known_angle_and_shift():
    rng = np.random.default_rng(0)
    centre = np.array([10.0, 20.0, 30.0])
    m = random_pose(30.0, 25.0, centre, rng)
    ang = np.degrees(np.arccos((np.trace(m[:3, :3]) - 1) / 2))
    assert ang == pytest.approx(30.0)
    assert np.linalg.norm(m[:3, :3] @ centre + m[:3, 3] - centre) == pytest.approx(25.0)
    r = random_rotation(90.0, rng)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_meshes_have_outward_normals_and_match_their_sdf():
    head = synthetic_head_mesh(4.0)
    c = head.vertices.mean(axis=0)
    assert np.mean(np.einsum("ij,ij->i", head.normals, head.vertices - c) > 0) > 0.9
    assert np.abs(head_sdf(head.vertices)).max() < 1.0  # vertices lie on the zero level
    ell = ellipsoid_mesh((40.0, 50.0, 60.0), 3.0)
    q = ell.vertices / np.array([40.0, 50.0, 60.0])
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=0.02)


def test_phantom_skin_mesh_is_cached_and_surrounds_the_target(small_truth):
    a = phantom_skin_mesh(small_truth, 4.0)
    assert phantom_skin_mesh(small_truth, 4.0) is a
    target = np.asarray(small_truth["target_lps"])
    lo, hi = a.vertices.min(axis=0), a.vertices.max(axis=0)
    assert np.all(target > lo) and np.all(target < hi)
    with pytest.raises(RegistrationError, match="skin"):
        phantom_skin_mesh({"structures": {"brain": small_truth["structures"]["brain"]},
                           "spec_hash": "no-skin"}, 4.0)


def test_partial_view_fraction_noise_and_outliers():
    head = synthetic_head_mesh(3.0)
    rng = np.random.default_rng(1)
    pts, out = partial_view(head, rng, fraction=0.25, n_points=3000, noise_mm=0.5,
                            outlier_fraction=0.05)
    assert pts.shape == (3000, 3) and out.sum() == 150
    tree = cKDTree(head.vertices)
    _, j = tree.query(pts[~out])
    d = np.einsum("ij,ij->i", head.normals[j], pts[~out] - head.vertices[j])
    # 0.5 mm depth noise along the viewing rays: its normal component is 0.5 cos(incidence)
    assert 0.2 < np.std(d) < 0.5
    clean, _ = partial_view(head, np.random.default_rng(1), fraction=0.25, n_points=3000,
                            noise_mm=0.0, outlier_fraction=0.0)
    _, j = tree.query(clean)
    assert np.median(np.abs(np.einsum("ij,ij->i", head.normals[j], clean - head.vertices[j]))
                     ) < 0.01
    # a view from the face: the points are on the anterior (-y) side
    assert np.median(pts[~out, 1]) < head.vertices[:, 1].mean()


def test_rejections():
    with pytest.raises(RegistrationError, match="spacing"):
        synthetic_head_mesh(0.1)
    with pytest.raises(RegistrationError, match="fraction"):
        partial_view(synthetic_head_mesh(4.0), np.random.default_rng(0), fraction=0.0)
