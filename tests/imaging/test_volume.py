"""Volume geometry: the affine convention (i = column, j = row, k = slice → LPS mm)."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.imaging.errors import ImagingError
from scrubin.imaging.volume import LPS_TO_RAS, Volume, affine_from_dicom


def _oblique_affine() -> np.ndarray:
    # Double-oblique orientation with non-square pixels: any swap of rows/columns shows.
    a, b = np.deg2rad(15.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = rz @ rx
    row_cos, col_cos = r[:, 0], r[:, 1]
    normal = np.cross(row_cos, col_cos)
    return affine_from_dicom(
        np.concatenate([row_cos, col_cos]), [1.9, 1.7], [-100.0, -120.0, 30.0], 2.5 * normal
    )


def test_affine_from_dicom_columns_follow_ps3_3():
    # PixelSpacing = [row spacing, column spacing]: i (column index) moves along the row
    # cosine by the column spacing.
    aff = affine_from_dicom([1, 0, 0, 0, 1, 0], [0.7, 0.5], [10, 20, 30], [0, 0, 2.0])
    vol = Volume(np.zeros((3, 4, 5), np.int16), aff)
    assert np.allclose(vol.index_to_lps([1, 0, 0]), [10.5, 20, 30])
    assert np.allclose(vol.index_to_lps([0, 1, 0]), [10, 20.7, 30])
    assert np.allclose(vol.index_to_lps([0, 0, 1]), [10, 20, 32])
    assert np.allclose(vol.spacing, [0.5, 0.7, 2.0])
    assert vol.shape_ijk == (5, 4, 3)


def test_oblique_roundtrip_and_bounds():
    vol = Volume(np.zeros((6, 7, 8), np.float32), _oblique_affine())
    ijk = np.array([[0.25, 3.5, 5.0], [7, 6, 5]])
    assert np.allclose(vol.lps_to_index(vol.index_to_lps(ijk)), ijk)
    assert np.allclose(vol.spacing, [1.7, 1.9, 2.5])
    assert np.allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-12)
    b = vol.bounds_lps()
    assert np.all(b[0] <= b[1])
    assert np.allclose(vol.origin, [-100, -120, 30])


def test_lps_ras_flip_is_involution():
    assert np.allclose(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))
    assert np.allclose(LPS_TO_RAS @ [10, 20, 30, 1], [-10, -20, 30, 1])


@pytest.mark.parametrize(
    "array, affine, match",
    [
        (np.zeros((4, 4)), np.eye(4), "3-D"),
        (np.zeros((2, 2, 2)), np.eye(3), "4x4"),
        (np.zeros((2, 2, 2)), np.full((4, 4), np.nan), "finite"),
        (np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
    ],
)
def test_volume_rejects_bad_geometry(array, affine, match):
    with pytest.raises(ImagingError, match=match):
        Volume(array, affine)
