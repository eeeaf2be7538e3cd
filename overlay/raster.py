"""Binned edge-function triangle rasterizer (numba): the depth-buffer core of the renderer.

Why not OpenGL: on this CPU-only target Mesa llvmpipe spends ~8-14 ms on triangle set-up alone
for a 100k-triangle mesh (its set-up stage is single-threaded), whereas this rasterizer, built
for meshes with many small triangles, needs ~2-4 ms at 1280x720 (``benchmarks/bench_overlay.py``
measures both).

Conventions
-----------
* Camera frame: OpenCV (x right, y down, z forward), millimetres.
* Render pixels follow ``cv2.projectPoints``: pixel (i, j) is *sampled at its centre*, which has
  coordinates u = i, v = j. A point (x, y, z) lands at u = fx x/z + s y/z + cx,
  v = fy y/z + cy, so coverage is tested exactly at integer (u, v): there is no half-pixel
  shift to get wrong (unlike a GL projection matrix, whose pixel centres sit at i + 0.5).
* Depth is stored as 1/z (1/mm, 0 = empty); a larger value is nearer. 1/z is affine in screen
  space, so barycentric interpolation of it is exact (perspective-correct depth).
* Stored per pixel and layer: the nearest triangle's index (``tid``, -1 = empty) and its
  screen-space barycentric weights of vertices a and b (``bary``).

Triangles with a vertex at or behind the near plane are skipped by the rasterizer; the caller
replaces them by their near-plane-clipped pieces (:func:`clip_near`, Sutherland-Hodgman
against one plane).
"""

from __future__ import annotations

import os

# Parallel regions here last ~1 ms; with OpenMP's default active spin-waiting, a busy machine
# (more runnable threads than cores) made each frame ~3x costlier in CPU and 3-6x slower in
# wall time (measured: 30 ms vs 11 ms CPU per 100k-triangle frame). Passive waiting costs a
# few tens of microseconds per region on an idle machine. Why an environment variable set on
# import: numba's threading layer here is OpenMP (no TBB installed), and libgomp reads its wait
# policy from the environment once, when numba first loads it; numba has no API for it. The
# cleaner alternatives do not fit: numba.config.THREADING_LAYER = "workqueue" (which never
# spins) aborts when two threads launch kernels at once (one renderer per camera or eye, each
# in its own thread, is supported), and set_num_threads only changes the thread count. It
# takes effect only if no OpenMP region ran in this process before; set it yourself (e.g.
# OMP_WAIT_POLICY=ACTIVE on a dedicated machine) to override. Child processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from numba import njit, prange, set_parallel_chunksize

HIDDEN = 2.0  # face_cull value of a hidden structure's faces


