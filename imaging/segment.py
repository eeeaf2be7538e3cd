"""Threshold segmentation of CT anatomy: presets, seeds, cleaning.

Presets are Hounsfield-unit ranges (HU after rescale, inclusive) plus a cleaning recipe:

=============  ==============  ======  ===========================================================
preset         range (HU)      level   cleaning
=============  ==============  ======  ===========================================================
bone           >= 300          300     largest 26-connected component (the skull); small separate
                                       dense objects (fiducials, spine pieces) drop out
skin           >= -300         -300    body = tissue and denser; cut thin bridges (a table or
                                       headrest touching the head) with an erosion of 1.5 mm, keep
                                       the largest component, add back cut-off pieces that do not
                                       reach the volume border (ears, nose), fill every cavity:
                                       per-slice holes across the superior-inferior axis, which
                                       hold every 3-D hole and also close an airway that is open
                                       at the neck end of the scan
soft-tissue    -100 .. 200     None    largest 26-connected component
vessels        150 .. 500      None    contrast range; voxels within 1 mm of > 500 HU (bone rims
                                       whose partial-volume values fall in the band) removed;
                                       restricted to the body; with a seed: the seed's component,
                                       without: every component of at least 20 mm^3
air            <= -400         -400    air inside the body (the filled skin mask): airway, sinuses;
                                       outside air is excluded
=============  ==============  ======  ===========================================================

Choices and their reasons
-------------------------
* Bone 300 HU: the usual lower bound for bone in CT (cancellous bone ~300-800 HU, cortical
  > 1000 HU); it sits below the half-maximum between soft tissue (~40) and cortical bone, so
  the mask is slightly larger than the anatomical bone (partial volume: the boundary is drawn
  where the blurred edge crosses 300 HU). Pass ``threshold`` for a different trade-off.
* ``level`` is the HU at which a sub-voxel iso-surface of the intensity volume reproduces the
  mask's boundary (the range edge for one-sided ranges); ``None`` for two-sided bands, where
  only the mask is meaningful. Inside the mask means ``value >= level`` (``<=`` for ranges
  open below, i.e. air). Regions added by cleaning (filled cavities) are not at that level:
  use :func:`iso_field` to get an intensity field whose level set is the mask boundary.
* Presets are for CT only. A volume whose ``modality`` is "CT" is accepted; any other
  modality (MR, PT, US, ...) is refused; an unknown modality ("", NIfTI input) is accepted
  only when the array looks like HU (its minimum is below -200 HU: CT air is ~-1000 HU,
  whereas MR intensities are non-negative). Otherwise pass an explicit ``threshold``.
* Without a preset, an explicit ``threshold`` keeps the largest 26-connected component
  (with a seed: the seed's component); no filling, no morphology.
* ``exclude_fiducials``: small dense blobs (>= 1800 HU cores, each at most 1500 mm^3: metal
  or ceramic skin markers, denser than the skull) are removed with the voxels their density
  raised above 200 HU within 4 mm of the core, plus one voxel of partial-volume rim; the
  surface beneath is rebuilt by a 15 mm ball closing (on a ~1 mm grid) confined to the removed
  region, so the skin under a marker is not dented; then the mask is re-cleaned (largest
  component, holes filled). On the full phantom no bump voxel remains and at most 7 voxels
  (0.5 mm) per marker are missing under it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from scrubin.imaging import regions as rg
from scrubin.imaging import runops as ro
from scrubin.imaging.errors import SegmentationError
from scrubin.imaging.segment_clean import (
    exclude_rims,
    fill_cavities,
    remove_fiducials,
    separate_thin_bridges,
)
from scrubin.imaging.volume import Volume

#: HU below which an unknown-modality volume is taken as CT (HU-like: has air).
HU_LIKE_MIN: float = -200.0


@dataclass(frozen=True)
class Preset:
    """A named CT segmentation recipe.

    Attributes
    ----------
    name
        Preset name ("bone", "skin", ...).
    lo, hi
        Inclusive HU range; None = open on that side.
    level
        HU iso-level of the boundary for sub-voxel surface extraction (None: mask only).
    connectivity
        6, 18 or 26 (foreground connectivity of the component step).
    keep
        "largest" (one component) or "all" (every component, see ``min_component_mm3``).
    fill_holes
        Fill every cavity: per-slice holes across the superior-inferior axis (they hold all
        3-D holes, and close an airway open at the border of the scan).
    morphology
        ``("separate", radius_mm)``: cut bridges thinner than ~2 radius (a table touching
        the head) when the chosen component reaches the volume border, then restore thin
        anatomy (:func:`scrubin.imaging.segment_clean.separate_thin_bridges`); None: none.
    description
        One line for ``--help`` and reports.
    inside_body
        Keep only voxels inside the filled body (skin) mask.
    exclude_above_mm
        ``(hu, mm)``: drop voxels within ``mm`` of a voxel above ``hu`` (partial-volume rims).
    min_component_mm3
        With ``keep="all"``: drop components smaller than this.
    """

    name: str
    lo: float | None
    hi: float | None
    level: float | None
    connectivity: int
    keep: str
    fill_holes: bool
    morphology: tuple[str, float] | None
    description: str
    inside_body: bool = False
    exclude_above_mm: tuple[float, float] | None = None
    min_component_mm3: float = 0.0


PRESETS: dict[str, Preset] = {
    "bone": Preset(
        "bone", 300.0, None, 300.0, 26, "largest", False, None,
        "bone >= 300 HU, largest connected component (skull)",
    ),
    "skin": Preset(
        "skin", -300.0, None, -300.0, 26, "largest", True, ("separate", 1.5),
        "outer body surface: >= -300 HU, table cut off, largest component, all cavities filled",
    ),
    "soft-tissue": Preset(
        "soft-tissue", -100.0, 200.0, None, 26, "largest", False, None,
        "soft tissue -100..200 HU, largest connected component",
    ),
    "vessels": Preset(
        "vessels", 150.0, 500.0, None, 26, "all", False, None,
        "contrast-filled vessels 150..500 HU inside the body, bone rims removed (use a seed)",
        inside_body=True, exclude_above_mm=(500.0, 1.0), min_component_mm3=20.0,
    ),
    "air": Preset(
        "air", None, -400.0, -400.0, 26, "all", False, None,
        "air <= -400 HU inside the body (airway, sinuses); outside air excluded",
        inside_body=True,
    ),
}


@dataclass
class Segmentation:
    """A binary segmentation of a volume.

    Attributes
    ----------
    mask
        Boolean ``[k, j, i]`` array, same shape as ``volume.array``.
    level
        HU iso-level for sub-voxel surface extraction from the intensity volume, or None.
    name
        Segment name (label name; defaults to the preset name or "threshold").
    preset
        Preset used, or None.
    threshold
        Inclusive ``(lo, hi)`` range actually applied (None = open side).
    seed_lps
        The seed point (LPS mm, shape (3,)) or None.
    voxel_count
        Number of True voxels.
    timings
        Seconds per pipeline stage.
    affine
        The volume's voxel ``(i, j, k, 1)`` -> LPS mm affine.
    series_instance_uid, frame_of_reference_uid
        Provenance copied from the volume.
    bbox_kji
        ``(k, j, i)`` slices of ``mask`` holding every True voxel (tight except after
        ``exclude_fiducials``), so later stages can work on a crop; None if unknown.
    """

    mask: np.ndarray
    level: float | None
    name: str
    preset: str | None
    threshold: tuple[float | None, float | None]
    seed_lps: np.ndarray | None
    voxel_count: int
    timings: dict[str, float] = field(default_factory=dict)
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    bbox_kji: tuple[slice, slice, slice] | None = None

    @property
    def inside_below(self) -> bool:
        """True when the inside of the mask is the low side of ``level`` (e.g. air)."""
        return self.threshold[0] is None and self.threshold[1] is not None

    def provenance(self) -> dict[str, str]:
        """The source UIDs every derived output must carry."""
        return {
            "series_instance_uid": self.series_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
        }

    def volume_mm3(self) -> float:
        """Mask volume in mm^3 (voxel count times voxel volume)."""
        return self.voxel_count * abs(float(np.linalg.det(self.affine[:3, :3])))


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._t
        self._t = now


# --------------------------------------------------------------------------- validation
def _check_threshold(
    threshold: tuple[float | None, float | None] | None,
) -> tuple[float | None, float | None] | None:
    if threshold is None:
        return None
    try:
        lo, hi = threshold
    except (TypeError, ValueError):
        raise SegmentationError(
            f"threshold must be (lo, hi) in HU with None for an open side, got {threshold!r}"
        ) from None
    out: list[float | None] = []
    for name, v in (("lo", lo), ("hi", hi)):
        if v is None:
            out.append(None)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise SegmentationError(f"threshold {name} must be a number, got {v!r}") from None
        if not np.isfinite(f):
            raise SegmentationError(f"threshold {name} must be finite, got {v!r}")
        out.append(f)
    if out[0] is None and out[1] is None:
        raise SegmentationError("threshold needs at least one bound (lo or hi), got (None, None)")
    if out[0] is not None and out[1] is not None and out[0] > out[1]:
        raise SegmentationError(
            f"threshold lo {out[0]:g} is above hi {out[1]:g}; expected lo <= hi"
        )
    return out[0], out[1]


def _check_ct(volume: Volume, preset: str) -> None:
    modality = (volume.modality or "").upper()
    hint = "presets are CT HU ranges; pass an explicit threshold (--threshold LO:HI)"
    if modality == "CT":
        return
    if modality:
        raise SegmentationError(
            f"preset {preset!r} cannot be used on a {modality} volume: {hint}"
        )
    vmin = float(np.nanmin(volume.array))
    if vmin >= HU_LIKE_MIN:
        raise SegmentationError(
            f"preset {preset!r} needs CT in HU, but the volume's modality is unknown and its "
            f"minimum {vmin:g} is not HU-like (no air below {HU_LIKE_MIN:g}): {hint}"
        )


def _fmt_range(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else f'{lo:g}'}, {'+inf' if hi is None else f'{hi:g}'}] HU"


def _seed_voxel(
    volume: Volume, seed_lps: np.ndarray, lo: float | None, hi: float | None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    seed = np.asarray(seed_lps, dtype=np.float64)
    if seed.shape != (3,) or not np.all(np.isfinite(seed)):
        raise SegmentationError(
            f"seed must be 3 finite LPS mm coordinates (x, y, z), got {np.asarray(seed_lps)!r}"
        )
    ijk = np.rint(volume.lps_to_index(seed)).astype(np.int64)
    ni, nj, nk = volume.shape_ijk
    s = ", ".join(f"{v:g}" for v in seed)
    if not (0 <= ijk[0] < ni and 0 <= ijk[1] < nj and 0 <= ijk[2] < nk):
        b = volume.bounds_lps()
        raise SegmentationError(
            f"seed ({s}) LPS mm is outside the volume (voxel i,j,k = {tuple(int(v) for v in ijk)}"
            f" of {ni}x{nj}x{nk}; LPS bounds {np.round(b[0], 1).tolist()} .. "
            f"{np.round(b[1], 1).tolist()} mm)"
        )
    kji = (int(ijk[2]), int(ijk[1]), int(ijk[0]))
    value = float(volume.array[kji])
    if not ((lo is None or value >= lo) and (hi is None or value <= hi)):
        raise SegmentationError(
            f"seed ({s}) LPS mm has voxel value {value:g}, outside the range {_fmt_range(lo, hi)}"
            f"; the segmentation would be empty, not an empty mesh: move the seed or widen the "
            f"threshold"
        )
    return seed, kji


# --------------------------------------------------------------------------- building blocks
def _si_axis(volume: Volume) -> int:
    """Array axis (0 = k, 1 = j, 2 = i) closest to the patient's superior-inferior axis."""
    ijk = int(np.argmax(np.abs(volume.direction[2, :])))
    return 2 - ijk


