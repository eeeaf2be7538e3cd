"""DICOM Segmentation (SEG) objects: write segmentations of a DICOM series, read them back.

The SEG is a BINARY Segmentation Storage object (PS3.3 A.51, Segmentation IOD; C.8.20
Segmentation Image Module) written with highdicom. It references every source image (the
Common Instance Reference and Source Image sequences, so viewers such as 3D Slicer or OHIF
place it on the CT), shares the source's Frame of Reference, and describes each segment
(C.8.20.2 Segment Description Macro) with SNOMED CT codes:

===========  ==========================  =============================================
segment      property category           property type
===========  ==========================  =============================================
bone         Tissue (85756007)           Bone (272673000)
skin         Anatomical Structure        Skin (39937001)
soft-tissue  Tissue                      Soft tissue (87784001)
vessels      Anatomical Structure        Blood vessel (59820001)
air          Substance (105590001)       Air (15158005): the air of the airway and
                                         sinuses (anatomic region: Head)
threshold    Tissue                      Tissue (85756007)
===========  ==========================  =============================================

Algorithm type is AUTOMATIC for a preset without seed, SEMIAUTOMATIC when the user gave a
seed or an explicit threshold; the algorithm identification names "scrubin" (family: CID 7162
"Morphological operations" for threshold + components + morphology, "Neighborhood analysis"
for seeded region growing). Frames without any segment are omitted (highdicom's
``omit_empty_frames``); reading puts them back as empty slices.

The file is written to a temporary name in the target folder and renamed into place, so a
failed write leaves nothing behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from scrubin.imaging.errors import SegmentationError
from scrubin.imaging.fileio import write_atomic
from scrubin.imaging.segment import Segmentation
from scrubin.imaging.volume import Volume

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
ALGORITHM_NAME = "scrubin"
ALGORITHM_VERSION = "0.1.0"

# preset -> (category, type, display colour RGB 0..255)
_CODES: dict[str, tuple[object, object, tuple[int, int, int]]] = {
    "bone": (codes.SCT.Tissue, codes.SCT.Bone, (241, 214, 145)),
    "skin": (codes.SCT.AnatomicalStructure, codes.SCT.Skin, (177, 122, 101)),
    "soft-tissue": (codes.SCT.Tissue, codes.SCT.SoftTissue, (216, 101, 79)),
    "vessels": (codes.SCT.AnatomicalStructure, codes.SCT.BloodVessel, (216, 26, 35)),
    "air": (codes.SCT.Substance, codes.SCT.Air, (111, 184, 210)),
}
_DEFAULT_CODES = (codes.SCT.Tissue, codes.SCT.Tissue, (128, 174, 128))


class SegWriteError(SegmentationError):
    """A DICOM SEG cannot be written (no DICOM source, empty segment, unwritable path)."""


class SegReadError(SegmentationError):
    """A file is not a readable DICOM SEG, or does not fit the given volume."""


def _source_datasets(volume: Volume) -> tuple[list[pydicom.Dataset], list[int] | None]:
    """Source headers for highdicom, and for a multi-frame source the frame of each slice."""
    datasets = volume.meta.get("datasets") if isinstance(volume.meta, dict) else None
    if not volume.source_files or not datasets:
        src = volume.description or "the input"
        raise SegWriteError(
            f"--seg needs a DICOM source series; {src} is NIfTI/NRRD/MHA or has no DICOM "
            "headers to reference (load the DICOM series instead)"
        )
    ds_list = list(datasets)  # type: ignore[call-overload]
    K = volume.array.shape[0]
    if len(ds_list) == K:
        return ds_list, None
    frames = volume.meta.get("frame_numbers")
    if len(ds_list) == 1 and frames is not None and len(frames) == K:  # type: ignore[arg-type]
        return ds_list, [int(f) for f in frames]  # type: ignore[union-attr]
    raise SegWriteError(
        f"volume has {K} slices but {len(ds_list)} source headers: cannot map slices to "
        "source images for the SEG"
    )


def _description(number: int, seg: Segmentation) -> hd.seg.SegmentDescription:
    category, prop, rgb = _CODES.get(seg.preset or "", _DEFAULT_CODES)
    seeded = seg.seed_lps is not None
    manual_range = seg.preset is None or (
        seg.preset is not None and seg.threshold != _preset_range(seg.preset)
    )
    algorithm_type = (
        hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
        if seeded or manual_range
        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    )
    family = (
        codes.cid7162.NeighborhoodAnalysis if seeded else codes.cid7162.MorphologicalOperations
    )
    lo, hi = seg.threshold
    params = {
        "preset": seg.preset or "none",
        "threshold_HU": f"{'-inf' if lo is None else lo:}..{'+inf' if hi is None else hi}",
    }
    if seeded:
        params["seed_LPS_mm"] = ",".join(f"{v:.2f}" for v in seg.seed_lps)  # type: ignore[union-attr]
    regions = [codes.SCT.Head] if seg.preset == "air" else None
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=seg.name[:64],
        segmented_property_category=category,
        segmented_property_type=prop,
        algorithm_type=algorithm_type,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=ALGORITHM_NAME, family=family, version=ALGORITHM_VERSION, parameters=params
        ),
        tracking_uid=hd.UID(),
        tracking_id=f"scrubin-{seg.name}",
        anatomic_regions=regions,
        display_color=hd.color.CIELabColor.from_rgb(*rgb),
    )


def _preset_range(preset: str) -> tuple[float | None, float | None]:
    from scrubin.imaging.segment import PRESETS

    p = PRESETS.get(preset)
    return (p.lo, p.hi) if p else (None, None)


def write_seg(
    volume: Volume,
    segmentations: Sequence[Segmentation],
    path: str | Path,
    *,
    series_description: str = "Scrub In segmentation",
    series_number: int = 300,
) -> None:
    """Write ``segmentations`` of ``volume`` as one BINARY DICOM SEG file at ``path``.

    Parameters
    ----------
    volume
        The DICOM-loaded source volume (``meta["datasets"]`` holds its headers).
    segmentations
        One or more non-empty segmentations of ``volume`` (unique names).
    path
        Output file; written atomically.
    series_description, series_number
        Of the new SEG series.

    Raises
    ------
    SegWriteError
        No DICOM source (NIfTI input), no or empty segmentation, mismatched shape or frame of
        reference, duplicate names, unwritable folder.
    """
    segs = list(segmentations)
    if not segs:
        raise SegWriteError("--seg needs at least one segmentation to write")
    datasets, frame_numbers = _source_datasets(volume)
    names = [s.name for s in segs]
    if len(set(names)) != len(names):
        raise SegWriteError(f"segment names must be unique in a SEG, got {names}")
    for s in segs:
        if s.mask.shape != volume.array.shape:
            raise SegWriteError(
                f"segment {s.name!r} has shape {s.mask.shape}, the volume {volume.array.shape}"
            )
        if s.frame_of_reference_uid != volume.frame_of_reference_uid:
            raise SegWriteError(
                f"segment {s.name!r} is in frame of reference {s.frame_of_reference_uid!r}, "
                f"the volume in {volume.frame_of_reference_uid!r}"
            )
        if not s.mask.any():
            raise SegWriteError(f"segment {s.name!r} is empty: nothing to write to {path}")
    pixels = np.stack([s.mask for s in segs], axis=-1).astype(np.uint8)  # (K, J, I, S)
    if frame_numbers is not None:  # multi-frame source: pixel frames in source frame order
        ordered = np.zeros_like(pixels)
        ordered[np.asarray(frame_numbers) - 1] = pixels
        pixels = ordered
    descriptions = [_description(n, s) for n, s in enumerate(segs, start=1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom notes on optional attributes
        seg = _segmentation(path, volume, datasets, dict(
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="Scrub In",
            manufacturer_model_name="scrubin",
            software_versions=ALGORITHM_VERSION,
            device_serial_number="0",
            series_description=series_description[:64],
            content_label="SCRUBIN",
            content_description="Threshold segmentation"[:64],
            omit_empty_frames=True,
        ))
    if str(seg.get("PatientIdentityRemoved", "")).upper() != "YES":  # highdicom copies it
        seg.PatientIdentityRemoved = "NO"  # made from input not marked de-identified
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise SegWriteError(f"cannot write {out}: folder {folder} does not exist")
    try:
        write_atomic(out, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
    except OSError as exc:
        raise SegWriteError(f"cannot write {out}: {exc.strerror or exc}") from None


def _segmentation(path: str | Path, volume: Volume, datasets: Sequence[pydicom.Dataset],
                  kwargs: dict[str, Any]) -> hd.seg.Segmentation:
    """``hd.seg.Segmentation`` of ``datasets``; its refusal of the source headers (a required
    attribute missing or malformed, PS3.3 C.8.20) becomes one :class:`SegWriteError` line."""
    try:
        return hd.seg.Segmentation(source_images=datasets, **kwargs)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        source = volume.source_files[0] if volume.source_files else "the source series"
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SegWriteError(f"DICOM SEG: the source images ({source}) do not make a "
                            f"valid DICOM SEG: {reason}") from None


def read_seg(path: str | Path, volume: Volume | None = None) -> dict[str, np.ndarray]:
    """Read a BINARY/FRACTIONAL DICOM SEG into ``{segment label: bool mask [k, j, i]}``.

    Slice ``k`` of each mask is the SEG's frame for the ``k``-th referenced source image:
    ``volume``'s source order when given (its frame of reference must match), else the order
    of the SEG's Referenced Instance Sequence (the order :func:`write_seg` wrote). Omitted
    empty frames come back as empty slices.

    Raises
    ------
    SegReadError
        Missing/unreadable file, not a SEG, or a SEG of another series / frame of reference.
    """
    p = Path(path)
    if not p.is_file():
        raise SegReadError(f"{p} not found; expected a DICOM SEG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p)
    except Exception as exc:
        raise SegReadError(f"{p} is not a readable DICOM file: {exc}") from None
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise SegReadError(
            f"{p} is not a DICOM Segmentation (SOPClassUID {ds.get('SOPClassUID', 'missing')})"
        )
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:
        raise SegReadError(f"{p}: highdicom cannot parse the SEG: {exc}") from None
    refs = [
        str(r.ReferencedSOPInstanceUID)
        for s in ds.get("ReferencedSeriesSequence", [])
        for r in s.get("ReferencedInstanceSequence", [])
    ]
    if volume is not None:
        if volume.frame_of_reference_uid and (
            str(ds.get("FrameOfReferenceUID", "")) != volume.frame_of_reference_uid
        ):
            raise SegReadError(
                f"{p} is in frame of reference {ds.get('FrameOfReferenceUID', '')!r}, the "
                f"volume in {volume.frame_of_reference_uid!r}"
            )
        datasets, frame_numbers = _source_datasets(volume)
        if frame_numbers is not None:
            getter = partial(seg.get_pixels_by_source_frame,
                             source_sop_instance_uid=str(datasets[0].SOPInstanceUID),
                             source_frame_numbers=frame_numbers)
            return _segment_masks(ds, getter, "frames", p)
        refs = [str(d.SOPInstanceUID) for d in datasets]
    if not refs:
        raise SegReadError(f"{p} references no source instances; pass the source volume")
    getter = partial(seg.get_pixels_by_source_instance, source_sop_instance_uids=refs)
    return _segment_masks(ds, getter, "images", p)


def _segment_masks(ds: pydicom.Dataset, getter: Callable[..., np.ndarray], sources: str,
                   p: Path) -> dict[str, np.ndarray]:
    """One boolean mask per segment label from a highdicom ``get_pixels_by_source_*`` call."""
    numbers = [int(s.SegmentNumber) for s in ds.SegmentSequence]
    try:
        arr = getter(
            segment_numbers=numbers,
            assert_missing_frames_are_empty=True,
            skip_overlap_checks=True,
            dtype=np.uint8,
        )
    except Exception as exc:
        raise SegReadError(f"{p}: frames do not match the source {sources}: {exc}") from None
    return {
        str(s.SegmentLabel): arr[..., n] > 0 for n, s in enumerate(ds.SegmentSequence)
    }
