"""A 3-D image in patient coordinates (DICOM LPS, millimetres).

Conventions (used by every stage of Scrub In)
---------------------------------------------
* Patient space is DICOM LPS in millimetres (PS3.3 C.7.6.2.1.1): +x towards the patient's
  Left, +y Posterior, +z Superior.
* ``affine`` maps voxel indices ``(i, j, k, 1)`` to LPS mm, with ``i`` = column, ``j`` = row,
  ``k`` = slice. The numpy ``array`` is indexed ``[k, j, i]``.
* PS3.3 C.7.6.2.1.1 gives the row direction cosine (direction of increasing column index ``i``) as
  ``IOP[0:3]`` and the column direction cosine (increasing row index ``j``) as ``IOP[3:6]``.
  So ``affine[:3, 0] = IOP[0:3] * PixelSpacing[1]`` (column spacing) and
  ``affine[:3, 1] = IOP[3:6] * PixelSpacing[0]`` (row spacing); ``affine[:3, 3]`` is the
  ImagePositionPatient of the first slice, i.e. the centre of voxel (0, 0, 0).
* RAS appears only at the edges (NIfTI/NRRD headers, 3D Slicer, OpenIGTLink); use
  :data:`LPS_TO_RAS` there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scrubin.imaging.errors import ImagingError

#: Diagonal flip between DICOM LPS and RAS (NIfTI, Slicer, OpenIGTLink); its own inverse.
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A scalar volume with its exact voxel-to-LPS geometry and provenance.

    Attributes
    ----------
    array
        Voxel values indexed ``[k, j, i]`` (slice, row, column). CT values are HU after
        rescale (float32 or int16).
    affine
        4x4 matrix mapping ``(i, j, k, 1)`` to LPS mm (see module docstring).
    modality
        DICOM Modality ("CT", "MR", ...) or "" when unknown (e.g. NIfTI input).
    series_instance_uid, frame_of_reference_uid
        Provenance carried into every output so later stages can refuse mismatched inputs.
        Empty strings when the source has none (NIfTI/NRRD/MHA).
    description
        SeriesDescription or file name.
    source_files
        The DICOM files in slice order (``source_files[k]`` holds slice ``k``); a multi-frame
        source lists its single file. Empty for non-DICOM input.
    meta
        Free-form extra facts (study UID, patient id for SEG referencing, rescale, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    description: str = ""
    source_files: list[Path] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ImagingError(f"volume array must be 3-D [k, j, i], got shape {self.array.shape}")
        if self.affine.shape != (4, 4) or not np.all(np.isfinite(self.affine)):
            raise ImagingError(f"volume affine must be a finite 4x4 matrix, got {self.affine!r}")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-9:
            raise ImagingError("volume affine is singular (zero spacing or parallel axes)")

    # ----------------------------------------------------------------- geometry
    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along (i, j, k) = (columns, rows, slices)."""
        k, j, i = self.array.shape
        return (i, j, k)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along (i, j, k) in mm (column spacing, row spacing, slice spacing)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit LPS directions of i, j and k."""
        return self.affine[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        """LPS mm of the centre of voxel (0, 0, 0) (ImagePositionPatient of slice 0)."""
        return self.affine[:3, 3].copy()

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` in (i, j, k) order to LPS mm ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        """Map LPS mm points ``(..., 3)`` to continuous voxel indices in (i, j, k) order."""
        lps = np.asarray(lps, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return lps @ inv[:3, :3].T + inv[:3, 3]

    def bounds_lps(self) -> np.ndarray:
        """(2, 3) min/max LPS mm over the centres of the eight corner voxels."""
        i, j, k = (n - 1 for n in self.shape_ijk)
        corners = np.array(
            [[a, b, c] for a in (0, i) for b in (0, j) for c in (0, k)], dtype=np.float64
        )
        pts = self.index_to_lps(corners)
        return np.stack([pts.min(axis=0), pts.max(axis=0)])

    def provenance(self) -> dict[str, str]:
        """The source UIDs every derived output must carry."""
        return {
            "series_instance_uid": self.series_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
        }


def affine_from_dicom(
    image_orientation: np.ndarray,
    pixel_spacing: np.ndarray,
    first_position: np.ndarray,
    slice_step: np.ndarray,
) -> np.ndarray:
    """Build the voxel-to-LPS affine of a slice stack (PS3.3 C.7.6.2.1.1, eq. C.7.6.2.1-1).

    Parameters
    ----------
    image_orientation
        ImageOrientationPatient, 6 floats: row direction cosine then column direction cosine.
    pixel_spacing
        PixelSpacing, 2 floats: [row spacing (between rows, along j), column spacing (along i)].
    first_position
        ImagePositionPatient of slice k = 0 (centre of its first voxel), LPS mm.
    slice_step
        LPS mm vector from slice k to slice k + 1 (difference of successive positions).

    Returns
    -------
    numpy.ndarray
        4x4 affine mapping (i, j, k, 1) to LPS mm.
    """
    iop = np.asarray(image_orientation, dtype=np.float64).reshape(2, 3)
    ps = np.asarray(pixel_spacing, dtype=np.float64).reshape(2)
    affine = np.eye(4)
    affine[:3, 0] = iop[0] * ps[1]
    affine[:3, 1] = iop[1] * ps[0]
    affine[:3, 2] = np.asarray(slice_step, dtype=np.float64).reshape(3)
    affine[:3, 3] = np.asarray(first_position, dtype=np.float64).reshape(3)
    return affine
