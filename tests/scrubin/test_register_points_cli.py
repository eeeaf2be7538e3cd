"""``scrubin register points``: end to end through the CLI, JSON content and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scrubin.cli import main
from scrubin.registration.frames import Transform
from scrubin.registration.pointsets import write_points_csv
from scrubin.registration.tre import predicted_tre_mm

CT_FIDUCIALS = np.array(
    [[70, 10, 20], [-70, 5, 25], [0, 90, 30], [5, -90, 20], [20, 30, 95], [-25, -20, -40]],
    float,
)


def rigid(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    m = np.eye(4)
    m[:3, :3] = q * np.linalg.det(q)
    m[:3, 3] = rng.uniform(-200, 200, 3)
    return m


@pytest.fixture()
def files(tmp_path):
    t = rigid(1)
    rng = np.random.default_rng(2)
    ref = CT_FIDUCIALS @ t[:3, :3].T + t[:3, 3] + rng.normal(0, 0.2, CT_FIDUCIALS.shape)
    write_points_csv(tmp_path / "ct.csv", CT_FIDUCIALS)
    write_points_csv(tmp_path / "ref.csv", ref, header=None)
    write_points_csv(tmp_path / "targets.csv", np.array([[0.0, 0.0, 0.0], [10, 20, -60]]))
    return tmp_path, t, ref


def run_cli(*argv: str) -> int:
    return main(["register", "points", *argv])


def test_paired_registration_with_targets(files, capsys):
    d, t, _ = files
    out = d / "out.json"
    rc = run_cli("--fixed", str(d / "ref.csv"), "--moving", str(d / "ct.csv"),
                 "--targets", str(d / "targets.csv"), "--fle", "0.35", "--json", str(out))
    assert rc == 0
    printed = capsys.readouterr().out
    assert "T_REF_CT" in printed and "NOT accuracy" in printed and "predicted TRE" in printed
    rep = json.loads(out.read_text())
    tr = Transform.from_json(rep["transform"])
    assert (tr.src, tr.dst) == ("CT", "REF")
    cos = (np.trace(tr.rotation.T @ t[:3, :3]) - 1) / 2
    assert np.degrees(np.arccos(min(1.0, cos))) < 0.5
    assert np.linalg.norm(tr.apply([0.0, 0.0, 0.0]) - t[:3, 3]) < 0.5
    assert rep["n_points"] == 6 and rep["fre_mm"] > 0 and "not" in rep["fre_note"]
    assert len(rep["residuals"]) == 6
    assert {"residual_mm", "distance_mm", "loo_error_mm", "loo_flag"} <= set(rep["residuals"][0])
    assert rep["leave_one_out"]["flagged_points"] == []
    expected = predicted_tre_mm(CT_FIDUCIALS, [[0, 0, 0], [10, 20, -60]], 0.35)
    got = [x["predicted_tre_mm"] for x in rep["targets"]]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert "point_CT" in rep["targets"][0] and "point_REF" in rep["targets"][0]


def test_unpaired_with_a_missing_point_and_custom_frames(files):
    d, t, ref = files
    perm = [4, 0, 5, 2, 1]  # drop tracked point 3, shuffle
    write_points_csv(d / "shuffled.csv", ref[perm])
    out = d / "u.json"
    assert run_cli("--fixed", str(d / "shuffled.csv"), "--moving", str(d / "ct.csv"),
                   "--unpaired", "--fixed-frame", "TRACKER", "--moving-frame", "CT",
                   "--json", str(out)) == 0
    rep = json.loads(out.read_text())
    assert rep["transform"]["to"] == "TRACKER"
    pairs = {m: f for m, f in rep["correspondence"]["pairs"]}
    assert pairs == {p: i for i, p in enumerate(perm)}
    assert rep["correspondence"]["unmatched_moving"] == [3]
    assert "skipped" in rep["leave_one_out"] or rep["leave_one_out"]["fle_estimated"]


def test_bad_fiducial_is_flagged(files, capsys):
    d, _, ref = files
    bad = ref.copy()
    bad[2] += [4.0, 0.0, -3.0]
    write_points_csv(d / "bad.csv", bad)
    out = d / "b.json"
    assert run_cli("--fixed", str(d / "bad.csv"), "--moving", str(d / "ct.csv"), "--fle", "0.35",
                   "--json", str(out)) == 0
    assert json.loads(out.read_text())["leave_one_out"]["flagged_points"] == [2]
    assert "flags moving point(s) [2]" in capsys.readouterr().err


def test_scale_option(files):
    d, _, _ = files
    write_points_csv(d / "big.csv", CT_FIDUCIALS * 1.02 + 5.0)
    out = d / "s.json"
    assert run_cli("--fixed", str(d / "big.csv"), "--moving", str(d / "ct.csv"), "--scale",
                   "--json", str(out)) == 0
    rep = json.loads(out.read_text())
    assert rep["scale"] == pytest.approx(1.02, abs=1e-9)
    assert "skipped" in rep["leave_one_out"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--targets", "TARGETS"], "needs --fle"),
        (["--targets", "TARGETS", "--fle", "0.3", "--scale"], "rigid registration only"),
        (["--fle", "-1"], "--fle must be a positive"),
    ],
)
def test_option_errors(files, capsys, extra, message):
    d, _, _ = files
    extra = [str(d / "targets.csv") if e == "TARGETS" else e for e in extra]
    out = d / "x.json"
    rc = run_cli("--fixed", str(d / "ref.csv"), "--moving", str(d / "ct.csv"), *extra,
                 "--json", str(out))
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


def test_bad_csv_names_file_and_line(files, capsys):
    d, _, _ = files
    (d / "broken.csv").write_text("x,y,z\n1,2,3\n4,5,6\n7,eight,9\n")
    out = d / "x.json"
    rc = run_cli("--fixed", str(d / "broken.csv"), "--moving", str(d / "ct.csv"),
                 "--json", str(out))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"scrubin: error: {d / 'broken.csv'}:4: y value 'eight'")
    assert err.count("\n") == 1 and not out.exists()


def test_missing_file_and_count_mismatch(files, capsys):
    d, _, _ = files
    rc = run_cli("--fixed", str(d / "nope.csv"), "--moving", str(d / "ct.csv"),
                 "--json", str(d / "x.json"))
    assert rc == 2 and "nope.csv: file not found" in capsys.readouterr().err
    write_points_csv(d / "five.csv", CT_FIDUCIALS[:5])
    rc = run_cli("--fixed", str(d / "five.csv"), "--moving", str(d / "ct.csv"),
                 "--json", str(d / "x.json"))
    assert rc == 2 and "equal counts" in capsys.readouterr().err


def test_symmetric_unpaired_is_refused(tmp_path, capsys):
    rect = np.array([[0, 0, 0], [60, 0, 0], [60, 90, 0], [0, 90, 0]], float)
    write_points_csv(tmp_path / "a.csv", rect)
    write_points_csv(tmp_path / "b.csv", rect[[2, 0, 3, 1]] + 7.0)
    rc = run_cli("--fixed", str(tmp_path / "b.csv"), "--moving", str(tmp_path / "a.csv"),
                 "--unpaired", "--json", str(tmp_path / "x.json"))
    assert rc == 2 and "ambiguous" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_moving_from_fiducials_json_carries_uids(files):
    d, t, ref = files
    doc = {"frame": "CT", "fiducials": [{"center_lps": list(p)} for p in CT_FIDUCIALS],
           "source": {"series_instance_uid": "1.2.3", "frame_of_reference_uid": "1.2.4"}}
    (d / "fid.json").write_text(json.dumps(doc))
    out = d / "j.json"
    assert run_cli("--fixed", str(d / "ref.csv"), "--moving", str(d / "fid.json"),
                   "--json", str(out)) == 0
    tr = Transform.from_json(json.loads(out.read_text())["transform"])
    assert tr.source == {"series_instance_uid": "1.2.3", "frame_of_reference_uid": "1.2.4"}
    (d / "bad.json").write_text('{"fiducials": [{"x": 1}]}')
    assert run_cli("--fixed", str(d / "ref.csv"), "--moving", str(d / "bad.json"),
                   "--json", str(out)) == 2
    (d / "broken.json").write_text("{")
    assert run_cli("--fixed", str(d / "ref.csv"), "--moving", str(d / "broken.json"),
                   "--json", str(out)) == 2


def test_fiducials_in_the_wrong_order_fail_with_an_unpaired_hint(small_truth, tmp_path, capsys):
    """Issue 7: two tracked fiducials swapped gave FRE 46.9 mm with exit 0. Now a gross FRE
    is a failed registration: exit 2, one line, no JSON, and the --unpaired pairing."""
    ct = np.array([f["center_lps"] for f in small_truth["fiducials"]], dtype=np.float64)
    t = rigid(11)
    rng = np.random.default_rng(12)
    ref = ct @ t[:3, :3].T + t[:3, 3] + rng.normal(0, 0.35 / np.sqrt(3), ct.shape)
    perm = [0, 1, 2, 3, 4, 6, 5, 7]  # fiducials 5 and 6 touched in swapped order
    write_points_csv(tmp_path / "ct.csv", ct)
    write_points_csv(tmp_path / "ref.csv", ref[perm])
    out = tmp_path / "reg.json"
    for fle in (["--fle", "0.35"], []):
        rc = run_cli("--fixed", str(tmp_path / "ref.csv"), "--moving", str(tmp_path / "ct.csv"),
                     *fle, "--json", str(out))
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert rc == 2 and not out.exists()
        assert err.startswith("scrubin: error: registration failed: FRE ") and "\n" not in err
        assert "--unpaired" in err and "5->6" in err and "6->5" in err and "0->0" in err
    # the hint is right: --unpaired registers them
    assert run_cli("--fixed", str(tmp_path / "ref.csv"), "--moving", str(tmp_path / "ct.csv"),
                   "--fle", "0.35", "--unpaired", "--json", str(out)) == 0
    rep = json.loads(out.read_text())
    assert rep["fre_mm"] < rep["fre_check"]["limit_mm"]
    assert sorted(map(tuple, rep["correspondence"]["pairs"])) == sorted(
        (m, perm.index(m)) for m in range(8))


def test_gross_fre_without_a_consistent_pairing_has_no_hint(small_truth, tmp_path, capsys):
    ct = np.array([f["center_lps"] for f in small_truth["fiducials"]], dtype=np.float64)
    ref = ct + 0.0
    ref[2] += [0.0, 0.0, 30.0]
    ref[5] += [25.0, 0.0, 0.0]
    write_points_csv(tmp_path / "ct.csv", ct)
    write_points_csv(tmp_path / "ref.csv", ref)
    rc = run_cli("--fixed", str(tmp_path / "ref.csv"), "--moving", str(tmp_path / "ct.csv"),
                 "--json", str(tmp_path / "reg.json"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "absolute limit of 10 mm" in err and "--unpaired" not in err
    assert "\n" not in err and not (tmp_path / "reg.json").exists()
