"""Known traps in DICOM input: each is refused with the imaging error class (or read
correctly), never a crash, a hang or an allocation sized by a lying header.

Inputs are raw bytes (tests/fuzz/raw_dicom.py) or pydicom's real test files edited by name.
The memory-bound cases run in the fuzz worker (``fuzz.runner``: RLIMIT_AS = its imports plus
1 GiB), so an allocation of the declared size would come back as a MemoryError crash.
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from fuzz.runner import run_inputs
from scrubin.imaging.dicom_guard import (
    DicomdirError,
    DualPersonalityError,
    ImageTooLargeError,
    dicomdir_files,
)
from scrubin.imaging.dicom_scan import CorruptDicomError, scan_files
from scrubin.imaging.load import load_volume

sys.path.insert(0, str(Path(__file__).parent))
import raw_dicom as rd


def _save(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_raw_writer_makes_a_loadable_image(tmp_path):
    # the helper itself: a 4x4 slice of known values loads exactly (else the traps prove nothing)
    px = np.arange(16, dtype="<i2") * 10 - 50
    (tmp_path / "a.dcm").write_bytes(rd.ct_image(pixels=px.tobytes()))
    vol = load_volume(tmp_path / "a.dcm")
    np.testing.assert_array_equal(vol.array[0], px.reshape(4, 4))


@pytest.mark.parametrize("depth", [300, 1000, 20000])
def test_sequences_nested_hundreds_deep_are_refused(tmp_path, depth):
    path = tmp_path / f"nest{depth}.dcm"
    path.write_bytes(rd.ct_image(middle=rd.nested_sequence(depth)))
    with pytest.raises(CorruptDicomError, match=f"nest{depth}.dcm.*(nested|Recursion)"):
        load_volume(path)


def test_moderate_nesting_still_loads(tmp_path):
    # 40 levels: past the fast reader's limit (32), read by pydicom
    path = tmp_path / "nest40.dcm"
    path.write_bytes(rd.ct_image(middle=rd.nested_sequence(40)))
    assert load_volume(path).array.shape == (1, 4, 4)


@pytest.mark.parametrize("vr,length", [(b"PN", 0xFFF0), (b"UT", 0x7FFFFFF0), (b"UN", 0xFFFFFFF0)])
def test_element_length_past_the_end_of_the_file(tmp_path, vr, length):
    path = tmp_path / "long.dcm"
    path.write_bytes(rd.ct_image(middle=rd.element(0x0010, 0x4000, vr, b"x", length)))
    with pytest.raises(CorruptDicomError, match="long.dcm.*(past the end|truncated)"):
        load_volume(path)
    assert scan_files(tmp_path).skipped[0][0] == path  # a folder skips it, naming it


def test_pixel_data_length_past_the_end_allocates_by_rows_columns_only():
    # PixelData declares 2 GiB, the file holds the 4x4 slice: the loader reads Rows x Columns
    # from the file (never the declared length), under the worker's memory limit
    data = rd.ct_image(pixels=np.arange(16, dtype="<i2").tobytes(), pixel_length=0x7FFFFFF0)
    [o] = run_inputs([("dicom", data)], timeout_s=60)
    assert o.status in ("ok", "refused"), o.detail


def test_64k_cubed_volume_in_a_tiny_file_is_refused_before_allocation():
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))  # enhanced MR, 10 frames
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 65535
    data = _save(ds)
    assert len(data) < 100_000
    [o] = run_inputs([("dicom", data)], timeout_s=60)
    assert (o.status, o.kind) == ("refused", "ImageTooLargeError"), o.detail


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm"])
def test_slice_larger_than_its_file_is_refused_from_the_header(tmp_path, name):
    # native: 65535^2 x 2 bytes = 8 GiB (> limit); RLE: decoded size over the limit too
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.Rows = ds.Columns = 65535
    (tmp_path / "big.dcm").write_bytes(_save(ds))
    with pytest.raises(ImageTooLargeError, match=r"big.dcm: declared image 65535x65535x1 .*GiB"):
        load_volume(tmp_path / "big.dcm")
    ds.Rows = ds.Columns = 2048  # 8 MiB native: under the limit, larger than the file
    (tmp_path / "big.dcm").write_bytes(_save(ds))
    if name == "CT_small.dcm":
        with pytest.raises(ImageTooLargeError, match="needs 8388608 bytes .* whole file is"):
            load_volume(tmp_path / "big.dcm")


@pytest.mark.parametrize("magic", [b"MZ\x90\x00", b"\x7fELF", b"\xcf\xfa\xed\xfe", b"#!/bin/sh"])
def test_executable_preamble_is_refused(tmp_path, magic):
    # PS3.10 §7.5: a preamble making the file a valid executable (dual personality)
    path = tmp_path / "dual.dcm"
    path.write_bytes(rd.ct_image(preamble=(magic + bytes(128))[:128]))
    with pytest.raises(DualPersonalityError, match=r"dual.dcm: .*preamble.*PS3.10 §7.5"):
        load_volume(path)
    assert "dual-personality" in scan_files(tmp_path).skipped[0][1]


def test_tiff_preamble_and_zero_preamble_are_accepted(tmp_path):
    for name, pre in (("tiff.dcm", b"II*\x00\x08\x00\x00\x00"), ("zero.dcm", b"")):
        (tmp_path / name).write_bytes(rd.ct_image(preamble=(pre + bytes(128))[:128]))
        assert load_volume(tmp_path / name).array.shape == (1, 4, 4)


def test_pydicom_preamble_example_with_mz_is_refused(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.preamble = b"MZ" + bytes(126)
    (tmp_path / "ct.dcm").write_bytes(_save(ds))
    with pytest.raises(DualPersonalityError):
        load_volume(tmp_path / "ct.dcm")


def _dicomdir_with(tmp_path: Path, file_id: list[str] | str) -> Path:
    ds = pydicom.dcmread(get_testdata_file("DICOMDIR"))
    records = [r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that '..' is not a valid CS value
        records[0].ReferencedFileID = file_id
    path = tmp_path / "DICOMDIR"
    path.write_bytes(_save(ds))
    return path


def test_dicomdir_files_inside_the_folder(tmp_path):
    path = _dicomdir_with(tmp_path, ["PT000000", "ST000000", "SE000000", "IM000000"])
    files = dicomdir_files(path)
    assert files[0] == tmp_path / "PT000000" / "ST000000" / "SE000000" / "IM000000"
    assert len(files) == 31  # pydicom's DICOMDIR references 31 images
    assert all(tmp_path in f.parents for f in files)


@pytest.mark.parametrize("file_id", [["..", "..", "ETC", "PASSWD"], ["IMG", "..", ".."],
                                     "/etc/passwd", ["C:", "WINDOWS"], ["A/../../B"]])
def test_dicomdir_dotdot_and_absolute_file_ids_are_refused(tmp_path, file_id):
    path = _dicomdir_with(tmp_path, file_id)
    with pytest.raises(DicomdirError, match=r"DICOMDIR: record 3: ReferencedFileID component"):
        dicomdir_files(path)


def test_dicomdir_symlink_out_of_the_folder_is_refused(tmp_path):
    root = tmp_path / "disc"
    root.mkdir()
    (root / "LINK").symlink_to(tmp_path)
    path = _dicomdir_with(root, ["LINK", "IM0"])
    with pytest.raises(DicomdirError, match="outside"):
        dicomdir_files(path)
