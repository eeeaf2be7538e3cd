"""Single-frame DICOM slices → :class:`~scrubin.imaging.volume.Volume` (sorted, checked, in HU).

Geometry (PS3.3 C.7.6.2.1.1)
----------------------------
Slices are sorted by their position along the slice normal ``n = row_cos × col_cos``,
``d_k = IPP_k · n`` -- never by file name or InstanceNumber. The sorted steps are checked:
a duplicate position, a gap of about twice the typical step (missing slices), steps that
differ from the typical one by more than :data:`STEP_TOLERANCE`, or positions off the
straight line through the first and last slice each raise :class:`GeometryError` naming the
series and the positions. The slice axis of the affine is the measured mean step vector
``(IPP_last - IPP_first) / (n - 1)``; when it is not parallel to ``n`` (CT gantry tilt) the
affine is sheared, which keeps every voxel centre exact, and ``meta["gantry_tilt_deg"]``
records the angle.

Pixel values
------------
Values are Hounsfield units (modality LUT, PS3.3 C.11.1: ``HU = stored * slope + intercept``).
The array is ``int16`` when that is exact (all slopes 1, integral intercepts, results within
int16) -- the common CT case and the fastest -- otherwise ``float32``. Native little-endian
pixels are read straight from each file's PixelData offset into the output array (one
``readinto`` per slice, threads, rescale in place while the slice is in cache); compressed
transfer syntaxes are decoded by pydicom's pixel handlers (pylibjpeg, pyjpegls, RLE).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from scrubin.imaging.dicom_scan import (
    HeaderDatasets,
    SliceHeader,
    Stack,
    check_decodable,
    quiet_pixel_array,
    uid_name,
)
from scrubin.imaging.errors import DicomError, GeometryError
from scrubin.imaging.volume import Volume, affine_from_dicom

#: Largest deviation of a slice from the regular grid: max(ABS mm, REL × typical step).
STEP_TOLERANCE_ABS = 0.01
STEP_TOLERANCE_REL = 0.02
#: Steps above this multiple of the typical step are reported as missing slices.
GAP_FACTOR = 1.5
#: Largest deviation of ImageOrientationPatient from unit length / orthogonality that is
#: normalised away (rounding of the DS values); anything larger is refused.
IOP_TOLERANCE = 1e-3
#: Threads reading slices (file reads and numpy loops release the GIL).
READ_THREADS = min(4, os.cpu_count() or 1)


@dataclass
class StackGeometry:
    """Sorted order and exact affine of a slice stack (see module docstring)."""

    order: np.ndarray
    affine: np.ndarray
    step_mm: float
    tilt_deg: float


def _fmt(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in p) + ")"


def unit_orientation(iop: np.ndarray, where: str) -> np.ndarray:
    """ImageOrientationPatient with unit, orthogonal cosines (PS3.3 C.7.6.2.1.1).

    The standard requires the row and column direction cosines to be unit vectors at right
    angles. Values written with a few decimals miss that by rounding; such deviations up to
    :data:`IOP_TOLERANCE` (length error and cosine of the angle) are removed by normalising
    both vectors and splitting the remaining dot product symmetrically between them (the
    first-order orthogonalisation, so neither axis is privileged). Larger deviations would
    scale or shear the affine (cosines of length 1.08 give voxels 8 % too large) and raise
    :class:`GeometryError` naming ``where`` and the values.

    Parameters
    ----------
    iop
        6 floats: row direction cosine then column direction cosine (LPS, unitless).
    where
        Series/file named in the error message.
    """
    iop = np.asarray(iop, dtype=np.float64).reshape(6)
    row, col = iop[:3], iop[3:]
    len_r, len_c = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    values = "[" + ", ".join(f"{v:.6g}" for v in iop) + "]"
    if not (abs(len_r - 1.0) <= IOP_TOLERANCE and abs(len_c - 1.0) <= IOP_TOLERANCE):
        raise GeometryError(
            f"{where}: ImageOrientationPatient {values} has cosines of length {len_r:.6g} and "
            f"{len_c:.6g}, expected unit vectors (within {IOP_TOLERANCE:g})"
        )
    row, col = row / len_r, col / len_c
    dot = float(row @ col)
    if abs(dot) > IOP_TOLERANCE:
        angle = float(np.degrees(np.arccos(np.clip(dot, -1.0, 1.0))))
        raise GeometryError(
            f"{where}: ImageOrientationPatient {values} has row and column cosines at "
            f"{angle:.4g} deg, expected orthogonal (|cos| within {IOP_TOLERANCE:g})"
        )
    row, col = row - 0.5 * dot * col, col - 0.5 * dot * row
    return np.concatenate([row / np.linalg.norm(row), col / np.linalg.norm(col)])


def stack_geometry(
    label: str,
    iop: np.ndarray,
    pixel_spacing: np.ndarray,
    positions_lps: np.ndarray,
    names: Sequence[str],
    single_spacing: float = 1.0,
) -> StackGeometry:
    """Sort slices along the normal, check the spacing, and build the voxel→LPS affine.

    Parameters
    ----------
    label
        Series (or file) named in error messages.
    iop, pixel_spacing
        ImageOrientationPatient (6) and PixelSpacing [row, column] mm shared by the slices.
    positions_lps
        (n, 3) ImagePositionPatient of each slice, LPS mm, in input order.
    names
        A name per slice (file name or frame number) for error messages.
    single_spacing
        Slice spacing (mm) to use when there is only one slice.
    """
    iop = unit_orientation(iop, f"{label}: {names[0]}")
    normal = np.cross(iop[:3], iop[3:])
    pos = np.asarray(positions_lps, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    if n == 1:
        return StackGeometry(
            np.zeros(1, dtype=np.intp),
            affine_from_dicom(iop, pixel_spacing, pos[0], normal * single_spacing),
            single_spacing,
            0.0,
        )
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    d, pos = d[order], pos[order]
    steps = np.diff(d)
    typical = float(np.median(steps))
    tol = max(STEP_TOLERANCE_ABS, STEP_TOLERANCE_REL * abs(typical))
    dup = np.flatnonzero(steps < STEP_TOLERANCE_ABS)
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise GeometryError(
            f"{label}: duplicate slice position {_fmt(pos[dup[0]])} mm in {names[a]} and "
            f"{names[b]} (two acquisitions in one series? choose one with --series)"
        )
    gaps = np.flatnonzero(steps > GAP_FACTOR * typical)
    if gaps.size:
        g = gaps[0]
        missing = int(round(steps[g] / typical)) - 1
        raise GeometryError(
            f"{label}: about {missing} missing slice(s) between positions {_fmt(pos[g])} and "
            f"{_fmt(pos[g + 1])} mm (gap {steps[g]:.3f} mm, typical step {typical:.3f} mm)"
        )
    odd = np.flatnonzero(np.abs(steps - typical) > tol)
    if odd.size:
        g = odd[0]
        raise GeometryError(
            f"{label}: non-uniform slice spacing: step {steps[g]:.3f} mm between "
            f"{_fmt(pos[g])} and {_fmt(pos[g + 1])} mm, typical {typical:.3f} mm "
            f"(tolerance {tol:.3f} mm)"
        )
    step_vec = (pos[-1] - pos[0]) / (n - 1)
    fit = pos[0] + np.arange(n)[:, None] * step_vec
    dev = np.linalg.norm(pos - fit, axis=1)
    if dev.max() > tol:
        g = int(np.argmax(dev))
        raise GeometryError(
            f"{label}: slice positions are not on a line: {_fmt(pos[g])} mm is "
            f"{dev[g]:.3f} mm off the line through the first and last slice"
        )
    cos_t = abs(float(step_vec @ normal)) / float(np.linalg.norm(step_vec))
    tilt = float(np.degrees(np.arccos(min(1.0, cos_t))))
    affine = affine_from_dicom(iop, pixel_spacing, pos[0], step_vec)
    tilt = tilt if tilt > 1e-3 else 0.0
    return StackGeometry(order, affine, float(np.linalg.norm(step_vec)), tilt)


# ------------------------------------------------------------------------------ pixels
def _fix_bits(raw: np.ndarray, bits_stored: int, signed: bool) -> None:
    """Keep only the BitsStored low bits (PS3.5 8.1.1), sign-extending signed data, in place."""
    if bits_stored >= raw.dtype.itemsize * 8:
        return
    if signed:
        lo, hi = -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
        if raw.min() < lo or raw.max() > hi:
            shift = raw.dtype.itemsize * 8 - bits_stored
            np.left_shift(raw, shift, out=raw)
            np.right_shift(raw, shift, out=raw)
    elif raw.max() >= (1 << bits_stored):
        np.bitwise_and(raw, (1 << bits_stored) - 1, out=raw)


class _OverflowError(Exception):
    """int16 output would not be exact for this slice: redo the stack in float32."""


def _decode(h: SliceHeader) -> np.ndarray:
    """Stored values of one slice via pydicom's pixel handlers (compressed or unusual data)."""
    try:
        arr = quiet_pixel_array(h.path)
    except Exception as exc:  # decoders raise many types on corrupt data
        raise DicomError(
            f"{h.path}: cannot decode pixel data ({uid_name(h.transfer_syntax)}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if arr.shape != (h.rows, h.cols):
        raise DicomError(f"{h.path}: decoded pixels have shape {arr.shape}, "
                         f"expected ({h.rows}, {h.cols}) (colour or multi-frame?)")
    return arr


def _native_view(h: SliceHeader) -> tuple[np.dtype, int, bool] | None:
    """(raw dtype, bits stored, signed) when the slice can be read straight from the file."""
    if h.pixel_offset is None or h.samples_per_pixel != 1 or h.bits_allocated != 16:
        return None
    if h.pixel_length is None or h.pixel_length < h.rows * h.cols * 2:
        raise DicomError(
            f"{h.path}: PixelData holds {h.pixel_length} bytes, expected {h.rows * h.cols * 2}"
        )
    return np.dtype("<i2" if h.signed else "<u2"), h.bits_stored, h.signed


def _read_native(h: SliceHeader, buf: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Read the raw slice into ``buf``'s memory, returning it viewed as ``dtype``."""
    mv = memoryview(buf).cast("B")
    try:
        with open(h.path, "rb", buffering=0) as fp:
            fp.seek(h.pixel_offset)  # type: ignore[arg-type]
            got = fp.readinto(mv) or 0
            while 0 < got < mv.nbytes:  # a short read is legal; EOF returns 0
                more = fp.readinto(mv[got:]) or 0
                if not more:
                    break
                got += more
    except OSError as exc:
        raise DicomError(f"{h.path}: cannot read pixel data ({exc.strerror or exc})") from None
    if got != mv.nbytes:
        raise DicomError(
            f"{h.path}: truncated file, pixel data ends after {got} of {mv.nbytes} bytes"
        )
    return buf.view(dtype)


def _slice_into(h: SliceHeader, out: np.ndarray, scratch: np.ndarray | None) -> None:
    """Fill ``out`` (one [j, i] slice, int16 or float32) with HU of slice ``h``."""
    slope, intercept = h.slope, h.intercept
    native = _native_view(h)
    if out.dtype == np.int16:
        if native is not None:
            dtype, bits, signed = native
            raw = _read_native(h, out, dtype)
            _fix_bits(raw, bits, signed)
        else:
            raw = _decode(h)
        ic = int(intercept)
        # only the side the intercept pushes towards can leave int16 (one pass, not two)
        wide = raw.dtype.itemsize > 2
        if (raw.dtype.kind == "u" or ic > 0 or wide) and int(raw.max()) + ic > 32767:
            raise _OverflowError
        if raw.dtype.kind != "u" and (ic < 0 or wide) and int(raw.min()) + ic < -32768:
            raise _OverflowError
        if raw.dtype == np.int16 and np.shares_memory(raw, out):
            if ic:
                out += np.int16(ic)
        else:
            np.add(raw, np.int32(ic), out=out, casting="unsafe")
        return
    if native is not None:
        dtype, bits, signed = native
        assert scratch is not None
        raw = _read_native(h, scratch, dtype)
        _fix_bits(raw, bits, signed)
    else:
        raw = _decode(h)
    np.multiply(raw, np.float32(slope), out=out, casting="unsafe")
    if intercept:
        out += np.float32(intercept)


def _int16_exact(headers: Sequence[SliceHeader]) -> bool:
    return all(
        h.slope == 1.0
        and h.intercept == int(h.intercept)
        and abs(h.intercept) <= 32767
        and h.bits_allocated <= 16
        and h.samples_per_pixel == 1
        for h in headers
    )


def read_pixels(
    headers: Sequence[SliceHeader],
    progress: Callable[[int], None] | None = None,
    threads: int = READ_THREADS,
) -> np.ndarray:
    """HU array ``[k, j, i]`` of ``headers`` (already in slice order); int16 when exact."""
    for ts in {h.transfer_syntax for h in headers}:
        check_decodable(next(h for h in headers if h.transfer_syntax == ts))
    rows, cols = headers[0].rows, headers[0].cols
    dtypes = [np.int16, np.float32] if _int16_exact(headers) else [np.float32]
    for dtype in dtypes:
        out = np.empty((len(headers), rows, cols), dtype=dtype)

        def work(k: int, out: np.ndarray = out) -> None:
            scratch = None if out.dtype == np.int16 else np.empty((rows, cols), np.int16)
            _slice_into(headers[k], out[k], scratch)
            if progress is not None:
                progress(1)

        try:
            # threads only for direct reads: the decoders hold the GIL, and the warnings filter
            # that silences pydicom while decoding is process-global (not thread-safe)
            native = all(h.pixel_offset is not None for h in headers)
            if threads > 1 and len(headers) > 8 and native:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(work, range(len(headers))))
            else:
                for k in range(len(headers)):
                    work(k)
        except _OverflowError:
            continue
        return out
    raise AssertionError("float32 path cannot overflow")  # pragma: no cover


# ------------------------------------------------------------------------------ volume
def header_meta(ds: pydicom.Dataset) -> dict[str, object]:
    """Study/patient facts a derived object (DICOM SEG, mesh provenance) must carry."""
    keys = ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
            "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "SeriesNumber",
            "Manufacturer", "BodyPartExamined", "PatientPosition")
    out: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values are converted lazily; pydicom warns on oddities
        for k in keys:
            try:
                out[k] = str(ds.get(k, "") or "")
            except Exception:  # a corrupt element (unknown VR...) surfaces only on access
                out[k] = ""
    return out


