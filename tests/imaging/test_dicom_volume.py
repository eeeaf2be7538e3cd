"""Slices → Volume: sorting along the normal, orientation checks, HU rescale, compression."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from scrubin.imaging.dicom_geometry import stack_geometry
from scrubin.imaging.dicom_group import scan_folder
from scrubin.imaging.dicom_scan import UnsupportedTransferSyntaxError
from scrubin.imaging.dicom_volume import load_stack
from scrubin.imaging.errors import DicomError, GeometryError
from scrubin.imaging.load import load_volume

sys.path.insert(0, str(Path(__file__).parent))
import dicom_factory as fac


def _expected_affine(iop, ps, origin, step):
    iop = np.asarray(iop, float).reshape(2, 3)
    normal = np.cross(iop[0], iop[1])
    a = np.eye(4)
    a[:3, 0] = iop[0] * ps[1]
    a[:3, 1] = iop[1] * ps[0]
    a[:3, 2] = normal * step
    a[:3, 3] = origin
    return a


def test_sorted_by_position_not_by_name_or_instance_number(tmp_path):
    files = fac.write_series(tmp_path, rows=5, cols=7, slices=6)
    vol = load_volume(tmp_path)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, fac.expected_array(5, 7, 6))
    assert vol.source_files == files
    np.testing.assert_allclose(
        vol.affine, _expected_affine((1, 0, 0, 0, 1, 0), (0.8, 0.6), (-10, -20, 30), 2.0),
        atol=1e-9,
    )


def test_oblique_non_square_affine_maps_every_slice_to_its_ipp(tmp_path):
    iop = fac.oblique_iop(15, 10)
    fac.write_series(tmp_path, rows=6, cols=9, slices=7, iop=iop, pixel_spacing=(1.9, 1.3),
                     origin=(-100, 20, 5), step=2.5)
    vol = load_volume(tmp_path)
    np.testing.assert_allclose(vol.affine, _expected_affine(iop, (1.9, 1.3), (-100, 20, 5), 2.5),
                               atol=1e-8)
    for k, f in enumerate(vol.source_files):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        np.testing.assert_allclose(vol.index_to_lps([0, 0, k]),
                                   [float(v) for v in ds.ImagePositionPatient], atol=1e-8)
        # the last pixel of the first row lies along the row cosine by (cols-1) * col spacing
        np.testing.assert_allclose(
            vol.index_to_lps([8, 0, k]) - vol.index_to_lps([0, 0, k]),
            np.asarray(iop[:3]) * 1.3 * 8, atol=1e-8)
    np.testing.assert_array_equal(vol.array, fac.expected_array(6, 9, 7))


def test_slices_stored_against_the_normal_are_reordered(tmp_path):
    # positions decreasing along the normal: slice 0 must be the lowest along the normal
    fac.write_series(tmp_path, slices=5, origin=(0, 0, 100), step=-3.0)
    vol = load_volume(tmp_path)
    np.testing.assert_allclose(vol.affine[:3, 2], [0, 0, 3.0])
    np.testing.assert_allclose(vol.origin, [0, 0, 100 - 12.0])
    np.testing.assert_array_equal(vol.array, fac.expected_array(6, 8, 5)[::-1])


def _positions(z):
    return np.array([[0.0, 0.0, v] for v in z])


def test_missing_slice_names_series_and_positions(tmp_path):
    fac.write_series(tmp_path, positions=_positions([0, 2, 4, 8, 10]), series_uid="1.2.3.4")
    with pytest.raises(GeometryError, match=r"1\.2\.3\.4.*missing.*4\.000\).*8\.000\)"):
        load_volume(tmp_path)


def test_non_uniform_spacing_is_refused(tmp_path):
    fac.write_series(tmp_path, positions=_positions([0, 2, 4, 6.5, 8.5, 10.5]))
    with pytest.raises(GeometryError, match="non-uniform slice spacing"):
        load_volume(tmp_path)


def test_duplicate_position_is_refused(tmp_path):
    fac.write_series(tmp_path, positions=_positions([0, 2, 2, 4]))
    with pytest.raises(GeometryError, match="duplicate slice position"):
        load_volume(tmp_path)


def test_positions_off_a_line_are_refused(tmp_path):
    pos = _positions([0, 2, 4, 6])
    pos[2, 0] += 1.0
    fac.write_series(tmp_path, positions=pos)
    with pytest.raises(GeometryError, match="not on a line"):
        load_volume(tmp_path)


def test_gantry_tilt_gives_exact_sheared_affine(tmp_path):
    # CT gantry tilt of 12 deg: each slice shifts along the column direction (y).
    tilt = np.radians(12.0)
    z = np.arange(5) * 2.0
    pos = np.stack([np.zeros(5), z * np.tan(tilt), z], axis=1)
    fac.write_series(tmp_path, positions=pos)
    vol = load_volume(tmp_path)
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(12.0, abs=1e-6)
    for k in range(5):
        np.testing.assert_allclose(vol.index_to_lps([0, 0, k]), pos[k], atol=1e-8)


def test_stack_geometry_rejects_bad_orientation():
    with pytest.raises(GeometryError, match="ImageOrientationPatient.*expected orthogonal"):
        stack_geometry("s", np.array([1, 0, 0, 1, 0, 0.0]), np.array([1, 1.0]),
                       np.zeros((2, 3)), ["a", "b"])


def test_orientation_cosines_too_long_are_refused_naming_file_and_values(tmp_path):
    # |row| = |col| = 1.08: used as written, every voxel would be 8 % too large
    files = fac.write_series(tmp_path, iop=(1.08, 0, 0, 0, 1.08, 0), shuffle_names=False)
    with pytest.raises(GeometryError) as info:
        load_volume(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and files[0].name in msg
    assert "[1.08, 0, 0, 0, 1.08, 0]" in msg and "length 1.08" in msg and "unit" in msg


def test_non_orthogonal_orientation_is_refused(tmp_path):
    # column cosine 3 deg away from perpendicular: the affine would be sheared
    c = np.radians(3.0)
    files = fac.write_series(tmp_path, iop=(1, 0, 0, np.sin(c), np.cos(c), 0),
                             shuffle_names=False)
    with pytest.raises(GeometryError, match=r"at 87 deg, expected orthogonal") as info:
        load_volume(tmp_path)
    assert files[0].name in str(info.value)


def test_rounding_errors_in_orientation_are_normalised(tmp_path):
    # cosines written to 4 decimals of a 10 deg rotation about z: length and angle are off by
    # ~1e-4; the affine must still have unit, orthogonal directions times the pixel spacing
    a = np.radians(10.0)
    iop = tuple(round(v, 4) for v in (np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0))
    iop = (iop[0] * 1.0004, *iop[1:3], *iop[3:])
    assert abs(np.linalg.norm(iop[:3]) - 1) > 2e-4
    fac.write_series(tmp_path, iop=iop, pixel_spacing=(0.8, 0.6))
    vol = load_volume(tmp_path)
    d = vol.affine[:3, :3]
    np.testing.assert_allclose(np.linalg.norm(d[:, :2], axis=0), [0.6, 0.8], rtol=1e-12)
    assert abs(d[:, 0] @ d[:, 1]) < 1e-12
    # the corrected directions stay within the rounding of the written values
    np.testing.assert_allclose(d[:, 0] / 0.6, [np.cos(a), np.sin(a), 0], atol=1e-4)
    np.testing.assert_allclose(vol.spacing[2], 2.0, rtol=1e-3)


def test_single_slice_uses_slice_thickness(tmp_path):
    fac.write_series(tmp_path, slices=1, step=3.0)
    vol = load_volume(tmp_path)
    assert vol.array.shape == (1, 6, 8)
    np.testing.assert_allclose(vol.spacing, [0.6, 0.8, 3.0])


def test_rescale_slope_gives_float32_hu(tmp_path):
    fac.write_series(tmp_path, slope=0.5, intercept=-1000.0,
                     hu_of=lambda i, j, k: (i + 7 * j + 31 * k) * 0.5 - 500)
    vol = load_volume(tmp_path)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(
        vol.array, fac.expected_array(6, 8, 5, lambda i, j, k: (i + 7 * j + 31 * k) * 0.5 - 500))


def test_unsigned_pixels_with_intercept(tmp_path):
    fac.write_series(tmp_path, pixel_representation=0, intercept=-1024.0)
    vol = load_volume(tmp_path)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, fac.expected_array(6, 8, 5))


def test_int16_overflow_falls_back_to_float32(tmp_path):
    # stored 32000 + intercept 1000 = 33000 HU does not fit int16
    fac.write_series(tmp_path, intercept=1000.0, hu_of=lambda i, j, k: 32000 + 1000 + i + 0 * j * k)
    vol = load_volume(tmp_path)
    assert vol.array.dtype == np.float32
    assert vol.array.max() == 33007.0


def test_bits_stored_12_masks_unused_high_bits(tmp_path):
    def garbage(ds, k):
        arr = np.frombuffer(ds.PixelData, dtype="<u2").copy()
        arr |= 0xF000  # junk in the 4 unused high bits (PS3.5 8.1.1)
        ds.PixelData = arr.tobytes()

    fac.write_series(tmp_path, pixel_representation=0, bits_stored=12, intercept=-1024.0,
                     extra=garbage)
    vol = load_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, fac.expected_array(6, 8, 5))


def test_implicit_vr_little_endian(tmp_path):
    fac.write_series(tmp_path, transfer_syntax=fac.ImplicitVRLittleEndian)
    vol = load_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, fac.expected_array(6, 8, 5))


def test_missing_geometry_is_refused(tmp_path):
    def strip(ds, k):
        del ds.ImagePositionPatient

    fac.write_series(tmp_path, extra=strip)
    with pytest.raises(GeometryError, match="ImagePositionPatient"):
        load_volume(tmp_path)


def test_truncated_pixel_data_names_the_file(tmp_path):
    files = fac.write_series(tmp_path)
    data = files[2].read_bytes()
    files[2].write_bytes(data[:-20])
    with pytest.raises(DicomError, match=f"{files[2].name}.*truncated"):
        load_volume(tmp_path)


def test_meta_carries_study_facts_and_header_datasets(tmp_path):
    fac.write_series(tmp_path)
    vol = load_volume(tmp_path)
    assert vol.meta["StudyInstanceUID"] == "1.2.826.0.1.3680043.8.498.1"
    assert vol.meta["PatientID"] == "FACTORY-1"
    dss = vol.meta["datasets"]
    assert len(dss) == 5 and "PixelData" not in dss[0]
    assert [str(d.SOPInstanceUID) for d in dss] == [
        str(pydicom.dcmread(f).SOPInstanceUID) for f in vol.source_files]
    assert vol.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.2"


def test_progress_bar_option(tmp_path, capsys):
    fac.write_series(tmp_path, slices=12)
    vol = load_volume(tmp_path, progress=True)
    assert vol.array.shape[0] == 12
    assert "slice" in capsys.readouterr().err


# ------------------------------------------------------------------ compressed transfer syntaxes
def _compress_all(src: list[Path], dst: Path, tool: str, *opts: str) -> None:
    # dcmtk is installed by `make install`; its absence is a set-up error, not a skip.
    assert shutil.which(tool), f"dcmtk tool {tool} is not installed (make install)"
    for f in src:
        fac.compress_dcmtk(f, dst / f.name, tool, *opts)


@pytest.mark.parametrize(
    ("tool", "opts", "uid"),
    [
        ("dcmcjpeg", (), JPEGLosslessSV1),  # JPEG lossless, first-order prediction (process 14)
        ("dcmcjpeg", ("+el",), pydicom.uid.JPEGLossless),  # JPEG lossless, selection value 6
        ("dcmcjpls", (), JPEGLSLossless),
        ("dcmcrle", (), RLELossless),
    ],
)
def test_lossless_compressed_series_loads_exactly(tmp_path, tool, opts, uid):
    src = fac.write_series(tmp_path / "raw", slices=4)
    _compress_all(src, tmp_path / "c", tool, *opts)
    assert pydicom.dcmread(next((tmp_path / "c").iterdir())).file_meta.TransferSyntaxUID == uid
    vol = load_volume(tmp_path / "c")
    np.testing.assert_array_equal(vol.array, fac.expected_array(6, 8, 4))


def test_jpeg2000_lossless_via_pydicom_encoder(tmp_path):
    # openjpeg's default 6 resolution levels need at least 32 x 32 pixels
    src = fac.write_series(tmp_path / "raw", rows=40, cols=48, slices=3, pixel_representation=0)
    for f in src:
        ds = pydicom.dcmread(f)
        ds.compress(JPEG2000Lossless)
        ds.save_as(tmp_path / f.name)
    for f in src:
        f.unlink()
    vol = load_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, fac.expected_array(40, 48, 3))


def test_lossy_jpeg_extended_12bit_and_baseline_8bit(tmp_path):
    hu12 = lambda i, j, k: 100 * i + 50 * j + 20 * k  # noqa: E731  smooth, 12-bit range
    src = fac.write_series(tmp_path / "r12", rows=16, cols=16, slices=3, pixel_representation=0,
                           bits_stored=12, intercept=0.0, hu_of=hu12)
    _compress_all(src, tmp_path / "c12", "dcmcjpeg", "+ee", "+q", "100")
    assert pydicom.dcmread(next((tmp_path / "c12").iterdir())).file_meta.TransferSyntaxUID == \
        JPEGExtended12Bit
    vol = load_volume(tmp_path / "c12")
    assert np.abs(vol.array - fac.expected_array(16, 16, 3, hu12)).max() <= 8
    hu8 = lambda i, j, k: 8 * i + 4 * j + 10 * k  # noqa: E731
    src = fac.write_series(tmp_path / "r8", rows=16, cols=16, slices=3, pixel_representation=0,
                           bits_allocated=8, intercept=0.0, hu_of=hu8)
    _compress_all(src, tmp_path / "c8", "dcmcjpeg", "+eb", "+q", "100")
    assert pydicom.dcmread(next((tmp_path / "c8").iterdir())).file_meta.TransferSyntaxUID == \
        JPEGBaseline8Bit
    vol = load_volume(tmp_path / "c8")
    assert np.abs(vol.array - fac.expected_array(16, 16, 3, hu8)).max() <= 4


def test_jpeg_ls_near_lossless_within_its_max_deviation(tmp_path):
    src = fac.write_series(tmp_path / "raw", slices=3, pixel_representation=0)
    _compress_all(src, tmp_path / "c", "dcmcjpls", "+en", "+md", "2")
    assert pydicom.dcmread(next((tmp_path / "c").iterdir())).file_meta.TransferSyntaxUID == \
        pydicom.uid.JPEGLSNearLossless
    vol = load_volume(tmp_path / "c")
    assert np.abs(vol.array - fac.expected_array(6, 8, 3)).max() <= 2


def test_unsupported_transfer_syntax_is_one_clear_line(tmp_path):
    files = fac.write_series(tmp_path, slices=3)
    fac.set_transfer_syntax_uid(files[1], "1.2.840.10008.1.2.4.100")  # MPEG2 MP@ML
    with pytest.raises(UnsupportedTransferSyntaxError, match=f"{files[1].name}.*MPEG2"):
        load_volume(tmp_path)


def test_load_stack_directly(tmp_path):
    fac.write_series(tmp_path, slices=3)
    stack = scan_folder(tmp_path).stacks[0]
    vol = load_stack(stack)
    np.testing.assert_array_equal(vol.array, fac.expected_array(6, 8, 3))


@pytest.mark.parametrize(
    ("tool", "opts"),
    [("dcmcjpeg", ()), ("dcmcjpls", ()), ("dcmcrle", ()), ("pydicom-j2k", ())],
)
def test_compressed_phantom_slices_equal_the_originals(tmp_path, small_phantom, tool, opts):
    # real, noisy CT slices: four consecutive slices of the small phantom
    files = load_volume(small_phantom).source_files[40:44]
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in files:
        (raw / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "c"
    if tool == "pydicom-j2k":
        out.mkdir()
        for f in files:
            ds = pydicom.dcmread(f)
            ds.compress(JPEG2000Lossless)
            ds.save_as(out / f.name)
    else:
        _compress_all(files, out, tool, *opts)
    ref, got = load_volume(raw), load_volume(out)
    assert pydicom.dcmread(next(out.iterdir())).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(got.array, ref.array)
    np.testing.assert_array_equal(got.affine, ref.affine)


def test_int16_underflow_falls_back_to_float32(tmp_path):
    # stored -32000 + intercept -1024 = -33024 HU does not fit int16 either
    fac.write_series(tmp_path, intercept=-1024.0, hu_of=lambda i, j, k: -33024 + i + 0 * j * k)
    vol = load_volume(tmp_path)
    assert vol.array.dtype == np.float32 and vol.array.min() == -33024.0
