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

Speed comes from :mod:`scrubin.imaging._mc_kernels` (bit-packed two-pass marching cubes in numba,
parallel over slabs; first call compiles, later calls load the cache).
"""

from __future__ import annotations

import numpy as np

from scrubin.imaging import _grid_kernels as grid
from scrubin.imaging import _mc_kernels as kern
from scrubin.imaging._mc_table import CORNERS, EDGE_AXIS, EDGE_ORIGIN, EDGES, NTRI, TRI_EDGES
from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import Mesh
from scrubin.imaging.volume import Volume

_SNAP_TABLES = (NTRI.astype(np.int64), TRI_EDGES.astype(np.int64), EDGE_ORIGIN.astype(np.int64),
                EDGE_AXIS.astype(np.int64), CORNERS.astype(np.int64), EDGES.astype(np.int64))

#: Dilation (voxels, 6-connected) of a restricting mask before it limits the iso-surface.
MASK_MARGIN = 1


def _mask_bbox(region: np.ndarray) -> np.ndarray:
    """(k0, k1, j0, j1, i0, i1) half-open box of a contiguous bool mask; k1 = 0 when empty."""
    nk, nj, ni = region.shape
    if ni % 8:
        region = np.pad(region, ((0, 0), (0, 0), (0, 8 - ni % 8)))
    words = region.view(np.uint8).reshape(nk * nj, -1).view(np.uint64)
    box = grid.mask_bbox_rows(words, nk, nj, region.shape[2])
    box[5] = min(box[5], ni)
    return box


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
    tabs = kern.tables()
    kern.count_rows(bits, rowany, tabs[0], counts)
    ntri = counts[..., 0].reshape(-1)
    nvert = counts[..., 1:].sum(axis=-1).reshape(-1)
    tstart = (np.cumsum(ntri) - ntri).reshape(nk + 2, nj + 2)
    vstart = (np.cumsum(nvert) - nvert).reshape(nk + 2, nj + 2)
    verts = np.empty((int(nvert.sum()), 3), dtype=np.float64)
    faces = np.empty((int(ntri.sum()), 3), dtype=np.int32 if len(verts) < 2**31 else np.int64)
    flip = bool(np.linalg.det(affine[:3, :3]) < 0)
    kern.fill_rows(
        array, float(level), -1.0 if below else 1.0, bits, counts, vstart, tstart,
        np.ascontiguousarray(affine, dtype=np.float64), flip, tabs, verts, faces,
    )
    return verts, faces


class _FineField:
    """The full-resolution field ``sign * value`` (mask-consistent as in
    :func:`scrubin.imaging._grid_kernels.clamp_average`) whose trilinear level set a coarse
    surface is snapped onto and checked against."""

    def __init__(self, array: np.ndarray, mask: np.ndarray | None, level: float, sign: float,
                 affine: np.ndarray) -> None:
        self.array = array
        self.use_mask = mask is not None
        self.mask = mask if mask is not None else np.zeros((1, 1, 1), np.bool_)
        self.level = float(level)
        self.below = float(np.nextafter(np.float32(level), np.float32(-np.inf)))
        self.sign = float(sign)
        self.affine = np.ascontiguousarray(affine, dtype=np.float64)
        self.inv = np.linalg.inv(self.affine)
        spacing = np.linalg.norm(self.affine[:3, :3], axis=0)
        self.h_mm = 0.25 * float(spacing.min())
        self.voxel_mm = float(spacing.max())

    def along(self, points_lps: np.ndarray, dirs_lps: np.ndarray, reach_mm: float,
              move: bool) -> np.ndarray:
        """Signed distance (mm) from each point along its unit direction to the nearest level
        crossing within ``reach_mm`` (NaN: none); with ``move`` the points go onto it."""
        out = np.empty(len(points_lps))
        grid.snap_along(self.array, self.mask, self.use_mask, self.level, self.below,
                        self.sign, self.inv, self.affine, points_lps,
                        np.ascontiguousarray(dirs_lps, dtype=np.float64), float(reach_mm),
                        self.h_mm, move, out)
        return out

    def snap(self, verts_lps: np.ndarray, normals_lps: np.ndarray, step: int) -> np.ndarray:
        """Move coarse vertices (in place) onto the full-resolution marching-cubes surface
        (:func:`~scrubin.imaging._grid_kernels.snap_to_edges`); where that fails, along their
        normals onto the fine trilinear level set. Returns the move (mm; NaN: not moved)."""
        moved = np.empty(len(verts_lps))
        normals = np.ascontiguousarray(normals_lps, dtype=np.float64)
        grid.snap_to_surface(self.array, self.mask, self.use_mask, self.level, self.sign,
                             self.inv, self.affine, verts_lps, normals, int(step),
                             _SNAP_TABLES, moved)
        miss = np.flatnonzero(np.isnan(moved))
        if len(miss):
            pts = np.ascontiguousarray(verts_lps[miss])
            moved[miss] = np.abs(self.along(pts, normals[miss], (step - 0.5) * self.voxel_mm,
                                            True))
            verts_lps[miss] = pts
        return moved


def fine_field(volume: Volume, mask: np.ndarray | None, level: float,
               inside_below: bool = False) -> _FineField:
    """The full-resolution field of ``volume`` at ``level`` (mask-consistent with ``mask`` as
    in ``mask_mode="exact"``) that coarse surfaces are snapped onto and checked against."""
    array = volume.array
    if array.dtype.kind not in "iuf" or array.dtype == np.float16:
        array = array.astype(np.float32)
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    region = None
    if mask is not None:
        region = np.asarray(mask)
        region = np.ascontiguousarray(region if region.dtype == np.bool_ else region != 0)
    sign = -1.0 if inside_below else 1.0
    return _FineField(np.ascontiguousarray(array), region, float(np.float32(sign * level)), sign,
                      volume.affine)


def extract_surface(
    volume: Volume,
    mask: np.ndarray | None = None,
    level: float | None = None,
    step: int = 1,
    name: str = "",
    mask_mode: str = "exact",
    inside_below: bool = False,
    refine: bool = True,
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
        same surface as marching :func:`scrubin.imaging.segment.iso_field`. ``"region"`` - the
        iso-surface of the intensity inside the mask dilated by one voxel (voxels outside
        count as below the level): the mask only selects which surface.
    inside_below
        Inside is ``value <= level`` (air, cavities) instead of ``>= level``.
    refine
        With ``step > 1``: move each vertex onto the full-resolution marching-cubes surface
        along the grid axis closest to its normal (the triangles full-resolution marching
        cubes would make in the fine cells on that line, within ``step`` cells; where there
        are none, along the normal onto the fine trilinear level set), removing the coarse
        grid's interpolation error while keeping its triangle count. Vertices of triangles
        this would make degenerate stay at their coarse positions, so the surface stays
        closed. Whether the result is close enough everywhere is checked by
        :mod:`scrubin.imaging.surface_grid`.

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
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), name,
                 provenance=volume.provenance())
    array = volume.array
    if array.dtype.kind not in "iuf" or array.dtype == np.float16:
        array = array.astype(np.float32)
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    array = np.ascontiguousarray(array)
    region = None
    if mask is not None:
        region = np.asarray(mask)
        region = region if region.dtype == np.bool_ else region != 0
        region = np.ascontiguousarray(region)
    exact = mask_mode == "exact"
    below = bool(inside_below)
    affine = volume.affine.copy()
    box = np.array([0, array.shape[0], 0, array.shape[1], 0, array.shape[2]], dtype=np.int64)
    if region is not None:
        box = _mask_bbox(region)
        if box[1] == 0:
            return empty
        margin = MASK_MARGIN + 2 * step + 1
        shape = np.repeat(array.shape, 2)
        box = np.clip(box + np.array([-margin, margin] * 3), 0, shape)
        if level is None:  # label mode: the blurred mask is the image
            sl = tuple(slice(box[2 * a], box[2 * a + 1]) for a in range(3))
            from scipy import ndimage  # label mode only: importing it costs ~0.1 s CPU

            array = ndimage.gaussian_filter(region[sl].astype(np.float32), 0.6)
            level, region, below = 0.5, None, False
            affine[:3, 3] = volume.affine[:3, :3] @ box[[4, 2, 0]] + volume.affine[:3, 3]
            box = np.array([0, array.shape[0], 0, array.shape[1], 0, array.shape[2]])
    level = float(level)
    region_fine = region
    fine_affine = affine.copy()
    if step > 1:
        affine[:3, 3] = affine[:3, :3] @ box[[4, 2, 0]] + affine[:3, 3]
        affine = coarse_affine(affine, step)
        use_mask = region is not None and exact
        dims = (box[1::2] - box[0::2] + step - 1) // step
        coarse = np.empty(tuple(int(d) for d in dims), dtype=np.float32)
        sign = -1.0 if below else 1.0
        lvl = np.float32(sign * level)
        grid.clamp_average(
            array, region.view(np.uint8) if use_mask else np.zeros((1, 1, 1), np.uint8),
            use_mask, float(lvl), float(np.nextafter(lvl, np.float32(-np.inf))), sign, step,
            box, coarse,
        )
        if region is not None and not exact:
            sl = tuple(slice(box[2 * a], box[2 * a + 1]) for a in range(3))
            region = np.ascontiguousarray(_block_any(region[sl], step))
        else:
            region = None
        fine = (array, use_mask, float(lvl), sign)
        array, level, below = coarse, float(lvl), False
    verts, faces = _march(array, level, affine, region, exact, below)
    mesh = Mesh(verts, faces, name, provenance=volume.provenance())
    if step > 1 and refine and len(verts):
        fine_array, use_mask, lvl_f, sign = fine
        field = _FineField(fine_array, region_fine if use_mask else None, lvl_f, sign,
                           fine_affine)
        coarse = mesh.vertices.copy()
        normals = mesh.vertex_normals()
        field.snap(mesh.vertices, normals, step)
        mesh.normals = None
        _undo_degenerate(mesh, coarse, field, normals, step)
    return mesh


def _undo_degenerate(mesh: Mesh, coarse_lps: np.ndarray, field: _FineField,
                     normals_lps: np.ndarray, step: int) -> None:
    """Triangles that snapping made degenerate (zero area: two vertices met on the fine
    surface) or folded over (normal turned against the coarse triangle's): their vertices are
    snapped again from the coarse position along the vertex normal onto the fine trilinear
    level set (a move along the normal rarely folds); those still bad go back to their coarse
    positions, which marching cubes keeps apart and unfolded. So the surface stays closed,
    every triangle keeps an area and no fold-over is left (in place)."""
    coarse = Mesh(coarse_lps, mesh.faces).face_cross()

    def bad_faces() -> np.ndarray:
        return np.flatnonzero(np.einsum("ij,ij->i", mesh.face_cross(), coarse) <= 0.0)

    bad = bad_faces()
    if len(bad):
        idx = np.unique(mesh.faces[bad].reshape(-1))
        pts = np.ascontiguousarray(coarse_lps[idx])
        field.along(pts, normals_lps[idx], (step - 0.5) * field.voxel_mm, True)
        mesh.vertices[idx] = pts
    for _ in range(8):
        bad = bad_faces()
        if len(bad) == 0:
            return
        idx = np.unique(mesh.faces[bad].reshape(-1))
        mesh.vertices[idx] = coarse_lps[idx]
    if len(bad_faces()):
        mesh.vertices[:] = coarse_lps
