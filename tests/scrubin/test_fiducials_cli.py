"""``scrubin fiducials`` on the sample phantoms, and the fiducial demo workflow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scrubin.cli import main
from scrubin.registration.frames import Transform
from scrubin.registration.pointsets import read_points_csv
from scrubin.workflows import fiducial_demo
from scrubin.workflows.fiducials import parse_diameter_range


@pytest.mark.parametrize(("folder", "truth"), [("small_phantom", "small_truth"),
                                              ("oblique_phantom", "oblique_truth")])
def test_fiducials_json_and_csv(folder, truth, request, tmp_path, capsys):
    path, info = request.getfixturevalue(folder), request.getfixturevalue(truth)
    out, csv = tmp_path / "f.json", tmp_path / "f.csv"
    assert main(["fiducials", str(path), "--json", str(out), "--csv", str(csv)]) == 0
    assert "fiducial(s)" in capsys.readouterr().out
    text = out.read_text()
    assert "NaN" not in text  # strict JSON: unknown values are null
    doc = json.loads(text)
    assert doc["rejected_count"] == len(doc["rejected"]) > 0
    assert doc["frame"] == "CT" and doc["coordinates"] == "LPS" and doc["unit"] == "mm"
    assert doc["source"]["series_instance_uid"] == info["series_instance_uid"]
    assert doc["source"]["frame_of_reference_uid"] == info["frame_of_reference_uid"]
    expected = np.array([f["center_lps"] for f in info["fiducials"]])
    assert doc["count"] == len(expected)
    found = np.array([f["center_lps"] for f in doc["fiducials"]])
    assert np.linalg.norm(found[:, None] - expected[None], axis=2).min(axis=1).max() < 0.3
    for f in doc["fiducials"]:
        assert 0.5 <= f["confidence"] <= 1.0 and f["voxel_count"] >= 1
    np.testing.assert_allclose(read_points_csv(csv), found, atol=1e-4)


def test_options_change_the_result(small_phantom, tmp_path):
    out = tmp_path / "f.json"
    assert main(["fiducials", str(small_phantom), "--json", str(out),
                 "--diameter", "6:9"]) == 0
    assert json.loads(out.read_text())["count"] == 0
    assert main(["fiducials", str(small_phantom), "--json", str(out), "--min-hu", "4500"]) == 0
    assert json.loads(out.read_text())["count"] == 0


@pytest.mark.parametrize("bad", ["4:2", "a:b", "0:3", "1:2:3", "nan:3"])
def test_bad_diameter_option(small_phantom, tmp_path, capsys, bad):
    out = tmp_path / "f.json"
    assert main(["fiducials", str(small_phantom), "--json", str(out), "--diameter", bad]) == 2
    err = capsys.readouterr().err
    assert "--diameter" in err and err.count("\n") == 1 and not out.exists()


def test_parse_diameter_range():
    assert parse_diameter_range("2:4") == (2.0, 4.0)
    assert parse_diameter_range("3") == (3.0, 3.0)


def test_missing_folder_and_unknown_series(small_phantom, tmp_path, capsys):
    assert main(["fiducials", str(tmp_path / "none"), "--json", str(tmp_path / "f.json")]) == 2
    assert capsys.readouterr().err.startswith("scrubin: error:")
    assert main(["fiducials", str(small_phantom), "--series", "1.2.3.999",
                 "--json", str(tmp_path / "f.json")]) == 2
    assert "1.2.3.999" in capsys.readouterr().err
    assert not (tmp_path / "f.json").exists()


def test_fiducial_demo(small_phantom, small_truth, tmp_path, capsys):
    res = fiducial_demo.run(small_phantom, tmp_path / "demo", rng_seed=3)
    printed = capsys.readouterr().out
    assert "NOT accuracy" in printed and "predicted TRE" in printed and "true TRE" in printed
    assert res["n_fiducials"] == len(small_truth["fiducials"])
    assert res["ct_localisation_max_voxels"] < 0.25
    # the eq. 46 prediction agrees with the simulated RMS true TRE (2000 draws, ~2 % SE)
    assert res["rms_true_tre_mm"] == pytest.approx(res["predicted_tre_mm"], rel=0.15)
    reg = json.loads((tmp_path / "demo" / "registration.json").read_text())
    t = Transform.from_json(reg["transform"])
    assert (t.src, t.dst) == ("CT", "REF")
    assert t.source["series_instance_uid"] == small_truth["series_instance_uid"]
    true_t = np.asarray(reg["simulation"]["true_T_REF_CT"])
    target = np.asarray(small_truth["target_lps"])
    err = np.linalg.norm(t.apply(target) - (true_t[:3, :3] @ target + true_t[:3, 3]))
    assert err == pytest.approx(res["true_tre_mm"], abs=1e-9)
    fid = json.loads((tmp_path / "demo" / "fiducials.json").read_text())
    assert fid["count"] == res["n_fiducials"]
