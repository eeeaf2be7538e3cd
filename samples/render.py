"""Voxelise the analytic phantom into a CT volume: supersampling, PSF blur, noise.

Each voxel takes the HU of the last-painted structure containing its centre, except voxels
within half a voxel diagonal of some primitive boundary, which average ``n**3`` sub-samples
on a regular grid inside the voxel (partial-volume effect). Nearness uses a conservative
distance bound (for an ellipsoid ``min(semi_axes) * |sqrt(q) - 1|``, exact distances for the
other primitives), so every mixed voxel is supersampled. Then a Gaussian point-spread
function (isotropic sigma in mm, i.e. ``sigma / spacing`` voxels per axis) and Gaussian noise
are applied, and values are rounded to stored integers (``stored = HU + 1024``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
from scipy.ndimage import gaussian_filter

from scrubin.samples.model import AIR_HU, box_sdf, capsule_sdf, encode_parts, part_bbox

#: Stored = HU - RESCALE_INTERCEPT.
RESCALE_INTERCEPT = -1024.0


def pack(structures: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, ...]:
    """Flatten structures (in paint order) into the arrays the numba kernel reads."""
    ordered = sorted(structures.values(), key=lambda s: int(s["paint_order"]))
    ptype, ppar, pstart, pend, bbox, sstart, send, hu = [], [], [], [], [], [], [], []
    for s in ordered:
        sstart.append(len(pstart))
        t, par, ps, pe = encode_parts(s["parts"])
        offset = len(ptype)
        ptype.extend(t.tolist())
        ppar.extend(par)
        pstart.extend((ps + offset).tolist())
        pend.extend((pe + offset).tolist())
        bbox.extend(part_bbox(part).ravel() for part in s["parts"])
        send.append(len(pstart))
        hu.append(float(s["hu_inside"]))
    return (
        np.asarray(ptype, np.int64),
        np.asarray(ppar, np.float64),
        np.asarray(pstart, np.int64),
        np.asarray(pend, np.int64),
        np.asarray(bbox, np.float64),
        np.asarray(sstart, np.int64),
        np.asarray(send, np.int64),
        np.asarray(hu, np.float64),
    )


@numba.njit(cache=True, inline="always")
def _prim(t: int, par: np.ndarray, x: float, y: float, z: float) -> tuple[bool, float]:
    """(inside, lower bound of |distance to boundary|) of one primitive."""
    if t == 0:
        u = (x - par[0]) / par[3]
        v = (y - par[1]) / par[4]
        w = (z - par[2]) / par[5]
        r = np.sqrt(u * u + v * v + w * w)
        amin = min(par[3], min(par[4], par[5]))
        return r < 1.0, amin * abs(r - 1.0)
    if t == 1:
        s = par[0] * x + par[1] * y + par[2] * z - par[3]
        return s < 0.0, abs(s)
    sd = box_sdf(par, x, y, z) if t == 2 else capsule_sdf(par, x, y, z)
    return sd < 0.0, abs(sd)


@numba.njit(cache=True, parallel=True)
def _render(
    affine: np.ndarray,
    k0: int,
    out: np.ndarray,
    ptype: np.ndarray,
    ppar: np.ndarray,
    pstart: np.ndarray,
    pend: np.ndarray,
    bbox: np.ndarray,
    sstart: np.ndarray,
    send: np.ndarray,
    hu: np.ndarray,
    sub: np.ndarray,
    half_diag: float,
    air: float,
) -> None:
    nk, nj, ni = out.shape
    nparts = pstart.shape[0]
    nstruct = sstart.shape[0]
    part_struct = np.empty(nparts, np.int64)
    for s in range(nstruct):
        for q in range(sstart[s], send[s]):
            part_struct[q] = s
    nsub = sub.shape[0]
    for kk in numba.prange(nk):
        cand = np.empty(nparts, np.int64)
        k = float(k0 + kk)
        for j in range(nj):
            for i in range(ni):
                x = affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k + affine[0, 3]
                y = affine[1, 0] * i + affine[1, 1] * j + affine[1, 2] * k + affine[1, 3]
                z = affine[2, 0] * i + affine[2, 1] * j + affine[2, 2] * k + affine[2, 3]
                val = air
                near = False
                ncand = 0
                for q in range(nparts):
                    if (
                        x < bbox[q, 0] - half_diag or x > bbox[q, 3] + half_diag
                        or y < bbox[q, 1] - half_diag or y > bbox[q, 4] + half_diag
                        or z < bbox[q, 2] - half_diag or z > bbox[q, 5] + half_diag
                    ):
                        continue
                    cand[ncand] = q
                    ncand += 1
                    inside = True
                    for m in range(pstart[q], pend[q]):
                        ins, lb = _prim(ptype[m], ppar[m], x, y, z)
                        inside = inside and ins
                        if lb < half_diag:
                            near = True
                    if inside:
                        val = hu[part_struct[q]]  # parts are in paint order
                if near:
                    acc = 0.0
                    for n in range(nsub):
                        sx = x + sub[n, 0]
                        sy = y + sub[n, 1]
                        sz = z + sub[n, 2]
                        v = air
                        for c in range(ncand - 1, -1, -1):
                            q = cand[c]
                            inside = True
                            for m in range(pstart[q], pend[q]):
                                ins, lb = _prim(ptype[m], ppar[m], sx, sy, sz)
                                if not ins:
                                    inside = False
                                    break
                            if inside:
                                v = hu[part_struct[q]]
                                break
                        acc += v
                    val = acc / nsub
                out[kk, j, i] = val


def subsample_offsets(affine: np.ndarray, n: int) -> np.ndarray:
    """LPS mm offsets (n**3, 3) of a regular n x n x n sub-grid about a voxel centre."""
    f = (np.arange(n) + 0.5) / n - 0.5
    g = np.stack(np.meshgrid(f, f, f, indexing="ij"), axis=-1).reshape(-1, 3)
    return np.ascontiguousarray(g @ affine[:3, :3].T)


def render_hu(
    structures: Mapping[str, Mapping[str, Any]],
    affine: np.ndarray,
    shape_kji: tuple[int, int, int],
    supersample: int = 4,
    chunk_slices: int = 32,
) -> np.ndarray:
    """Noise-free, unblurred partial-volume HU image (float32, indexed [k, j, i])."""
    packed = pack(structures)
    affine = np.ascontiguousarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    half_diag = 0.5 * float(np.linalg.norm(spacing))
    sub = subsample_offsets(affine, supersample)
    out = np.empty(shape_kji, dtype=np.float32)
    for k0 in range(0, shape_kji[0], chunk_slices):
        chunk = out[k0 : k0 + chunk_slices]
        _render(affine, k0, chunk, *packed, sub, half_diag, AIR_HU)
    return out


def blur_and_noise(
    hu: np.ndarray, spacing_ijk: np.ndarray, psf_sigma_mm: float, noise_hu: float, seed: int
) -> np.ndarray:
    """Apply the PSF and noise in place-ish; return stored int16 values (HU + 1024).

    Noise of slice ``k`` comes from ``numpy.random.default_rng([seed, k])``, so it does not
    depend on how the volume is chunked.
    """
    sigma_kji = [psf_sigma_mm / float(s) for s in np.asarray(spacing_ijk)[::-1]]
    img = gaussian_filter(hu, sigma=sigma_kji, mode="nearest", truncate=4.0, output=np.float32)
    stored = np.empty(img.shape, dtype=np.int16)
    for k in range(img.shape[0]):
        rng = np.random.default_rng([seed, k])
        sl = img[k] + rng.standard_normal(img.shape[1:], dtype=np.float32) * np.float32(noise_hu)
        sl -= np.float32(RESCALE_INTERCEPT)
        np.rint(sl, out=sl)
        np.clip(sl, 0, 32767, out=sl)
        stored[k] = sl
    return stored