def load_stack(stack: Stack, progress: bool = False) -> Volume:
    """Sort, check and read one stack of single-frame slices into a :class:`Volume`."""
    headers = stack.headers
    label = f"series {stack.key}"
    for h in headers:
        if h.ipp is None or h.iop is None or h.pixel_spacing is None:
            missing = [name for name, v in (("ImagePositionPatient", h.ipp),
                       ("ImageOrientationPatient", h.iop), ("PixelSpacing", h.pixel_spacing))
                       if v is None]
            raise GeometryError(f"{label}: {h.path} has no valid {', '.join(missing)} "
                                "(not a 3-D acquisition slice)")
        if h.samples_per_pixel != 1:
            raise DicomError(f"{h.path}: colour image ({h.samples_per_pixel} samples per "
                             "pixel), not a volume")
    geom = stack_geometry(
        label,
        headers[0].iop,  # type: ignore[arg-type]
        headers[0].pixel_spacing,  # type: ignore[arg-type]
        np.stack([h.ipp for h in headers]),  # type: ignore[misc]
        [str(h.path) for h in headers],
        headers[0].slice_spacing or 1.0,
    )
    ordered = [headers[i] for i in geom.order]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ordered), desc="reading slices", unit="slice")
    try:
        array = read_pixels(ordered, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    first = ordered[0].dataset
    meta: dict[str, object] = header_meta(first)
    slopes = sorted({(h.slope, h.intercept) for h in ordered})
    meta.update(
        datasets=HeaderDatasets(ordered),
        stack_key=stack.key,
        stack_index=stack.stack_index,
        transfer_syntaxes=sorted({h.transfer_syntax for h in ordered}),
        rescale=[{"slope": s, "intercept": i} for s, i in slopes],
        gantry_tilt_deg=geom.tilt_deg,
        slice_step_mm=geom.step_mm,
    )
    return Volume(
        array=array,
        affine=geom.affine,
        modality=ordered[0].modality,
        series_instance_uid=ordered[0].series_uid,
        frame_of_reference_uid=ordered[0].frame_of_reference_uid,
        description=ordered[0].description,
        source_files=[h.path for h in ordered],
        meta=meta,
    )


def header_paths(headers: Sequence[SliceHeader]) -> list[Path]:
    """Paths of ``headers`` (helper for listings)."""
    return [h.path for h in headers]
