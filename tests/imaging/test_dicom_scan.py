"""Finding DICOM files, reading headers (fast reader == pydicom), grouping into stacks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from scrubin.imaging.dicom_group import scan_folder
from scrubin.imaging.dicom_header import FastHeaderUnsupportedError, read_fast_header
from scrubin.imaging.dicom_scan import (
    CorruptDicomError,
    NotAnImageError,
    _pydicom_header,
    find_files,
    read_header,
)
from scrubin.imaging.errors import NoDicomError

sys.path.insert(0, str(Path(__file__).parent))
import dicom_factory as fac


def _with_sequences(ds: Dataset, k: int) -> None:
    """Nested sequences (one of undefined length when written implicitly) and private tags."""
    item = Dataset()
    item.CodeValue = "T-A0100"
    item.CodeMeaning = "Brain"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3"
    item.ReferencedImageSequence = Sequence([inner])
    ds.AnatomicRegionSequence = Sequence([item])
    ds.add_new(0x00091010, "LO", "private creator value")
    ds.add_new(0x00091011, "OB", b"\x01\x02" * 700)


@pytest.mark.parametrize("syntax", [fac.ExplicitVRLittleEndian, fac.ImplicitVRLittleEndian])
def test_fast_header_matches_pydicom(tmp_path, syntax):
    files = fac.write_series(tmp_path, transfer_syntax=syntax, slices=2,
                             iop=fac.oblique_iop(), extra=_with_sequences)
    for f in files:
        fast = read_header(f)
        ds, ts, tag, offset, length = _pydicom_header(f)
        assert fast._dataset is None  # the fast path was used
        assert (fast.transfer_syntax, fast.pixel_offset, fast.pixel_length) == (ts, offset, length)
        assert fast.series_uid == ds.SeriesInstanceUID
        np.testing.assert_array_equal(fast.ipp, [float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_array_equal(fast.iop, [float(v) for v in ds.ImageOrientationPatient])
        np.testing.assert_array_equal(fast.pixel_spacing, [float(v) for v in ds.PixelSpacing])
        assert (fast.rows, fast.cols, fast.bits_allocated, fast.signed) == (
            ds.Rows, ds.Columns, ds.BitsAllocated, bool(ds.PixelRepresentation))
        assert (fast.slope, fast.intercept) == (float(ds.RescaleSlope),
                                                float(ds.RescaleIntercept))
        assert fast.image_type == tuple(ds.ImageType)
        # the recorded offset really is the start of the pixel values
        raw = np.fromfile(f, dtype="<i2", count=6 * 8, offset=fast.pixel_offset)
        np.testing.assert_array_equal(raw, np.frombuffer(pydicom.dcmread(f).PixelData, "<i2"))


def test_header_beyond_first_chunk(tmp_path):
    def big_private(ds, k):
        ds.add_new(0x00291010, "OB", b"\x00" * 70000)  # like a Siemens CSA header

    f = fac.write_series(tmp_path, slices=1, extra=big_private)[0]
    h = read_header(f)
    assert h._dataset is None and h.pixel_offset == f.stat().st_size - 6 * 8 * 2


def test_fast_reader_declines_files_without_preamble(tmp_path):
    path = tmp_path / "raw.dcm"
    path.write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100")
    with open(path, "rb") as fp, pytest.raises(FastHeaderUnsupportedError):
        read_fast_header(fp, path.stat().st_size)


def test_corrupt_and_non_dicom_files(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f" + b"1.2" * 5)
    with pytest.raises(CorruptDicomError, match="junk.dcm"):
        read_header(junk)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CorruptDicomError, match="notes.txt: not a DICOM file"):
        read_header(text)
    f = fac.write_series(tmp_path / "s", slices=1)[0]
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(f.read_bytes()[:300])  # ends inside the header
    with pytest.raises(CorruptDicomError, match="cut.dcm"):
        read_header(cut)


def test_dicom_without_pixel_data_is_not_an_image(tmp_path):
    f = fac.write_series(tmp_path, slices=1)[0]
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.save_as(tmp_path / "sr.dcm")
    with pytest.raises(NotAnImageError, match="sr.dcm.*no pixel data.*Basic Text SR"):
        read_header(tmp_path / "sr.dcm")


def test_scan_skips_strays_and_recurses(tmp_path):
    fac.write_series(tmp_path / "a" / "b", slices=3)
    (tmp_path / "readme.txt").write_text("not dicom")
    (tmp_path / "a" / "garbage.bin").write_bytes(np.random.default_rng(1).bytes(1000))
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "DICOMDIR").write_bytes(b"")
    result = scan_folder(tmp_path)
    assert len(result.stacks) == 1 and len(result.stacks[0].headers) == 3
    assert sorted(p.name for p, _ in result.skipped) == ["garbage.bin", "readme.txt"]
    assert all(".hidden" != p.name for p in find_files(tmp_path))


def test_localizer_and_scout_are_excluded(tmp_path):
    fac.write_series(tmp_path, slices=4, series_uid="1.2.3")
    fac.write_series(tmp_path, slices=1, series_uid="1.2.3", prefix="loc",
                     image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), origin=(0, 0, 500))
    fac.write_series(tmp_path, slices=1, series_uid="1.2.3", prefix="scout",
                     iop=(1, 0, 0, 0, 0, -1), image_type=("ORIGINAL", "PRIMARY", "AXIAL"))
    result = scan_folder(tmp_path)
    assert [len(s.headers) for s in result.stacks] == [4]
    reasons = sorted(why.split()[0] for _, why in result.skipped)
    assert reasons == ["localizer", "scout:"]


def test_one_uid_with_two_stacks_gets_suffixed_keys(tmp_path):
    fac.write_series(tmp_path, slices=4, series_uid="1.2.3")
    fac.write_series(tmp_path, slices=3, series_uid="1.2.3", prefix="cor",
                     iop=(1, 0, 0, 0, 0, -1))
    keys = sorted(s.key for s in scan_folder(tmp_path).stacks)
    assert keys == ["1.2.3", "1.2.3#2"]


def test_folder_without_dicom_and_missing_folder(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(NoDicomError, match="no DICOM image found.*1 file"):
        scan_folder(tmp_path)
    with pytest.raises(NoDicomError, match="no such folder"):
        scan_folder(tmp_path / "nope")


def test_mutated_files_load_or_raise_imaging_errors_only(tmp_path):
    # pydicom's fuzzing rule: a damaged file may only raise the documented errors
    from scrubin.imaging.errors import ImagingError
    from scrubin.imaging.load import load_volume

    sources = [
        fac.write_series(tmp_path / ts, slices=1, transfer_syntax=ts,
                         extra=_with_sequences)[0].read_bytes()
        for ts in (fac.ExplicitVRLittleEndian, fac.ImplicitVRLittleEndian)
    ]
    rng = np.random.default_rng(20260101)
    target = tmp_path / "mutant.dcm"
    outcomes = {"loaded": 0, "refused": 0}
    for n in range(400):
        data = bytearray(sources[n % 2])
        if n % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]  # truncated anywhere
        else:
            limit = 1800 if n % 3 == 1 else len(data)  # flips in the header / anywhere
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(0, min(limit, len(data))))] = int(rng.integers(0, 256))
        target.write_bytes(bytes(data))
        try:
            load_volume(target)
            outcomes["loaded"] += 1
        except ImagingError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0
