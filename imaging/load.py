"""Load a volume from a DICOM folder, a multi-frame DICOM file, or a NIfTI/NRRD/MHA file.

Public API::

    list_series(path)  -> list[SeriesInfo]        # what is there (headers only)
    scan(path)         -> Catalog                 # the same plus skipped files
    load_volume(path, series_uid=None, progress=False) -> Volume

A folder is searched recursively; files that are not DICOM images are skipped. A volume's
key is its SeriesInstanceUID, or ``UID#n`` for the n-th stack (n ≥ 2) when one UID holds
several stacks (different orientation/matrix, or several stacks in one multi-frame file); the
plain UID names the largest stack. ``load_volume`` loads the only volume, or the one whose
key is ``series_uid``; otherwise it raises :class:`SeriesSelectionError` listing the choices.

Errors (all :class:`~scrubin.imaging.errors.ImagingError`, one line naming the file or series):
:class:`InputNotFoundError` (no such path), :class:`~scrubin.imaging.errors.NoDicomError` (folder
without DICOM images), :class:`~scrubin.imaging.dicom_scan.CorruptDicomError`,
:class:`~scrubin.imaging.dicom_scan.NotAnImageError` (e.g. SR, RT objects),
:class:`~scrubin.imaging.dicom_scan.UnsupportedTransferSyntaxError`,
:class:`~imaging.errors.SeriesSelectionError`, :class:`~imaging.errors.GeometryError`
(missing slices, non-uniform spacing, duplicates, no geometry),
:class:`~scrubin.imaging.image_files.ImageFileError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scrubin.imaging.dicom_scan import ScanResult, SliceHeader, Stack, read_header, scan_folder
from scrubin.imaging.dicom_series import load_stack, stack_geometry
from scrubin.imaging.errors import ImagingError, SeriesSelectionError
from scrubin.imaging.image_files import image_file_info, is_image_file, read_image_file
from scrubin.imaging.multiframe import FrameStack, frame_stacks, load_frame_stack
from scrubin.imaging.volume import Volume


class InputNotFoundError(ImagingError):
    """The given file or folder does not exist."""


@dataclass
class SeriesInfo:
    """One loadable volume, described from headers only.

    ``size`` is (columns, rows, slices), ``spacing`` (column, row, slice) in mm (slice spacing
    NaN when the geometry is unusable; ``problem`` then says why; ``tilt_deg`` is the gantry
    tilt kept as a sheared affine), ``orientation`` the
    ImageOrientationPatient (row cosine, column cosine). ``key`` selects it in
    :func:`load_volume` (the UID, or ``UID#n``). ``files`` are in slice order when the geometry
    is usable.
    """

    series_instance_uid: str
    modality: str
    description: str
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    slice_count: int
    files: list[Path] = field(repr=False)
    frame_of_reference_uid: str = ""
    orientation: tuple[float, ...] = ()
    key: str = ""
    kind: str = "dicom"
    problem: str = ""
    tilt_deg: float = 0.0
    _load: Callable[[bool], Volume] | None = field(default=None, repr=False, compare=False)

    def load(self, progress: bool = False) -> Volume:
        """Read this volume's pixels (same as ``load_volume(path, self.key)``)."""
        assert self._load is not None
        return self._load(progress)


@dataclass
class Catalog:
    """The volumes found under a path and the files skipped (path, reason)."""

    series: list[SeriesInfo]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _info_from_stack(stack: Stack) -> SeriesInfo:
    hs = stack.headers
    h0 = hs[0]
    problem, files, step, tilt = "", [h.path for h in hs], float("nan"), 0.0
    try:
        if any(h.ipp is None or h.iop is None or h.pixel_spacing is None for h in hs):
            raise ImagingError("no ImagePositionPatient/ImageOrientationPatient/PixelSpacing")
        geom = stack_geometry(f"series {stack.key}", h0.iop, h0.pixel_spacing,  # type: ignore[arg-type]
                              np.stack([h.ipp for h in hs]), [str(h.path) for h in hs],  # type: ignore[misc]
                              h0.slice_spacing or 1.0)
        files = [hs[i].path for i in geom.order]
        step, tilt = geom.step_mm, geom.tilt_deg
    except ImagingError as exc:
        problem = str(exc)
    ps = h0.pixel_spacing if h0.pixel_spacing is not None else np.full(2, np.nan)
    return SeriesInfo(
        series_instance_uid=h0.series_uid,
        modality=h0.modality,
        description=h0.description,
        size=(h0.cols, h0.rows, len(hs)),
        spacing=(float(ps[1]), float(ps[0]), step),
        slice_count=len(hs),
        files=files,
        frame_of_reference_uid=h0.frame_of_reference_uid,
        orientation=tuple(float(v) for v in h0.iop) if h0.iop is not None else (),
        key=stack.key,
        kind="dicom",
        problem=problem,
        tilt_deg=tilt,
        _load=lambda progress: load_stack(stack, progress),
    )


def _info_from_frames(fs: FrameStack, key: str) -> SeriesInfo:
    h = fs.header
    problem, step, tilt = "", float("nan"), 0.0
    try:
        geom = stack_geometry(f"{h.path} (series {key})", fs.iop, fs.pixel_spacing, fs.positions,
                              [f"frame {int(f) + 1}" for f in fs.frames])
        step, tilt = geom.step_mm, geom.tilt_deg
    except ImagingError as exc:
        problem = str(exc)
    return SeriesInfo(
        series_instance_uid=h.series_uid,
        modality=h.modality,
        description=h.description,
        size=(h.cols, h.rows, len(fs.frames)),
        spacing=(float(fs.pixel_spacing[1]), float(fs.pixel_spacing[0]), step),
        slice_count=len(fs.frames),
        files=[h.path],
        frame_of_reference_uid=h.frame_of_reference_uid,
        orientation=tuple(float(v) for v in fs.iop),
        key=key,
        kind="multiframe",
        problem=problem,
        tilt_deg=tilt,
        _load=lambda progress: load_frame_stack(fs, key),
    )


def _multiframe_infos(
    headers: list[SliceHeader], used: dict[str, int], skipped: list[tuple[Path, str]]
) -> list[SeriesInfo]:
    out: list[SeriesInfo] = []
    for h in headers:
        try:
            stacks = frame_stacks(h)
        except ImagingError as exc:
            skipped.append((h.path, str(exc).removeprefix(f"{h.path}: ")))
            continue
        for fs in stacks:
            n = used.get(h.series_uid, 0) + 1
            used[h.series_uid] = n
            out.append(_info_from_frames(fs, h.series_uid if n == 1 else f"{h.series_uid}#{n}"))
    return out


def _catalog_from_scan(result: ScanResult) -> Catalog:
    series = [_info_from_stack(s) for s in result.stacks]
    used: dict[str, int] = {}
    for s in result.stacks:
        used[s.headers[0].series_uid] = max(used.get(s.headers[0].series_uid, 0), s.stack_index)
    skipped = list(result.skipped)
    series += _multiframe_infos(result.multiframe, used, skipped)
    return Catalog(series, skipped)


def _file_catalog(path: Path) -> Catalog:
    if is_image_file(path):
        size, affine = image_file_info(path)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        direction = affine[:3, :3] / spacing
        info = SeriesInfo(
            series_instance_uid="", modality="", description=path.name, size=size,
            spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
            slice_count=size[2], files=[path], frame_of_reference_uid="",
            orientation=tuple(float(v) for v in np.concatenate([direction[:, 0],
                                                                 direction[:, 1]])),
            key="", kind="image-file", _load=lambda progress: read_image_file(path),
        )
        return Catalog([info])
    h = read_header(path)
    if h.frames > 1 or h.enhanced:
        # a lone multi-frame file: its geometry error is the answer, not a skipped file
        stacks = frame_stacks(h)
        uid = h.series_uid
        return Catalog([_info_from_frames(fs, uid if n == 1 else f"{uid}#{n}")
                        for n, fs in enumerate(stacks, start=1)])
    return Catalog([_info_from_stack(Stack(key=h.series_uid, headers=[h]))])


def scan(path: str | Path) -> Catalog:
    """The volumes under ``path`` (folder, recursive) or in file ``path``, from headers only.

    Raises
    ------
    InputNotFoundError, NoDicomError, CorruptDicomError, NotAnImageError, ImageFileError
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return _catalog_from_scan(scan_folder(path))
    return _file_catalog(path)


def list_series(path: str | Path) -> list[SeriesInfo]:
    """Describe every volume under ``path`` (see :func:`scan`)."""
    return scan(path).series


def _choices(series: list[SeriesInfo]) -> str:
    return "; ".join(
        f"{s.key or s.description} ({s.modality or '?'}, '{s.description}', "
        f"{s.slice_count} slices)" for s in series
    )


def select(catalog: Catalog, series_uid: str | None, where: Path) -> SeriesInfo:
    """Pick the volume whose key is ``series_uid``, or the only one when it is None."""
    series = catalog.series
    if not series:
        raise SeriesSelectionError(f"{where}: no loadable volume "
                                   f"({len(catalog.skipped)} file(s) skipped)")
    if series_uid is None:
        if len(series) == 1:
            return series[0]
        raise SeriesSelectionError(
            f"{where}: {len(series)} volumes found, choose one with --series: {_choices(series)}"
        )
    wanted = series_uid.strip()
    match = [s for s in series if s.key == wanted]
    if match:
        return match[0]
    raise SeriesSelectionError(f"{where}: no series {wanted}; available: {_choices(series)}")


def load_volume(path: str | Path, series_uid: str | None = None, progress: bool = False) -> Volume:
    """Load one volume (HU, int16 when exact else float32; affine to LPS mm).

    Parameters
    ----------
    path
        A folder of DICOM files (recursive; stray files ignored), one DICOM file
        (single- or multi-frame), or a NIfTI/NRRD/MetaImage file.
    series_uid
        Key or SeriesInstanceUID of the volume to load; required when there are several.
    progress
        Show a progress bar while reading slices.
    """
    path = Path(path)
    catalog = scan(path)
    chosen = select(catalog, series_uid, path)
    return chosen.load(progress)
