"""Write a volume as a CT Image Storage series: one file per slice (PS3.3 A.3 CT Image IOD).

Explicit VR Little Endian, deterministic UIDs (``2.25.`` + name-based UUID, PS3.5 B.2),
ImagePositionPatient of slice ``k`` = ``origin + k * slice_spacing * normal`` with
``normal = row_cosine x column_cosine`` (PS3.3 C.7.6.2.1.1). File names are hashes of
the SOP Instance UID, so name order is not slice order.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from scrubin.samples.render import RESCALE_INTERCEPT

STUDY_DATE = "20260101"
STUDY_TIME = "090000"


#: Namespace of the name-based (version 5) UUIDs behind the phantom's UIDs.
_UID_NAMESPACE = uuid.UUID("5c0b1e2a-7d1f-5d6e-9a3b-2f4c8e1d0a77")


def deterministic_uid(*parts: object) -> str:
    """A ``2.25.`` UID (PS3.5 B.2) from a name-based UUID of ``parts``: same parts, same UID.

    (``pydicom.uid.generate_uid(prefix=None, ...)`` ignores its entropy sources and is random.)
    """
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def _ds(value: float) -> str:
    """A DS string of at most 16 characters (PS3.5 6.2) that round-trips to ~1e-10 mm."""
    for digits in range(16, 0, -1):
        s = f"{value:.{digits}g}"
        if len(s) <= 16:
            return s
    raise ValueError(value)  # pragma: no cover


def write_series(
    folder: Path,
    stored: np.ndarray,
    affine: np.ndarray,
    uids: dict[str, str],
    description: str,
    series_number: int = 1,
    spacing_ijk: tuple[float, float, float] | None = None,
) -> list[Path]:
    """Write ``stored`` (int16, [k, j, i], HU + 1024) as one CT file per slice into ``folder``.

    Parameters
    ----------
    affine
        4x4 voxel (i, j, k) -> LPS mm; columns 0 and 1 must be orthogonal.
    uids
        ``study_instance_uid``, ``series_instance_uid``, ``frame_of_reference_uid`` and
        ``sop_root`` (entropy for the per-slice SOP Instance UIDs).
    spacing_ijk
        Exact (column, row, slice) spacing in mm for the headers; default: the norms of the
        affine's columns.
    """
    nk, nj, ni = stored.shape
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    spacing = norms if spacing_ijk is None else np.asarray(spacing_ijk, dtype=np.float64)
    row_cos = affine[:3, 0] / norms[0]
    col_cos = affine[:3, 1] / norms[1]
    normal = np.cross(row_cos, col_cos)
    iop = [_ds(float(v)) for v in (*row_cos, *col_cos)]
    pixel_spacing = [_ds(float(spacing[1])), _ds(float(spacing[0]))]
    paths = []
    for k in range(nk):
        sop_uid = deterministic_uid(uids["sop_root"], k)
        position = affine[:3, 3] + k * spacing[2] * normal
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
        meta.ImplementationVersionName = "SCRUBIN_PHANTOM"
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = STUDY_DATE
        ds.SeriesDate = STUDY_DATE
        ds.AcquisitionDate = STUDY_DATE
        ds.ContentDate = STUDY_DATE
        ds.StudyTime = STUDY_TIME
        ds.SeriesTime = STUDY_TIME
        ds.AcquisitionTime = STUDY_TIME
        ds.ContentTime = STUDY_TIME
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "Scrub In"
        ds.ManufacturerModelName = "Analytic head phantom"
        ds.InstitutionName = "Scrub In"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Head phantom"
        ds.SeriesDescription = description
        ds.PatientName = "Phantom^Head"
        ds.PatientID = "SCRUBIN-PHANTOM-001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = "HEAD"
        ds.SliceThickness = _ds(float(spacing[2]))
        ds.KVP = "120"
        ds.SpacingBetweenSlices = _ds(float(spacing[2]))
        ds.DeviceSerialNumber = "0001"
        ds.SoftwareVersions = "scrubin-phantom"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = uids["study_instance_uid"]
        ds.SeriesInstanceUID = uids["series_instance_uid"]
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(float(v)) for v in position]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = uids["frame_of_reference_uid"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(position @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = nj
        ds.Columns = ni
        ds.PixelSpacing = pixel_spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = ["40", "400"]  # brain, bone
        ds.WindowWidth = ["80", "2000"]
        ds.WindowCenterWidthExplanation = ["BRAIN", "BONE"]
        ds.RescaleIntercept = _ds(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<i2").tobytes()
        name = hashlib.sha1(sop_uid.encode()).hexdigest()[:16] + ".dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
