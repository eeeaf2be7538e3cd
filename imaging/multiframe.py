"""Enhanced / multi-frame CT and MR (one file, many frames) → :class:`~imaging.volume.Volume`.

Each frame's geometry comes from the functional groups (PS3.3 C.7.6.16): the Per-frame
Functional Groups Sequence (5200,9230) item of that frame, else the Shared Functional Groups
Sequence (5200,9229):

* Plane Position (Patient) Sequence (0020,9113) → ImagePositionPatient (C.7.6.16.2.3)
* Plane Orientation (Patient) Sequence (0020,9116) → ImageOrientationPatient (C.7.6.16.2.4)
* Pixel Measures Sequence (0028,9110) → PixelSpacing (C.7.6.16.2.1)
* Pixel Value Transformation Sequence (0028,9145) → RescaleSlope/Intercept (C.7.6.16.2.9)

falling back to the same attributes at the top level of the data set. Frames are grouped into
stacks by orientation and pixel spacing, then sorted and checked exactly like single-frame
slices (:func:`scrubin.imaging.dicom_series.stack_geometry`). A multi-frame image without per-frame
positions (ultrasound cine, stripped enhanced MR) cannot be placed in patient space and is
refused with :class:`GeometryError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from scrubin.imaging.dicom_scan import (
    IOP_TOLERANCE,
    SliceHeader,
    check_decodable,
    quiet_pixel_array,
    uid_name,
)
from scrubin.imaging.dicom_series import header_meta, stack_geometry
from scrubin.imaging.errors import DicomError, GeometryError
from scrubin.imaging.volume import Volume


@dataclass
class FrameStack:
    """Frames of one multi-frame file sharing orientation and pixel spacing.

    ``frames`` are 0-based frame indices in file order; ``positions`` their
    ImagePositionPatient (LPS mm); ``rescale`` (n, 2) slope and intercept per frame.
    """

    header: SliceHeader
    frames: np.ndarray
    iop: np.ndarray
    pixel_spacing: np.ndarray
    positions: np.ndarray
    rescale: np.ndarray
    stack_index: int = 1


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
            if (np.max(np.abs(g["iop"] - iop)) <= IOP_TOLERANCE  # type: ignore[operator]
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


def _frame_pixels(h: SliceHeader, frames: np.ndarray) -> np.ndarray:
    """Stored values of the given frames, (len(frames), rows, cols)."""
    ds = h.dataset
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if h.pixel_offset is not None and int(ds.get("SamplesPerPixel", 1) or 1) == 1 and bits == 16:
        dtype = np.dtype("<i2" if int(ds.get("PixelRepresentation", 0) or 0) else "<u2")
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
        stored = int(ds.get("BitsStored", 16) or 16)
        if stored < 16:
            from scrubin.imaging.dicom_series import _fix_bits

            _fix_bits(out, stored, dtype.kind == "i")
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


def load_frame_stack(stack: FrameStack, key: str) -> Volume:
    """Sort, check and read one stack of a multi-frame file into a :class:`Volume` (HU).

    ``meta["frame_numbers"]`` lists the 1-based frame number of each slice ``k`` (for SEG
    references); ``meta["datasets"]`` holds the file's header without pixel data.
    """
    h = stack.header
    if int(h.dataset.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(f"{h.path}: colour image, not a volume")
    names = [f"frame {int(f) + 1}" for f in stack.frames]
    geom = stack_geometry(f"{h.path} (series {key})", stack.iop, stack.pixel_spacing,
                          stack.positions, names)
    frames = stack.frames[geom.order]
    rescale = stack.rescale[geom.order]
    raw = _frame_pixels(h, frames)
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
    ds = h.dataset
    meta: dict[str, object] = header_meta(ds)
    meta.update(
        datasets=[ds],
        frame_numbers=[int(f) + 1 for f in frames],
        stack_key=key,
        stack_index=stack.stack_index,
        transfer_syntaxes=[h.transfer_syntax],
        rescale=[{"slope": float(s), "intercept": float(i)}
                 for s, i in sorted(set(map(tuple, rescale.tolist())))],
        gantry_tilt_deg=geom.tilt_deg,
        slice_step_mm=geom.step_mm,
    )
    return Volume(
        array=np.ascontiguousarray(array),
        affine=geom.affine,
        modality=h.modality,
        series_instance_uid=h.series_uid,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        description=h.description,
        source_files=[h.path],
        meta=meta,
    )