def _body_mask(volume: Volume) -> np.ndarray:
    """The filled skin mask (the inside of the body), for presets restricted to the body."""
    return segment(volume, preset="skin").mask


# --------------------------------------------------------------------------- entry point
def segment(
    volume: Volume,
    preset: str | None = None,
    threshold: tuple[float | None, float | None] | None = None,
    seed_lps: np.ndarray | None = None,
    exclude_fiducials: bool = False,
    label_name: str | None = None,
) -> Segmentation:
    """Segment a volume by a preset and/or an explicit HU threshold.

    Parameters
    ----------
    volume
        The image (CT in HU for presets).
    preset
        One of :data:`PRESETS` ("bone", "skin", "soft-tissue", "vessels", "air") or None.
    threshold
        Inclusive ``(lo, hi)`` in the volume's units (HU after rescale); None on a side = open.
        Overrides the preset's range (the preset's cleaning still applies).
    seed_lps
        A point (LPS mm, shape (3,)): keep the connected region holding it (26-connected)
        instead of the preset's keep rule; the skin preset's table separation is skipped (the
        seed chooses the object). Its voxel (nearest centre) must lie in the range.
    exclude_fiducials
        Remove small dense skin markers from the mask (see module docstring).
    label_name
        Name of the segment (default: the preset name, or "threshold").

    Returns
    -------
    Segmentation

    Raises
    ------
    SegmentationError
        Unknown preset, neither preset nor threshold, bad threshold, preset on a non-CT
        volume, seed outside the volume or the range, empty result.
    """
    timer = _Timer()
    if not isinstance(volume, Volume):
        raise SegmentationError(f"segment needs an imaging.volume.Volume, got {type(volume)}")
    thr = _check_threshold(threshold)
    p: Preset | None = None
    if preset is not None:
        if preset not in PRESETS:
            raise SegmentationError(
                f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}"
            )
        _check_ct(volume, preset)
        p = PRESETS[preset]
    elif thr is None:
        raise SegmentationError(
            f"give a preset ({', '.join(PRESETS)}) or a threshold (lo, hi) in HU"
        )
    if thr is not None:
        lo, hi = thr
        if lo is not None and hi is not None:
            level = None
        else:
            level = lo if lo is not None else hi
    else:
        assert p is not None
        lo, hi, level = p.lo, p.hi, p.level
    conn = p.connectivity if p else 26
    keep = p.keep if p else "largest"
    arr = volume.array
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise SegmentationError(f"volume array must be numeric, got dtype {arr.dtype}")
    seed_kji: tuple[int, int, int] | None = None
    seed: np.ndarray | None = None
    if seed_lps is not None:
        seed, seed_kji = _seed_voxel(volume, seed_lps, lo, hi)
    si_axis = _si_axis(volume)
    voxel_mm3 = float(np.prod(volume.spacing))
    timer.lap("validate")

    runs = rg.threshold_runs(arr, lo, hi)
    timer.lap("threshold")
    if p is not None and p.exclude_above_mm is not None:
        runs = exclude_rims(volume, runs, *p.exclude_above_mm)
        timer.lap("exclude_rims")
    if p is not None and p.inside_body:
        runs = ro.intersect_runs(runs, rg.mask_runs(_body_mask(volume)))
        timer.lap("inside_body")
    if runs.count == 0:
        raise SegmentationError(
            f"no voxel in {_fmt_range(lo, hi)}"
            + (f" for preset {preset!r}" if preset else "")
            + f" (volume values {float(np.nanmin(arr)):g} .. {float(np.nanmax(arr)):g})"
        )
    lab = rg.label_runs(runs, conn)
    timer.lap("label")
    if seed_kji is not None:
        want = lab.label_at(seed_kji)
        if want == 0:
            raise SegmentationError(
                f"seed ({', '.join(f'{v:g}' for v in seed)}) LPS mm is in the range "  # type: ignore[union-attr]
                f"{_fmt_range(lo, hi)} but was removed by the {preset} preset's cleaning "
                f"(bone rim or outside the body); move the seed"
            )
        sel = lab.labels == want
    elif keep == "largest":
        want = lab.largest()
        sel = lab.labels == want
    else:
        min_vox = (p.min_component_mm3 / voxel_mm3) if p else 0.0
        sel = lab.sizes[lab.labels] >= min_vox
    runs = rg.select_runs(runs, sel)
    timer.lap("components")
    if (
        p is not None and p.morphology is not None and seed_kji is None and keep == "largest"
        and lab.touching_border()[want]
    ):
        # Only an object reaching the volume border can carry a table or headrest with it
        # (they leave the field of view); otherwise separation would change nothing.
        op, radius_mm = p.morphology
        if op != "separate":  # pragma: no cover - presets are fixed above
            raise SegmentationError(f"unknown morphology {op!r}")
        radii = ro.radius_voxels(radius_mm, volume.spacing[::-1])
        runs = separate_thin_bridges(runs, radii, conn)
        timer.lap("separate")
    fill = p is not None and p.fill_holes
    bbox = runs.bbox()  # filling and fiducial removal stay inside it
    count: int | None = None
    if fill:
        mask = fill_cavities(runs, conn, si_axis)
    else:
        mask = rg.paint_runs(runs)
        count = runs.voxel_count()
    timer.lap("fill_holes" if fill else "paint")
    if exclude_fiducials:
        mask = remove_fiducials(volume, mask, conn, fill, si_axis)
        count = None
        timer.lap("exclude_fiducials")
    if count is None:
        count = int(np.count_nonzero(mask))
    if count == 0:
        raise SegmentationError(
            f"segmentation {label_name or preset or 'threshold'} is empty after cleaning "
            f"(range {_fmt_range(lo, hi)})"
        )
    timer.lap("count")
    return Segmentation(
        mask=mask,
        level=level,
        name=label_name or (preset if preset else "threshold"),
        preset=preset,
        threshold=(lo, hi),
        seed_lps=seed,
        voxel_count=count,
        timings=timer.timings,
        affine=volume.affine.copy(),
        series_instance_uid=volume.series_instance_uid,
        frame_of_reference_uid=volume.frame_of_reference_uid,
        bbox_kji=bbox,
    )


