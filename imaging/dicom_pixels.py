"""Step 4 of the DICOM pipeline: the pixel values of a sorted stack, in HU.

Values are Hounsfield units (modality LUT, PS3.3 C.11.1: ``HU = stored * slope + intercept``).
The array is ``int16`` when that is exact (all slopes 1, integral intercepts, results within
int16) -- the common CT case and the fastest -- otherwise ``float32``. Native little-endian
pixels are read straight from each file's PixelData offset into the output array (one
``readinto`` per slice, threads, rescale in place while the slice is in cache); compressed
transfer syntaxes are decoded by pydicom's pixel handlers (pylibjpeg, pyjpegls, RLE).
Multi-frame files are read frame by frame at their offsets when native, else decoded whole.

Input: the slice order of :mod:`scrubin.imaging.dicom_geometry`; next step:
:mod:`scrubin.imaging.dicom_volume`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom

from scrubin.imaging.dicom_scan import SliceHeader, UnsupportedTransferSyntaxError, uid_name
from scrubin.imaging.errors import DicomError

#: Threads reading slices (file reads and numpy loops release the GIL).
READ_THREADS = min(4, os.cpu_count() or 1)


def quiet_pixel_array(path: Path) -> np.ndarray:
    """``dcmread(path).pixel_array`` without pydicom's warnings (stored values, no rescale)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, force=True).pixel_array
        except Exception:
            raise
        except BaseException as exc:  # pyo3 PanicException (Rust decoders) is a BaseException
            if type(exc).__name__ != "PanicException":
                raise
            raise RuntimeError(f"decoder panicked: {exc}") from None



def check_decodable(header: SliceHeader) -> None:
    """Refuse a transfer syntax pydicom cannot decode here, naming the file and the syntax."""
    if header.pixel_offset is not None:
        return
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    name = uid_name(header.transfer_syntax)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoder = get_decoder(UID(header.transfer_syntax))
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            f"{header.path}: unsupported transfer syntax {name} ({header.transfer_syntax})"
        ) from None
    if not decoder.is_available:
        raise UnsupportedTransferSyntaxError(
            f"{header.path}: no installed decoder for transfer syntax {name} "
            f"({header.transfer_syntax}); install pylibjpeg plugins or pyjpegls"
        )


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
    """HU array ``[k, j, i]`` of ``headers`` (already in slice order); int16 when exact.

    Raises
    ------
    DicomError
        A colour slice, truncated or undecodable pixel data (naming the file).
    UnsupportedTransferSyntaxError
        No decoder here for a slice's transfer syntax.
    """
    for h in headers:
        if h.samples_per_pixel != 1:
            raise DicomError(f"{h.path}: colour image ({h.samples_per_pixel} samples per "
                             "pixel), not a volume")
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


def _stored_frames(h: SliceHeader, frames: np.ndarray) -> np.ndarray:
    """Stored values of the given frames of multi-frame file ``h``, (len(frames), rows, cols)."""
    if h.pixel_offset is not None and h.samples_per_pixel == 1 and h.bits_allocated == 16:
        dtype = np.dtype("<i2" if h.signed else "<u2")
        nbytes = h.rows * h.cols * 2
        if (h.pixel_length or 0) < nbytes * h.frames:
            raise DicomError(f"{h.path}: PixelData holds {h.pixel_length} bytes, expected "
                             f"{nbytes * h.frames} for {h.frames} frames")
        out = np.empty((len(frames), h.rows, h.cols), dtype=dtype)
        with open(h.path, "rb", buffering=0) as fp:
            for n, f in enumerate(frames):
                fp.seek(h.pixel_offset + int(f) * nbytes)
                if fp.readinto(memoryview(out[n]).cast("B")) != nbytes:
                    raise DicomError(f"{h.path}: truncated file, frame {int(f) + 1} incomplete")
        _fix_bits(out, h.bits_stored, h.signed)
        return out
    check_decodable(h)
    try:
        arr = quiet_pixel_array(h.path)
    except Exception as exc:  # decoders raise many types on corrupt data
        raise DicomError(f"{h.path}: cannot decode pixel data "
                         f"({uid_name(h.transfer_syntax)}): "
                         f"{type(exc).__name__}: {exc}") from None
    if h.frames == 1:
        arr = arr[None]
    if arr.shape != (h.frames, h.rows, h.cols):
        raise DicomError(f"{h.path}: decoded pixels have shape {arr.shape}, expected "
                         f"({h.frames}, {h.rows}, {h.cols}) (colour image?)")
    return arr[frames]


def read_frames(h: SliceHeader, frames: np.ndarray, rescale: np.ndarray) -> np.ndarray:
    """HU array ``[k, j, i]`` of the given frames (in slice order) of multi-frame file ``h``.

    ``rescale`` is (n, 2) slope and intercept per frame (Pixel Value Transformation, PS3.3
    C.7.6.16.2.9); int16 when exact, else float32.
    """
    if h.samples_per_pixel != 1:
        raise DicomError(f"{h.path}: colour image, not a volume")
    raw = _stored_frames(h, frames)
    slopes, intercepts = rescale[:, 0], rescale[:, 1]
    exact = (np.all(slopes == 1.0) and np.all(intercepts == np.round(intercepts))
             and raw.dtype.kind in "iu" and raw.dtype.itemsize <= 2)
    if exact:
        lo = int(raw.min()) + int(intercepts.min())
        hi = int(raw.max()) + int(intercepts.max())
        exact = lo >= -32768 and hi <= 32767
    if exact:
        array = (raw.astype(np.int32) + intercepts.astype(np.int32)[:, None, None]).astype(np.int16)
    else:
        array = raw.astype(np.float32) * slopes.astype(np.float32)[:, None, None]
        array += intercepts.astype(np.float32)[:, None, None]
    return np.ascontiguousarray(array)
