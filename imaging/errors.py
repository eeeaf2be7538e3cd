"""Errors raised by the imaging stage.

Every error a user can cause (a wrong path, a corrupt file, a threshold that selects nothing)
is an :class:`ImagingError` whose message is one line naming the file, field or value and
what was expected. The command line prints that line and exits non-zero; anything else is a
bug.
"""

from __future__ import annotations


class ImagingError(Exception):
    """Base class of the imaging stage's user-facing errors (one-line message)."""


class DicomError(ImagingError):
    """A DICOM file or series cannot be used (corrupt, unsupported, inconsistent)."""


class NoDicomError(DicomError):
    """A folder holds no usable DICOM image."""


class SeriesSelectionError(DicomError):
    """Several series match and none was chosen, or the chosen UID does not exist."""


class GeometryError(DicomError):
    """Slice geometry is unusable: missing slices, non-uniform spacing, gantry tilt, ..."""


class SegmentationError(ImagingError):
    """A segmentation request cannot be met (empty mask, seed outside range, MR preset, ...)."""


class MeshError(ImagingError):
    """A surface cannot be extracted or written."""
