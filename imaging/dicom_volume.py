"""Step 5 of the DICOM pipeline: a stack's geometry and pixels assembled into a Volume.

:func:`load_stack` (single-frame slices) and :func:`load_frame_stack` (a multi-frame file)
run the steps in order -- :mod:`~scrubin.imaging.dicom_geometry` (slice order, affine),
:mod:`~scrubin.imaging.dicom_pixels` (HU array in that order) -- and attach the provenance
every derived output must carry (SeriesInstanceUID, FrameOfReferenceUID, study and patient
facts for DICOM SEG, the source headers).
"""

from __future__ import annotations

import warnings

import pydicom

from scrubin.imaging.dicom_geometry import frame_geometry, slice_geometry
from scrubin.imaging.dicom_group import FrameStack, Stack
from scrubin.imaging.dicom_pixels import read_frames, read_pixels
from scrubin.imaging.dicom_scan import HeaderDatasets
from scrubin.imaging.volume import Volume


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
    """Sort, check and read one stack of single-frame slices into a :class:`Volume` (HU).

    ``meta["datasets"]`` holds the slices' pydicom headers (parsed on access), in slice order.
    """
    geom = slice_geometry(stack)
    ordered = [stack.headers[i] for i in geom.order]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ordered), desc="reading slices", unit="slice")
    try:
        array = read_pixels(ordered, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    meta: dict[str, object] = header_meta(ordered[0].dataset)
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


def load_frame_stack(stack: FrameStack) -> Volume:
    """Sort, check and read one stack of a multi-frame file into a :class:`Volume` (HU).

    ``meta["frame_numbers"]`` lists the 1-based frame number of each slice ``k`` (for SEG
    references); ``meta["datasets"]`` holds the file's header without pixel data.
    """
    h = stack.header
    geom = frame_geometry(stack)
    frames = stack.frames[geom.order]
    rescale = stack.rescale[geom.order]
    array = read_frames(h, frames, rescale)
    ds = h.dataset
    meta: dict[str, object] = header_meta(ds)
    meta.update(
        datasets=[ds],
        frame_numbers=[int(f) + 1 for f in frames],
        stack_key=stack.key,
        stack_index=stack.stack_index,
        transfer_syntaxes=[h.transfer_syntax],
        rescale=[{"slope": float(s), "intercept": float(i)}
                 for s, i in sorted(set(map(tuple, rescale.tolist())))],
        gantry_tilt_deg=geom.tilt_deg,
        slice_step_mm=geom.step_mm,
    )
    return Volume(
        array=array,
        affine=geom.affine,
        modality=h.modality,
        series_instance_uid=h.series_uid,
        frame_of_reference_uid=h.frame_of_reference_uid,
        description=h.description,
        source_files=[h.path],
        meta=meta,
    )
