"""Ray-casting kernels of the synthetic scene (:mod:`scrubin.samples.synthetic`): ray generation and
per-sample shading with s x s box filtering (numba).

Geometry ids follow the order the scene adds its meshes: skin 0, marker plate 1, fiducial
spheres 2, occluder 3. The tracked pointer (:mod:`.synthetic_pointer`) is cast in its own
frame (plate 0, shaft 1) and passed to :func:`shade` as a second hit set that wins where it is
nearer. Plate texture: ``_TEX_PPMM`` pixels per mm, pixel (0, 0) at plate
coordinates (-PLATE_MM / 2, +PLATE_MM / 2) (REF x right, y up).
"""

from __future__ import annotations

import cv2
import numpy as np
from numba import njit

from scrubin.registration.camera import CameraModel

#: Marker plate: 2x2 markers of MARKER_MM with GAP_MM between them and a MARGIN_MM rim.
MARKER_MM = 44.0
GAP_MM = 8.0
MARGIN_MM = 8.0
PLATE_MM = 2 * MARKER_MM + GAP_MM + 2 * MARGIN_MM
_TEX_PPMM = 8.0  # plate texture pixels per mm
_GEOM_SKIN, _GEOM_PLATE, _GEOM_FID, _GEOM_OCCL = 0, 1, 2, 3
_SKIN_BGR = np.array([150.0, 170.0, 225.0])
_FID_BGR = np.array([225.0, 235.0, 240.0])
_OCCL_BGR = np.array([200.0, 150.0, 90.0])
_SHAFT_BGR = np.array([178.0, 176.0, 170.0])


@njit(cache=True)
def _bilinear(tex: np.ndarray, tu: float, tv: float) -> float:
    th, tw = tex.shape[0], tex.shape[1]
    iu = min(max(int(np.floor(tu)), 0), tw - 2)
    iv = min(max(int(np.floor(tv)), 0), th - 2)
    fu = min(max(tu - iu, 0.0), 1.0)
    fv = min(max(tv - iv, 0.0), 1.0)
    return ((1 - fu) * (1 - fv) * tex[iv, iu] + fu * (1 - fv) * tex[iv, iu + 1]
            + (1 - fu) * fv * tex[iv + 1, iu] + fu * fv * tex[iv + 1, iu + 1])


@njit(cache=True)
def make_rays(dirs_cam: np.ndarray, r: np.ndarray, o: np.ndarray, out: np.ndarray) -> None:
    """Rays (origin, unit direction) in CT from camera-frame directions ``dirs_cam``."""
    for i in range(dirs_cam.shape[0]):
        x, y, z = dirs_cam[i, 0], dirs_cam[i, 1], dirs_cam[i, 2]
        dx = r[0, 0] * x + r[0, 1] * y + r[0, 2] * z
        dy = r[1, 0] * x + r[1, 1] * y + r[1, 2] * z
        dz = r[2, 0] * x + r[2, 1] * y + r[2, 2] * z
        n = np.sqrt(dx * dx + dy * dy + dz * dz)
        out[i, 0], out[i, 1], out[i, 2] = o[0], o[1], o[2]
        out[i, 3], out[i, 4], out[i, 5] = dx / n, dy / n, dz / n


