"""Cleaning steps of :func:`~imaging.segment.segment`: cavity filling, bone-rim removal, table
separation and fiducial-marker removal, on runs (:mod:`scrubin.imaging.regions`) where possible.

Reasons for each choice are in :mod:`scrubin.imaging.segment`'s module docstring.
"""

from __future__ import annotations

import numpy as np

from scrubin.imaging import regions as rg
from scrubin.imaging import runops as ro
from scrubin.imaging.volume import Volume

#: Dense blobs at or above this HU are fiducial candidates (above cortical bone of the skull).
FIDUCIAL_MIN_HU: float = 1800.0
#: A fiducial candidate is at most this large (mm^3; a 14 mm sphere).
FIDUCIAL_MAX_MM3: float = 1500.0
#: Largest distance (mm) from a fiducial's dense core to voxels of the marker (sphere + blur).
FIDUCIAL_MARGIN_MM: float = 4.0
#: Inside that margin, voxels above this HU (denser than soft tissue) belong to the marker.
FIDUCIAL_BLOB_HU: float = 200.0
#: Radius (mm) of the ball closing that rebuilds the surface under a removed fiducial.
FIDUCIAL_CLOSE_MM: float = 15.0
#: Grid (mm) on which that closing is computed (finer voxels are subsampled).
FIDUCIAL_CLOSE_GRID_MM: float = 1.0


def fill_cavities(runs: rg.Runs, connectivity: int, si_axis: int) -> np.ndarray:
    """Paint ``runs`` with every cavity filled: per-slice holes along the S-I axis.

    Per-slice filling contains every 3-D hole (a background path to the border inside one
    slice is also a 3-D path, so a 3-D hole meets each slice only in enclosed 2-D holes) and
    also closes tubes open at the volume border (an airway cut by the last slice). Along ``k``
    it is done on runs, without a voxel pass.
    """
    if si_axis == 0:
        obj, holes, off = ro.fill_holes_runs(runs, connectivity, planar=True)
        out = np.zeros(runs.shape, dtype=bool)
        rg.paint_runs(obj, out=out, offset=off)
        rg.paint_runs(holes, out=out, offset=off)
        return out
    return ro.fill_holes(rg.paint_runs(runs), connectivity, planar=True, axis=si_axis)


def exclude_rims(volume: Volume, runs: rg.Runs, hu: float, mm: float) -> rg.Runs:
    """Drop voxels within ``mm`` (box, at least one voxel per axis) of a voxel above ``hu``.

    On runs: the dense voxels' runs are dilated and subtracted (no voxel pass besides the
    threshold).
    """
    if runs.count == 0:
        return runs
    r = tuple(max(v, 1) for v in ro.radius_voxels(mm, volume.spacing[::-1]))
    dense = rg.threshold_runs(volume.array, float(np.nextafter(hu, np.inf)), None)
    return ro.subtract_runs(runs, ro.dilate_runs(dense, r))


def _box_slices(box: tuple[slice, ...], margin: tuple[int, int, int], shape: tuple[int, ...]
                ) -> tuple[slice, slice, slice]:
    return tuple(  # type: ignore[return-value]
        slice(max(b.start - m, 0), min(b.stop + m, n)) for b, m, n in zip(box, margin, shape,
                                                                          strict=True)
    )


def separate_thin_bridges(runs: rg.Runs, radii: tuple[int, int, int], connectivity: int) -> rg.Runs:
    """Cut bridges thinner than the box ``radii`` from a one-component run set.

    1. erode by the box, keep the largest eroded component, dilate it back by the same box
       and intersect with the object: a table touching the head along a thin contact is cut;
    2. pieces of the object cut off by step 1 are added back unless they reach the border of
       the volume (a table, headrest or cable leaving the field of view): thin anatomy (ears,
       nose) that the erosion removed comes back whole;
    3. the largest component of the result.

    Everything runs on runs (no voxel pass): cost follows the number of runs.
    """
    eroded = ro.erode_runs(runs, radii)
    lab = rg.label_runs(eroded, connectivity)
    core = rg.select_runs(eroded, lab.labels == lab.largest())
    kept = ro.intersect_runs(ro.dilate_runs(core, radii), runs)
    cut = ro.subtract_runs(runs, kept)
    if cut.count:
        lab = rg.label_runs(cut, connectivity)
        inside = ~lab.touching_border()
        kept = ro.union_runs(kept, rg.select_runs(cut, inside[lab.labels]))
        lab = rg.label_runs(kept, connectivity)
        kept = rg.select_runs(kept, lab.labels == lab.largest())
    return kept


