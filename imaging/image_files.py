"""NIfTI (nibabel), NRRD and MetaImage (SimpleITK) volumes, and NIfTI export (nibabel).

NIfTI-1/2 is read with nibabel: its ``affine`` is the sform when ``sform_code > 0``, else the
qform (NIfTI-1 header, "method 3" then "method 2"), in RAS, so the voxel→LPS affine is
``LPS_TO_RAS · affine``. A file with ``sform_code = qform_code = 0`` is refused: that is
nifti1.h's "METHOD 1" (the Analyze 7.5 way, ``x = pixdim[1] * i`` ...: "No particular
spatial orientation is attached to these (x,y,z) coordinates"); nibabel would return such a
pixdim-only affine and the model would be placed in a guessed, possibly mirrored,
orientation. (SimpleITK takes the voxel size from ``pixdim`` even when the sform
says otherwise, which gives a wrong affine for files whose sform and pixdim disagree.)
SimpleITK reports NRRD and MetaImage in LPS, converting the NRRD ``space`` field (e.g.
``right-anterior-superior``) itself, so their affine is
``[[D · diag(spacing), origin], [0, 0, 0, 1]]`` with ``D`` SimpleITK's direction matrix
(columns = unit LPS directions of i, j, k). :func:`save_nifti` writes the RAS convention of
NIfTI-1: ``affine_RAS = LPS_TO_RAS · affine_LPS`` as both sform and qform (code 1,
scanner-based), data stored with i fastest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scrubin.imaging.errors import ImagingError
from scrubin.imaging.fileio import write_atomic
from scrubin.imaging.volume import LPS_TO_RAS, Volume

#: File name endings read by :func:`read_image_file` (lower case).
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class ImageFileError(ImagingError):
    """A NIfTI/NRRD/MetaImage file cannot be read or written as a scalar 3-D volume."""


def is_image_file(path: Path) -> bool:
    """True when ``path``'s name ends with one of :data:`IMAGE_SUFFIXES`."""
    return Path(path).name.lower().endswith(IMAGE_SUFFIXES)


def _reader(path: Path) -> object:
    import SimpleITK as sitk  # noqa: N813

    from scrubin.imaging.image_guard import check_metaimage, check_nrrd

    try:  # ITK trusts the header (sizes, data file, compressed stream): check it first
        (check_nrrd if _format(path) == "nrrd" else check_metaimage)(path)
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if "rror" in ln), str(exc))
        raise ImageFileError(f"{path}: cannot read image file ({first.strip()[:200]})") from None
    return reader


def _geometry(path: Path, dim: int, spacing: tuple, direction: tuple, origin: tuple,
              components: int) -> np.ndarray:
    if components != 1:
        raise ImageFileError(f"{path}: {components} components per voxel, expected a scalar image")
    if dim not in (2, 3):
        raise ImageFileError(f"{path}: {dim}-D image, expected a 3-D volume")
    d = np.asarray(direction, dtype=np.float64).reshape(dim, dim)
    affine = np.eye(4)
    affine[:dim, :dim] = d * np.asarray(spacing, dtype=np.float64)[None, :]
    affine[:dim, 3] = origin
    return affine


