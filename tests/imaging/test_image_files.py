"""NIfTI / NRRD / MetaImage reading (LPS) and NIfTI export (RAS), with known affines."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from scrubin.imaging.image_files import ImageFileError, read_image_file, save_nifti
from scrubin.imaging.load import load_volume
from scrubin.imaging.volume import LPS_TO_RAS, Volume

sys.path.insert(0, str(Path(__file__).parent))
import dicom_factory as fac


def _oblique_ras_affine() -> np.ndarray:
    iop = np.asarray(fac.oblique_iop(20, -12)).reshape(2, 3)
    normal = np.cross(iop[0], iop[1])
    a = np.eye(4)
    a[:3, 0], a[:3, 1], a[:3, 2] = iop[0] * 0.7, iop[1] * 0.9, normal * 2.5
    a[:3, 3] = [12.5, -30.0, 44.0]
    return a


def _data() -> np.ndarray:
    """[i, j, k] data (NIfTI axis order) with value = i + 10 j + 100 k."""
    i, j, k = np.meshgrid(np.arange(5), np.arange(4), np.arange(3), indexing="ij")
    return (i + 10 * j + 100 * k).astype(np.int16)


@pytest.mark.parametrize("form", ["sform", "qform"])
def test_nifti_ras_affine_becomes_lps(tmp_path, form):
    ras = _oblique_ras_affine()
    img = nib.Nifti1Image(_data(), None)
    if form == "sform":
        img.set_sform(ras, code=1)
        img.set_qform(None, code=0)
    else:
        img.set_qform(ras, code=1)
        img.set_sform(None, code=0)
    path = tmp_path / "v.nii.gz"
    nib.save(img, path)
    vol = read_image_file(path)
    np.testing.assert_allclose(vol.affine, LPS_TO_RAS @ ras, atol=1e-5)
    assert vol.array.shape == (3, 4, 5) and vol.array[2, 1, 4] == 4 + 10 + 200
    assert vol.meta["source_format"] == "nifti"


def test_nrrd_right_anterior_superior_space(tmp_path):
    ras = _oblique_ras_affine()
    header = {
        "space": "right-anterior-superior",
        "space directions": ras[:3, :3].T,  # one row per axis
        "space origin": ras[:3, 3],
        "kinds": ["domain"] * 3,
    }
    path = tmp_path / "v.nrrd"
    nrrd.write(str(path), _data(), header, index_order="F")
    vol = read_image_file(path)
    np.testing.assert_allclose(vol.affine, LPS_TO_RAS @ ras, atol=1e-9)
    assert vol.array[2, 1, 4] == 214


def test_metaimage_roundtrip(tmp_path):
    image = sitk.GetImageFromArray(np.transpose(_data(), (2, 1, 0)))
    image.SetSpacing((0.5, 0.6, 2.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    image.SetDirection(tuple(np.eye(3)[:, [1, 0, 2]].ravel()))  # i along y, j along x
    path = tmp_path / "v.mha"
    sitk.WriteImage(image, str(path))
    vol = read_image_file(path)
    np.testing.assert_allclose(vol.affine[:3, 0], [0, 0.5, 0])
    np.testing.assert_allclose(vol.affine[:3, 1], [0.6, 0, 0])
    np.testing.assert_allclose(vol.origin, [1, 2, 3])


@pytest.mark.parametrize("phantom", ["small_phantom", "oblique_phantom"])
def test_dicom_and_its_nifti_export_agree(tmp_path, phantom, request):
    vol = load_volume(request.getfixturevalue(phantom))
    path = save_nifti(vol, tmp_path / "ct.nii")
    back = read_image_file(path)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.int16
    header_affine = nib.load(path).affine
    np.testing.assert_allclose(header_affine, LPS_TO_RAS @ vol.affine, atol=1e-4)


def test_sheared_affine_is_kept_in_the_sform(tmp_path):
    affine = np.eye(4)
    affine[1, 2] = 0.4  # gantry-tilt shear
    vol = Volume(np.zeros((3, 4, 5), np.int16), affine)
    img = nib.load(save_nifti(vol, tmp_path / "t.nii.gz"))
    assert int(img.header["qform_code"]) == 0
    np.testing.assert_allclose(img.get_sform(), LPS_TO_RAS @ affine, atol=1e-6)


def test_save_nifti_rejections_leave_nothing_behind(tmp_path):
    vol = Volume(np.zeros((2, 2, 2), np.int16), np.eye(4))
    with pytest.raises(ImageFileError, match=r"x\.nrrd: NIfTI output must end in \.nii"):
        save_nifti(vol, tmp_path / "x.nrrd")
    with pytest.raises(ImageFileError, match="output folder does not exist"):
        save_nifti(vol, tmp_path / "no" / "x.nii")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_and_non_scalar_image_files(tmp_path):
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"\x00" * 400)
    with pytest.raises(ImageFileError, match="bad.nii: cannot read image file"):
        read_image_file(bad)
    rgb = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(ImageFileError, match="3 components per voxel"):
        read_image_file(tmp_path / "rgb.mha")
    four = nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.int16), np.eye(4))
    nib.save(four, tmp_path / "4d.nii")
    with pytest.raises(ImageFileError, match="4-D image"):
        read_image_file(tmp_path / "4d.nii")


@pytest.mark.parametrize("cls", [nib.Nifti1Image, nib.Nifti2Image])
def test_nifti_without_orientation_is_refused(tmp_path, cls):
    """sform_code = qform_code = 0 is nifti1.h's METHOD 1 (no orientation): nibabel would
    fall back to a pixdim-only Analyze affine; we refuse instead of guessing."""
    img = cls(_data(), None)
    img.set_sform(_oblique_ras_affine(), code=0)
    img.set_qform(None, code=0)
    path = tmp_path / "noorient.nii"
    nib.save(img, path)
    assert nib.load(path).affine is not None  # nibabel itself does accept it (the fallback)
    with pytest.raises(ImageFileError) as err:
        read_image_file(path)
    msg = str(err.value)
    assert "noorient.nii" in msg and "sform_code = 0" in msg and "qform_code = 0" in msg
    assert "orientation unknown" in msg and "\n" not in msg
    with pytest.raises(ImageFileError, match="orientation unknown"):
        load_volume(path)
