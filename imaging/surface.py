"""Iso-surface extraction from a :class:`~imaging.volume.Volume` into an LPS-mm :class:`Mesh`.

Three modes:

* ``level`` only: the iso-surface ``value = level`` of the whole volume (marching cubes,
  Lorensen & Cline 1987, with sub-voxel vertices by linear interpolation along cell edges).
* ``level`` and ``mask``: the same iso-surface, restricted to the region of ``mask`` dilated
  by one voxel (6-connected). Voxels outside count as below the level; vertices stay at the
  interpolated sub-voxel positions, so the mask chooses *which* surface without a staircase.
* ``mask`` only (a binary mask or label map, ``nonzero`` = inside): the mask is blurred with a
  Gaussian of 0.6 voxel and extracted at 0.5 inside its bounding box.

The volume is treated as padded by one negative voxel on every side, so objects that touch
the border are closed: the result is watertight where the object is closed. Faces are
oriented outward (towards lower values); a left-handed voxel-to-LPS affine (det < 0, e.g. a
flipped axis) is compensated. Vertices never coincide (crossings are kept 1e-3 voxel away from
the voxel centres), so no triangle degenerates to an edge or a point.

Speed comes from :mod:`imaging._mc_kernels` (bit-packed two-pass marching cubes in numba,
parallel over slabs; first call compiles, later calls load the cache).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from imaging import _mc_kernels as kern
from imaging.errors import MeshError
from imaging.mesh import Mesh
from imaging.volume import Volume

#: Dilation (voxels, 6-connected) of a restricting mask before it limits the iso-surface.
MASK_MARGIN = 1


def _check_inputs(volume: Volume, mask: np.ndarray | None, level: float | None, step: int) -> None:
    if not isinstance(volume, Volume):
        raise MeshError(f"extract_surface needs a Volume, got {type(volume).__name__}")
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise MeshError(f"step must be an integer >= 1, got {step!r}")
    if mask is None and level is None:
        raise MeshError("extract_surface needs an iso level, a mask, or both")
    if level is not None and not np.isfinite(level):
        raise MeshError(f"iso level must be a finite number, got {level!r}")
    if mask is not None and np.shape(mask) != volume.array.shape:
        raise MeshError(
            f"mask shape {np.shape(mask)} does not match volume shape "
            f"{volume.array.shape} [k, j, i]"
        )
    if min(volume.array.shape) < 1:
        raise MeshError(f"volume is empty: shape {volume.array.shape}")


def block_average(array: np.ndarray, step: int) -> np.ndarray:
    """Mean over ``step``³ blocks (a partial last block averages what it has), float32."""
    if step == 1:
        return array
    nk, nj, ni = array.shape
    out_shape = (-(-nk // step), -(-nj // step), -(-ni // step))
    total = np.zeros(out_shape, dtype=np.float32)
    count = np.zeros(out_shape, dtype=np.float32)
    for dk in range(step):
        for dj in range(step):
            for di in range(step):
                part = array[dk::step, dj::step, di::step]
                sl = tuple(slice(0, s) for s in part.shape)
                total[sl] += part
                count[sl] += 1.0
    return total / count


def _block_any(mask: np.ndarray, step: int) -> np.ndarray:
    if step == 1:
        return mask
    nk, nj, ni = mask.shape
    out = np.zeros((-(-nk // step), -(-nj // step), -(-ni // step)), dtype=bool)
    for dk in range(step):
        for dj in range(step):
            for di in range(step):
                part = mask[dk::step, dj::step, di::step]
                out[: part.shape[0], : part.shape[1], : part.shape[2]] |= part
    return out


def coarse_affine(affine: np.ndarray, step: int) -> np.ndarray:
    """Affine of the block-averaged grid: coarse voxel ``n`` is the mean of fine voxels
    ``step·n .. step·n + step - 1``, centred at fine index ``step·n + (step - 1) / 2``."""
    scale = np.diag([step, step, step, 1.0]).astype(np.float64)
    scale[:3, 3] = (step - 1) / 2.0
    return np.asarray(affine, dtype=np.float64) @ scale


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice] | None:
    """Bounding box of the nonzero voxels grown by ``margin`` (clipped), or None if empty."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
        if hit.size == 0:
            return None
        lo = max(int(hit[0]) - margin, 0)
        hi = min(int(hit[-1]) + margin + 1, mask.shape[axis])
        out.append(slice(lo, hi))
    return out[0], out[1], out[2]