def _nifti(path: Path) -> object:
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types on bad headers
        raise ImageFileError(f"{path}: cannot read image file ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
    shape = tuple(int(n) for n in image.shape)  # type: ignore[attr-defined]
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ImageFileError(f"{path}: {len(shape)}-D image {shape}, expected a 3-D volume")
    header = image.header  # type: ignore[attr-defined]
    sform, qform = int(header["sform_code"]), int(header["qform_code"])
    if sform <= 0 and qform <= 0:
        raise ImageFileError(
            f"{path}: NIfTI sform_code = {sform} and qform_code = {qform}: orientation unknown "
            "(NIfTI-1 'method 1', Analyze fallback); expected a sform or qform with code > 0 "
            "(re-export the image with its orientation)")
    return image


def _nifti_affine(image: object) -> np.ndarray:
    return LPS_TO_RAS @ np.asarray(image.affine, dtype=np.float64)  # type: ignore[attr-defined]


def image_file_info(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """Size (i, j, k) and voxel→LPS affine of an image file, from its header only."""
    if _format(path) == "nifti":
        image = _nifti(path)
        dims = [int(n) for n in image.shape[:3]]  # type: ignore[attr-defined]
        dims += [1] * (3 - len(dims))
        return (dims[0], dims[1], dims[2]), _nifti_affine(image)
    reader = _reader(path)
    dim = reader.GetDimension()  # type: ignore[attr-defined]
    affine = _geometry(path, dim, reader.GetSpacing(), reader.GetDirection(),  # type: ignore[attr-defined]
                       reader.GetOrigin(), reader.GetNumberOfComponents())  # type: ignore[attr-defined]
    size = tuple(reader.GetSize()) + (1,) * (3 - dim)  # type: ignore[attr-defined]
    return (int(size[0]), int(size[1]), int(size[2])), affine


def read_image_file(path: str | Path) -> Volume:
    """Read a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) volume.

    Integer data that fits int16 stays int16, anything else becomes float32. The affine maps
    (i, j, k) to LPS mm.

    Raises
    ------
    ImageFileError
        Unreadable file, vector/colour image, or not 2-D/3-D.
    """
    import SimpleITK as sitk  # noqa: N813

    path = Path(path)
    if _format(path) == "nifti":
        image = _nifti(path)
        try:
            data = np.asanyarray(image.dataobj)  # type: ignore[attr-defined]  # scl_slope applied
        except Exception as exc:  # truncated data, bad scaling
            raise ImageFileError(f"{path}: cannot read image data ({exc})") from None
        data = data.reshape(data.shape[:3] + (1,) * (3 - min(3, data.ndim)))
        return _volume(path, np.transpose(data, (2, 1, 0)), _nifti_affine(image))
    reader = _reader(path)
    dim = reader.GetDimension()  # type: ignore[attr-defined]
    affine = _geometry(path, dim, reader.GetSpacing(), reader.GetDirection(),  # type: ignore[attr-defined]
                       reader.GetOrigin(), reader.GetNumberOfComponents())  # type: ignore[attr-defined]
    try:
        image = reader.Execute()  # type: ignore[attr-defined]
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if "rror" in ln), str(exc))
        raise ImageFileError(f"{path}: cannot read image data ({first.strip()[:200]})") from None
    array = sitk.GetArrayFromImage(image)
    if dim == 2:
        array = array[None]
    return _volume(path, array, affine)


def _volume(path: Path, array: np.ndarray, affine: np.ndarray) -> Volume:
    """Volume from a [k, j, i] array: int16 when the integers fit, else float32."""
    if array.dtype.kind in "iu" and array.size and (
        array.dtype.itemsize == 1
        or array.dtype == np.int16
        or (array.min() >= -32768 and array.max() <= 32767)
    ):
        array = array.astype(np.int16, copy=False)
    elif array.dtype != np.float32:
        array = array.astype(np.float32)
    return Volume(
        array=np.ascontiguousarray(array),
        affine=affine,
        description=path.name,
        meta={"source_format": _format(path)},
    )


def _format(path: Path) -> str:
    name = path.name.lower()
    return "nifti" if ".nii" in name else "nrrd" if name.endswith((".nrrd", ".nhdr")) else "mha"


def save_nifti(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` as NIfTI-1 (RAS convention) to ``path`` (.nii or .nii.gz), atomically.

    The sform and qform hold ``LPS_TO_RAS · affine`` (code 1, scanner); a sheared affine
    (gantry tilt) is kept exactly in the sform and the qform is left unset (code 0), as a
    quaternion cannot hold a shear. Data is written with i (column) varying fastest.

    Raises
    ------
    ImageFileError
        The name does not end in .nii/.nii.gz or the folder cannot be written.
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ImageFileError(f"{path}: NIfTI output must end in .nii or .nii.gz")
    if not path.parent.is_dir():
        raise ImageFileError(f"{path.parent}: output folder does not exist")
    affine_ras = LPS_TO_RAS @ volume.affine
    data = np.transpose(volume.array, (2, 1, 0))  # [k, j, i] -> [i, j, k]
    image = nib.Nifti1Image(data, affine_ras)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine_ras, code=1)
    m = volume.affine[:3, :3] / volume.spacing
    if np.allclose(m.T @ m, np.eye(3), atol=1e-6):
        image.set_qform(affine_ras, code=1)
    else:
        image.set_qform(None, code=0)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    return write_atomic(path, lambda tmp: nib.save(image, tmp), suffix=suffix)
