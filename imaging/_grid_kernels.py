"""Numba kernels of :mod:`~imaging.surface` that work on the voxel grid around marching cubes:
the mask's bounding box, block averaging for a coarser extraction grid (consistent with a
mask), and the refinement of coarse-grid vertices onto the full-resolution level set."""

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
    nk, nj, ni = vol.shape
    k = min(max(k, 0), nk - 1)
    j = min(max(j, 0), nj - 1)
    i = min(max(i, 0), ni - 1)
    x = sign * float(vol[k, j, i])
    if use_mask:
        x = max(x, level) if mask[k, j, i] else min(x, below)
    return x


@njit(cache=True, parallel=True)
def refine_vertices(
    vol: np.ndarray, mask: np.ndarray, use_mask: bool, level: float, below: float, sign: float,
    inv_affine: np.ndarray, affine: np.ndarray, verts: np.ndarray, iterations: int,
) -> None:
    """Move vertices (LPS mm) onto the fine grid's level set by Newton steps on the trilinear
    interpolant: p <- p - (f(p) - level) ∇f / |∇f|² in voxel index space, each step at most
    half a voxel. The field is ``sign * value``, made consistent with ``mask`` as in
    :func:`clamp_average`."""
    for n in prange(verts.shape[0]):
        p = np.empty(3)
        for a in range(3):
            p[a] = (inv_affine[a, 0] * verts[n, 0] + inv_affine[a, 1] * verts[n, 1]
                    + inv_affine[a, 2] * verts[n, 2] + inv_affine[a, 3])
        for _ in range(iterations):
            i0 = int(np.floor(p[0]))
            j0 = int(np.floor(p[1]))
            k0 = int(np.floor(p[2]))
            fx = p[0] - i0
            fy = p[1] - j0
            fz = p[2] - k0
            c = np.empty((2, 2, 2))
            for dk in range(2):
                for dj in range(2):
                    for di in range(2):
                        c[dk, dj, di] = _sample(vol, mask, use_mask, level, below, sign,
                                                k0 + dk, j0 + dj, i0 + di)
            f = 0.0
            gx = 0.0
            gy = 0.0
            gz = 0.0
            for dk in range(2):
                wz = fz if dk else 1.0 - fz
                sz = 1.0 if dk else -1.0
                for dj in range(2):
                    wy = fy if dj else 1.0 - fy
                    sy = 1.0 if dj else -1.0
                    for di in range(2):
                        wx = fx if di else 1.0 - fx
                        sx = 1.0 if di else -1.0
                        v = c[dk, dj, di]
                        f += v * wx * wy * wz
                        gx += v * sx * wy * wz
                        gy += v * wx * sy * wz
                        gz += v * wx * wy * sz
            g2 = gx * gx + gy * gy + gz * gz
            if g2 <= 0.0:
                break
            s = (f - level) / g2
            dx, dy, dz = -s * gx, -s * gy, -s * gz
            norm = np.sqrt(dx * dx + dy * dy + dz * dz)
            if norm > 0.5:
                dx, dy, dz = dx * 0.5 / norm, dy * 0.5 / norm, dz * 0.5 / norm
            p[0] += dx
            p[1] += dy
            p[2] += dz
        for a in range(3):
            verts[n, a] = (affine[a, 0] * p[0] + affine[a, 1] * p[1] + affine[a, 2] * p[2]
                           + affine[a, 3])