def _threshold(dtype: np.dtype, level: float, below: bool) -> np.generic:
    """A value ``t`` of ``dtype`` with ``v >= t <=> v >= level`` (``<=`` if below) for all v."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        t = np.floor(level) if below else np.ceil(level)
        return dtype.type(min(max(t, info.min), info.max))
    t = dtype.type(level)
    if below and float(t) > level:
        t = np.nextafter(t, dtype.type(-np.inf))
    elif not below and float(t) < level:
        t = np.nextafter(t, dtype.type(np.inf))
    return t


def _march(
    array: np.ndarray,
    level: float,
    affine: np.ndarray,
    region: np.ndarray | None,
    exact: bool,
    below: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the kernels: (vertices LPS mm, faces) of the inside of ``array`` at ``level``.

    Inside is ``array >= level`` (``<=`` if ``below``); with ``region`` and ``exact`` the
    inside is the region itself (intensity used for sub-voxel positions where it agrees),
    with ``region`` and not ``exact`` it is the level set within the region dilated by
    :data:`MASK_MARGIN` voxels.
    """
    nk, nj, ni = array.shape
    nw = (ni + 2 + 63) // 64
    shape = (nk + 2, nj + 2, nw)
    bits = np.zeros(shape, dtype=np.uint64)
    rowmask = np.ones((nk + 2, nj + 2), dtype=np.bool_)
    if region is not None:
        mbits = np.zeros(shape, dtype=np.uint64)
        kern.pack_mask(region.view(np.uint8), mbits)
        if exact:
            bits = mbits
        else:
            for _ in range(MASK_MARGIN):
                grown = np.empty_like(mbits)
                kern.dilate6(mbits, grown)
                mbits = grown
            kern.row_any(mbits, rowmask)
    if region is None or not exact:
        kern.pack_level(array, _threshold(array.dtype, level, below), below, rowmask, bits)
        if region is not None:
            np.bitwise_and(bits, mbits, out=bits)
    rowany = np.empty((nk + 2, nj + 2), dtype=np.bool_)
    kern.row_any(bits, rowany)
    counts = np.zeros((nk + 2, nj + 2, 4), dtype=np.int64)
    kern.count_rows(bits, rowany, counts)
    ntri = counts[..., 0].reshape(-1)
    nvert = counts[..., 1:].sum(axis=-1).reshape(-1)
    tstart = (np.cumsum(ntri) - ntri).reshape(nk + 2, nj + 2)
    vstart = (np.cumsum(nvert) - nvert).reshape(nk + 2, nj + 2)
    verts = np.empty((int(nvert.sum()), 3), dtype=np.float64)
    faces = np.empty((int(ntri.sum()), 3), dtype=np.int32 if len(verts) < 2**31 else np.int64)
    flip = bool(np.linalg.det(affine[:3, :3]) < 0)
    kern.fill_rows(
        array, float(level), -1.0 if below else 1.0, bits, counts, vstart, tstart,
        np.ascontiguousarray(affine, dtype=np.float64), flip, verts, faces,
    )
    return verts, faces


def extract_surface(
    volume: Volume,
    mask: np.ndarray | None = None,
    level: float | None = None,
    step: int = 1,
    name: str = "",
    mask_mode: str = "exact",
    inside_below: bool = False,
) -> Mesh:
    """Extract a closed, outward-oriented triangle surface in LPS mm.

    Parameters
    ----------
    volume
        The image; its affine maps voxel ``(i, j, k)`` to LPS mm.
    mask
        Optional boolean mask or label map ``[k, j, i]`` (nonzero = inside). With ``level`` it
        chooses which iso-surface is extracted (see ``mask_mode``); alone it is the object.
    level
        Iso value in the volume's units (e.g. HU). ``None``: surface the mask itself.
    step
        Extract on a grid ``step`` times coarser: the volume is averaged over ``step``³ blocks
        first. ``1`` = full resolution.
    name
        Name given to the mesh.
    mask_mode
        With both ``mask`` and ``level``: ``"exact"`` - the mask is the inside; vertices sit at
        the interpolated ``level`` crossing where the intensity agrees with the mask, midway
        between voxel centres where it does not (cleaning filled a cavity, cut a bridge): the
        same surface as marching :func:`imaging.segment.iso_field`. ``"region"`` - the
        iso-surface of the intensity inside the mask dilated by one voxel (voxels outside
        count as below the level): the mask only selects which surface.
    inside_below
        Inside is ``value <= level`` (air, cavities) instead of ``>= level``.

    Returns
    -------
    Mesh
        Vertices in LPS mm, faces counter-clockwise seen from outside, provenance from the
        volume. Empty (0 faces) when nothing crosses the level.

    Raises
    ------
    MeshError
        No level and no mask, a mask of the wrong shape, a non-finite level, ``step < 1``,
        an unknown ``mask_mode``.
    """
    _check_inputs(volume, mask, level, step)
    if mask_mode not in ("exact", "region"):
        raise MeshError(f"mask_mode must be 'exact' or 'region', got {mask_mode!r}")
    array = volume.array
    region = None if mask is None else np.asarray(mask) != 0
    offset = np.zeros(3, dtype=np.int64)
    exact = mask_mode == "exact"
    below = bool(inside_below)
    if region is not None:
        box = _bbox(region, MASK_MARGIN + 2 * step + 1)
        if box is None:
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), name,
                        provenance=volume.provenance())
        region = region[box]
        offset = np.array([box[2].start, box[1].start, box[0].start], dtype=np.int64)
        if level is None:  # label mode: the blurred mask is the image
            array = ndimage.gaussian_filter(region.astype(np.float32), 0.6)
            level, region, below = 0.5, None, False
        else:
            array = array[box]
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ offset + volume.affine[:3, 3]
    level = float(level)
    if step > 1:
        affine = coarse_affine(affine, step)
        use_mask = region is not None and exact
        coarse = np.empty(tuple(-(-n // step) for n in array.shape), dtype=np.float32)
        sign = -1.0 if below else 1.0
        lvl = np.float32(sign * level)
        kern.clamp_average(
            np.ascontiguousarray(array),
            region if use_mask else np.zeros((1, 1, 1), dtype=np.bool_),
            use_mask, float(lvl), float(np.nextafter(lvl, np.float32(-np.inf))), sign, step,
            coarse,
        )
        array, level, below = coarse, float(lvl), False
        region = None if (region is None or exact) else _block_any(region, step)
    if array.dtype.kind not in "iuf" or array.dtype == np.float16:
        array = array.astype(np.float32)
    array = np.ascontiguousarray(array)
    region = None if region is None else np.ascontiguousarray(region, dtype=np.bool_)
    verts, faces = _march(array, level, affine, region, exact, below)
    return Mesh(verts, faces, name, provenance=volume.provenance())
