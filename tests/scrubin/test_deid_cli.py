"""``scrubin deid``: end to end with markers planted in the phantom, then a model, a SEG and
reports made from the de-identified series carry none of them; one-line errors, no output."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from scrubin.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "imaging"))
from deid_markers import Planter, all_bytes, found

N_SLICES = 40


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _glb_extras(path: Path) -> dict:
    data = path.read_bytes()
    (jlen,) = struct.unpack_from("<I", data, 12)
    return json.loads(data[20:20 + jlen])["asset"]["extras"]


def _planted_series(small_phantom: Path, folder: Path) -> Planter:
    planter = Planter()
    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slices = sorted((pydicom.dcmread(p) for p in small_phantom.glob("*.dcm")),
                        key=lambda d: int(d.InstanceNumber))
        for ds in slices[30:30 + N_SLICES]:  # a contiguous slab keeps the test fast
            planter.plant(ds)
            ds.save_as(folder / f"{ds.InstanceNumber}.dcm", enforce_file_format=True)
    return planter


def test_deid_then_model_seg_and_reports_carry_no_marker(small_phantom, tmp_path, capsys):
    planter = _planted_series(small_phantom, tmp_path / "Doe^Jane")
    out = tmp_path / "deid"
    rc, o1, e1 = _run(capsys, "deid", tmp_path / "Doe^Jane", out, "--json",
                      tmp_path / "deid.json")
    assert rc == 0, e1
    assert f"wrote {N_SLICES} de-identified file(s) in 1 series" in o1
    series = out / "S0001"
    rc, o2, e2 = _run(capsys, "model", series, "--preset", "bone", "--out", tmp_path / "m.glb",
                      "--seg", tmp_path / "s.dcm", "--json", tmp_path / "model.json",
                      "--max-triangles", "5000")
    assert rc == 0, e2
    outputs = [out, tmp_path / "deid.json", tmp_path / "m.glb", tmp_path / "s.dcm",
               tmp_path / "model.json"]
    blobs = [b for p in outputs for b in (all_bytes(p) if p.is_dir() else [p.read_bytes()])]
    blobs.append((o1 + e1 + o2 + e2).encode())  # the logs
    # (shifted dates are checked against the analytic offset in tests/imaging/test_deid.py:
    # a planted date moved by years may equal another planted date)
    assert len(planter.markers) > 400
    assert found(planter.markers, blobs) == []
    assert _glb_extras(tmp_path / "m.glb")["patient_identity_removed"] == "YES"
    assert json.loads((tmp_path / "model.json").read_text())["patient_identity_removed"] == "YES"
    seg = pydicom.dcmread(tmp_path / "s.dcm")
    assert seg.PatientIdentityRemoved == "YES" and seg.PatientID.startswith("ANON")
    report = json.loads((tmp_path / "deid.json").read_text())
    assert report["files"] == {"input": N_SLICES, "written": N_SLICES}
    assert report["options"] == [] and report["dates"].startswith("removed")


def test_model_of_identified_input_says_so(small_phantom, tmp_path, capsys):
    rc, _, err = _run(capsys, "model", small_phantom, "--preset", "bone", "--out",
                      tmp_path / "m.glb", "--seg", tmp_path / "s.dcm",
                      "--max-triangles", "5000")
    assert rc == 0, err
    assert _glb_extras(tmp_path / "m.glb")["patient_identity_removed"] == "NO"
    assert pydicom.dcmread(tmp_path / "s.dcm").PatientIdentityRemoved == "NO"


def test_keep_private_and_report_to_stdout(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    planter = Planter()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    planter.plant(ds)
    ds.save_as(src / "ct.dcm")
    kept = str(ds[0x00991001].value)
    (tmp_path / "safe.txt").write_text("# our own numeric-free marker element\n"
                                       "0099,xx01,SCRUBIN MARKERS\n")
    rc, out, err = _run(capsys, "deid", src, tmp_path / "out", "--keep-private",
                        tmp_path / "safe.txt", "--json", "-")
    assert rc == 0, err
    report = json.loads(out[:out.rindex("}") + 1])
    assert report["actions"]["private kept"] == 1
    assert "Retain Safe Private Option" in report["options"]
    blobs = all_bytes(tmp_path / "out")
    assert found(planter.markers, blobs) == [kept.encode()]  # only the safe-listed one


@pytest.mark.parametrize("extra, message", [
    (["--retain", "everything"], "--retain everything"),
    (["--keep-private", "MISSING.txt"], "--keep-private"),
    (["--key", "KEY"], "expected at least 16"),
])
def test_bad_options_are_one_line_errors(extra, message, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "mr.dcm")
    (tmp_path / "KEY").write_bytes(b"short")
    extra = [str(tmp_path / e) if e in ("MISSING.txt", "KEY") else e for e in extra]
    rc, _, err = _run(capsys, "deid", src, tmp_path / "out", *extra)
    assert rc == 2 and err.startswith("scrubin: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "out").exists()


def test_refusals_leave_nothing(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("SC_rgb.dcm"), src / "sc.dcm")
    rc, _, err = _run(capsys, "deid", src, tmp_path / "out")
    assert rc == 2 and "Secondary Capture" in err and "--burned-in" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    rc, _, err = _run(capsys, "deid", tmp_path / "nope", tmp_path / "out")
    assert rc == 2 and "nope" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    rc, _, err = _run(capsys, "deid", src, tmp_path / "full", "--burned-in", "allow")
    assert rc == 2 and "not empty" in err
    rc, _, err = _run(capsys, "deid", src, tmp_path / "no" / "out")
    assert rc == 2 and "does not exist" in err
    with pytest.raises(SystemExit) as exc:
        main(["deid", str(src), str(tmp_path / "o"), "--keep-dates", "--shift-dates"])
    assert exc.value.code == 2
    rc, out, err = _run(capsys, "deid", src, tmp_path / "ok", "--burned-in", "allow")
    assert rc == 0 and "may carry burned-in text" in err


def test_same_key_file_same_output(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "mr.dcm")
    (tmp_path / "key").write_bytes(b"0123456789abcdef0123456789abcdef")
    uids = []
    for out in ("a", "b", "c"):
        key = ["--key", tmp_path / "key"] if out != "c" else []
        rc, _, err = _run(capsys, "deid", src, tmp_path / out, "--shift-dates", *key)
        assert rc == 0, err
        ds = pydicom.dcmread(tmp_path / out / "S0001" / "I00001.dcm")
        uids.append((ds.SOPInstanceUID, ds.StudyInstanceUID, ds.PatientID, ds.StudyDate))
    assert uids[0] == uids[1] and uids[2][:3] != uids[0][:3]