def _dense_blobs(volume: Volume, mask: np.ndarray) -> list[tuple[slice, slice, slice]]:
    """Boxes of the fiducial candidates (small dense blobs) near ``mask``'s bounding box."""
    box = rg.mask_runs(mask).bbox()
    if box is None:
        return []
    sp_kji = volume.spacing[::-1]
    margin = ro.radius_voxels(FIDUCIAL_MARGIN_MM, sp_kji)
    box = _box_slices(box, margin, mask.shape)
    lab = rg.label_runs(rg.threshold_runs(volume.array, FIDUCIAL_MIN_HU, None), 26)
    voxel_mm3 = float(np.prod(sp_kji))
    out = []
    J = lab.runs.shape[1]
    rr = np.repeat(np.arange(lab.runs.row_ptr.size - 1), np.diff(lab.runs.row_ptr))
    for blob in range(1, lab.n + 1):
        if lab.sizes[blob] * voxel_mm3 > FIDUCIAL_MAX_MM3:
            continue
        sel = lab.labels == blob
        ks, js = rr[sel] // J, rr[sel] % J
        b = (
            slice(int(ks.min()), int(ks.max()) + 1),
            slice(int(js.min()), int(js.max()) + 1),
            slice(int(lab.runs.start[sel].min()), int(lab.runs.stop[sel].max())),
        )
        if all(x.start < y.stop and y.start < x.stop for x, y in zip(b, box, strict=True)):
            out.append(b)
    return out


def _any_pool(mask: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Blocks of ``step`` voxels (per axis) -> True where any voxel of the block is."""
    if np.all(step == 1):
        return mask
    shape = [int(np.ceil(n / st)) * st for n, st in zip(mask.shape, step, strict=True)]
    padded = np.zeros(shape, dtype=bool)
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    k, j, i = (n // st for n, st in zip(shape, step, strict=True))
    blocks = padded.reshape(k, step[0], j, step[1], i, step[2])
    return blocks.any(axis=(1, 3, 5))


def _rel(inner: tuple[slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...]:
    """``inner`` (absolute slices) relative to the start of ``outer``."""
    return tuple(slice(a.start - b.start, a.stop - b.start) for a, b in zip(inner, outer,
                                                                            strict=True))


def remove_fiducials(volume: Volume, mask: np.ndarray, connectivity: int, fill: bool,
                      si_axis: int) -> np.ndarray:
    """Remove fiducial bumps: ball dilation of each dense core, restored by a ball closing.

    Balls (Euclidean distance transforms with the voxel spacing, so anisotropic voxels are
    handled) rather than boxes: an axis-aligned box's corner fits into the removed pit on an
    oblique surface and leaves a dent; a ball of radius ``rho`` reaches only
    ``rho - sqrt(rho^2 - w^2)`` into a pit of half-width ``w``.
    """
    from scipy import ndimage as ndi  # only here: importing it costs ~0.3 s at start-up

    sp_kji = volume.spacing[::-1]
    rho = FIDUCIAL_CLOSE_MM
    pad = tuple(int(np.ceil((FIDUCIAL_MARGIN_MM + rho) / s)) + 2 for s in sp_kji)
    reach = tuple(int(np.ceil(FIDUCIAL_MARGIN_MM / s)) + 1 for s in sp_kji)
    step = np.array([max(int(FIDUCIAL_CLOSE_GRID_MM // s), 1) for s in sp_kji])
    blobs = _dense_blobs(volume, mask)
    if not blobs:
        return mask
    out = mask.copy()
    for core_box in blobs:
        crop = _box_slices(core_box, pad, mask.shape)  # type: ignore[arg-type]
        # the removed region: within FIDUCIAL_MARGIN_MM of the core (EDT on a small box)
        small = _box_slices(core_box, reach, mask.shape)  # type: ignore[arg-type]
        core = np.zeros(out[small].shape, dtype=bool)
        core[_rel(core_box, small)] = volume.array[core_box] >= FIDUCIAL_MIN_HU
        # the marker: voxels its density raised above FIDUCIAL_BLOB_HU (tissue and air are
        # below) near the core and connected to it, plus one voxel for the partial-volume rim
        near = ndi.distance_transform_edt(~core, sampling=sp_kji) <= FIDUCIAL_MARGIN_MM
        blob, _ = ndi.label(near & (volume.array[small] > FIDUCIAL_BLOB_HU),
                            structure=np.ones((3, 3, 3), bool))
        blob = np.isin(blob, np.unique(blob[core])) & (blob > 0)
        region = np.zeros(out[crop].shape, dtype=bool)
        region[_rel(small, crop)] = near & ndi.binary_dilation(
            blob, structure=np.ones((3, 3, 3), bool)
        )
        rest = out[crop] & ~region
        if not rest.any():
            out[crop] = rest
            continue
        # the closing on a grid of about FIDUCIAL_CLOSE_GRID_MM (blocks pooled with "any": 4-8x
        # fewer voxels on fine CT; the rebuilt surface moves outwards by less than one block)
        coarse = _any_pool(rest, step)
        dil = ndi.distance_transform_edt(~coarse, sampling=sp_kji * step) <= rho
        closed = ndi.distance_transform_edt(dil, sampling=sp_kji * step) > rho
        for ax, st in enumerate(step):
            if st > 1:
                closed = np.repeat(closed, st, axis=ax)
        closed = closed[: rest.shape[0], : rest.shape[1], : rest.shape[2]]
        out[crop] = rest | (closed & region)
    runs = rg.mask_runs(out)
    lab = rg.label_runs(runs, connectivity)
    runs = rg.select_runs(runs, lab.labels == lab.largest())
    return fill_cavities(runs, connectivity, si_axis) if fill else rg.paint_runs(runs)
