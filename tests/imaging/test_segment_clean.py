"""Cleaning steps of segment(): cavity filling, rim removal, bridge cutting (exact cases)."""

from __future__ import annotations

import numpy as np

from scrubin.imaging import regions as rg
from scrubin.imaging.segment_clean import exclude_rims, fill_cavities, separate_thin_bridges
from scrubin.imaging.volume import Volume


def _tube(axis: int) -> tuple[np.ndarray, np.ndarray]:
    m = np.zeros((10, 10, 10), bool)
    m[2:8, 2:8, 2:8] = True
    idx = [slice(4, 6)] * 3
    idx[axis] = slice(None)
    m[tuple(idx)] = False  # a tunnel through the block along `axis`, open at both ends
    full = np.zeros_like(m)
    full[2:8, 2:8, 2:8] = True  # the block with its tunnel filled
    return m, full


def test_fill_cavities_closes_tunnels_along_the_si_axis():
    for axis in (0, 1, 2):
        m, expected = _tube(axis)
        out = fill_cavities(rg.mask_runs(m), 26, si_axis=axis)
        np.testing.assert_array_equal(out, expected)
        # across another axis the tunnel stays open (it reaches the border in those slices)
        other = (axis + 1) % 3
        np.testing.assert_array_equal(fill_cavities(rg.mask_runs(m), 26, si_axis=other), m)


def test_exclude_rims_drops_voxels_next_to_dense_ones():
    a = np.zeros((3, 3, 12), np.int16)
    a[:, :, 0:6] = 300  # contrast band
    a[:, :, 6:9] = 1000  # bone
    vol = Volume(a, np.eye(4), modality="CT")
    band = rg.threshold_runs(a, 150, 500)
    kept = rg.paint_runs(exclude_rims(vol, band, 500.0, 1.0))
    expected = np.zeros(a.shape, bool)
    expected[:, :, 0:5] = True  # the voxel touching the bone (i = 5) is removed
    np.testing.assert_array_equal(kept, expected)


def test_separate_thin_bridges_cuts_a_border_reaching_slab_only():
    K, J, NI = 30, 36, 30
    k, j, i = np.ogrid[:K, :J, :NI]
    ball = (k - 15) ** 2 + (j - 15) ** 2 + (i - 15) ** 2 <= 10**2
    slab = np.zeros((K, J, NI), bool)
    slab[:, 26:28, :] = True  # touches the ball at j = 25/26 and every border
    fin = np.zeros_like(ball)
    fin[15, 15, 25:29] = True  # one voxel thick, not reaching the border
    runs = rg.mask_runs(ball | slab | fin)
    out = rg.paint_runs(separate_thin_bridges(runs, (2, 2, 2), 26))
    assert out[ball & (j < 23)].all() and out[fin].all()
    assert not out[:, 26:28, :5].any() and not out[:, 26:28, 25:].any()
    # nothing to cut: the object comes back unchanged
    np.testing.assert_array_equal(
        rg.paint_runs(separate_thin_bridges(rg.mask_runs(ball), (2, 2, 2), 26)), ball)
