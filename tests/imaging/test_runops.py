"""Hole filling, run set algebra and box morphology (dense and on runs) against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from scrubin.imaging import regions as rg
from scrubin.imaging import runops as ro
from scrubin.imaging.errors import SegmentationError


def _random_masks(n: int = 12, shape: tuple[int, int, int] = (7, 9, 11)) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.random(shape) < rng.uniform(0.15, 0.6) for _ in range(n)]


def test_fill_holes_hollow_cube_exact():
    m = np.zeros((9, 9, 9), bool)
    m[1:8, 1:8, 1:8] = True
    m[3:6, 3:6, 3:6] = False  # closed cavity
    filled = ro.fill_holes(m)
    expected = np.zeros_like(m)
    expected[1:8, 1:8, 1:8] = True
    np.testing.assert_array_equal(filled, expected)


def test_fill_holes_tunnel_needs_planar_fill():
    # a tube along k open at both ends: not a 3-D hole, but a hole in every k slice
    m = np.zeros((8, 9, 9), bool)
    m[:, 1:8, 1:8] = True
    m[:, 3:6, 3:6] = False
    assert (ro.fill_holes(m) == m).all()
    expected = np.zeros_like(m)
    expected[:, 1:8, 1:8] = True
    np.testing.assert_array_equal(ro.fill_holes(m, planar=True, axis=0), expected)
    # the same tube along i is filled per slice of axis 2, not of axis 0
    t = np.ascontiguousarray(np.moveaxis(m, 0, 2))
    np.testing.assert_array_equal(ro.fill_holes(t, planar=True, axis=2),
                                  np.moveaxis(expected, 0, 2))
    assert (ro.fill_holes(t, planar=True, axis=0) == t).all()


@pytest.mark.parametrize("conn", [6, 26])
def test_fill_holes_matches_scipy_in_bounding_box(conn):
    bg = ndi.generate_binary_structure(3, 1 if conn == 26 else 3)
    for m in _random_masks(8, (8, 10, 12)):
        sl = ndi.find_objects(m.astype(np.int32))[0]
        crop = m[sl]
        lab, n = ndi.label(~crop, bg)
        border = np.unique(np.concatenate([
            lab[0].ravel(), lab[-1].ravel(), lab[:, 0].ravel(), lab[:, -1].ravel(),
            lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]))
        holes = np.isin(lab, np.setdiff1d(np.arange(1, n + 1), border))
        expected = m.copy()
        expected[sl] |= holes
        np.testing.assert_array_equal(ro.fill_holes(m, conn), expected)


def test_fill_holes_runs_equals_dense_planar_fill():
    for m in _random_masks(6, (5, 12, 14)):
        obj, holes, off = ro.fill_holes_runs(rg.mask_runs(m), 26, planar=True)
        out = np.zeros_like(m)
        rg.paint_runs(obj, out=out, offset=off)
        rg.paint_runs(holes, out=out, offset=off)
        np.testing.assert_array_equal(out, ro.fill_holes(m, 26, planar=True))


def test_complement_and_crop_runs():
    m = _random_masks(1)[0]
    comp = ro.complement_runs(rg.mask_runs(m))
    np.testing.assert_array_equal(rg.paint_runs(comp), ~m)
    box = (slice(1, 5), slice(2, 8), slice(3, 9))
    np.testing.assert_array_equal(rg.paint_runs(ro.crop_runs(rg.mask_runs(m), box)), m[box])


@pytest.mark.parametrize("radius", [1, 2, (1, 2, 0), (0, 0, 3)])
def test_box_morphology_matches_scipy(radius):
    r = (radius,) * 3 if isinstance(radius, int) else radius
    se = np.ones(tuple(2 * x + 1 for x in r), bool)
    for m in _random_masks(6, (9, 11, 13)):
        np.testing.assert_array_equal(ro.dilate(m, radius), ndi.binary_dilation(m, se))
        # voxels outside the array are ignored: scipy's border_value=1
        np.testing.assert_array_equal(ro.erode(m, radius),
                                      ndi.binary_erosion(m, se, border_value=1))
        np.testing.assert_array_equal(ro.opening(m, radius),
                                      ro.dilate(ro.erode(m, radius), radius))
        np.testing.assert_array_equal(ro.closing(m, radius),
                                      ro.erode(ro.dilate(m, radius), radius))


def test_radius_voxels_from_mm():
    assert ro.radius_voxels(2.0, np.array([0.8, 0.5, 0.5])) == (2, 4, 4)
    assert ro.radius_voxels(0.0, np.array([1.0, 1.0, 1.0])) == (0, 0, 0)


def test_run_set_algebra_matches_numpy():
    masks = _random_masks(8)
    for a, b in zip(masks[:-1], masks[1:], strict=True):
        ra, rb = rg.mask_runs(a), rg.mask_runs(b)
        np.testing.assert_array_equal(rg.paint_runs(ro.union_runs(ra, rb)), a | b)
        np.testing.assert_array_equal(rg.paint_runs(ro.intersect_runs(ra, rb)), a & b)
        np.testing.assert_array_equal(rg.paint_runs(ro.subtract_runs(ra, rb)), a & ~b)
        # results are proper run sets: disjoint, sorted, maximal within each row
        u = ro.union_runs(ra, rb)
        np.testing.assert_array_equal(u.start, rg.mask_runs(a | b).start)


@pytest.mark.parametrize("radius", [1, 2, (1, 2, 0), (0, 0, 3), (3, 1, 2)])
def test_run_morphology_equals_dense(radius):
    for m in _random_masks(6, (9, 11, 13)):
        runs = rg.mask_runs(m)
        np.testing.assert_array_equal(rg.paint_runs(ro.erode_runs(runs, radius)),
                                      ro.erode(m, radius))
        np.testing.assert_array_equal(rg.paint_runs(ro.dilate_runs(runs, radius)),
                                      ro.dilate(m, radius))


def test_runops_rejections():
    m = np.ones((3, 3, 3), bool)
    with pytest.raises(SegmentationError, match="3-D"):
        ro.fill_holes(np.ones((3, 3), bool))
    with pytest.raises(SegmentationError, match="axis"):
        ro.fill_holes(m, planar=True, axis=3)
    with pytest.raises(SegmentationError, match="radius"):
        ro.erode(m, -1)
    with pytest.raises(SegmentationError, match="radius"):
        ro.dilate(m, (1, 2))
    with pytest.raises(SegmentationError, match="radius"):
        ro.erode_runs(rg.mask_runs(m), 1.5)  # type: ignore[arg-type]
    with pytest.raises(SegmentationError, match="radius"):
        ro.radius_voxels(float("nan"), np.ones(3))
    with pytest.raises(SegmentationError, match="different grids"):
        ro.union_runs(rg.mask_runs(m), rg.mask_runs(np.ones((2, 2, 2), bool)))