def iso_field(volume: Volume, seg: Segmentation) -> np.ndarray:
    """Float32 intensities whose ``seg.level`` set is exactly the boundary of ``seg.mask``.

    Inside the mask values are raised to at least ``level``, outside lowered below it (the
    other way round for ranges open below, such as air), so a marching-cubes surface at
    ``level`` follows the intensity (sub-voxel) where the mask boundary is an intensity
    boundary and the mask where cleaning changed it (filled cavities, removed table).
    """
    if seg.level is None:
        raise SegmentationError(
            f"segmentation {seg.name!r} has no iso level (two-sided range): mesh its mask"
        )
    if seg.mask.shape != volume.array.shape:
        raise SegmentationError(
            f"mask shape {seg.mask.shape} does not match the volume {volume.array.shape}"
        )
    lvl = np.float32(seg.level)
    below = np.nextafter(lvl, np.float32(-np.inf))
    above = np.nextafter(lvl, np.float32(np.inf))
    f = volume.array.astype(np.float32)
    if seg.inside_below:
        np.minimum(f, lvl, out=f, where=seg.mask)
        np.maximum(f, above, out=f, where=~seg.mask)
    else:
        np.maximum(f, lvl, out=f, where=seg.mask)
        np.minimum(f, below, out=f, where=~seg.mask)
    return f
