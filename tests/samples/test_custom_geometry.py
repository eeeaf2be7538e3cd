"""Custom phantom geometry: any spacing and a double-oblique tilt, written as real DICOM."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from scrubin.samples.phantom import SampleError, ensure_sample, load_truth
from scrubin.samples.presets import parse_geometry


def test_parse_geometry_presets_and_custom():
    rot, (row, col), sl, shape = parse_geometry("custom:2.2,1.4,3.0:12,-8")
    assert (row, col, sl, shape) == (2.2, 1.4, 3.0, None)
    assert np.allclose(rot.T @ rot, np.eye(3)) and np.linalg.det(rot) > 0
    assert not np.allclose(rot, np.eye(3))
    assert parse_geometry("full")[3] == (512, 512, 300)


@pytest.mark.parametrize(
    "name, match",
    [
        ("bogus", "unknown sample"),
        ("custom:1,2", "expected custom:"),
        ("custom:a,b,c", "numbers"),
        ("custom:0.01,1,1", "0.2..10 mm"),
        ("custom:1,1,1:90,0", "-45..45"),
        ("custom:1,1,1:1,2:3", "expected custom:"),
    ],
)
def test_bad_custom_names_are_refused(name, match):
    with pytest.raises(ValueError, match=match):
        parse_geometry(name)
    with pytest.raises(SampleError, match=match):
        ensure_sample(name)


def test_custom_series_has_the_requested_geometry(tmp_path):
    folder = ensure_sample("custom:3.1,2.7,4.0:20,-5", cache_dir=tmp_path)
    truth = load_truth(folder)
    assert truth["pixel_spacing"] == [3.1, 2.7] and truth["slice_spacing"] == 4.0
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == truth["shape_ijk"][2]
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert [float(v) for v in ds.PixelSpacing] == [3.1, 2.7]
    assert np.allclose([float(v) for v in ds.ImageOrientationPatient],
                       truth["image_orientation"], atol=1e-6)
    assert abs(float(ds.ImageOrientationPatient[2])) > 0.05  # really oblique