@njit(cache=True, nogil=True, fastmath=True)
def transform_project(
    v_ct: np.ndarray,
    n_ct: np.ndarray,
    rot: np.ndarray,
    trans: np.ndarray,
    kr: np.ndarray,
    near: float,
    ambient: float,
    p_cam: np.ndarray,
    shade: np.ndarray,
    uvz: np.ndarray,
) -> float:
    """Map CT vertices into the camera frame, shade and project them (pinhole ``kr``).

    ``shade[i]`` is the Lambert intensity with a head-light at the camera centre,
    ``ambient + (1 - ambient) |n . p| / (|n| |p|)`` (two-sided; Gouraud shading interpolates
    it over the triangles). ``uvz[i] = (u, v, 1/z)`` in render pixels; ``1/z = -1`` marks a
    vertex at or behind the near plane (its u, v are then meaningless). Serial on purpose: a
    parallel region costs more than the work on a loaded machine. Returns the smallest camera
    z (mm), so the caller knows whether the near plane cuts the model.
    """
    zmin = np.inf
    fx = kr[0, 0]
    sk = kr[0, 1]
    cx = kr[0, 2]
    fy = kr[1, 1]
    cy = kr[1, 2]
    for i in range(v_ct.shape[0]):
        x0 = v_ct[i, 0]
        y0 = v_ct[i, 1]
        z0 = v_ct[i, 2]
        x = rot[0, 0] * x0 + rot[0, 1] * y0 + rot[0, 2] * z0 + trans[0]
        y = rot[1, 0] * x0 + rot[1, 1] * y0 + rot[1, 2] * z0 + trans[1]
        z = rot[2, 0] * x0 + rot[2, 1] * y0 + rot[2, 2] * z0 + trans[2]
        p_cam[i, 0] = x
        p_cam[i, 1] = y
        p_cam[i, 2] = z
        zmin = min(zmin, z)
        a = n_ct[i, 0]
        b = n_ct[i, 1]
        c = n_ct[i, 2]
        nx = rot[0, 0] * a + rot[0, 1] * b + rot[0, 2] * c
        ny = rot[1, 0] * a + rot[1, 1] * b + rot[1, 2] * c
        nz = rot[2, 0] * a + rot[2, 1] * b + rot[2, 2] * c
        nn = np.sqrt((nx * nx + ny * ny + nz * nz) * (x * x + y * y + z * z))
        if nn > 0.0:
            shade[i] = ambient + (1.0 - ambient) * abs(nx * x + ny * y + nz * z) / nn
        else:
            shade[i] = ambient
        if z > near:
            iz = 1.0 / z
            uvz[i, 0] = fx * x * iz + sk * y * iz + cx
            uvz[i, 1] = fy * y * iz + cy
            uvz[i, 2] = iz
        else:
            uvz[i, 0] = 0.0
            uvz[i, 1] = 0.0
            uvz[i, 2] = -1.0
    return zmin


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def setup_triangles(
    uvz: np.ndarray,
    faces: np.ndarray,
    face_cull: np.ndarray,
    width: int,
    height: int,
    tbox: np.ndarray,
) -> None:
    """Per-triangle pixel bounding box ``tbox[f] = (y0, y1, x0, x1)`` (inclusive) or empty.

    A triangle is empty (``y0 > y1``) when a vertex is behind the near plane, it is degenerate,
    it covers no pixel centre, or it faces away while ``face_cull[f]`` is +1 / -1 (keep only
    positive / negative signed screen area). ``face_cull[f] = 0`` keeps both sides;
    ``HIDDEN`` drops the triangle.
    """
    for f in prange(faces.shape[0]):
        a = faces[f, 0]
        b = faces[f, 1]
        c = faces[f, 2]
        tbox[f, 0] = 1
        tbox[f, 1] = 0
        if face_cull[f] == HIDDEN or uvz[a, 2] <= 0.0 or uvz[b, 2] <= 0.0 or uvz[c, 2] <= 0.0:
            continue
        ua = uvz[a, 0]
        va = uvz[a, 1]
        ub = uvz[b, 0]
        vb = uvz[b, 1]
        uc = uvz[c, 0]
        vc = uvz[c, 1]
        area = (ub - ua) * (vc - va) - (vb - va) * (uc - ua)
        if area == 0.0 or area * face_cull[f] < 0.0:
            continue
        fy0 = np.ceil(min(va, min(vb, vc)))
        fy1 = np.floor(max(va, max(vb, vc)))
        fx0 = np.ceil(min(ua, min(ub, uc)))
        fx1 = np.floor(max(ua, max(ub, uc)))
        if fy1 < 0.0 or fx1 < 0.0 or fy0 > height - 1 or fx0 > width - 1 or fy0 > fy1 or fx0 > fx1:
            continue
        # clamp in floating point first: far-off vertices would overflow an integer
        tbox[f, 0] = int(max(fy0, 0.0))
        tbox[f, 1] = int(min(fy1, height - 1.0))
        tbox[f, 2] = int(max(fx0, 0.0))
        tbox[f, 3] = int(min(fx1, width - 1.0))


_BIN_CHUNKS = 8


