"""The locally bundled pydicom / pydicom-data test files: what must load, loads exactly.

The files are enumerated from the installed package folders only (``get_testdata_files()``
may try to download). Which files must load is decided by pydicom, not by our loader: a
single-frame, single-sample image whose header has ImagePositionPatient (3),
ImageOrientationPatient (6) and PixelSpacing (2) is a slice of a 3-D acquisition (PS3.3
C.7.6.2). Such a file must load with pydicom's stored values after the modality LUT and the
affine of PS3.3 C.7.6.2.1.1; every other file must load or raise one-line ImagingError.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from scrubin.imaging.errors import ImagingError
from scrubin.imaging.load import load_volume


def _corpus() -> list[Path]:
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    spec = importlib.util.find_spec("data_store")  # the pydicom-data package
    if spec is not None and spec.origin:
        roots.append(Path(spec.origin).parent / "data")
    return [p for r in roots if r.is_dir() for p in sorted(r.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")]


def _is_3d_slice(path: Path) -> bool:
    """pydicom's reading of the header: a single-frame greyscale slice with full geometry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            geometry = (len([float(v) for v in ds.ImagePositionPatient]) == 3
                        and len([float(v) for v in ds.ImageOrientationPatient]) == 6
                        and len([float(v) for v in ds.PixelSpacing]) == 2)
            return (geometry and int(ds.get("SamplesPerPixel", 1) or 1) == 1
                    and int(ds.get("NumberOfFrames", 1) or 1) == 1)
        except Exception:  # no such attribute, not DICOM, corrupt value
            return False


CORPUS = _corpus()
SLICES = [p for p in CORPUS if _is_3d_slice(p)]
#: Enhanced multi-frame files with per-frame functional groups: name → (frames, rows, cols).
ENHANCED = {"eCT_Supplemental.dcm": (2, 512, 512)}


def test_corpus_is_present():
    assert len(CORPUS) > 150
    # the pydicom / pydicom-data releases pinned here hold 53 such slices (CT, MR, RT dose,
    # compressed and big-endian copies); a smaller count means the criterion broke
    assert len(SLICES) >= 50


@pytest.mark.parametrize("path", SLICES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_slice_with_geometry_loads_with_pydicom_values(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        try:
            stored = ds.pixel_array
        except Exception:  # pydicom cannot decode it (truncated, bad VR): neither may we
            stored = None
    if stored is None:
        with pytest.raises(ImagingError):
            load_volume(path)
        return
    vol = load_volume(path)
    hu = stored * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    assert vol.array.shape == (1, *stored.shape)
    np.testing.assert_allclose(vol.array[0], hu, rtol=1e-6, atol=1e-3)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient]).reshape(2, 3)
    ps = [float(v) for v in ds.PixelSpacing]
    np.testing.assert_allclose(vol.affine[:3, 3], [float(v) for v in ds.ImagePositionPatient],
                               atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 0], iop[0] / np.linalg.norm(iop[0]) * ps[1],
                               atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 1], iop[1] / np.linalg.norm(iop[1]) * ps[0],
                               atol=1e-6)


@pytest.mark.parametrize("name", sorted(ENHANCED))
def test_enhanced_multiframe_loads(name):
    path = next(p for p in CORPUS if p.name == name)
    vol = load_volume(path)
    assert vol.array.shape == ENHANCED[name]
    assert sorted(vol.meta["frame_numbers"]) == [1, 2]  # in slice order along the normal


@pytest.mark.parametrize("path", [p for p in CORPUS if p not in SLICES],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_other_file_loads_or_raises_one_line_imaging_error(path):
    try:
        vol = load_volume(path)
    except ImagingError as exc:
        message = str(exc)
        assert message and "\n" not in message and path.name in message
        return
    assert vol.array.ndim == 3 and vol.array.dtype in (np.int16, np.float32)
    assert np.all(np.isfinite(vol.affine))


def test_known_files_load_with_the_right_values():
    # little/big endian, implicit VR and compressed copies of one MR slice give one array
    names = ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
             "MR_small_implicit.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
             "MR_small_jpeg_ls_lossless.dcm"]
    arrays = [load_volume(pydicom.data.get_testdata_file(n)).array for n in names]
    ref = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm")).pixel_array
    for a in arrays:
        np.testing.assert_array_equal(a[0], ref)
