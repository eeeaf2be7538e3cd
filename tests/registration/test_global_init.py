"""FPFH + RANSAC global initialisation: registration/global_init.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from scrubin.registration.errors import RegistrationError
from scrubin.registration.global_init import (
    Hypothesis,
    _batch_kabsch,
    distinct,
    fpfh_cloud,
    match_features,
    pose_difference,
    ransac_hypotheses,
    verify,
)
from scrubin.samples.surface_sim import partial_view, random_pose, synthetic_head_mesh


def test_batch_kabsch_recovers_exact_poses():
    rng = np.random.default_rng(0)
    truth = np.stack([random_pose(rng.uniform(0, 180), 40.0, np.zeros(3), rng) for _ in range(5)])
    p = rng.normal(scale=30.0, size=(5, 4, 3))
    q = np.einsum("hij,hkj->hki", truth[:, :3, :3], p) + truth[:, None, :3, 3]
    np.testing.assert_allclose(_batch_kabsch(p, q), truth, atol=1e-9)


def test_batch_kabsch_never_returns_a_reflection():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(1, 5, 3))
    q = p * np.array([1.0, 1.0, -1.0])  # mirror image: best proper rotation, det +1
    assert np.linalg.det(_batch_kabsch(p, q)[0, :3, :3]) == pytest.approx(1.0)


def test_pose_difference_known_answer():
    a = np.eye(4)
    b = random_pose(30.0, 0.0, np.array([0.0, 0.0, 0.0]), np.random.default_rng(2))
    b[:3, 3] = [3.0, 4.0, 0.0]
    ang, off = pose_difference(a, b, np.zeros(3))
    assert ang == pytest.approx(30.0)
    assert off == pytest.approx(5.0)


def test_distinct_keeps_one_per_pose_cluster():
    rng = np.random.default_rng(3)
    base = np.eye(4)
    near = random_pose(2.0, 1.0, np.zeros(3), rng)
    far = random_pose(40.0, 0.0, np.zeros(3), rng)
    hyps = [Hypothesis(m, 0.9, 1.0, 10) for m in (base, near, far)]
    kept = distinct(hyps, np.zeros(3), 10.0, 10.0)
    assert len(kept) == 2 and kept[0].matrix is base and kept[1].matrix is far


def test_verify_known_answer():
    pts = np.random.default_rng(4).uniform(-50, 50, size=(500, 3))
    tree = cKDTree(pts)
    assert verify(np.eye(4), pts, tree, 1.0) == (1.0, 0.0)
    shifted = np.eye(4)
    shifted[:3, 3] = [1000.0, 0, 0]
    fit, rms = verify(shifted, pts, tree, 1.0)
    assert fit == 0.0 and rms == float("inf")


def test_fpfh_cloud_shapes_and_rejections():
    m = synthetic_head_mesh(4.0)
    fc = fpfh_cloud(m.vertices, m.normals, 8.0)
    assert fc.features.shape == (len(fc.points), 33) and fc.voxel_mm == 8.0
    assert np.all(np.isfinite(fc.features))
    with pytest.raises(RegistrationError, match="voxel size"):
        fpfh_cloud(m.vertices, m.normals, 0.0)
    with pytest.raises(RegistrationError, match="too small"):
        fpfh_cloud(m.vertices[:50], None, 50.0)


def test_match_features_identical_clouds_match_themselves():
    m = synthetic_head_mesh(4.0)
    fc = fpfh_cloud(m.vertices, m.normals, 8.0)
    pairs, mutual = match_features(fc, fc)
    assert np.mean(pairs[:, 0] == pairs[:, 1]) > 0.99 and mutual.mean() > 0.99


def test_ransac_finds_the_true_pose_of_a_partial_view():
    head = synthetic_head_mesh(3.0)
    model = fpfh_cloud(head.vertices, head.normals, 8.0)
    tree = cKDTree(model.points)
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(4):
        pts, _ = partial_view(head, rng, fraction=0.3, n_points=2000)
        t_ref_ct = random_pose(rng.uniform(10, 45), rng.uniform(10, 50), head.vertices.mean(0),
                               rng)
        cloud_ref = pts @ t_ref_ct[:3, :3].T + t_ref_ct[:3, 3]
        cloud = fpfh_cloud(cloud_ref, None, 8.0)
        hyps = ransac_hypotheses(cloud, model, tree, np.random.default_rng(0))
        truth = np.linalg.inv(t_ref_ct)  # T_CT_REF: hypotheses map the cloud into the model
        centre = cloud.points.mean(axis=0)
        hits += any(max(pose_difference(h.matrix, truth, centre)) < 10.0 for h in hyps[:3])
        assert len(hyps) <= 10
    assert hits == 4
