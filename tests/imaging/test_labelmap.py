"""LabelMap built from Segmentations: values, overlaps, provenance, rejections."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.imaging.errors import SegmentationError
from scrubin.imaging.labelmap import LabelMap
from scrubin.imaging.segment import Segmentation


def _seg(name: str, mask: np.ndarray, level: float | None = None, for_uid: str = "1.2.3",
         affine: np.ndarray | None = None) -> Segmentation:
    return Segmentation(
        mask=mask, level=level, name=name, preset=None, threshold=(0.0, None), seed_lps=None,
        voxel_count=int(mask.sum()), affine=np.eye(4) if affine is None else affine,
        series_instance_uid="1.2.3.4", frame_of_reference_uid=for_uid,
    )


def _masks() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((4, 5, 6), bool)
    a[0:2, :, :] = True  # 60 voxels
    b = np.zeros((4, 5, 6), bool)
    b[1:3, 0:2, :] = True  # 24 voxels, 12 shared with a
    return a, b


def test_later_segments_overwrite():
    a, b = _masks()
    lm = LabelMap.from_segmentations([_seg("skin", a, -300.0), _seg("vessel", b)])
    assert lm.array.dtype == np.uint8
    assert lm.names == {1: "skin", 2: "vessel"}
    assert lm.levels == {1: -300.0, 2: None}
    np.testing.assert_array_equal(lm.mask("vessel"), b)
    np.testing.assert_array_equal(lm.mask(1), a & ~b)
    assert lm.counts() == {"skin": 48, "vessel": 24}
    assert lm.provenance() == {"series_instance_uid": "1.2.3.4", "frame_of_reference_uid": "1.2.3"}


def test_refuse_overlaps_names_both_segments():
    a, b = _masks()
    with pytest.raises(SegmentationError, match="'skin' and 'vessel' overlap in 12 voxels"):
        LabelMap.from_segmentations([_seg("skin", a), _seg("vessel", b)], overlap="refuse")
    c = np.zeros_like(a)
    c[3] = True
    lm = LabelMap.from_segmentations([_seg("skin", a), _seg("c", c)], overlap="refuse")
    assert lm.counts() == {"skin": 60, "c": 30}


def test_many_labels_use_uint16():
    masks = []
    for n in range(300):
        m = np.zeros((1, 1, 300), bool)
        m[0, 0, n] = True
        masks.append(_seg(f"s{n}", m))
    lm = LabelMap.from_segmentations(masks)
    assert lm.array.dtype == np.uint16 and lm.array[0, 0, 299] == 300


def test_rejections():
    a, b = _masks()
    with pytest.raises(SegmentationError, match="at least one"):
        LabelMap.from_segmentations([])
    with pytest.raises(SegmentationError, match="unique"):
        LabelMap.from_segmentations([_seg("x", a), _seg("x", b)])
    with pytest.raises(SegmentationError, match="shape"):
        LabelMap.from_segmentations([_seg("x", a), _seg("y", np.zeros((2, 2, 2), bool))])
    with pytest.raises(SegmentationError, match="affine"):
        LabelMap.from_segmentations([_seg("x", a), _seg("y", b, affine=np.diag([2, 1, 1, 1.0]))])
    with pytest.raises(SegmentationError, match="frame of reference"):
        LabelMap.from_segmentations([_seg("x", a), _seg("y", b, for_uid="9.9")])
    with pytest.raises(SegmentationError, match="overlap must be"):
        LabelMap.from_segmentations([_seg("x", a)], overlap="merge")
    lm = LabelMap.from_segmentations([_seg("x", a)])
    with pytest.raises(SegmentationError, match="no label named 'y'"):
        lm.mask("y")
    with pytest.raises(SegmentationError, match="no label 7"):
        lm.mask(7)
    with pytest.raises(SegmentationError, match="dtype"):
        LabelMap(np.zeros((2, 2, 2), np.int32), {1: "x"}, np.eye(4))
    with pytest.raises(SegmentationError, match="3-D"):
        LabelMap(np.zeros((2, 2), np.uint8), {1: "x"}, np.eye(4))
    with pytest.raises(SegmentationError, match="1..255"):
        LabelMap(np.zeros((2, 2, 2), np.uint8), {0: "x"}, np.eye(4))
    with pytest.raises(SegmentationError, match="unique"):
        LabelMap(np.zeros((2, 2, 2), np.uint8), {1: "x", 2: "x"}, np.eye(4))
    with pytest.raises(SegmentationError, match="4x4"):
        LabelMap(np.zeros((2, 2, 2), np.uint8), {1: "x"}, np.eye(3))
