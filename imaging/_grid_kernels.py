"""Numba kernels of :mod:`~imaging.surface` that work on the voxel grid around marching cubes:
the mask's bounding box, block averaging for a coarser extraction grid (consistent with a
mask), and the snapping of coarse-grid vertices onto the full-resolution surface."""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:  # skip the too-old TBB (and its warning)
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]


@njit(cache=True, parallel=True)
def clamp_average(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, below: float, sign: float,
    step: int, box: np.ndarray, out: np.ndarray,
) -> None:
    """Block mean over ``step``³ of ``sign * value`` in ``box``, made consistent with ``mask``.

    ``box = (k0, k1, j0, j1, i0, i1)`` is the fine-grid region; coarse voxel ``(kk, jj, ii)``
    averages fine voxels ``k0 + step·kk ...`` (a partial block at the far edge averages what it
    has). With ``use_mask``, voxels inside the mask count as at least ``level`` and voxels
    outside as at most ``below`` (just under the level), as in
    :func:`scrubin.imaging.segment.iso_field`: the coarse level set follows the intensity where it
    agrees with the mask and the mask where cleaning changed it. ``level`` and ``below`` are
    already multiplied by ``sign``.
    """
    k0, k1, j0, j1, i0, i1 = box[0], box[1], box[2], box[3], box[4], box[5]
    ok, oj, oi = out.shape
    for kk in prange(ok):
        acc = np.zeros(oi)
        for jj in range(oj):
            acc[:] = 0.0
            ka = k0 + kk * step
            kb = min(ka + step, k1)
            ja = j0 + jj * step
            jb = min(ja + step, j1)
            for k in range(ka, kb):
                for j in range(ja, jb):
                    vrow = vol[k, j]
                    mrow = mask[k, j] if use_mask else mask[0, 0]
                    for i in range(i0, i1):
                        x = sign * float(vrow[i])
                        if use_mask:
                            if mrow[i]:
                                x = max(x, level)
                            else:
                                x = min(x, below)
                        acc[(i - i0) // step] += x
            nkj = (kb - ka) * (jb - ja)
            for ii in range(oi):
                n = min(step, i1 - i0 - ii * step) * nkj
                out[kk, jj, ii] = acc[ii] / n


@njit(cache=True, parallel=True)
def mask_bbox_rows(words: np.ndarray, nk: int, nj: int, ni: int) -> np.ndarray:
    """``(k0, k1, j0, j1, i0, i1)`` (half-open) of the nonzero bytes of a 0/1 mask; k1 = 0 when
    empty. ``words`` is the mask viewed as rows of uint64 (``ni`` divisible by 8), shape
    ``(nk * nj, ni // 8)``: empty rows are skipped eight voxels at a time."""
    nwords = words.shape[1]
    lo = np.full((nk, 2), ni, dtype=np.int64)  # per slice: i min, j min
    hi = np.full((nk, 2), -1, dtype=np.int64)
    for k in prange(nk):
        for j in range(nj):
            row = words[k * nj + j]
            acc = np.uint64(0)
            for w in range(nwords):
                acc |= row[w]
            if acc == 0:
                continue
            first = 0
            while row[first] == 0:
                first += 1
            last = nwords - 1
            while row[last] == 0:
                last -= 1
            fw, lw = row[first], row[last]
            fb = 0
            while (fw >> np.uint64(8 * fb)) & np.uint64(0xFF) == 0:
                fb += 1
            lb = 7
            while (lw >> np.uint64(8 * lb)) & np.uint64(0xFF) == 0:
                lb -= 1
            lo[k, 0] = min(lo[k, 0], first * 8 + fb)
            hi[k, 0] = max(hi[k, 0], last * 8 + lb)
            lo[k, 1] = min(lo[k, 1], j)
            hi[k, 1] = max(hi[k, 1], j)
    out = np.zeros(6, dtype=np.int64)
    kmin, kmax = nk, -1
    for k in range(nk):
        if hi[k, 0] >= 0:
            kmin = min(kmin, k)
            kmax = max(kmax, k)
    if kmax < 0:
        return out
    out[0], out[1] = kmin, kmax + 1
    out[2], out[3] = lo[kmin:kmax + 1, 1].min(), hi[kmin:kmax + 1, 1].max() + 1
    out[4], out[5] = lo[kmin:kmax + 1, 0].min(), hi[kmin:kmax + 1, 0].max() + 1
    return out


@njit(cache=True, inline="always")
def _sample(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, below: float, sign: float,
    k: int, j: int, i: int,
) -> float:
    """Field value at voxel (k, j, i); outside the volume the negative virtual pad of marching
    cubes, valued so that the crossing from the border voxel lies midway (where marching cubes
    puts it): ``min(2 level - border value, below)``."""
    nk, nj, ni = vol.shape
    kc = min(max(k, 0), nk - 1)
    jc = min(max(j, 0), nj - 1)
    ic = min(max(i, 0), ni - 1)
    x = sign * float(vol[kc, jc, ic])
    if use_mask:
        x = max(x, level) if mask[kc, jc, ic] else min(x, below)
    if kc != k or jc != j or ic != i:
        x = min(2.0 * level - x, below)
    return x


@njit(cache=True, inline="always")
def _trilinear(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, below: float, sign: float,
    x: float, y: float, z: float,
) -> float:
    """Trilinear interpolant of ``sign * value`` (mask-consistent, see :func:`_sample`) at the
    fine index point ``(x, y, z) = (i, j, k)``; the grid is extended by its border values."""
    i0 = int(np.floor(x))
    j0 = int(np.floor(y))
    k0 = int(np.floor(z))
    fx = x - i0
    fy = y - j0
    fz = z - k0
    f = 0.0
    for dk in range(2):
        wz = fz if dk else 1.0 - fz
        for dj in range(2):
            wy = fy if dj else 1.0 - fy
            for di in range(2):
                wx = fx if di else 1.0 - fx
                f += wx * wy * wz * _sample(vol, mask, use_mask, level, below, sign,
                                            k0 + dk, j0 + dj, i0 + di)
    return f


@njit(cache=True, inline="always")
def _crossing_on_line(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, below: float, sign: float,
    p: np.ndarray, d: np.ndarray, h: float, nsteps: int,
) -> float:
    """Parameter ``t`` (units of ``d``) of the level crossing of the trilinear field on the
    line ``p + t d`` nearest to ``t = 0`` within ``|t| <= h * nsteps``, found by bracketing on a
    grid of spacing ``h`` then 4 regula-falsi steps; NaN when there is none."""
    f0 = _trilinear(vol, mask, use_mask, level, below, sign, p[0], p[1], p[2]) - level
    if f0 == 0.0:
        return 0.0
    for n in range(nsteps):
        for side in (1.0, -1.0):
            ta = side * n * h
            tb = side * (n + 1) * h
            fa = _trilinear(vol, mask, use_mask, level, below, sign, p[0] + ta * d[0],
                            p[1] + ta * d[1], p[2] + ta * d[2]) - level
            fb = _trilinear(vol, mask, use_mask, level, below, sign, p[0] + tb * d[0],
                            p[1] + tb * d[1], p[2] + tb * d[2]) - level
            if (fa < 0.0) != (fb < 0.0):
                for _ in range(4):
                    tm = ta + (tb - ta) * fa / (fa - fb)
                    fm = _trilinear(vol, mask, use_mask, level, below, sign, p[0] + tm * d[0],
                                    p[1] + tm * d[1], p[2] + tm * d[2]) - level
                    if (fm < 0.0) == (fa < 0.0):
                        ta, fa = tm, fm
                    else:
                        tb, fb = tm, fm
                return ta + (tb - ta) * fa / (fa - fb) if fa != fb else ta
    return np.nan


@njit(cache=True, parallel=True)
def snap_along(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, below: float, sign: float,
    inv_affine: np.ndarray, affine: np.ndarray, points: np.ndarray, dirs: np.ndarray,
    reach_mm: float, h_mm: float, move: bool, out_dist: np.ndarray,
) -> None:
    """For each point (LPS mm), the signed distance (mm) along its unit direction (LPS) to the
    nearest crossing of the fine grid's trilinear level set within ``reach_mm`` (searched on a
    grid of ``h_mm``), into ``out_dist`` (NaN where there is none); with ``move``, points with
    a crossing are moved onto it. The field is ``sign * value`` made consistent with ``mask``
    as in :func:`clamp_average`."""
    nsteps = int(np.ceil(reach_mm / h_mm))
    npts = points.shape[0]
    nchunks = min(npts, 512)
    for ch in prange(nchunks):
        p = np.empty(3)
        d = np.empty(3)
        for n in range(ch * npts // nchunks, (ch + 1) * npts // nchunks):
            for a in range(3):
                p[a] = (inv_affine[a, 0] * points[n, 0] + inv_affine[a, 1] * points[n, 1]
                        + inv_affine[a, 2] * points[n, 2] + inv_affine[a, 3])
                d[a] = (inv_affine[a, 0] * dirs[n, 0] + inv_affine[a, 1] * dirs[n, 1]
                        + inv_affine[a, 2] * dirs[n, 2])
            t = _crossing_on_line(vol, mask, use_mask, level, below, sign, p, d, h_mm, nsteps)
            out_dist[n] = t
            if move and not np.isnan(t):
                for a in range(3):
                    points[n, a] += t * dirs[n, a]



@njit(cache=True, inline="always")
def _corner(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, sign: float,
    i: int, j: int, k: int,
) -> tuple[bool, bool, float]:
    """(inside the volume, positive class, ``sign * value``) of voxel ``(i, j, k)``; outside
    the volume is the negative virtual pad of marching cubes; with a mask, the class is the
    mask's."""
    nk, nj, ni = vol.shape
    if i < 0 or j < 0 or k < 0 or i >= ni or j >= nj or k >= nk:
        return False, False, 0.0
    x = sign * float(vol[k, j, i])
    return True, (mask[k, j, i] != 0) if use_mask else x >= level, x


@njit(cache=True)
def _line_hit(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, sign: float,
    cell: np.ndarray, ax: int, p: np.ndarray, tables: tuple, vtx: np.ndarray,
    ins: np.ndarray, pos: np.ndarray, val: np.ndarray,
) -> float:
    """Coordinate along axis ``ax`` where the line through ``p`` parallel to that axis meets the
    marching-cubes triangles of the fine cell with lower corner ``cell`` (vertices exactly as
    :func:`scrubin.imaging._mc_kernels.fill_rows` places them); NaN: no hit, or an empty
    cell."""
    ntri_t, tri_t, eo_t, ea_t, corners, edges = tables
    case = 0
    for c in range(8):
        a, b, v = _corner(vol, mask, use_mask, level, sign, cell[0] + corners[c, 0],
                          cell[1] + corners[c, 1], cell[2] + corners[c, 2])
        ins[c], pos[c], val[c] = a, b, v
        if b:
            case |= 1 << c
    if ntri_t[case] == 0:
        return np.nan
    for e in range(12):  # vertex on every crossing edge (Lorensen & Cline 1987, eq. 1)
        ca = edges[e, 0]
        cb = edges[e, 1]
        if pos[ca] == pos[cb]:
            continue
        t = 0.5
        if ins[ca] and ins[cb]:
            v0, v1 = val[ca], val[cb]
            agree = (v0 >= level) == pos[ca] and (v1 >= level) == pos[cb]
            if agree and v1 != v0:
                t = min(max((level - v0) / (v1 - v0), 1e-3), 1.0 - 1e-3)
        for a in range(3):
            vtx[e, a] = cell[a] + eo_t[e, a] + (t if ea_t[e] == a else 0.0)
    b = (ax + 1) % 3
    c = (ax + 2) % 3
    best = np.nan
    for s in range(ntri_t[case]):
        e0, e1, e2 = tri_t[case, 3 * s], tri_t[case, 3 * s + 1], tri_t[case, 3 * s + 2]
        x0, y0 = vtx[e0, b], vtx[e0, c]
        x1, y1 = vtx[e1, b], vtx[e1, c]
        x2, y2 = vtx[e2, b], vtx[e2, c]
        det = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
        if abs(det) < 1e-12:
            continue
        l0 = ((y1 - y2) * (p[b] - x2) + (x2 - x1) * (p[c] - y2)) / det
        l1 = ((y2 - y0) * (p[b] - x2) + (x0 - x2) * (p[c] - y2)) / det
        l2 = 1.0 - l0 - l1
        eps = -1e-9
        if l0 < eps or l1 < eps or l2 < eps:
            continue
        h = l0 * vtx[e0, ax] + l1 * vtx[e1, ax] + l2 * vtx[e2, ax]
        if np.isnan(best) or abs(h - p[ax]) < abs(best - p[ax]):
            best = h
    return best


@njit(cache=True, parallel=True)
def snap_to_surface(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, sign: float,
    inv_affine: np.ndarray, affine: np.ndarray, verts: np.ndarray, normals: np.ndarray,
    reach: int, tables: tuple, out_moved: np.ndarray,
) -> None:
    """Move each vertex (LPS mm) onto the full-resolution marching-cubes surface along one
    grid axis: the axis of the largest index-space normal component (``affine^T n`` for the
    LPS unit normal ``n``), the surface being the triangles that marching cubes produces in
    the fine cells that axis-parallel line crosses within ``reach`` cells (the hit nearest the
    vertex). ``out_moved`` <- the move in mm; NaN (vertex left where it was) when the line meets
    no triangle. ``tables`` = (ntri, tri_edges, edge_origin, edge_axis, corners, edges).
    The field is ``sign * value``; with ``use_mask`` the mask decides inside and the value
    places the crossing where it agrees, as in marching cubes' exact mask mode.
    """
    nv = verts.shape[0]
    nchunks = min(nv, 512)
    for ch in prange(nchunks):
        p = np.empty(3)
        g = np.empty(3)
        cell = np.empty(3, dtype=np.int64)
        vtx = np.empty((12, 3))
        ins = np.empty(8, dtype=np.bool_)
        pos = np.empty(8, dtype=np.bool_)
        val = np.empty(8)
        for n in range(ch * nv // nchunks, (ch + 1) * nv // nchunks):
            _snap_one(vol, mask, use_mask, level, sign, inv_affine, affine, verts, normals,
                      reach, tables, out_moved, n, p, g, cell, vtx, ins, pos, val)


@njit(cache=True, inline="always")
def _snap_one(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, sign: float,
    inv_affine: np.ndarray, affine: np.ndarray, verts: np.ndarray, normals: np.ndarray,
    reach: int, tables: tuple, out_moved: np.ndarray, n: int, p: np.ndarray, g: np.ndarray,
    cell: np.ndarray, vtx: np.ndarray, ins: np.ndarray, pos: np.ndarray, val: np.ndarray,
) -> None:
    """:func:`snap_to_surface` for vertex ``n`` with scratch arrays."""
    for a in range(3):
        p[a] = (inv_affine[a, 0] * verts[n, 0] + inv_affine[a, 1] * verts[n, 1]
                + inv_affine[a, 2] * verts[n, 2] + inv_affine[a, 3])
        g[a] = abs(affine[0, a] * normals[n, 0] + affine[1, a] * normals[n, 1]
                   + affine[2, a] * normals[n, 2])
    ax = 0
    if g[1] > g[ax]:
        ax = 1
    if g[2] > g[ax]:
        ax = 2
    for a in range(3):
        cell[a] = int(np.floor(p[a]))
    m0 = cell[ax]
    best = np.nan
    for r in range(reach + 1):  # rings of cells outward; a ring r + 1 is >= r voxels away
        for side in range(2 if r else 1):
            cell[ax] = m0 - r if side == 0 else m0 + r
            h = _line_hit(vol, mask, use_mask, level, sign, cell, ax, p, tables, vtx, ins,
                          pos, val)
            if not np.isnan(h) and (np.isnan(best) or abs(h - p[ax]) < abs(best - p[ax])):
                best = h
        if not np.isnan(best) and abs(best - p[ax]) <= r:
            break
    if np.isnan(best):
        out_moved[n] = np.nan
        return
    out_moved[n] = abs(best - p[ax]) * np.sqrt(affine[0, ax] ** 2 + affine[1, ax] ** 2
                                               + affine[2, ax] ** 2)
    p[ax] = best
    for a in range(3):
        verts[n, a] = (affine[a, 0] * p[0] + affine[a, 1] * p[1] + affine[a, 2] * p[2]
                       + affine[a, 3])
