"""The command line on hostile files: one line ``scrubin: error: ...`` naming the file, exit
status 2, no traceback and no output file (scrubin.cli.main, in process)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scrubin.cli import main

sys.path.insert(0, str(Path(__file__).parent))
import raw_dicom as rd

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"


def _one_error_line(capsys, name: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("scrubin: error: ")]
    assert len(errors) == 1 and name in errors[0], err
    assert not any("Traceback" in ln for ln in err)
    return errors[0]


@pytest.mark.parametrize("name,data,expected", [
    ("dual.dcm", rd.ct_image(preamble=b"MZ" + bytes(126)), "dual-personality"),
    ("huge.dcm", rd.ct_image(rows=65535, cols=65535, pixels=b""), "GiB"),
    ("nest.dcm", rd.ct_image(middle=rd.nested_sequence(2000)), "corrupt DICOM header"),
    ("long.dcm", rd.ct_image(middle=rd.element(0x0010, 0x4000, b"UT", b"x", 0x7FFFFFF0)),
     "past the end"),
])
def test_info_on_hostile_dicom_is_one_line(tmp_path, capsys, name, data, expected):
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "info.json"
    assert main(["info", str(tmp_path / name), "--json", str(out)]) == 2
    assert expected in _one_error_line(capsys, name)
    assert not out.exists()


def test_info_on_former_hang_metaimage_is_one_line(tmp_path, capsys):
    path = tmp_path / "v.mha"
    path.write_bytes((CORPUS / "mha" / "crash-527e55f7908ceb94.bin").read_bytes())
    assert main(["info", str(path)]) == 2  # the header check runs before ITK sees the file
    assert "compressed voxel data is corrupt" in _one_error_line(capsys, "v.mha")
    assert main(["model", str(path), "--threshold", "0", "--out", str(tmp_path / "m.stl")]) == 2
    assert "compressed voxel data is corrupt" in _one_error_line(capsys, "v.mha")
    assert not (tmp_path / "m.stl").exists()


def test_register_points_with_nan_is_one_line(tmp_path, capsys):
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("x,y,z\n0,0,0\n10,0,0\n0,10,0\n0,0,nan\n")
    moving = tmp_path / "moving.csv"
    moving.write_text("x,y,z\n0,0,0\n10,0,0\n0,10,0\n0,0,10\n")
    out = tmp_path / "r.json"
    assert main(["register", "points", "--fixed", str(fixed), "--moving", str(moving),
                 "--json", str(out)]) == 2
    assert "not finite" in _one_error_line(capsys, "fixed.csv")
    assert not out.exists()