@njit(cache=True, nogil=True, parallel=True)
def bin_triangles(
    tbox: np.ndarray, band_h: int, counts: np.ndarray, starts: np.ndarray, bbox: np.ndarray
) -> np.ndarray:
    """Counting-sort the non-empty triangles into horizontal bands of ``band_h`` rows.

    Returns the concatenated per-band triangle lists; band k's triangles are
    ``lst[starts[k]:starts[k + 1]]``, in ascending triangle order. ``counts`` (one per band)
    receives the band sizes and ``bbox`` the union ``(y0, y1, x0, x1)`` of all triangle boxes
    (``y0 > y1`` when nothing is visible). Chunks of triangles are counted and scattered in
    parallel; the offsets come from a prefix sum over (band, chunk).
    """
    nb = counts.shape[0]
    m = tbox.shape[0]
    nc = _BIN_CHUNKS
    size = (m + nc - 1) // nc
    cc = np.zeros((nc, nb), np.int64)
    boxes = np.empty((nc, 4), np.int64)
    for c in prange(nc):
        y0a = 1 << 30
        y1a = -1
        x0a = 1 << 30
        x1a = -1
        for f in range(c * size, min(m, (c + 1) * size)):
            y0 = tbox[f, 0]
            y1 = tbox[f, 1]
            if y0 > y1:
                continue
            for k in range(y0 // band_h, y1 // band_h + 1):
                cc[c, k] += 1
            y0a = min(y0a, y0)
            y1a = max(y1a, y1)
            x0a = min(x0a, tbox[f, 2])
            x1a = max(x1a, tbox[f, 3])
        boxes[c, 0] = y0a
        boxes[c, 1] = y1a
        boxes[c, 2] = x0a
        boxes[c, 3] = x1a
    bbox[0] = boxes[:, 0].min()
    bbox[1] = boxes[:, 1].max()
    bbox[2] = boxes[:, 2].min()
    bbox[3] = boxes[:, 3].max()
    offs = np.empty((nc, nb), np.int64)
    s = 0
    for k in range(nb):
        starts[k] = s
        counts[k] = 0
        for c in range(nc):
            offs[c, k] = s
            s += cc[c, k]
            counts[k] += cc[c, k]
    starts[nb] = s
    lst = np.empty(s, np.int32)
    for c in prange(nc):
        for f in range(c * size, min(m, (c + 1) * size)):
            y0 = tbox[f, 0]
            y1 = tbox[f, 1]
            if y0 > y1:
                continue
            for k in range(y0 // band_h, y1 // band_h + 1):
                lst[offs[c, k]] = f
                offs[c, k] += 1
    return lst


def rasterize(
    uvz: np.ndarray,
    faces: np.ndarray,
    face_layer: np.ndarray,
    tbox: np.ndarray,
    starts: np.ndarray,
    lst: np.ndarray,
    band_h: int,
    bbox: np.ndarray,
    depth: np.ndarray,
    tid: np.ndarray,
    bary: np.ndarray,
) -> None:
    """Z-buffer the binned triangles into per-layer ``depth`` / ``tid`` / ``bary`` buffers.

    Bands of the box run in parallel (no two threads write the same row), handed out one at a
    time (numba's dynamic scheduling, chunk size 1): their work differs a lot, and the default
    static halves left one thread idle for a third of the time. Only the rows and columns of
    ``bbox`` are cleared and written; callers must read nothing outside it.
    """
    old = set_parallel_chunksize(1)
    try:
        _rasterize(uvz, faces, face_layer, tbox, starts, lst, band_h, bbox, depth, tid, bary)
    finally:
        set_parallel_chunksize(old)


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _rasterize(
    uvz: np.ndarray,
    faces: np.ndarray,
    face_layer: np.ndarray,
    tbox: np.ndarray,
    starts: np.ndarray,
    lst: np.ndarray,
    band_h: int,
    bbox: np.ndarray,
    depth: np.ndarray,
    tid: np.ndarray,
    bary: np.ndarray,
) -> None:
    """The kernel of :func:`rasterize`."""
    n_layers = depth.shape[0]
    bx0 = bbox[2]
    bx1 = bbox[3]
    for band in prange(bbox[0] // band_h, bbox[1] // band_h + 1):
        r0 = max(band * band_h, bbox[0])
        r1 = min(band * band_h + band_h - 1, bbox[1])
        if r0 > r1:
            continue
        for layer in range(n_layers):
            for y in range(r0, r1 + 1):
                for x in range(bx0, bx1 + 1):
                    depth[layer, y, x] = 0.0
                    tid[layer, y, x] = -1
        for j in range(starts[band], starts[band + 1]):
            f = lst[j]
            y0 = max(tbox[f, 0], r0)
            y1 = min(tbox[f, 1], r1)
            layer = face_layer[f]
            a = faces[f, 0]
            b = faces[f, 1]
            c = faces[f, 2]
            ua = uvz[a, 0]
            va = uvz[a, 1]
            ub = uvz[b, 0]
            vb = uvz[b, 1]
            uc = uvz[c, 0]
            vc = uvz[c, 1]
            za = uvz[a, 2]
            zb = uvz[b, 2]
            zc = uvz[c, 2]
            inv_area = 1.0 / ((ub - ua) * (vc - va) - (vb - va) * (uc - ua))
            # barycentric weights as plane equations w = A x + B y + C (edge functions / area)
            a0 = (vb - vc) * inv_area
            b0 = (uc - ub) * inv_area
            c0 = (ub * vc - vb * uc) * inv_area
            a1 = (vc - va) * inv_area
            b1 = (ua - uc) * inv_area
            c1 = (uc * va - vc * ua) * inv_area
            a2 = -(a0 + a1)
            # reciprocals once per triangle (the row loop below only multiplies)
            n0 = -1.0 / a0 if a0 != 0.0 else 0.0
            n1 = -1.0 / a1 if a1 != 0.0 else 0.0
            n2 = -1.0 / a2 if a2 != 0.0 else 0.0
            dza = za - zc
            dzb = zb - zc
            fx0 = float(tbox[f, 2])
            fx1 = float(tbox[f, 3])
            for y in range(y0, y1 + 1):
                # scanline: each weight w = a x + r is >= 0 on a half-line of x
                q0 = b0 * y + c0
                q1 = b1 * y + c1
                q2 = 1.0 - q0 - q1
                lo = fx0
                hi = fx1
                if a0 > 0.0:
                    lo = max(lo, q0 * n0)
                elif a0 < 0.0:
                    hi = min(hi, q0 * n0)
                elif q0 < 0.0:
                    continue
                if a1 > 0.0:
                    lo = max(lo, q1 * n1)
                elif a1 < 0.0:
                    hi = min(hi, q1 * n1)
                elif q1 < 0.0:
                    continue
                if a2 > 0.0:
                    lo = max(lo, q2 * n2)
                elif a2 < 0.0:
                    hi = min(hi, q2 * n2)
                elif q2 < 0.0:
                    continue
                if lo > hi:
                    continue
                for x in range(int(np.ceil(lo)), int(np.floor(hi)) + 1):
                    w0 = a0 * x + q0
                    w1 = a1 * x + q1
                    iz = zc + w0 * dza + w1 * dzb
                    if iz > depth[layer, y, x]:
                        depth[layer, y, x] = iz
                        tid[layer, y, x] = f
                        bary[layer, y, x, 0] = w0
                        bary[layer, y, x, 1] = w1


@njit(cache=True, nogil=True)
def clip_near(
    p_cam: np.ndarray, shade: np.ndarray, faces: np.ndarray, near: float, first_vertex: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clip the triangles that cross the plane ``z = near`` (Sutherland-Hodgman, one plane).

    Returns new camera-frame vertices ``(K, 3)``, their shading ``(K,)``, new faces
    ``(F, 3)`` indexing ``first_vertex + k`` and, per new face, the index of its parent face.
    Triangles entirely behind the plane vanish; those entirely in front are not returned.
    """
    m = faces.shape[0]
    cnt = 0
    for f in range(m):
        n_in = 0
        for k in range(3):
            if p_cam[faces[f, k], 2] > near:
                n_in += 1
        if n_in == 1 or n_in == 2:
            cnt += 1
    verts = np.empty((cnt * 4, 3))
    norms = np.empty(cnt * 4, np.float32)
    new_faces = np.empty((cnt * 2, 3), np.int64)
    parent = np.empty(cnt * 2, np.int64)
    nv = 0
    nf = 0
    for f in range(m):
        n_in = 0
        for k in range(3):
            if p_cam[faces[f, k], 2] > near:
                n_in += 1
        if n_in == 0 or n_in == 3:
            continue
        start = nv
        for k in range(3):
            i = faces[f, k]
            j = faces[f, (k + 1) % 3]
            zi = p_cam[i, 2]
            zj = p_cam[j, 2]
            if zi > near:
                verts[nv] = p_cam[i]
                norms[nv] = shade[i]
                nv += 1
            if (zi > near) != (zj > near):
                t = (near - zi) / (zj - zi)
                verts[nv] = p_cam[i] + t * (p_cam[j] - p_cam[i])
                verts[nv, 2] = near + 1e-6 * near
                norms[nv] = shade[i] + np.float32(t) * (shade[j] - shade[i])
                nv += 1
        for k in range(1, nv - start - 1):
            new_faces[nf, 0] = first_vertex + start
            new_faces[nf, 1] = first_vertex + start + k
            new_faces[nf, 2] = first_vertex + start + k + 1
            parent[nf] = f
            nf += 1
    return verts[:nv], norms[:nv], new_faces[:nf], parent[:nf]
