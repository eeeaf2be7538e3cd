"""DICOM SEG writing/reading on the phantom series: exact round trip, dciodvfy, rejections."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from scrubin.imaging.errors import SegmentationError
from scrubin.imaging.load import load_volume
from scrubin.imaging.seg_dicom import read_seg, write_seg
from scrubin.imaging.segment import Segmentation, segment
from scrubin.imaging.volume import Volume


@pytest.fixture(scope="module")
def vol(small_phantom):
    return load_volume(small_phantom)


@pytest.fixture(scope="module")
def segs(vol, small_truth):
    seed = np.asarray(small_truth["structures"]["vessel"]["parts"][20][0]["p0"])
    return [
        segment(vol, "bone"),
        segment(vol, "air"),
        segment(vol, "vessels", seed_lps=seed),
        segment(vol, threshold=(-100, 100), label_name="band"),
    ]


@pytest.fixture(scope="module")
def seg_file(vol, segs, tmp_path_factory):
    path = tmp_path_factory.mktemp("seg") / "phantom.seg.dcm"
    write_seg(vol, segs, path, series_description="test SEG")
    return path


def test_round_trip_is_exact(vol, segs, seg_file):
    for back in (read_seg(seg_file), read_seg(seg_file, vol)):
        assert list(back) == [s.name for s in segs]
        for s in segs:
            assert back[s.name].shape == vol.array.shape
            np.testing.assert_array_equal(back[s.name], s.mask)


def test_seg_content(vol, segs, seg_file):
    ds = pydicom.dcmread(seg_file)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.SeriesDescription == "test SEG"
    assert ds.FrameOfReferenceUID == vol.frame_of_reference_uid
    assert ds.StudyInstanceUID == vol.meta["StudyInstanceUID"]
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == vol.series_instance_uid
    assert [r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence] == [
        d.SOPInstanceUID for d in vol.meta["datasets"]]
    # only frames holding a segment are stored
    k_with = sum(int(s.mask[k].any()) for s in segs for k in range(vol.array.shape[0]))
    assert int(ds.NumberOfFrames) == k_with < vol.array.shape[0] * len(segs)
    seq = ds.SegmentSequence
    assert seq[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "272673000"  # bone
    assert seq[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "85756007"  # tissue
    assert seq[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "15158005"  # air
    assert seq[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "59820001"  # vessel
    assert [s.SegmentAlgorithmType for s in seq] == [
        "AUTOMATIC", "AUTOMATIC", "SEMIAUTOMATIC", "SEMIAUTOMATIC"]
    assert all(s.SegmentAlgorithmName == "scrubin" for s in seq)


def test_dciodvfy_reports_no_error(seg_file):
    assert shutil.which("dciodvfy"), "dicom3tools is installed by make install"
    r = subprocess.run(["dciodvfy", str(seg_file)], capture_output=True, text=True, timeout=120)
    lines = (r.stdout + r.stderr).splitlines()
    assert not [ln for ln in lines if ln.startswith("Error")], "\n".join(lines)


def _empty_seg(vol: Volume, name: str = "nothing") -> Segmentation:
    return Segmentation(
        mask=np.zeros(vol.array.shape, bool), level=None, name=name, preset=None,
        threshold=(0.0, None), seed_lps=None, voxel_count=0, affine=vol.affine,
        series_instance_uid=vol.series_instance_uid,
        frame_of_reference_uid=vol.frame_of_reference_uid,
    )


def test_write_rejections_leave_no_file(vol, segs, tmp_path):
    from scrubin.imaging.image_files import save_nifti

    nii = save_nifti(vol, tmp_path.parent / f"{tmp_path.name}-head.nii.gz")
    nifti = load_volume(nii)
    out = tmp_path / "x.dcm"
    with pytest.raises(SegmentationError,
                       match=rf"--seg needs a DICOM source series; {nii.name} is NIfTI"):
        write_seg(nifti, [segment(nifti, "bone")], out)
    with pytest.raises(SegmentationError, match="'nothing' is empty"):
        write_seg(vol, [segs[0], _empty_seg(vol)], out)
    with pytest.raises(SegmentationError, match="at least one"):
        write_seg(vol, [], out)
    with pytest.raises(SegmentationError, match="unique"):
        write_seg(vol, [segs[0], segs[0]], out)
    other = Segmentation(**{**segs[0].__dict__, "frame_of_reference_uid": "1.2.3"})
    with pytest.raises(SegmentationError, match="frame of reference"):
        write_seg(vol, [other], out)
    small = Segmentation(**{**segs[0].__dict__, "mask": np.ones((2, 2, 2), bool)})
    with pytest.raises(SegmentationError, match="shape"):
        write_seg(vol, [small], out)
    with pytest.raises(SegmentationError, match="does not exist"):
        write_seg(vol, segs[:1], tmp_path / "no" / "such" / "x.dcm")
    assert list(tmp_path.iterdir()) == []


def test_read_rejections(vol, seg_file, small_phantom, tmp_path):
    with pytest.raises(SegmentationError, match="not found"):
        read_seg(tmp_path / "missing.dcm")
    junk = tmp_path / "junk.dcm"
    junk.write_text("not dicom")
    with pytest.raises(SegmentationError, match="not a readable DICOM"):
        read_seg(junk)
    ct = next(Path(small_phantom).glob("*.dcm"))
    with pytest.raises(SegmentationError, match="not a DICOM Segmentation"):
        read_seg(ct)
    moved = Volume(vol.array, vol.affine, modality="CT", frame_of_reference_uid="1.2.3",
                   source_files=vol.source_files, meta=vol.meta)
    with pytest.raises(SegmentationError, match="frame of reference"):
        read_seg(seg_file, moved)


def test_multiframe_source_round_trip(small_phantom, tmp_path):
    # an enhanced (multi-frame) CT whose frames are not in slice order
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom.uid import generate_uid

    files = sorted(Path(small_phantom).glob("*.dcm"))[::-1]
    legacy = [pydicom.dcmread(f) for f in files]
    image = LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy, series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1)
    mf = tmp_path / "enhanced.dcm"
    image.save_as(mf)
    vol = load_volume(mf)
    assert len(vol.meta["datasets"]) == 1
    assert list(vol.meta["frame_numbers"]) != list(range(1, vol.array.shape[0] + 1))
    bone = segment(vol, "bone")
    out = tmp_path / "mf.seg.dcm"
    write_seg(vol, [bone], out)
    np.testing.assert_array_equal(read_seg(out, vol)["bone"], bone.mask)
