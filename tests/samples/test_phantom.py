"""Sample series on disk: geometry, voxel values at known points, determinism, cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from scrubin.imaging.volume import affine_from_dicom
from scrubin.samples import phantom
from scrubin.samples.model import SampleError, phantom_model


def _load(folder: Path) -> tuple[np.ndarray, np.ndarray, list[pydicom.Dataset], list[Path]]:
    """(HU [k, j, i], affine from the headers, datasets and files in slice order)."""
    files = sorted(folder.glob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    iop = np.asarray(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    order = np.argsort([float(np.dot(normal, d.ImagePositionPatient)) for d in dss])
    dss = [dss[i] for i in order]
    files = [files[i] for i in order]
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
                   for d in dss])
    p0 = np.asarray(dss[0].ImagePositionPatient, float)
    p1 = np.asarray(dss[1].ImagePositionPatient, float)
    affine = affine_from_dicom(iop, np.asarray(dss[0].PixelSpacing, float), p0, p1 - p0)
    return hu, affine, dss, files


@pytest.fixture(scope="module")
def small(small_phantom: Path) -> tuple:
    return _load(small_phantom)


@pytest.fixture(scope="module")
def oblique(oblique_phantom: Path) -> tuple:
    return _load(oblique_phantom)


def _ijk(affine: np.ndarray, lps: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(affine)
    return np.rint(np.asarray(lps) @ inv[:3, :3].T + inv[:3, 3]).astype(int)


def _at(hu: np.ndarray, affine: np.ndarray, lps: list[float], r: int = 0) -> np.ndarray:
    i, j, k = _ijk(affine, np.asarray(lps, float))
    return hu[k - r : k + r + 1, j - r : j + r + 1, i - r : i + r + 1]


@pytest.mark.parametrize("which", ["small", "oblique"])
def test_geometry_matches_truth(which: str, request: pytest.FixtureRequest) -> None:
    hu, affine, dss, files = request.getfixturevalue(which)
    truth = request.getfixturevalue(f"{which}_truth")
    np.testing.assert_allclose(affine, np.asarray(truth["affine"]), atol=1e-6)
    assert list(truth["shape_ijk"]) == [dss[0].Columns, dss[0].Rows, len(dss)] == list(
        hu.shape[::-1])
    ps = [float(v) for v in dss[0].PixelSpacing]
    assert ps == pytest.approx(truth["pixel_spacing"]) and ps[0] != ps[1]
    iop = np.asarray(dss[0].ImageOrientationPatient, float)
    np.testing.assert_allclose(iop, truth["image_orientation"], atol=1e-12)
    normal = np.cross(iop[:3], iop[3:])
    origin = np.asarray(dss[0].ImagePositionPatient, float)
    for k, d in enumerate(dss):
        expected = origin + k * truth["slice_spacing"] * normal
        np.testing.assert_allclose(np.asarray(d.ImagePositionPatient, float), expected,
                                   atol=1e-6)
        assert d.InstanceNumber == k + 1
        assert list(map(float, d.ImageOrientationPatient)) == list(iop)
    assert float(dss[0].SpacingBetweenSlices) == pytest.approx(truth["slice_spacing"])
    assert float(dss[0].SliceThickness) == pytest.approx(truth["slice_spacing"])
    assert [f.name for f in files] != sorted(f.name for f in files)  # loader must sort
    for d in dss[:3]:
        assert d.SeriesInstanceUID == truth["series_instance_uid"]
        assert d.FrameOfReferenceUID == truth["frame_of_reference_uid"]
        assert d.StudyInstanceUID == truth["study_instance_uid"]
        assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert str(d.PatientName) == "Phantom^Head" and d.Modality == "CT"
    assert len({d.SOPInstanceUID for d in dss}) == len(dss)


def test_oblique_is_double_oblique(oblique_truth: dict, small_truth: dict) -> None:
    iop = np.asarray(oblique_truth["image_orientation"]).reshape(2, 3)
    normal = np.cross(iop[0], iop[1])
    for v in (iop[0], iop[1], normal):
        assert np.isclose(np.linalg.norm(v), 1.0) and np.max(np.abs(v)) < 0.99
        assert np.sum(np.abs(v) > 0.1) >= 2
    assert abs(iop[0] @ iop[1]) < 1e-12
    assert small_truth["image_orientation"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    # same patient, same table position: one frame of reference, different series
    assert oblique_truth["frame_of_reference_uid"] == small_truth["frame_of_reference_uid"]
    assert oblique_truth["series_instance_uid"] != small_truth["series_instance_uid"]


@pytest.mark.parametrize("which", ["small", "oblique"])
def test_voxel_values_at_known_points(which: str, request: pytest.FixtureRequest) -> None:
    hu, affine, _, _ = request.getfixturevalue(which)
    truth = request.getfixturevalue(f"{which}_truth")
    s = truth["structures"]
    assert _at(hu, affine, [0.0, 0.0, 0.0], 1).mean() == pytest.approx(35.0, abs=9.0)
    assert _at(hu, affine, truth["target_lps"], 1).mean() == pytest.approx(35.0, abs=9.0)
    bone = s["skull"]["hu_inside"]
    assert _at(hu, affine, [65.5, 0.0, 0.0]).mean() == pytest.approx(bone, abs=60.0)
    assert _at(hu, affine, [0.0, 0.0, 90.5]).mean() == pytest.approx(bone, abs=60.0)
    assert _at(hu, affine, [0.0, -99.0, 60.0], 1).mean() == pytest.approx(-1000.0, abs=10.0)
    assert _at(hu, affine, [0.0, 115.5, 0.0], 1).mean() == pytest.approx(
        s["table"]["hu_inside"], abs=20.0)
    assert _at(hu, affine, [0.0, 101.5, 0.0], 1).max() < -900.0  # air gap above the table
    assert _at(hu, affine, [22.0, -44.0, -55.0], 1).mean() == pytest.approx(-1000.0, abs=30.0)
    for f in truth["fiducials"]:
        peak = _at(hu, affine, f["center_lps"], 1).max()
        assert peak > bone + 300.0, f["name"]


def test_values_match_model_away_from_boundaries(small: tuple, small_truth: dict) -> None:
    hu, affine, _, _ = small
    model = phantom_model(small_truth)
    rng = np.random.default_rng(3)
    ijk = rng.integers(0, hu.shape[::-1], size=(20000, 3))
    lps = ijk @ affine[:3, :3].T + affine[:3, 3]
    far = np.ones(len(lps), bool)
    for name in model.structure_names:
        far &= np.abs(model.signed_distance(name, lps)) > 4.0
    expected = model.hu_at(lps[far])
    got = hu[ijk[far, 2], ijk[far, 1], ijk[far, 0]]
    resid = got - expected
    resid = resid[expected > -900]  # air is clipped at -1024 (stored 0)
    assert len(resid) > 3000
    assert abs(resid.mean()) < 1.5
    assert resid.std() == pytest.approx(small_truth["noise_hu"], abs=1.0)


def test_truth_schema(small_truth: dict) -> None:
    for key in ("frame", "unit", "series_instance_uid", "frame_of_reference_uid",
                "study_instance_uid", "affine", "shape_ijk", "pixel_spacing", "slice_spacing",
                "image_orientation", "fiducials", "target_lps", "structures", "psf_sigma_mm",
                "noise_hu", "seed", "generator_version"):
        assert key in small_truth, key
    assert (small_truth["frame"], small_truth["unit"]) == ("LPS", "mm")
    fids = np.array([f["center_lps"] for f in small_truth["fiducials"]])
    assert 6 <= len(fids) <= 8
    sv = np.linalg.svd(fids - fids.mean(axis=0), compute_uv=False)
    assert sv[-1] > 0.2 * sv[0]  # well spread, far from coplanar
    for f in small_truth["fiducials"]:
        assert {"name", "center_lps", "diameter_mm", "hu"} <= set(f)
        assert 2.0 <= f["diameter_mm"] <= 4.0
    for name, st in small_truth["structures"].items():
        assert st["half_max_hu"] == pytest.approx(0.5 * (st["hu_inside"] + st["hu_outside"]))
        assert {"shape", "parts", "paint_order"} <= set(st), name


def test_generation_is_deterministic_and_cached(small_phantom: Path, tmp_path: Path) -> None:
    folder = phantom.ensure_sample("small", cache_dir=tmp_path)
    assert folder.name == small_phantom.name and folder.parent == tmp_path
    a = sorted(small_phantom.iterdir())
    b = sorted(folder.iterdir())
    assert [f.name for f in a] == [f.name for f in b]
    for fa, fb in zip(a, b, strict=True):
        assert fa.read_bytes() == fb.read_bytes(), fa.name
    stamp = (folder / "truth.json").stat().st_mtime_ns
    assert phantom.ensure_sample("small", cache_dir=tmp_path) == folder
    assert (folder / "truth.json").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_publish_race_keeps_the_winner(tmp_path: Path) -> None:
    final = tmp_path / "small-abc"
    final.mkdir()
    (final / "truth.json").write_text("{}")
    loser = tmp_path / ".tmp-small-1"
    loser.mkdir()
    (loser / "truth.json").write_text('{"x": 1}')
    phantom._publish(loser, final)
    assert (final / "truth.json").read_text() == "{}" and not loser.exists()
    fresh = tmp_path / ".tmp-small-2"
    fresh.mkdir()
    (fresh / "truth.json").write_text("{}")
    phantom._publish(fresh, tmp_path / "small-new")
    assert (tmp_path / "small-new" / "truth.json").is_file() and not fresh.exists()


def test_cache_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCRUBIN_CACHE", str(tmp_path / "c"))
    assert phantom.default_cache_dir() == tmp_path / "c"


def test_bad_requests_rejected(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match="unknown sample 'huge'"):
        phantom.ensure_sample("huge", cache_dir=tmp_path)
    with pytest.raises(SampleError, match="unknown sample"):
        phantom.grid("")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SampleError, match="cannot write"):
        phantom.ensure_sample("small", cache_dir=blocker / "cache")
    with pytest.raises(SampleError, match="not found"):
        phantom.load_truth(tmp_path / "nowhere")
    (tmp_path / "truth.json").write_text(json.dumps({"frame": "RAS"}))
    with pytest.raises(SampleError, match="not a phantom truth"):
        phantom.load_truth(tmp_path)
    (tmp_path / "truth.json").write_text("{broken")
    with pytest.raises(SampleError, match="cannot read"):
        phantom.load_truth(tmp_path)


def test_full_preset_geometry_without_generating() -> None:
    affine, shape = phantom.grid("full")
    assert shape == (512, 512, 300)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [0.5, 0.5, 0.8])
    assert phantom.spec_hash("full") != phantom.spec_hash("small")


def test_stale_temporary_folders_are_swept(tmp_path: Path) -> None:
    import os

    old = tmp_path / ".tmp-small-dead"
    old.mkdir()
    (old / "x.dcm").write_bytes(b"partial")
    os.utime(old, (0, 0))
    young = tmp_path / ".tmp-small-alive"  # another process still writing
    young.mkdir()
    other = tmp_path / ".tmp-full-dead"
    other.mkdir()
    os.utime(other, (0, 0))
    phantom._sweep_stale(tmp_path, "small")
    assert not old.exists() and young.exists() and other.exists()


@pytest.mark.parametrize("which", ["small", "oblique"])
@pytest.mark.parametrize("structure", ["skin", "skull", "brain"])
def test_half_max_isosurface_lies_on_the_truth(which: str, structure: str,
                                               request: pytest.FixtureRequest) -> None:
    from skimage.measure import marching_cubes

    hu, affine, _, _ = request.getfixturevalue(which)
    model = phantom_model(request.getfixturevalue(f"{which}_truth"))
    verts_kji, _, _, _ = marching_cubes(hu, level=model.half_max(structure))
    lps = verts_kji[:, ::-1] @ affine[:3, :3].T + affine[:3, 3]
    d = model.signed_distance(structure, lps)
    d = d[np.abs(d) < 2.0]  # this structure's vertices (not the other boundaries')
    assert len(d) > 10000
    assert abs(d.mean()) < 0.1 and np.sqrt(np.mean(d**2)) < 0.2  # voxels are 1.6-2.5 mm