@njit(cache=True)
def shade(rays: np.ndarray, gid: np.ndarray, pid: np.ndarray, uv: np.ndarray,
           t_hit: np.ndarray, fnorm: np.ndarray, skin_f: np.ndarray, skin_bgr: np.ndarray,
           skin_n: np.ndarray, t_ref_ct: np.ndarray, tex: np.ndarray, background: np.ndarray,
           s: int, x0: int, y0: int, w: int, img: np.ndarray, tool_rays: np.ndarray,
           tool_t: np.ndarray, tool_gid: np.ndarray, tool_n: np.ndarray, tool_tex: np.ndarray,
           tool_half: float, tool_ppmm: float) -> None:
    """Shade every ray sample (head-light Lambert) and box-filter s x s samples per pixel.

    The rays cover the pixel box starting at (x0, y0), ``w`` pixels wide, row by row.
    ``tool_*``: the same rays in the pointer's frame and their hits on it (empty arrays: no
    pointer); a pointer hit nearer than the scene's is shaded instead (plate textured with
    ``tool_tex`` at ``tool_ppmm`` px/mm over +-``tool_half`` mm, shaft metal grey).
    """
    has_tool = tool_t.shape[0] > 0
    h = rays.shape[0] // (w * s * s)
    ws = w * s
    inv = 1.0 / (s * s)
    half = PLATE_MM / 2
    for y in range(h):
        for x in range(w):
            acc0 = 0.0
            acc1 = 0.0
            acc2 = 0.0
            for sy in range(s):
                for sx in range(s):
                    k = (y * s + sy) * ws + x * s + sx
                    if has_tool and tool_t[k] < t_hit[k]:
                        ex, ey, ez = tool_rays[k, 3], tool_rays[k, 4], tool_rays[k, 5]
                        cost = abs(tool_n[k, 0] * ex + tool_n[k, 1] * ey + tool_n[k, 2] * ez)
                        if tool_gid[k] == 0:
                            qx = tool_rays[k, 0] + ex * tool_t[k]
                            qy = tool_rays[k, 1] + ey * tool_t[k]
                            val = _bilinear(tool_tex, (qx + tool_half) * tool_ppmm - 0.5,
                                            (tool_half - qy) * tool_ppmm - 0.5)
                            val *= 0.55 + 0.45 * cost
                            acc0 += val
                            acc1 += val
                            acc2 += val
                        else:
                            lam = 0.3 + 0.7 * cost
                            acc0 += lam * _SHAFT_BGR[0]
                            acc1 += lam * _SHAFT_BGR[1]
                            acc2 += lam * _SHAFT_BGR[2]
                        continue
                    dx, dy, dz = rays[k, 3], rays[k, 4], rays[k, 5]
                    if not np.isfinite(t_hit[k]):
                        acc0 += background[y0 + y, x0 + x, 0]
                        acc1 += background[y0 + y, x0 + x, 1]
                        acc2 += background[y0 + y, x0 + x, 2]
                        continue
                    g = gid[k]
                    cosv = abs(fnorm[k, 0] * dx + fnorm[k, 1] * dy + fnorm[k, 2] * dz)
                    if g == _GEOM_SKIN:
                        f = pid[k]
                        u, v = uv[k, 0], uv[k, 1]
                        wt0 = 1.0 - u - v
                        a, b, c = skin_f[f, 0], skin_f[f, 1], skin_f[f, 2]
                        nx = wt0 * skin_n[a, 0] + u * skin_n[b, 0] + v * skin_n[c, 0]
                        ny = wt0 * skin_n[a, 1] + u * skin_n[b, 1] + v * skin_n[c, 1]
                        nz = wt0 * skin_n[a, 2] + u * skin_n[b, 2] + v * skin_n[c, 2]
                        nn = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
                        lam = 0.3 + 0.7 * abs(nx * dx + ny * dy + nz * dz) / nn
                        acc0 += lam * (wt0 * skin_bgr[a, 0] + u * skin_bgr[b, 0]
                                       + v * skin_bgr[c, 0])
                        acc1 += lam * (wt0 * skin_bgr[a, 1] + u * skin_bgr[b, 1]
                                       + v * skin_bgr[c, 1])
                        acc2 += lam * (wt0 * skin_bgr[a, 2] + u * skin_bgr[b, 2]
                                       + v * skin_bgr[c, 2])
                    elif g == _GEOM_PLATE:
                        t = t_hit[k]
                        px = rays[k, 0] + dx * t
                        py = rays[k, 1] + dy * t
                        pz = rays[k, 2] + dz * t
                        rx = t_ref_ct[0, 0] * px + t_ref_ct[0, 1] * py + t_ref_ct[0, 2] * pz \
                            + t_ref_ct[0, 3]
                        ry = t_ref_ct[1, 0] * px + t_ref_ct[1, 1] * py + t_ref_ct[1, 2] * pz \
                            + t_ref_ct[1, 3]
                        tu = (rx + half) * _TEX_PPMM - 0.5
                        tv = (half - ry) * _TEX_PPMM - 0.5
                        val = _bilinear(tex, tu, tv)
                        val *= 0.55 + 0.45 * cosv
                        acc0 += val
                        acc1 += val
                        acc2 += val
                    else:
                        lam = 0.35 + 0.65 * cosv
                        if g == _GEOM_FID:
                            acc0 += lam * _FID_BGR[0]
                            acc1 += lam * _FID_BGR[1]
                            acc2 += lam * _FID_BGR[2]
                        else:
                            acc0 += lam * _OCCL_BGR[0]
                            acc1 += lam * _OCCL_BGR[1]
                            acc2 += lam * _OCCL_BGR[2]
            img[y0 + y, x0 + x, 0] = min(255, int(acc0 * inv + 0.5))
            img[y0 + y, x0 + x, 1] = min(255, int(acc1 * inv + 0.5))
            img[y0 + y, x0 + x, 2] = min(255, int(acc2 * inv + 0.5))


_DIRS_CACHE: dict[tuple, np.ndarray] = {}


def sample_directions(camera: CameraModel, s: int) -> np.ndarray:
    """``(H s, W s, 3)`` camera-frame directions (z = 1) through the distorted positions of
    s x s samples per pixel (``cv2.undistortPoints`` iterated to 1e-12); the last 3 are cached
    (read-only) per camera and s."""
    key = (camera.width, camera.height, camera.matrix.tobytes(), camera.dist.tobytes(), s)
    if key not in _DIRS_CACHE:
        d = _undistorted_directions(camera, s)
        d.setflags(write=False)
        while len(_DIRS_CACHE) >= 3:
            _DIRS_CACHE.pop(next(iter(_DIRS_CACHE)))
        _DIRS_CACHE[key] = d
    return _DIRS_CACHE[key]


def _undistorted_directions(camera: CameraModel, s: int) -> np.ndarray:
    offs = (np.arange(s) + 0.5) / s - 0.5
    xs = (np.arange(camera.width)[:, None] + offs[None, :]).reshape(-1)
    ys = (np.arange(camera.height)[:, None] + offs[None, :]).reshape(-1)
    g = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
    xy = cv2.undistortPoints(g, camera.matrix, camera.dist, criteria=crit).reshape(-1, 2)
    return np.concatenate([xy, np.ones((len(xy), 1))], axis=1).reshape(
        camera.height * s, camera.width * s, 3)
