"""Step 1 of the DICOM pipeline: find the files under a folder and read each one's header.

The pipeline runs one way, one module per step, each using only the steps before it::

    dicom_scan (files -> SliceHeader) -> dicom_group (series / stacks)
      -> dicom_geometry (slice order, affine) -> dicom_pixels (HU array)
      -> dicom_volume (Volume)                  front door: scrubin.imaging.load

Only headers are read here: the few attributes the loader needs come from the fast reader in
:mod:`scrubin.imaging.dicom_header` (pydicom ``stop_before_pixels`` for anything it declines:
no preamble, big endian, deflate, malformed), and the full pydicom header is parsed only on
demand (:attr:`SliceHeader.dataset`). The file offset of a native little-endian PixelData
value is recorded so :mod:`scrubin.imaging.dicom_pixels` can read the pixels straight into
the output array. The DICOM error classes of the whole pipeline are defined here.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from scrubin.imaging.dicom_guard import check_image_size, check_preamble
from scrubin.imaging.dicom_header import FastHeader, FastHeaderUnsupportedError, read_fast_header
from scrubin.imaging.errors import DicomError, NoDicomError

#: Transfer syntaxes whose PixelData can be read directly from the file (native, LE, not deflated).
NATIVE_LE = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}

_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloat"}

class CorruptDicomError(DicomError):
    """A file is not DICOM or its header cannot be parsed (truncated, garbage)."""


class NotAnImageError(DicomError):
    """A valid DICOM object without pixel data (SR, RT Structure Set, Presentation State...)."""


class UnsupportedTransferSyntaxError(DicomError):
    """The pixel data's transfer syntax has no decoder installed here."""


#: SOP classes with pixel data that are not image volumes (skipped in folders).
NOT_VOLUMES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "DICOM SEG (Segmentation Storage) is a label object",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage is a label object",
}


@dataclass
class SliceHeader:
    """What the loader needs from one DICOM image file (header only, no pixels).

    ``ipp`` is ImagePositionPatient in LPS mm, ``iop`` ImageOrientationPatient (row cosine then
    column cosine), ``pixel_spacing`` PixelSpacing [row spacing, column spacing] in mm,
    ``slope``/``intercept`` the modality LUT (PS3.3 C.11.1.1.2), ``slice_spacing``
    SpacingBetweenSlices or SliceThickness (0 when absent). ``pixel_offset`` is the file offset
    of a native little-endian PixelData value (``None`` when the pixels must be decoded by
    pydicom: compressed, big endian, deflated, float). :attr:`dataset` (the full pydicom
    header without pixel data) is read on first use.
    """

    path: Path
    series_uid: str
    modality: str
    description: str
    rows: int
    cols: int
    frames: int
    transfer_syntax: str
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: np.ndarray | None
    image_type: tuple[str, ...]
    enhanced: bool
    frame_of_reference_uid: str = ""
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    signed: bool = False
    slope: float = 1.0
    intercept: float = 0.0
    slice_spacing: float = 0.0
    pixel_offset: int | None = None
    pixel_length: int | None = None
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def is_localizer(self) -> bool:
        """ImageType value 3 is LOCALIZER (PS3.3 C.8.2.1.1.1)."""
        return "LOCALIZER" in (t.upper() for t in self.image_type)

    @property
    def dataset(self) -> Dataset:
        """The pydicom header (no pixel data), parsed on first access and kept."""
        if self._dataset is None:
            try:
                with open(self.path, "rb") as fp:
                    self._dataset = _open_dataset(fp, self.path)
            except Exception as exc:  # changed on disk since the scan, or pydicom disagrees
                raise CorruptDicomError(
                    f"{self.path}: cannot read DICOM header ({type(exc).__name__}: {exc})"
                ) from None
        return self._dataset


class HeaderDatasets(SequenceABC[Dataset]):
    """Read-only sequence of the pydicom headers (no pixel data) of slices, parsed on access.

    Stored as ``Volume.meta["datasets"]``: DICOM SEG writing (highdicom) needs the source
    image data sets, but loading should not pay for parsing every header in full.
    """

    def __init__(self, headers: list[SliceHeader]) -> None:
        self._headers = list(headers)

    def __len__(self) -> int:
        return len(self._headers)

    @overload
    def __getitem__(self, index: int) -> Dataset: ...

    @overload
    def __getitem__(self, index: slice) -> list[Dataset]: ...

    def __getitem__(self, index: int | slice) -> Dataset | list[Dataset]:
        if isinstance(index, slice):
            return [h.dataset for h in self._headers[index]]
        return self._headers[index].dataset

    def __repr__(self) -> str:
        return f"HeaderDatasets({len(self)} slices)"


