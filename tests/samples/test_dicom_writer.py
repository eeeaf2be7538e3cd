"""The written files are valid CT Image Storage objects (dciodvfy) with exact geometry."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from scrubin.samples.dicom_writer import _ds, deterministic_uid, write_series


@pytest.mark.parametrize("which", ["small_phantom", "oblique_phantom"])
def test_dciodvfy_reports_no_errors(which: str, request: pytest.FixtureRequest) -> None:
    exe = shutil.which("dciodvfy")
    assert exe is not None, "dciodvfy (dicom3tools) is installed by make install"
    folder: Path = request.getfixturevalue(which)
    one = sorted(folder.glob("*.dcm"))[0]
    res = subprocess.run([exe, str(one)], capture_output=True, text=True, timeout=60)
    lines = (res.stdout + res.stderr).splitlines()
    assert "CTImage" in lines  # recognised as the CT Image IOD
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert not errors, errors


def test_headers_and_transfer_syntax(small_phantom: Path) -> None:
    ds = pydicom.dcmread(sorted(small_phantom.glob("*.dcm"))[0])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # explicit VR LE
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (
        1.0, -1024.0, "HU")
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16
    assert ds.pixel_array.dtype == np.int16 and ds.pixel_array.min() >= 0


def test_deterministic_uid_is_valid_and_stable() -> None:
    a = deterministic_uid("x", 1)
    assert a == deterministic_uid("x", 1) != deterministic_uid("x", 2)
    assert a.startswith("2.25.") and len(a) <= 64 and a.replace(".", "").isdigit()
    assert deterministic_uid("a", "bc") != deterministic_uid("ab", "c")


def test_ds_strings_fit_16_chars() -> None:
    for v in (-142.78545975786123, 0.98480775301226, 1.8, -1024.0, 1e-17, 123456789.123456):
        s = _ds(v)
        assert len(s) <= 16 and abs(float(s) - v) <= 1e-9 * max(1.0, abs(v))


def test_write_series_positions_follow_the_normal(tmp_path: Path) -> None:
    rot = np.linalg.qr(np.array([[1.0, 0.2, 0.1], [0.0, 1.0, 0.3], [0.1, 0.0, 1.0]]))[0]
    if np.linalg.det(rot) < 0:
        rot[:, 2] *= -1
    affine = np.eye(4)
    affine[:3, :3] = rot * np.array([0.7, 0.9, 1.5])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    stored = np.arange(4 * 3 * 5, dtype=np.int16).reshape(4, 3, 5)
    uids = {"study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.4",
            "frame_of_reference_uid": "1.2.3.5", "sop_root": "t"}
    paths = write_series(tmp_path, stored, affine, uids, "test")
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float),
                                   affine[:3, 3] + k * affine[:3, 2], atol=1e-9)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.9, 0.7])
        assert (ds.Rows, ds.Columns) == (3, 5)
        np.testing.assert_array_equal(ds.pixel_array, stored[k])
