"""Write tiny synthetic DICOM series with chosen geometry (test helper, no pixel I/O mocks).

Used by the imaging tests (and free for colleagues' bad-input tests). Every voxel value is a
known function of its indices, so a loader's output can be checked exactly:

    hu[k, j, i] = hu_of(i, j, k) = i + 7 * j + 31 * k - 1000       (default)

Import from a test module (pytest runs with ``--import-mode=importlib``)::

    import importlib.util, sys
    sys.path.insert(0, str(Path(__file__).parent)); import dicom_factory
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)


def default_hu(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Known voxel values (HU) of voxel (i, j, k): unique along each axis."""
    return i + 7 * j + 31 * k - 1000


def expected_array(
    rows: int, cols: int, slices: int, hu_of: Callable[..., np.ndarray] = default_hu
) -> np.ndarray:
    """The [k, j, i] array a loader must return for a factory series (HU)."""
    k, j, i = np.meshgrid(np.arange(slices), np.arange(rows), np.arange(cols), indexing="ij")
    return np.asarray(hu_of(i, j, k), dtype=np.float64)


def oblique_iop(a_deg: float = 15.0, b_deg: float = 10.0) -> tuple[float, ...]:
    """A double-oblique ImageOrientationPatient (row cosine, column cosine)."""
    a, b = np.deg2rad(a_deg), np.deg2rad(b_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = rz @ rx
    return tuple(float(v) for v in np.concatenate([r[:, 0], r[:, 1]]))


def slice_positions(
    iop: Sequence[float], origin: Sequence[float], step: float, slices: int
) -> np.ndarray:
    """(slices, 3) LPS mm positions ``origin + k * step * normal`` (normal = row × col)."""
    iop_a = np.asarray(iop, dtype=np.float64).reshape(2, 3)
    normal = np.cross(iop_a[0], iop_a[1])
    return np.asarray(origin, dtype=np.float64) + np.arange(slices)[:, None] * step * normal


def write_series(
    folder: Path,
    *,
    rows: int = 6,
    cols: int = 8,
    slices: int = 5,
    pixel_spacing: tuple[float, float] = (0.8, 0.6),
    iop: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    origin: Sequence[float] = (-10.0, -20.0, 30.0),
    step: float = 2.0,
    positions: np.ndarray | None = None,
    hu_of: Callable[..., np.ndarray] = default_hu,
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    description: str = "factory series",
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    for_uid: str = "1.2.826.0.1.3680043.8.498.2",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    transfer_syntax: UID = ExplicitVRLittleEndian,
    bits_allocated: int = 16,
    bits_stored: int | None = None,
    pixel_representation: int = 1,
    prefix: str = "img",
    shuffle_names: bool = True,
    instance_numbers: Sequence[int] | None = None,
    extra: Callable[[Dataset, int], None] | None = None,
) -> list[Path]:
    """Write one series, one file per slice; returns the files in slice order (k = 0 first).

    ``positions`` overrides the regular stack ``origin + k * step * normal``. File names and
    InstanceNumbers are scrambled (unless given) so a loader must sort by position. Stored
    values are ``(hu - intercept) / slope`` rounded.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    pos = slice_positions(iop, origin, step, slices) if positions is None else positions
    pos = np.asarray(pos, dtype=np.float64)
    n = len(pos)
    hu = expected_array(rows, cols, n, hu_of)
    stored = np.rint((hu - intercept) / slope)
    if bits_allocated == 8:
        dtype = np.uint8 if pixel_representation == 0 else np.int8
    else:
        dtype = np.uint16 if pixel_representation == 0 else np.int16
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError("factory values do not fit the stored pixel type")
    stored = stored.astype(dtype)
    rng = np.random.default_rng(len(description) + n)
    order = rng.permutation(n) if shuffle_names else np.arange(n)
    numbers = list(instance_numbers) if instance_numbers is not None else list(n - np.arange(n))
    paths: list[Path] = []
    for k in range(n):
        ds = Dataset()
        meta = FileMetaDataset()
        sop_class = MRImageStorage if modality == "MR" else CTImageStorage
        sop_uid = generate_uid()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.99")
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.PatientName = "Phantom^Factory"
        ds.PatientID = "FACTORY-1"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = modality
        ds.Manufacturer = "ScrubIn test factory"
        ds.SeriesNumber = 1
        ds.SeriesDescription = description
        ds.InstanceNumber = int(numbers[k])
        ds.ImageType = list(image_type)
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in pos[k]]
        ds.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
        ds.SliceThickness = f"{abs(step):.10g}"
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = bits_allocated
        ds.BitsStored = bits_stored or bits_allocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = pixel_representation
        if modality != "MR" or slope != 1.0 or intercept != 0.0:
            ds.RescaleIntercept = f"{intercept:.10g}"
            ds.RescaleSlope = f"{slope:.10g}"
            ds.RescaleType = "HU" if modality == "CT" else "US"
        if modality == "CT":
            ds.KVP = "120"
        ds.PixelData = stored[k].tobytes()
        if extra is not None:
            extra(ds, k)
        path = folder / f"{prefix}{int(order[k]):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def compress_dcmtk(src: Path, dst: Path, tool: str, *options: str) -> Path:
    """Compress ``src`` into ``dst`` with a dcmtk tool (``dcmcjpeg``, ``dcmcjpls``, ``dcmcrle``)."""
    exe = shutil.which(tool)
    if exe is None:
        raise RuntimeError(f"dcmtk tool {tool} is not installed")
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, *options, str(src), str(dst)], check=True, capture_output=True)
    return dst


def set_transfer_syntax_uid(path: Path, uid: str) -> None:
    """Rewrite only the declared TransferSyntaxUID of a file (to fake an unsupported syntax)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = pydicom.dcmread(path)
    meta = ds.file_meta
    meta.TransferSyntaxUID = UID(uid)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    body = Dataset()
    for elem in ds:
        body.add(elem)
    write_dataset(fp, body)
    path.write_bytes(fp.getvalue())


__all__ = [
    "ExplicitVRLittleEndian",
    "ImplicitVRLittleEndian",
    "compress_dcmtk",
    "default_hu",
    "expected_array",
    "oblique_iop",
    "set_transfer_syntax_uid",
    "slice_positions",
    "write_series",
]