class _DatasetValues:
    """The :class:`~scrubin.imaging.dicom_header.FastHeader` accessors over a pydicom Dataset."""

    def __init__(self, ds: Dataset, path: Path) -> None:
        self.ds = ds
        self.path = path

    def _get(self, keyword: str) -> object:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self.ds.get(keyword)
        except Exception as exc:  # pydicom converts values lazily: corrupt VRs raise here
            raise CorruptDicomError(
                f"{self.path}: unreadable {keyword} ({type(exc).__name__}: {exc})"
            ) from None

    def text(self, keyword: str) -> str | None:
        v = self._get(keyword)
        if v is None:
            return None
        if isinstance(v, pydicom.multival.MultiValue | list | tuple):
            return "\\".join(str(x) for x in v)
        return str(v)

    def integer(self, keyword: str) -> int | None:
        v = self._get(keyword)
        try:
            return int(v) if v is not None and str(v) != "" else None
        except (TypeError, ValueError):
            return None

@dataclass
class ScanResult:
    """Outcome of :func:`scan_files`: the image headers found and the files skipped."""

    folder: Path
    headers: list[SliceHeader] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _floats(values: FastHeader | _DatasetValues, keyword: str, n: int) -> np.ndarray | None:
    text = values.text(keyword)
    if not text:
        return None
    try:
        vals = [float(v) for v in text.split("\\")]
    except ValueError:
        return None
    if len(vals) != n or not all(map(math.isfinite, vals)):
        return None
    return np.array(vals)


