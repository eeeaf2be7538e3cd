"""The loading facade: list_series / load_volume on folders and files, selection, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813

from scrubin.imaging.dicom_scan import CorruptDicomError, NotAnImageError
from scrubin.imaging.errors import ImagingError, NoDicomError, SeriesSelectionError
from scrubin.imaging.load import InputNotFoundError, list_series, load_volume, scan

sys.path.insert(0, str(Path(__file__).parent))
import dicom_factory as fac


def _sitk_volume(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Array [k, j, i] and voxel->LPS affine of SimpleITK/GDCM's reading of a series."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image), affine


@pytest.mark.parametrize("phantom", ["small_phantom", "oblique_phantom"])
def test_phantoms_match_simpleitk(phantom, request):
    folder = request.getfixturevalue(phantom)
    vol = load_volume(folder)
    array, affine = _sitk_volume(folder)
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.modality == "CT" and vol.series_instance_uid
    info = list_series(folder)[0]
    assert info.size == vol.shape_ijk
    np.testing.assert_allclose(info.spacing, vol.spacing, atol=1e-9)
    assert info.files == vol.source_files


def test_list_series_fields(tmp_path):
    fac.write_series(tmp_path / "ct", slices=4, series_uid="1.2.3.1", description="head",
                     iop=fac.oblique_iop())
    fac.write_series(tmp_path / "mr", slices=3, series_uid="1.2.3.2", modality="MR",
                     description="t1", intercept=0.0, hu_of=lambda i, j, k: i + j + k)
    infos = {s.series_instance_uid: s for s in list_series(tmp_path)}
    ct, mr = infos["1.2.3.1"], infos["1.2.3.2"]
    assert (ct.modality, ct.description, ct.size, ct.slice_count) == ("CT", "head", (8, 6, 4), 4)
    assert ct.spacing == pytest.approx((0.6, 0.8, 2.0))
    assert ct.orientation == pytest.approx(fac.oblique_iop())
    assert ct.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.2"
    assert len(ct.files) == 4 and ct.key == "1.2.3.1" and not ct.problem
    assert (mr.modality, mr.slice_count) == ("MR", 3)


def test_two_series_need_a_choice(tmp_path):
    fac.write_series(tmp_path, slices=4, series_uid="1.2.3.1", description="bone", prefix="a")
    fac.write_series(tmp_path, slices=3, series_uid="1.2.3.2", description="soft", prefix="b")
    with pytest.raises(SeriesSelectionError) as err:
        load_volume(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("1.2.3.1", "1.2.3.2", "'bone'", "'soft'", "4 slices", "3 slices", "CT"):
        assert part in msg
    assert load_volume(tmp_path, "1.2.3.2").array.shape == (3, 6, 8)
    with pytest.raises(SeriesSelectionError, match="no series 9.9.9; available: 1.2.3"):
        load_volume(tmp_path, "9.9.9")


def test_one_uid_with_two_stacks_lists_both(tmp_path):
    fac.write_series(tmp_path, slices=4, series_uid="1.2.3")
    fac.write_series(tmp_path, slices=3, series_uid="1.2.3", prefix="cor", iop=(1, 0, 0, 0, 0, -1))
    with pytest.raises(SeriesSelectionError, match=r"2 volumes.*1\.2\.3 .*1\.2\.3#2"):
        load_volume(tmp_path)
    assert load_volume(tmp_path, "1.2.3").array.shape == (4, 6, 8)  # plain UID: largest stack
    coronal = load_volume(tmp_path, "1.2.3#2")
    assert coronal.array.shape == (3, 6, 8) and coronal.meta["stack_index"] == 2


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(InputNotFoundError, match="nope: no such file or folder"):
        load_volume(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("x")
    with pytest.raises(NoDicomError, match="empty: no DICOM image found"):
        load_volume(tmp_path / "empty")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(CorruptDicomError, match="bad.dcm"):
        load_volume(bad)
    f = fac.write_series(tmp_path / "s", slices=1)[0]
    ds = pydicom.dcmread(f)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(NotAnImageError, match="nopix.dcm: DICOM file has no pixel data"):
        load_volume(tmp_path / "nopix.dcm")


def test_single_dicom_file_is_a_one_slice_volume(tmp_path):
    f = fac.write_series(tmp_path, slices=3)[1]
    vol = load_volume(f)
    assert vol.array.shape == (1, 6, 8) and vol.source_files == [f]
    np.testing.assert_array_equal(vol.array[0], fac.expected_array(6, 8, 3)[1])


def test_unusable_series_is_listed_with_its_problem(tmp_path):
    fac.write_series(tmp_path, positions=np.array([[0, 0, z] for z in (0.0, 2, 4, 8)]))
    catalog = scan(tmp_path)
    assert "missing" in catalog.series[0].problem
    assert np.isnan(catalog.series[0].spacing[2])
    with pytest.raises(ImagingError, match="missing"):
        load_volume(tmp_path)


def test_image_files_go_through_the_facade(tmp_path, small_phantom):
    from scrubin.imaging.image_files import save_nifti

    vol = load_volume(small_phantom)
    out = save_nifti(vol, tmp_path / "v.nii.gz")
    info = list_series(out)[0]
    assert info.kind == "image-file" and info.size == vol.shape_ijk
    again = load_volume(out)
    np.testing.assert_array_equal(again.array, vol.array)


def test_meta_datasets_are_enough_for_highdicom_seg(tmp_path):
    # the SEG writer's contract: source image headers in slice order, no pixel data needed
    import highdicom as hd
    from pydicom.sr.codedict import codes

    fac.write_series(tmp_path, rows=16, cols=16, slices=4, iop=fac.oblique_iop())
    vol = load_volume(tmp_path)
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="bone",
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Bone,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=vol.meta["datasets"], pixel_array=(vol.array > -900).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=hd.UID(), series_number=5, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="t", manufacturer_model_name="t",
        software_versions="1", device_serial_number="1")
    assert seg.StudyInstanceUID == vol.meta["StudyInstanceUID"]
    assert seg.FrameOfReferenceUID == vol.frame_of_reference_uid


def test_dicom_pipeline_runs_one_way():
    """scan → group → geometry → pixels → volume: each step imports only earlier steps."""
    import ast

    import scrubin.imaging as pkg

    steps = ["dicom_header", "dicom_scan", "dicom_group", "dicom_geometry", "dicom_pixels",
             "dicom_volume", "load"]
    root = Path(pkg.__file__).parent
    for n, step in enumerate(steps):
        tree = ast.parse((root / f"{step}.py").read_text())
        imported = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("scrubin.imaging.")}
        later = imported & set(steps[n:])
        assert not later, f"{step} imports {later} (same or later step)"
