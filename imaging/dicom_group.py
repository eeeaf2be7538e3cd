"""Step 2 of the DICOM pipeline: group image headers into stacks (candidate volumes).

Single-frame files (:class:`Stack`): a volume is the slices with the same SeriesInstanceUID
(0020,000E), ImageOrientationPatient (0020,0037), matrix size (Rows/Columns) and
PixelSpacing. Localizers (ImageType (0008,0008) value 3 ``LOCALIZER``) are excluded. When one
UID holds several stacks, the largest keeps the plain UID as its key and the others are
listed as ``UID#2``, ``UID#3``, ...; a single slice whose orientation or size differs from a
larger stack of its series is treated as a scout and skipped.

Enhanced / multi-frame files (:class:`FrameStack`): each frame's geometry comes from the
functional groups (PS3.3 C.7.6.16): the Per-frame Functional Groups Sequence (5200,9230) item
of that frame, else the Shared Functional Groups Sequence (5200,9229):

* Plane Position (Patient) Sequence (0020,9113) → ImagePositionPatient (C.7.6.16.2.3)
* Plane Orientation (Patient) Sequence (0020,9116) → ImageOrientationPatient (C.7.6.16.2.4)
* Pixel Measures Sequence (0028,9110) → PixelSpacing (C.7.6.16.2.1)
* Pixel Value Transformation Sequence (0028,9145) → RescaleSlope/Intercept (C.7.6.16.2.9)

falling back to the same attributes at the top level of the data set. Frames are grouped by
orientation and pixel spacing (largest stack first) and keyed like single-frame stacks,
numbering on after the stacks of the same UID. A multi-frame image without per-frame
positions (ultrasound cine, stripped enhanced MR) cannot be placed in patient space and is
refused with :class:`GeometryError` (skipped when found in a folder).

Next step: :mod:`scrubin.imaging.dicom_geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from scrubin.imaging.dicom_scan import ScanResult, SliceHeader, read_header, scan_files
from scrubin.imaging.errors import GeometryError, ImagingError, NoDicomError

#: Orientation cosines closer than this are the same orientation (same stack).
SAME_ORIENTATION_TOLERANCE = 1e-4


@dataclass
class Stack:
    """Single-frame slices sharing UID, orientation, matrix size and pixel spacing."""

    key: str
    headers: list[SliceHeader]
    stack_index: int = 1


@dataclass
class FrameStack:
    """Frames of one multi-frame file sharing orientation and pixel spacing.

    ``frames`` are 0-based frame indices in file order; ``positions`` their
    ImagePositionPatient (LPS mm); ``rescale`` (n, 2) slope and intercept per frame; ``key``
    selects the volume (the SeriesInstanceUID, or ``UID#n``).
    """

    header: SliceHeader
    frames: np.ndarray
    iop: np.ndarray
    pixel_spacing: np.ndarray
    positions: np.ndarray
    rescale: np.ndarray
    stack_index: int = 1
    key: str = ""


@dataclass
class Groups:
    """Outcome of :func:`group`: slice stacks, multi-frame stacks and the files skipped."""

    stacks: list[Stack] = field(default_factory=list)
    frame_stacks: list[FrameStack] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _same_geometry(a: SliceHeader, b: SliceHeader) -> bool:
    if (a.rows, a.cols) != (b.rows, b.cols):
        return False
    pairs = ((a.iop, b.iop, SAME_ORIENTATION_TOLERANCE), (a.pixel_spacing, b.pixel_spacing, 1e-6))
    for x, y, tol in pairs:
        if (x is None) != (y is None):
            return False
        if x is not None and y is not None and np.max(np.abs(x - y)) > tol * max(1.0, y.max()):
            return False
    return True


def group_stacks(headers: list[SliceHeader]) -> tuple[list[Stack], list[tuple[Path, str]]]:
    """Group single-frame headers into stacks (see module docstring); returns (stacks, skipped)."""
    skipped: list[tuple[Path, str]] = []
    by_uid: dict[str, list[list[SliceHeader]]] = {}
    for h in headers:
        if h.is_localizer:
            skipped.append((h.path, "localizer (ImageType LOCALIZER)"))
            continue
        groups = by_uid.setdefault(h.series_uid, [])
        for g in groups:
            if _same_geometry(g[0], h):
                g.append(h)
                break
        else:
            groups.append([h])
    stacks: list[Stack] = []
    for uid, groups in by_uid.items():
        groups.sort(key=len, reverse=True)
        kept = [groups[0]]
        for g in groups[1:]:
            if len(g) == 1 and len(groups[0]) > 1:
                skipped.append((g[0].path, "scout: orientation/size differs from its series"))
            else:
                kept.append(g)
        for n, g in enumerate(kept, start=1):
            key = uid if n == 1 else f"{uid}#{n}"
            stacks.append(Stack(key=key, headers=g, stack_index=n))
    return stacks, skipped


def _group_item(ds: Dataset, per_frame: Dataset | None, keyword: str) -> Dataset | None:
    for source in (per_frame, _first(ds.get("SharedFunctionalGroupsSequence"))):
        if source is not None:
            item = _first(source.get(keyword))
            if item is not None:
                return item
    return None


def _first(seq: object) -> Dataset | None:
    try:
        return seq[0] if seq else None  # type: ignore[index]
    except (IndexError, TypeError):
        return None


def _vec(item: Dataset | None, keyword: str, n: int, fallback: Dataset) -> np.ndarray | None:
    value = item.get(keyword) if item is not None else None
    if value is None:
        value = fallback.get(keyword)
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in (value if n > 1 else [value])], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def frame_stacks(h: SliceHeader) -> list[FrameStack]:
    """Split the frames of multi-frame file ``h`` into stacks (largest first).

    Raises
    ------
    GeometryError
        A frame has no position, orientation or pixel spacing.
    """
    ds = h.dataset
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != h.frames:
        raise GeometryError(
            f"{h.path}: PerFrameFunctionalGroupsSequence has {len(per_frame)} items for "
            f"{h.frames} frames"
        )
    groups: list[dict[str, object]] = []
    for f in range(h.frames):
        pf = per_frame[f] if per_frame is not None else None
        ipp = _vec(_group_item(ds, pf, "PlanePositionSequence"), "ImagePositionPatient", 3, ds)
        iop = _vec(
            _group_item(ds, pf, "PlaneOrientationSequence"), "ImageOrientationPatient", 6, ds
        )
        ps = _vec(_group_item(ds, pf, "PixelMeasuresSequence"), "PixelSpacing", 2, ds)
        if ipp is None or iop is None or ps is None or (h.frames > 1 and per_frame is None):
            raise GeometryError(
                f"{h.path}: multi-frame image without per-frame geometry (frame {f + 1} has no "
                "PlanePositionSequence/PlaneOrientationSequence/PixelMeasuresSequence): "
                "cannot place its frames in patient space"
            )
        pvt = _group_item(ds, pf, "PixelValueTransformationSequence")
        slope = _vec(pvt, "RescaleSlope", 1, ds)
        intercept = _vec(pvt, "RescaleIntercept", 1, ds)
        rs = (slope[0] if slope is not None else 1.0,
              intercept[0] if intercept is not None else 0.0)
        for g in groups:
            if (np.max(np.abs(g["iop"] - iop)) <= SAME_ORIENTATION_TOLERANCE  # type: ignore[operator]
                    and np.allclose(g["ps"], ps, rtol=1e-6, atol=1e-6)):  # type: ignore[arg-type]
                g["frames"].append(f)  # type: ignore[attr-defined]
                g["pos"].append(ipp)  # type: ignore[attr-defined]
                g["rs"].append(rs)  # type: ignore[attr-defined]
                break
        else:
            groups.append({"iop": iop, "ps": ps, "frames": [f], "pos": [ipp], "rs": [rs]})
    groups.sort(key=lambda g: len(g["frames"]), reverse=True)  # type: ignore[arg-type]
    return [
        FrameStack(h, np.array(g["frames"]), g["iop"], g["ps"],  # type: ignore[arg-type]
                   np.array(g["pos"]), np.array(g["rs"]), n)
        for n, g in enumerate(groups, start=1)
    ]


def key_frame_stacks(stacks: list[FrameStack], used: dict[str, int]) -> list[FrameStack]:
    """Give each multi-frame stack its key: the UID for the first stack of a UID, then
    ``UID#n`` numbering on from ``used`` (stacks already keyed per UID), updated in place."""
    for fs in stacks:
        uid = fs.header.series_uid
        n = used.get(uid, 0) + 1
        used[uid] = n
        fs.key = uid if n == 1 else f"{uid}#{n}"
    return stacks


def group(scan: ScanResult) -> Groups:
    """Group the headers of a folder scan (see module docstring).

    Raises
    ------
    NoDicomError
        No stack and no multi-frame volume (every file skipped).
    """
    singles = [h for h in scan.headers if not (h.frames > 1 or h.enhanced)]
    out = Groups(skipped=list(scan.skipped))
    out.stacks, skipped = group_stacks(singles)
    out.skipped.extend(skipped)
    used: dict[str, int] = {}
    for s in out.stacks:
        uid = s.headers[0].series_uid
        used[uid] = max(used.get(uid, 0), s.stack_index)
    for h in scan.headers:
        if h.frames > 1 or h.enhanced:
            try:
                out.frame_stacks += key_frame_stacks(frame_stacks(h), used)
            except ImagingError as exc:
                out.skipped.append((h.path, str(exc).removeprefix(f"{h.path}: ")))
    if not out.stacks and not out.frame_stacks:
        n = len(out.skipped)
        why = f"; first skipped: {out.skipped[0][0].name}: {out.skipped[0][1]}" if n else ""
        raise NoDicomError(f"{scan.folder}: no DICOM image found ({n} file(s) skipped{why})")
    return out


def scan_folder(folder: Path) -> Groups:
    """Scan ``folder`` (:func:`scrubin.imaging.dicom_scan.scan_files`) and group its images.

    Raises
    ------
    NoDicomError
        ``folder`` does not exist or holds no usable DICOM image.
    """
    return group(scan_files(folder))


def group_file(path: Path) -> Groups:
    """The stacks of one DICOM file: one slice, or the frame stacks of a multi-frame file
    (whose geometry error is then the answer, not a skipped file)."""
    h = read_header(path)
    if h.frames > 1 or h.enhanced:
        return Groups(frame_stacks=key_frame_stacks(frame_stacks(h), {}))
    return Groups(stacks=[Stack(key=h.series_uid, headers=[h])])