def _open_dataset(fp: object, path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every oddity; we judge the result
        return _open_dataset_quiet(fp, path)


def _open_dataset_quiet(fp: object, path: Path) -> Dataset:
    try:
        return pydicom.dcmread(fp, stop_before_pixels=True)  # type: ignore[arg-type]
    except InvalidDicomError:
        # No preamble/"DICM": accept a raw data set only if it starts with a group 0002/0008 tag.
        fp.seek(0)  # type: ignore[attr-defined]
        start = fp.read(2)  # type: ignore[attr-defined]
        if start not in (b"\x02\x00", b"\x08\x00"):
            raise
        fp.seek(0)  # type: ignore[attr-defined]
        return pydicom.dcmread(fp, stop_before_pixels=True, force=True)  # type: ignore[arg-type]


def _pydicom_header(path: Path) -> tuple[Dataset, str, int | None, int | None, int | None]:
    """Fallback parse with pydicom: (dataset, transfer syntax, pixel tag, offset, length)."""
    try:
        with open(path, "rb") as fp:
            ds = _open_dataset(fp, path)
            here = fp.tell()
            head = fp.read(12)
    except InvalidDicomError as exc:
        raise CorruptDicomError(f"{path}: not a DICOM file ({exc})") from None
    except OSError as exc:
        raise CorruptDicomError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise CorruptDicomError(
            f"{path}: corrupt DICOM header ({type(exc).__name__}: {exc})"
        ) from None
    meta = getattr(ds, "file_meta", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    except Exception as exc:  # lazily converted, may be corrupt
        raise CorruptDicomError(f"{path}: unreadable TransferSyntaxUID ({exc})") from None
    ts = ts or str(ImplicitVRLittleEndian)
    if ts == str(DeflatedExplicitVRLittleEndian):
        # the file position is inside the deflated stream: look for pixel data by parsing it all
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                full = pydicom.dcmread(path, force=True)
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise CorruptDicomError(f"{path}: corrupt deflated data set ({exc})") from None
        tags = [t for t in _PIXEL_TAGS if t in full]
        return ds, ts, (tags[0] if tags else None), None, None
    if len(head) < 8:
        return ds, ts, None, None, None
    order = "big" if ts == str(ExplicitVRBigEndian) else "little"
    tag = int.from_bytes(head[0:2], order) << 16 | int.from_bytes(head[2:4], order)
    if tag not in _PIXEL_TAGS:
        return ds, ts, None, None, None
    offset = length = None
    if ts == str(ExplicitVRLittleEndian) and head[4:6] in (b"OW", b"OB"):
        offset, length = here + 12, int.from_bytes(head[8:12], "little")
    elif ts == str(ImplicitVRLittleEndian):
        offset, length = here + 8, int.from_bytes(head[4:8], "little")
    return ds, ts, tag, offset, length


def read_header(path: Path) -> SliceHeader:
    """Read the header of one DICOM image file (fast parser, pydicom as fallback).

    Raises
    ------
    CorruptDicomError
        The file is not DICOM or its header is corrupt.
    NotAnImageError
        The file holds no image (no PixelData, e.g. SR or RT Structure Set).
    DicomError
        Rows/Columns missing or zero.
    """
    path = Path(path)
    ds: Dataset | None = None
    truncated = False
    try:
        with open(path, "rb") as fp:
            head, file_size = fp.read(132), os.fstat(fp.fileno()).st_size
            if head[128:132] == b"DICM":  # PS3.10 §7.5: no executable in the preamble
                check_preamble(head[:128], path)
            fp.seek(0)
            fast = read_fast_header(fp, file_size)
        values: FastHeader | _DatasetValues = fast
        ts, tag = fast.transfer_syntax, fast.pixel_tag
        offset, length = fast.pixel_value_offset, fast.pixel_length
    except FastHeaderUnsupportedError as exc:
        truncated = "past the end" in str(exc) or "syntax None" in str(exc)
        ds, ts, tag, offset, length = _pydicom_header(path)
        values = _DatasetValues(ds, path)
    except OSError as exc:
        raise CorruptDicomError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if tag is None and truncated:
        raise CorruptDicomError(f"{path}: truncated or corrupt DICOM file (a data element runs "
                                "past the end of the file, or no transfer syntax)")
    if tag is None:
        uid = values.text("SOPClassUID") or ""
        name = uid_name(uid) if uid else "unknown SOP class"
        raise NotAnImageError(f"{path}: DICOM file has no pixel data ({name}), not an image")
    sop = values.text("SOPClassUID") or ""
    if sop in NOT_VOLUMES:
        raise NotAnImageError(f"{path}: {NOT_VOLUMES[sop]}, not an image volume")
    rows, cols = values.integer("Rows"), values.integer("Columns")
    frames = values.integer("NumberOfFrames") or 1
    if not rows or not cols or rows < 1 or cols < 1 or frames < 1:
        raise DicomError(f"{path}: pixel data without a valid image size (Rows={rows}, "
                         f"Columns={cols}, NumberOfFrames={frames})")
    if tag != 0x7FE00010 or ts not in NATIVE_LE or length == 0xFFFFFFFF:
        offset = length = None
    samples, bits = values.integer("SamplesPerPixel") or 1, values.integer("BitsAllocated") or 16
    # refuse sizes the file cannot hold before anything is allocated (dicom_guard)
    check_image_size(path, rows, cols, frames, samples, bits,
                     None if offset is None else path.stat().st_size)
    image_type = (values.text("ImageType") or "").split("\\")
    try:
        slope = float(values.text("RescaleSlope") or 1.0)
        intercept = float(values.text("RescaleIntercept") or 0.0)
    except ValueError:
        raise DicomError(f"{path}: unreadable RescaleSlope/RescaleIntercept") from None
    spacing = 0.0
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        v = _floats(values, key, 1)
        if v is not None and v[0] > 0:
            spacing = float(v[0])
            break
    bits = values.integer("BitsAllocated") or 16
    return SliceHeader(
        path=path,
        series_uid=values.text("SeriesInstanceUID") or "",
        modality=values.text("Modality") or "",
        description=values.text("SeriesDescription") or "",
        rows=rows,
        cols=cols,
        frames=frames,
        transfer_syntax=ts,
        ipp=_floats(values, "ImagePositionPatient", 3),
        iop=_floats(values, "ImageOrientationPatient", 6),
        pixel_spacing=_floats(values, "PixelSpacing", 2),
        image_type=tuple(t.strip() for t in image_type if t.strip()),
        enhanced=values.text("PerFrameFunctionalGroupsSequence") is not None
        or values.text("SharedFunctionalGroupsSequence") is not None,
        frame_of_reference_uid=values.text("FrameOfReferenceUID") or "",
        samples_per_pixel=values.integer("SamplesPerPixel") or 1,
        bits_allocated=bits,
        bits_stored=values.integer("BitsStored") or bits,
        signed=values.integer("PixelRepresentation") == 1,
        slope=slope if slope != 0 else 1.0,
        intercept=intercept,
        slice_spacing=spacing,
        pixel_offset=offset,
        pixel_length=length,
        _dataset=ds,
    )


def find_files(folder: Path) -> list[Path]:
    """All regular files under ``folder`` (recursive, sorted, hidden names and DICOMDIR skipped)."""
    out: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            out.append(Path(root) / name)
    return out


def scan_files(folder: Path) -> ScanResult:
    """Read the header of every file under ``folder`` (recursive).

    Non-DICOM files, unreadable files and DICOM objects without pixel data are skipped (listed
    in ``ScanResult.skipped`` with the reason).

    Raises
    ------
    NoDicomError
        ``folder`` does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NoDicomError(f"{folder}: no such folder")
    result = ScanResult(folder)
    for path in find_files(folder):
        try:
            result.headers.append(read_header(path))
        except DicomError as exc:
            result.skipped.append((path, str(exc).removeprefix(f"{path}: ")))
    return result


def uid_name(uid: str) -> str:
    """Registered name of a UID (e.g. "JPEG 2000 Image Compression"), else the UID itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom validates UIDs and warns on odd characters
        u = pydicom.uid.UID(uid)
        return (u.name if u.is_valid else "") or uid
