"""Load a volume from a DICOM folder, a multi-frame DICOM file, or a NIfTI/NRRD/MHA file.

The front door of the one-way DICOM pipeline: :mod:`~scrubin.imaging.dicom_scan` (headers)
→ :mod:`~scrubin.imaging.dicom_group` (stacks) → :mod:`~scrubin.imaging.dicom_geometry`
(order, affine; also used here to describe a volume from headers only) →
:mod:`~scrubin.imaging.dicom_pixels` (HU) → :mod:`~scrubin.imaging.dicom_volume` (Volume).

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
:class:`~scrubin.imaging.errors.SeriesSelectionError`,
:class:`~scrubin.imaging.errors.GeometryError`
(missing slices, non-uniform spacing, duplicates, no geometry),
:class:`~scrubin.imaging.image_files.ImageFileError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scrubin.imaging.dicom_geometry import frame_geometry, slice_geometry
from scrubin.imaging.dicom_group import FrameStack, Groups, Stack, group_file, scan_folder
from scrubin.imaging.dicom_volume import load_frame_stack, load_stack
from scrubin.imaging.errors import ImagingError, SeriesSelectionError
from scrubin.imaging.image_files import image_file_info, is_image_file, read_image_file
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
        geom = slice_geometry(stack)
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


def _info_from_frames(fs: FrameStack) -> SeriesInfo:
    h = fs.header
    problem, step, tilt = "", float("nan"), 0.0
    try:
        geom = frame_geometry(fs)
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
        key=fs.key,
        kind="multiframe",
        problem=problem,
        tilt_deg=tilt,
        _load=lambda progress: load_frame_stack(fs),
    )


def _catalog(groups: Groups) -> Catalog:
    series = [_info_from_stack(s) for s in groups.stacks]
    series += [_info_from_frames(fs) for fs in groups.frame_stacks]
    return Catalog(series, list(groups.skipped))


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
    return _catalog(group_file(path))


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
        return _catalog(scan_folder(path))
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
