"""Run extraction and run-based connected components against scipy.ndimage and exact cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from scrubin.imaging import regions as rg
from scrubin.imaging.errors import SegmentationError

_STRUCT = {6: 1, 18: 2, 26: 3}


def _random_masks(n: int = 12, shape: tuple[int, int, int] = (7, 9, 11)) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.random(shape) < rng.uniform(0.15, 0.6) for _ in range(n)]


@pytest.mark.parametrize("conn", [6, 18, 26])
def test_label_matches_scipy_partition(conn):
    for m in _random_masks():
        lab, n = rg.label(m, conn)
        ref, nr = ndi.label(m, ndi.generate_binary_structure(3, _STRUCT[conn]))
        assert n == nr
        assert ((lab > 0) == m).all()
        # same partition: the label pairs are a bijection
        pairs = set(zip(lab[m].tolist(), ref[m].tolist(), strict=True))
        assert len(pairs) == n


def test_connectivity_exact_cases():
    corner = np.zeros((2, 2, 2), bool)
    corner[0, 0, 0] = corner[1, 1, 1] = True
    edge = np.zeros((2, 2, 2), bool)
    edge[0, 0, 0] = edge[1, 1, 0] = True
    face = np.zeros((2, 2, 2), bool)
    face[0, 0, 0] = face[1, 0, 0] = True
    in_row = np.zeros((1, 2, 2), bool)
    in_row[0, 0, 0] = in_row[0, 1, 1] = True  # diagonal within a slice (edge neighbours)
    assert [rg.label(corner, c)[1] for c in (6, 18, 26)] == [2, 2, 1]
    assert [rg.label(edge, c)[1] for c in (6, 18, 26)] == [2, 1, 1]
    assert [rg.label(face, c)[1] for c in (6, 18, 26)] == [1, 1, 1]
    assert [rg.label(in_row, c)[1] for c in (6, 18, 26)] == [2, 1, 1]


def test_planar_labelling_never_joins_slices():
    m = np.ones((3, 4, 5), bool)
    lab = rg.label_runs(rg.mask_runs(m), 26, planar=True)
    assert lab.n == 3 and list(lab.sizes[1:]) == [20, 20, 20]


def test_largest_component_at_and_remove_small():
    m = np.zeros((6, 10, 10), bool)
    m[1:4, 1:4, 1:4] = True  # 27 voxels
    m[1:5, 6:9, 6:9] = True  # 36 voxels
    m[5, 0, 9] = True  # 1 voxel
    big = rg.largest_component(m)
    assert big.sum() == 36 and big[2, 7, 7]
    small = rg.component_at(m, (2, 2, 2))
    assert small.sum() == 27 and small[1, 1, 1]
    assert not rg.component_at(m, (0, 0, 0)).any()  # background
    assert not rg.component_at(m, (99, 0, 0)).any()  # outside the grid
    assert rg.remove_small(m, 2).sum() == 63
    assert not rg.largest_component(np.zeros((2, 2, 2), bool)).any()


def test_threshold_runs_bounds_and_dtypes():
    a = np.array([[[-5, 0, 3, 3, 7, 100]]], dtype=np.int16)
    m = rg.paint_runs(rg.threshold_runs(a, 0.5, 7.0))
    assert m.ravel().tolist() == [False, False, True, True, True, False]
    m = rg.paint_runs(rg.threshold_runs(a, None, 0))
    assert m.ravel().tolist() == [True, True, False, False, False, False]
    assert rg.threshold_runs(a, 40000, None).count == 0  # beyond int16: empty, no overflow
    assert rg.threshold_runs(a, None, -40000).count == 0
    f = np.array([[[np.nan, 1.0, 2.0, np.inf]]], dtype=np.float32)
    assert rg.paint_runs(rg.threshold_runs(f, 1.0, None)).ravel().tolist() == [
        False, True, True, True]
    u = np.array([[[0, 65535, 3]]], dtype=np.uint16)
    assert rg.threshold_runs(u, 2, None).voxel_count() == 2
    assert rg.threshold_runs(u, -10, None).voxel_count() == 3


def test_runs_bbox_and_counts():
    m = np.zeros((4, 5, 6), bool)
    m[1, 2, 3:5] = True
    m[2, 4, 1] = True
    runs = rg.mask_runs(m)
    assert runs.count == 2 and runs.voxel_count() == 3
    assert runs.bbox() == (slice(1, 3), slice(2, 5), slice(1, 5))
    assert rg.mask_runs(np.zeros((2, 2, 2), bool)).bbox() is None


def test_rejections():
    m = np.ones((3, 3, 3), bool)
    with pytest.raises(SegmentationError, match="boolean"):
        rg.largest_component(m.astype(np.uint8))
    with pytest.raises(SegmentationError, match="connectivity"):
        rg.label(m, 8)
    with pytest.raises(SegmentationError, match="3-D"):
        rg.threshold_runs(np.zeros((2, 2)), 0, 1)
    with pytest.raises(SegmentationError, match="empty"):
        rg.threshold_runs(np.zeros((2, 2, 2)), 5, 1)
    with pytest.raises(SegmentationError, match="boolean"):
        rg.mask_runs(np.zeros((2, 2, 2)))
