"""Every locally bundled pydicom / pydicom-data test file either loads or raises ImagingError.

The files are enumerated from the installed package folders only (``get_testdata_files()``
may try to download). The whole corpus (~250 files, largest 7 MB) loads in about a second,
so every file is tried; none is skipped by size.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
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


CORPUS = _corpus()
OUTCOMES: dict[str, str] = {}


def test_corpus_is_present():
    assert len(CORPUS) > 150


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_file_loads_or_raises_imaging_error(path):
    try:
        vol = load_volume(path)
    except ImagingError as exc:
        message = str(exc)
        assert message and "\n" not in message and path.name in message
        OUTCOMES[path.name] = type(exc).__name__
        return
    assert vol.array.ndim == 3 and vol.array.dtype in (np.int16, np.float32)
    assert np.all(np.isfinite(vol.affine))
    OUTCOMES[path.name] = "loaded"


def test_known_files_load_with_the_right_values():
    # little/big endian, implicit VR and compressed copies of one MR slice give one array
    names = ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
             "MR_small_implicit.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
             "MR_small_jpeg_ls_lossless.dcm"]
    arrays = [load_volume(pydicom.data.get_testdata_file(n)).array for n in names]
    ref = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm")).pixel_array
    for a in arrays:
        np.testing.assert_array_equal(a[0], ref)
