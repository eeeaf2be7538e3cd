"""``scrubin info DIR|FILE [--json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scrubin.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "imaging"))
import dicom_factory as fac


def test_info_table_lists_volumes_and_skipped_files(tmp_path, capsys):
    fac.write_series(tmp_path, slices=4, series_uid="1.2.3.1", description="bone", prefix="a")
    fac.write_series(tmp_path, slices=3, series_uid="1.2.3.2", description="soft", prefix="b",
                     pixel_spacing=(0.5, 0.5), step=1.25)
    (tmp_path / "notes.txt").write_text("x")
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SeriesInstanceUID", "Mod", "Description"]
    row = next(ln for ln in lines if ln.startswith("1.2.3.2"))
    assert "CT" in row and "soft" in row and "8 x 6 x 3" in row and "0.5 x 0.5 x 1.25" in row
    assert "2 volume(s); 1 file(s) skipped" in out


def test_info_json(tmp_path, capsys):
    fac.write_series(tmp_path, slices=2, series_uid="1.2.3.1")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 10)
    assert main(["info", str(tmp_path), "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    (vol,) = data["volumes"]
    assert vol["series_instance_uid"] == "1.2.3.1" and vol["size"] == [8, 6, 2]
    assert vol["spacing_mm"] == [0.6, 0.8, 2.0] and vol["slice_count"] == 2
    assert data["skipped"][0]["file"].endswith("junk.bin")


def test_info_reports_unusable_series_and_errors(tmp_path, capsys):
    import numpy as np

    fac.write_series(tmp_path, positions=np.array([[0, 0, z] for z in (0.0, 2, 4, 8)]))
    assert main(["info", str(tmp_path)]) == 0
    assert "cannot be loaded" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scrubin: error:") and "missing: no such file or folder" in err


def test_info_notes_gantry_tilt(tmp_path, capsys):
    import numpy as np

    z = np.arange(4) * 2.0
    fac.write_series(tmp_path, positions=np.stack([0 * z, z * np.tan(np.radians(10)), z], 1))
    assert main(["info", str(tmp_path)]) == 0
    assert "gantry tilt 10.00 deg" in capsys.readouterr().out
