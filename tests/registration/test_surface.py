"""Surface registration: registration/surface.py (ICP, selection, ambiguity, trials)."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.registration.clouds import PointSet
from scrubin.registration.frames import Transform
from scrubin.registration.surface import (
    PreparedModel,
    SurfaceRegistrationError,
    register_surface,
)
from scrubin.samples.surface_sim import (
    ct_skin_surface,
    ellipsoid_mesh,
    partial_view,
    phantom_skin_mesh,
    random_pose,
)


@pytest.fixture(scope="module")
def skin(small_truth):
    """The small phantom's true skin (marching cubes of its analytic model, 3 mm)."""
    return phantom_skin_mesh(small_truth, 3.0)


@pytest.fixture(scope="module")
def ct_skin(small_phantom, small_truth):
    """The skin as the pipeline sees it: iso-surface of the small phantom's CT at the skin
    level (head component only, not the table), from the DICOM files."""
    v, n, provenance = ct_skin_surface(small_phantom, small_truth)
    return PointSet(v, n, frame="CT", source=provenance)


@pytest.fixture(scope="module")
def prepared(skin):
    return PreparedModel.build(PointSet(skin.vertices, skin.normals, frame="CT"))


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:3, :3].T + m[:3, 3]


def _trial_cloud(skin, rng, n_points=2000):
    """A partial, noisy view in the REF frame and its ground truth T_REF_CT."""
    pts_ct, _ = partial_view(skin, rng, fraction=rng.uniform(0.2, 0.4), n_points=n_points,
                             noise_mm=0.5, outlier_fraction=0.03)
    t_ref_ct = random_pose(rng.uniform(10, 45), rng.uniform(10, 50), skin.vertices.mean(0), rng)
    return PointSet(_apply(t_ref_ct, pts_ct), frame="REF"), t_ref_ct


def test_partial_overlap_trials_success_rate_and_tre(skin, ct_skin, small_truth):
    """>= 50 random partial views (20-40 % of the true skin, 0.5 mm noise, 3 % outliers),
    starts 10-45 deg / 10-50 mm off, registered to the CT-extracted skin: success = TRE < 2 mm
    at the phantom's deep target."""
    target = np.asarray(small_truth["target_lps"], dtype=np.float64)
    prepared = PreparedModel.build(ct_skin, coarse_grid=True)
    rng = np.random.default_rng(20261125)
    tre, surf = [], []
    for _ in range(50):
        cloud, t_true = _trial_cloud(skin, rng)
        res = register_surface(prepared, cloud)
        est = res.transform.matrix
        tre.append(np.linalg.norm(_apply(est, target) - _apply(t_true, target)))
        surf.append(np.linalg.norm(_apply(est, skin.vertices) - _apply(t_true, skin.vertices),
                                   axis=1).mean())
    tre, surf = np.array(tre), np.array(surf)
    ok = tre < 2.0
    assert ok.mean() >= 0.9, f"success {ok.mean():.0%}, TRE {np.round(tre, 2)}"
    assert np.median(tre) < 0.5
    assert surf[ok].mean() < 1.0


def test_result_convention_frames_and_provenance(skin):
    rng = np.random.default_rng(7)
    pts_ct, _ = partial_view(skin, rng, fraction=0.35, n_points=2000, outlier_fraction=0.0)
    t_ref_ct = random_pose(30.0, 40.0, skin.vertices.mean(0), rng)
    model = PointSet(skin.vertices, skin.normals, frame="CT",
                     source={"series_instance_uid": "1.2.3"})
    cloud = PointSet(_apply(t_ref_ct, pts_ct), frame="REF", source={"device": "depth-cam"})
    res = register_surface(model, cloud)
    t = res.transform
    assert isinstance(t, Transform) and (t.src, t.dst) == ("CT", "REF")
    assert t.source == {"series_instance_uid": "1.2.3", "device": "depth-cam"}
    np.testing.assert_allclose(t.apply(pts_ct), cloud.points, atol=1.5)
    assert res.method == "global" and not res.ambiguous
    assert res.inlier_fraction > 0.9 and 0.1 < res.rms_mm < 0.8
    assert res.iterations > 0 and res.timing_s["total"] > 0
    doc = res.to_json()
    assert doc["transform"]["from"] == "CT" and doc["ambiguous"] is False


def test_init_skips_global_and_converges(skin, prepared):
    rng = np.random.default_rng(8)
    cloud, t_true = _trial_cloud(skin, rng)
    start = random_pose(4.0, 5.0, skin.vertices.mean(0), rng) @ t_true
    res = register_surface(prepared, cloud, init=Transform(start, "CT", "REF"))
    assert res.method == "init" and res.timing_s["global_init"] < 1e-3
    c = skin.vertices.mean(0)
    assert np.linalg.norm(_apply(res.transform.matrix, c) - _apply(t_true, c)) < 1.0
    with pytest.raises(SurfaceRegistrationError, match="expected CT to REF"):
        register_surface(prepared, cloud, init=Transform(start, "CT", "TRACKER"))


def test_register_surface_rejections(skin, prepared):
    cloud = PointSet(skin.vertices[:5], frame="REF")
    with pytest.raises(SurfaceRegistrationError, match="only 5 points"):
        register_surface(prepared, cloud)
    with pytest.raises(SurfaceRegistrationError, match="PointSet or a PreparedModel"):
        register_surface(np.zeros((10, 3)), cloud)
    with pytest.raises(SurfaceRegistrationError, match="fixed must be a PointSet"):
        register_surface(prepared, skin.vertices)
    with pytest.raises(SurfaceRegistrationError, match="needs normals"):
        PreparedModel.build(PointSet(skin.vertices))
    with pytest.raises(SurfaceRegistrationError, match="only 3 points"):
        PreparedModel.build(PointSet(skin.vertices[:3], skin.normals[:3]))


def test_surface_of_revolution_is_reported_ambiguous():
    """An ellipsoid of revolution: rotation about its axis leaves it unchanged."""
    ell = ellipsoid_mesh((60.0, 60.0, 90.0), 3.0)
    model = PreparedModel.build(PointSet(ell.vertices, ell.normals))
    rng = np.random.default_rng(11)
    pts, _ = partial_view(ell, rng, fraction=0.3, n_points=2000, view_dir=np.array([1.0, 0, 0]))
    t = random_pose(25.0, 20.0, np.zeros(3), rng)
    res = register_surface(model, PointSet(_apply(t, pts), frame="REF"))
    assert res.ambiguous
    assert any("rotation about axis" in w for w in res.warnings)


def test_triaxial_ellipsoid_patch_has_rival_solutions():
    """A triaxial ellipsoid is symmetric under 180 deg turns: distinct poses fit equally."""
    ell = ellipsoid_mesh((55.0, 70.0, 90.0), 3.0)
    model = PreparedModel.build(PointSet(ell.vertices, ell.normals))
    rng = np.random.default_rng(12)
    pts, _ = partial_view(ell, rng, fraction=0.3, n_points=2000)
    res = register_surface(model, PointSet(pts, frame="REF"))
    assert res.ambiguous
    assert any(w.startswith("ambiguous: a distinct solution") for w in res.warnings)


def test_low_inlier_fraction_warns(skin, prepared):
    rng = np.random.default_rng(14)
    pts, _ = partial_view(skin, rng, fraction=0.35, n_points=1500, outlier_fraction=0.0)
    junk = rng.uniform(pts.min(0) - 150, pts.max(0) + 150, size=(2500, 3))
    res = register_surface(prepared, PointSet(np.vstack([pts, junk]), frame="REF"))
    assert any("fit the model" in w for w in res.warnings)
