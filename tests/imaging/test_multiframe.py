"""Enhanced / multi-frame CT and MR: functional groups → the same volume as single-frame slices."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from scrubin.imaging.dicom_group import frame_stacks
from scrubin.imaging.dicom_scan import read_header
from scrubin.imaging.errors import GeometryError
from scrubin.imaging.load import list_series, load_volume

sys.path.insert(0, str(Path(__file__).parent))
import dicom_factory as fac


def _enhanced(files: list[Path], out: Path) -> Path:
    legacy = [pydicom.dcmread(f) for f in files]
    image = LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy, series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1)
    image.save_as(out)
    return out


@pytest.mark.parametrize("oblique", [False, True])
def test_legacy_converted_enhanced_ct_matches_single_frame(tmp_path, oblique):
    iop = fac.oblique_iop(15, 10) if oblique else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    files = fac.write_series(tmp_path / "sf", rows=7, cols=9, slices=6, iop=iop,
                             pixel_spacing=(1.8, 1.6), step=2.4)
    single = load_volume(tmp_path / "sf")
    mf_path = _enhanced(files, tmp_path / "enhanced.dcm")
    multi = load_volume(mf_path)
    np.testing.assert_array_equal(multi.array, single.array)
    np.testing.assert_allclose(multi.affine, single.affine, atol=1e-6)
    assert multi.array.dtype == np.int16
    assert multi.source_files == [mf_path]
    # frame k of the volume is the frame whose position is slice k's position
    ds = pydicom.dcmread(mf_path, stop_before_pixels=True)
    for k, f in enumerate(multi.meta["frame_numbers"]):
        ipp = ds.PerFrameFunctionalGroupsSequence[f - 1].PlanePositionSequence[0]
        np.testing.assert_allclose(multi.index_to_lps([0, 0, k]),
                                   [float(v) for v in ipp.ImagePositionPatient], atol=1e-6)


def test_enhanced_file_in_a_folder_is_listed(tmp_path):
    files = fac.write_series(tmp_path / "sf", slices=4)
    (tmp_path / "mf").mkdir()
    _enhanced(files, tmp_path / "mf" / "x.dcm")
    infos = list_series(tmp_path / "mf")
    assert len(infos) == 1 and infos[0].kind == "multiframe"
    assert infos[0].size == (8, 6, 4) and infos[0].spacing == pytest.approx((0.6, 0.8, 2.0))


def test_compressed_enhanced_ct(tmp_path):
    files = fac.write_series(tmp_path / "sf", rows=40, cols=48, slices=3, pixel_representation=0)
    path = _enhanced(files, tmp_path / "mf.dcm")
    ds = pydicom.dcmread(path)
    ds.compress(pydicom.uid.RLELossless)
    ds.save_as(path)
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, fac.expected_array(40, 48, 3))


def test_two_orientations_in_one_file_are_two_stacks(tmp_path):
    a = fac.write_series(tmp_path / "a", slices=3, series_uid="1.2.3.9")
    b = fac.write_series(tmp_path / "b", slices=2, series_uid="1.2.3.9",
                         iop=(1, 0, 0, 0, 0, -1), origin=(0, 50, 0))
    path = _enhanced(a + b, tmp_path / "mf.dcm")
    stacks = frame_stacks(read_header(path))
    assert [len(s.frames) for s in stacks] == [3, 2]
    keys = [s.key for s in list_series(path)]
    assert keys[1] == keys[0] + "#2"
    vol = load_volume(path, keys[1])
    assert vol.array.shape == (2, 6, 8)
    np.testing.assert_allclose(vol.direction[:, 1], [0, 0, -1], atol=1e-9)


def test_pydicom_enhanced_ct_supplemental():
    path = get_testdata_file("eCT_Supplemental.dcm")
    assert path is not None, "pydicom-data is a test dependency (make install)"
    vol = load_volume(path)
    ds = pydicom.dcmread(path)
    assert vol.array.shape == (2, 512, 512)
    # frames sorted by position along the normal row_cos x col_cos
    iop = np.array([float(v) for v in ds.SharedFunctionalGroupsSequence[0]
                    .PlaneOrientationSequence[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    d = [np.dot([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient], normal)
         for f in ds.PerFrameFunctionalGroupsSequence]
    order = np.argsort(d)
    raw = ds.pixel_array[order].astype(np.float64)
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    hu = raw * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    np.testing.assert_array_equal(vol.array, hu)
    np.testing.assert_allclose(vol.affine[:3, 2], 10.0 * normal, atol=1e-9)


def test_enhanced_mr_without_functional_groups_is_refused():
    path = get_testdata_file("emri_small.dcm")
    assert path is not None, "pydicom-data is a test dependency (make install)"
    with pytest.raises(GeometryError, match="emri_small.dcm.*without per-frame geometry"):
        load_volume(path)


def test_frames_at_one_position_are_duplicates(tmp_path):
    files = fac.write_series(tmp_path / "a", slices=3)
    again = fac.write_series(tmp_path / "b", slices=1, series_uid="9.9")
    path = _enhanced([*files, *again], tmp_path / "mf.dcm")
    with pytest.raises(GeometryError, match="duplicate slice position.*frame"):
        load_volume(path)
