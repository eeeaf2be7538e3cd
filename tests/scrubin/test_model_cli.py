"""``scrubin model``: option parsing, outputs, report, one-line errors, no partial files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from scrubin.cli import main
from scrubin.imaging.mesh_io import load_mesh
from scrubin.imaging.seg_dicom import read_seg
from scrubin.workflows.model import ModelArgumentError, auto_step, parse_seed, parse_threshold

sys.path.insert(0, str(Path(__file__).parents[1] / "imaging"))
import dicom_factory as fac


@pytest.mark.parametrize(
    "text, expected",
    [
        ("300", (300.0, None)),
        ("-1000:-400", (-1000.0, -400.0)),
        (":200", (None, 200.0)),
        ("150:", (150.0, None)),
        (" 1e3 : 2e3 ", (1000.0, 2000.0)),
    ],
)
def test_parse_threshold(text, expected):
    assert parse_threshold(text) == expected


@pytest.mark.parametrize("text", ["", ":", "a:b", "1:2:3", "400:300", "nan", "1:inf", "3,4"])
def test_parse_threshold_malformed(text):
    with pytest.raises(ModelArgumentError, match="--threshold"):
        parse_threshold(text)


def test_parse_seed():
    np.testing.assert_array_equal(parse_seed("-12.5,30,40"), [-12.5, 30.0, 40.0])
    for bad in ("1,2", "1,2,3,4", "x,1,2", "1,,2", "nan,1,2", ""):
        with pytest.raises(ModelArgumentError, match="--seed"):
            parse_seed(bad)


def test_auto_step():
    assert auto_step((300, 512, 512), np.array([0.5, 0.5, 0.8])) == 2
    assert auto_step((100, 128, 128), np.array([0.5, 0.5, 0.8])) == 1
    assert auto_step((300, 512, 512), np.array([1.0, 1.0, 2.5])) == 1


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_model_glb_with_report(small_phantom, small_truth, tmp_path, capsys):
    out, rep = tmp_path / "skull.glb", tmp_path / "report.json"
    rc, stdout, err = _run(capsys, "model", small_phantom, "--preset", "bone", "--out", out,
                           "--json", rep, "--max-triangles", "20000", "--smooth", "5")
    assert rc == 0, err
    assert "skull.glb" in stdout and err == ""
    report = json.loads(rep.read_text())
    mesh = load_mesh(out)
    assert report["triangles"] == mesh.n_faces <= 20000
    assert report["vertices"] == mesh.n_vertices
    assert report["watertight"] is True and mesh.is_watertight()
    np.testing.assert_allclose(report["bounds_lps_mm"], mesh.bounds(), atol=1e-3)
    assert report["area_mm2"] == pytest.approx(mesh.area(), rel=1e-4)
    assert report["volume_ml"] == pytest.approx(report["volume_mm3"] / 1000)
    assert report["volume_mm3"] == pytest.approx(mesh.volume_mm3(), rel=1e-4)
    assert report["series_instance_uid"] == small_truth["series_instance_uid"]
    assert mesh.provenance["frame_of_reference_uid"] == small_truth["frame_of_reference_uid"]
    assert set(report["timings_s"]) >= {"read", "segment", "extract", "smooth", "decimate",
                                         "write", "total"}
    err_mm = report["decimation_error_mm"]
    assert err_mm is None or 0 <= err_mm["mean"] <= err_mm["p99"] <= err_mm["max"] < 1.0
    assert report["preset"] == "bone" and report["outputs"]["mesh"] == str(out)
    # skull outer semi-axes 69 x 89 x 94 mm around the origin (plus mandible/spine below)
    lo, hi = np.array(report["bounds_lps_mm"])
    assert abs(lo[0] + 69) < 2 and abs(hi[0] - 69) < 2 and abs(hi[2] - 94) < 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "skull.glb"]


def test_model_threshold_seed_stl(small_phantom, tmp_path, capsys):
    out = tmp_path / "skin.stl"
    # a negative threshold and a negative seed coordinate (pre-joined by the CLI)
    rc, _, err = _run(capsys, "model", small_phantom, "--threshold", "-480", "--seed-point",
                      "-1.5,0,0", "--out", out, "--smooth", "0", "--max-triangles", "0")
    assert rc == 0, err
    m = load_mesh(out)
    lo, hi = m.bounds()
    # head semi-axis 75 mm along L, ears stick out a few mm more
    assert 74 < hi[0] < 90 and -90 < lo[0] < -74


def test_bad_extension_one_line_error_before_work(small_phantom, tmp_path, capsys):
    rc, _, err = _run(capsys, "model", small_phantom, "--preset", "bone",
                      "--out", tmp_path / "x.vtk")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("scrubin: error:")
    assert "x.vtk" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--threshold", "a:b"], "--threshold"),
        (["--seed-point", "1,2"], "--seed-point"),
        (["--smooth", "-1"], "--smooth"),
        (["--max-triangles", "2"], "--max-triangles"),
        (["--step", "-1"], "--step"),
        (["--seg", "seg.txt"], ".dcm"),
    ],
)
def test_malformed_options_one_line(small_phantom, tmp_path, capsys, extra, match):
    args = ["model", small_phantom, "--preset", "bone", "--out", tmp_path / "m.glb", *extra]
    rc, _, err = _run(capsys, *[a if a != "seg.txt" else tmp_path / a for a in args])
    assert rc == 2 and err.count("\n") == 1 and match in err
    assert not list(tmp_path.iterdir())


def test_no_preset_no_threshold(small_phantom, tmp_path, capsys):
    rc, _, err = _run(capsys, "model", small_phantom, "--out", tmp_path / "m.glb")
    assert rc == 2 and "--preset" in err


def test_seg_with_nifti_input_refused_before_work(tmp_path, capsys):
    import SimpleITK as sitk  # noqa: N813

    nii = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(nii))
    rc, _, err = _run(capsys, "model", nii, "--preset", "bone", "--out", tmp_path / "m.glb",
                      "--seg", tmp_path / "s.dcm")
    assert rc == 2 and "not DICOM" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


def test_failure_after_work_leaves_no_outputs(small_phantom, tmp_path, capsys):
    # a seed in the brain: the segmentation fails after the volume was read
    rc, _, err = _run(capsys, "model", small_phantom, "--preset", "bone", "--seed-point",
                      "0,0,0", "--out", tmp_path / "m.glb", "--json", tmp_path / "r.json")
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("scrubin: error: seed (0, 0, 0)") and "[300, +inf] HU" in err
    assert not list(tmp_path.iterdir())


def test_seg_failure_after_the_mesh_leaves_no_outputs(tmp_path, capsys):
    # a real DICOM cube without StudyInstanceUID (Type 1 in the General Study module, PS3.3
    # C.7.2.1): it loads and meshes, then the SEG (which must copy the study) cannot be
    # built, after the mesh was written to its temporary file
    def cube(i, j, k):
        return np.where((abs(i - 8) < 5) & (abs(j - 8) < 5) & (abs(k - 5) < 4), 1000, -1000)

    def no_study(ds, k):
        del ds.StudyInstanceUID

    src, out = tmp_path / "src", tmp_path / "out"
    out.mkdir()
    fac.write_series(src, rows=16, cols=16, slices=10, hu_of=cube, extra=no_study)
    rc, stdout, err = _run(capsys, "model", src, "--threshold", "0", "--out", out / "m.ply",
                           "--seg", out / "s.dcm", "--json", out / "r.json")
    assert rc == 2 and err.count("\n") == 1 and stdout == ""
    assert err.startswith("scrubin: error: DICOM SEG: ") and "StudyInstanceUID" in err
    assert str(src) in err
    assert not list(out.iterdir())
    # the same input without --seg meshes: the failure above came after the mesh
    rc, _, err = _run(capsys, "model", src, "--threshold", "0", "--out", out / "m.ply")
    assert rc == 0, err
    assert load_mesh(out / "m.ply").n_faces > 0


def test_missing_input(tmp_path, capsys):
    rc, _, err = _run(capsys, "model", tmp_path / "nothing", "--preset", "bone",
                      "--out", tmp_path / "m.glb")
    assert rc == 2 and "does not exist" in err


def test_seg_output_written_with_mesh(small_phantom, tmp_path, capsys):
    out, seg = tmp_path / "skull.ply", tmp_path / "skull_seg.dcm"
    rc, _, err = _run(capsys, "model", small_phantom, "--preset", "bone", "--out", out,
                      "--seg", seg, "--max-triangles", "5000")
    assert rc == 0, err
    assert out.is_file() and seg.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skull.ply", "skull_seg.dcm"]
    # the SEG reads back onto the source volume: one segment, all of it bone-bright CT
    from scrubin.imaging.load import load_volume

    vol = load_volume(small_phantom)
    masks = read_seg(seg, vol)
    assert len(masks) == 1
    mask = next(iter(masks.values()))
    assert mask.shape == vol.array.shape and mask.sum() > 1000
    assert np.mean(vol.array[mask] >= 300) > 0.95


def test_nifti_without_orientation_refused_no_output(tmp_path, capsys):
    """sform_code = qform_code = 0 (NIfTI-1 METHOD 1, no orientation) is not guessed."""
    import nibabel as nib

    data = np.full((12, 12, 8), -1000, np.int16)
    data[3:9, 3:9, 2:6] = 1000
    img = nib.Nifti1Image(data, None)
    img.set_sform(np.diag([0.8, 0.8, 2.0, 1.0]), code=0)
    img.set_qform(None, code=0)
    nii = tmp_path / "analyze.nii.gz"
    nib.save(img, nii)
    rc, _, err = _run(capsys, "model", nii, "--threshold", "0", "--out", tmp_path / "m.stl")
    assert rc == 2 and err.count("\n") == 1 and "orientation unknown" in err
    assert "analyze.nii.gz" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analyze.nii.gz"]


@pytest.mark.parametrize("ext", [".stl", ".ply", ".obj", ".glb"])
def test_model_files_say_they_are_in_ct(tmp_path, capsys, ext):
    """Every model file declares frame CT (and SPACE=LPS), so it loads as a CT model."""
    def cube(i, j, k):
        return np.where((abs(i - 8) < 5) & (abs(j - 8) < 5) & (abs(k - 5) < 4), 1000, -1000)

    src = tmp_path / "src"
    fac.write_series(src, rows=16, cols=16, slices=10, hu_of=cube)
    out = tmp_path / f"m{ext}"
    rc, _, err = _run(capsys, "model", src, "--threshold", "0", "--out", out)
    assert rc == 0, err
    m = load_mesh(out, expected_frame="CT")
    assert m.frame == "CT"
    if ext != ".stl":
        assert m.provenance["frame_of_reference_uid"]
    if ext in (".stl", ".ply", ".obj"):
        assert b"SPACE=LPS" in out.read_bytes()[:400]
