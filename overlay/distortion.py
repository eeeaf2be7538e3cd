"""Lens distortion for the overlay: render a pinhole image, warp it onto the real (distorted) lens.

The renderer rasterizes an *undistorted* pinhole image with camera matrix ``k_render`` (the
real focal lengths times ``scale``, a principal point chosen so the image covers the whole
field of view of the distorted camera, which with barrel distortion is wider than the pinhole
one). For every output pixel centre (u, v) of the real camera a map stores where that pixel's
ray lands in the render image:

    (x', y') = undistort((u, v); K, dist)            # cv2.undistortPoints, iterated to 1e-12
    (u_r, v_r) = k_render . (x', y', 1)

The map is computed once per camera and scale (an LRU cache of the last ``_CACHE_SIZE``
geometries, keyed by intrinsics, distortion, size, scale and field-of-view limit, so the
overlay, probe and stereo renderers of one pipeline share one map; the maps are read-only)
(``cv2.undistortPoints`` runs the inverse of the OpenCV
distortion model, "Camera Calibration and 3D Reconstruction", eq. of ``projectPoints``), checked
by re-projecting with the ``cv2.projectPoints`` model (pixels whose round trip misses by more than
``_ROUND_TRIP_PX`` are marked invalid and never drawn), and applied each frame by bilinear
sampling (``cv2.remap``, positions quantised to 1/32 px) of the premultiplied render, restricted
to the box the model covers. Both images sample
pixel (i, j) at its centre (u, v) = (i, j), the ``cv2.projectPoints`` convention, so a 3-D
point lands where ``cv2.projectPoints`` with distortion puts it.

Without distortion and at ``scale == 1`` the render *is* the output image and no warp is done.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import cv2
import numpy as np
from numba import njit

from scrubin.overlay.errors import OverlayError
from scrubin.registration.camera import CameraModel

_ROUND_TRIP_PX = 0.01
_INVALID = np.float32(-1e6)
_CACHE_SIZE = 4
_CACHE: OrderedDict[tuple, RenderGeometry] = OrderedDict()
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class RenderGeometry:
    """How the pinhole render image relates to the output camera image.

    Attributes
    ----------
    camera
        The real (output) camera.
    k_render
        3x3 pinhole matrix of the render image (pixel centres at integer coordinates).
    render_width, render_height
        Render image size in pixels.
    map_x, map_y
        ``(H, W)`` float32: render coordinates sampled for each output pixel, ``-1e6`` where
        the output pixel has no valid undistorted ray; None when the mapping is the identity.
    map1, map2
        The same in ``cv2.convertMaps`` fixed-point form (``CV_16SC2`` + interpolation table).
    """

    camera: CameraModel
    k_render: np.ndarray
    render_width: int
    render_height: int
    map_x: np.ndarray | None
    map_y: np.ndarray | None
    map1: np.ndarray | None = None
    map2: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.map_x is not None and self.map1 is None:
            # fixed-point form for cv2.remap: integer positions + 1/32-pixel interpolation table
            # (invalid pixels saturate to -32768: outside the source, so transparent)
            m1, m2 = cv2.convertMaps(self.map_x, self.map_y, cv2.CV_16SC2)
            object.__setattr__(self, "map1", m1)
            object.__setattr__(self, "map2", m2)

    @property
    def identity(self) -> bool:
        """True when the render image is the output image (no distortion, scale 1)."""
        return self.map_x is None


def _undistort_normalized(camera: CameraModel, uv: np.ndarray) -> np.ndarray:
    """Normalised undistorted coordinates of the pixels ``uv`` (N, 2).

    Models with at most (k1, k2, p1, p2, k3): ``cv2.undistortPoints``' default five fixed-point
    iterations as the start, then vectorised Newton steps on the OpenCV distortion equations
    (2x2 Jacobian per point, numba) to a residual below 1e-14 -- the same root as the iterated
    ``cv2.undistortPoints`` (criteria 100 iterations / 1e-12), several times faster. Other
    models (rational, thin prism, tilt): ``cv2.undistortPoints`` iterated to 1e-12.
    """
    d = np.asarray(camera.dist, np.float64).ravel()
    pts = uv.reshape(-1, 1, 2).astype(np.float64)
    if d.size > 5 and np.any(d[5:]):
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        return cv2.undistortPoints(pts, camera.matrix, camera.dist, criteria=crit).reshape(-1, 2)
    k1, k2, p1, p2, k3 = np.concatenate([d, np.zeros(5 - d.size)]) if d.size < 5 else d[:5]
    k = camera.matrix
    yt = (uv[:, 1] - k[1, 2]) / k[1, 1]  # distorted normalised target
    xt = (uv[:, 0] - k[0, 2] - k[0, 1] * yt) / k[0, 0]
    xy = cv2.undistortPoints(pts, k, d).reshape(-1, 2).copy()
    _newton_undistort(xt, yt, k1, k2, p1, p2, k3, xy)
    return xy


def _distort_to_pixels(camera: CameraModel, xy: np.ndarray) -> np.ndarray:
    """Pixels of normalised undistorted points ``xy`` (N, 2): the ``cv2.projectPoints`` model,
    in numpy for (k1, k2, p1, p2, k3) (``cv2.projectPoints`` is ~40x slower on a full image
    grid), ``cv2.projectPoints`` itself for other models."""
    d = np.asarray(camera.dist, np.float64).ravel()
    k = camera.matrix
    if d.size > 5 and np.any(d[5:]):
        back, _ = cv2.projectPoints(np.column_stack([xy, np.ones(len(xy))]), np.zeros(3),
                                    np.zeros(3), k, camera.dist)
        return back.reshape(-1, 2)
    k1, k2, p1, p2, k3 = np.concatenate([d, np.zeros(5 - d.size)]) if d.size < 5 else d[:5]
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.column_stack([k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]])


@njit(cache=True, nogil=True)
def _newton_undistort(xt: np.ndarray, yt: np.ndarray, k1: float, k2: float, p1: float,
                      p2: float, k3: float, xy: np.ndarray) -> None:
    """Newton iterations in place on ``xy`` (start values) for the OpenCV model
    ``x_d = x rad + 2 p1 x y + p2 (r^2 + 2 x^2)``, ``y_d = y rad + p1 (r^2 + 2 y^2) + 2 p2 x y``,
    ``rad = 1 + k1 r^2 + k2 r^4 + k3 r^6`` (symmetric 2x2 Jacobian)."""
    for i in range(xy.shape[0]):
        x, y = xy[i, 0], xy[i, 1]
        for _ in range(20):
            x2, y2, xy_ = x * x, y * y, x * y
            r2 = x2 + y2
            rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
            drad = k1 + r2 * (2 * k2 + 3 * k3 * r2)
            fx = x * rad + 2 * p1 * xy_ + p2 * (r2 + 2 * x2) - xt[i]
            fy = y * rad + p1 * (r2 + 2 * y2) + 2 * p2 * xy_ - yt[i]
            if abs(fx) + abs(fy) < 1e-14 or not np.isfinite(fx + fy):
                break
            a = rad + 2 * x2 * drad + 2 * p1 * y + 6 * p2 * x
            b = 2 * xy_ * drad + 2 * p1 * x + 2 * p2 * y
            dd = rad + 2 * y2 * drad + 6 * p1 * y + 2 * p2 * x
            det = a * dd - b * b
            if det == 0.0:
                break
            x -= (dd * fx - b * fy) / det
            y -= (a * fy - b * fx) / det
        xy[i, 0], xy[i, 1] = x, y


def render_geometry(
    camera: CameraModel, scale: float = 1.0, max_fov_factor: float = 1.6
) -> RenderGeometry:
    """Build the render camera and (if needed) the distortion/upsampling map for ``camera``.

    Parameters
    ----------
    camera
        Output camera (intrinsics, OpenCV distortion, size).
    scale
        Render resolution relative to the output (0.25..2); below 1 the render is upsampled
        by the bilinear warp.
    max_fov_factor
        Output pixels whose undistorted ray lies beyond this factor times the pinhole half field
        of view are left undrawn (guards against the fold-over of strong distortion models).
    """
    if not np.isfinite(scale) or not 0.25 <= scale <= 2.0:
        raise OverlayError(f"render scale must be within 0.25..2, got {scale}")
    if not np.isfinite(max_fov_factor) or max_fov_factor < 1.0:
        raise OverlayError(f"max_fov_factor must be >= 1, got {max_fov_factor}")
    key = (int(camera.width), int(camera.height),
           np.asarray(camera.matrix, np.float64).tobytes(),
           np.asarray(camera.dist, np.float64).tobytes(), float(scale), float(max_fov_factor))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is not None:
        return replace(hit, camera=camera)  # shares the (read-only) maps
    geom = _build_geometry(camera, float(scale), float(max_fov_factor))
    for a in (geom.map_x, geom.map_y, geom.map1, geom.map2):
        if a is not None:
            a.setflags(write=False)
    with _CACHE_LOCK:
        _CACHE[key] = geom
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return geom


def clear_geometry_cache() -> None:
    """Forget every cached render geometry (benchmarks of the cold start)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _build_geometry(camera: CameraModel, scale: float, max_fov_factor: float
                    ) -> RenderGeometry:
    """The uncached work of :func:`render_geometry`."""
    if not np.any(camera.dist) and scale == 1.0:
        return RenderGeometry(camera, camera.matrix.copy(), camera.width, camera.height,
                              None, None)
    w, h = camera.width, camera.height
    k = camera.matrix
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    uv = np.stack([uu.ravel(), vv.ravel()], axis=1)
    if np.any(camera.dist):
        xy = _undistort_normalized(camera, uv)
        err = np.linalg.norm(_distort_to_pixels(camera, xy) - uv, axis=1)
    else:
        yn = (uv[:, 1] - k[1, 2]) / k[1, 1]
        xy = np.column_stack([(uv[:, 0] - k[0, 2] - k[0, 1] * yn) / k[0, 0], yn])
        err = np.zeros(len(uv))
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
    cy_ = (corners[:, 1] - k[1, 2]) / k[1, 1]
    cx_ = (corners[:, 0] - k[0, 2] - k[0, 1] * cy_) / k[0, 0]
    lim_x = max_fov_factor * np.abs(cx_).max()
    lim_y = max_fov_factor * np.abs(cy_).max()
    valid = (err < _ROUND_TRIP_PX) & np.all(np.isfinite(xy), axis=1)
    valid &= (np.abs(xy[:, 0]) <= lim_x) & (np.abs(xy[:, 1]) <= lim_y)
    if not np.any(valid):
        raise OverlayError("lens distortion model has no invertible pixel; check dist_coeffs")
    kr = np.array([[k[0, 0] * scale, k[0, 1] * scale, 0.0], [0.0, k[1, 1] * scale, 0.0],
                   [0.0, 0.0, 1.0]])
    ur = kr[0, 0] * xy[:, 0] + kr[0, 1] * xy[:, 1]
    vr = kr[1, 1] * xy[:, 1]
    # one pixel of margin on every side for the bilinear support
    kr[0, 2] = 1.0 - np.floor(ur[valid].min())
    kr[1, 2] = 1.0 - np.floor(vr[valid].min())
    wr = int(np.ceil(ur[valid].max() + kr[0, 2])) + 2
    hr = int(np.ceil(vr[valid].max() + kr[1, 2])) + 2
    map_x = np.where(valid, ur + kr[0, 2], _INVALID).astype(np.float32).reshape(h, w)
    map_y = np.where(valid, vr + kr[1, 2], _INVALID).astype(np.float32).reshape(h, w)
    return RenderGeometry(camera, kr, wr, hr, map_x, map_y)


def output_bbox(geom: RenderGeometry, render_bbox: tuple[int, int, int, int]) -> tuple[
    int, int, int, int
]:
    """Output-pixel box ``(y0, y1, x0, x1)`` (inclusive) that can sample ``render_bbox``.

    The render box (grown by one pixel for the bilinear support) is traced along its border,
    mapped through the lens model with ``cv2.projectPoints``, and bounded (the map is a
    continuous bijection on its valid region, so the border bounds the inside).
    """
    y0, y1, x0, x1 = render_bbox
    if geom.identity:
        return render_bbox
    kr = geom.k_render
    n = 33
    ys = np.linspace(y0 - 1.0, y1 + 1.0, n)
    xs = np.linspace(x0 - 1.0, x1 + 1.0, n)
    border = np.concatenate([
        np.column_stack([xs, np.full(n, ys[0])]), np.column_stack([xs, np.full(n, ys[-1])]),
        np.column_stack([np.full(n, xs[0]), ys]), np.column_stack([np.full(n, xs[-1]), ys]),
    ])
    yn = (border[:, 1] - kr[1, 2]) / kr[1, 1]
    xn = (border[:, 0] - kr[0, 2] - kr[0, 1] * yn) / kr[0, 0]
    cam = geom.camera
    uv, _ = cv2.projectPoints(np.column_stack([xn, yn, np.ones(len(xn))]), np.zeros(3),
                              np.zeros(3), cam.matrix, cam.dist)
    uv = uv.reshape(-1, 2)
    oy0 = max(int(np.floor(uv[:, 1].min())) - 1, 0)
    oy1 = min(int(np.ceil(uv[:, 1].max())) + 1, cam.height - 1)
    ox0 = max(int(np.floor(uv[:, 0].min())) - 1, 0)
    ox1 = min(int(np.ceil(uv[:, 0].max())) + 1, cam.width - 1)
    return (oy0, oy1, ox0, ox1)


def warp_to_output(
    geom: RenderGeometry, render_bgra: np.ndarray, render_bbox: tuple[int, int, int, int]
) -> tuple[np.ndarray, int, int]:
    """Warp the premultiplied BGRA render image onto the output lens (bilinear).

    ``render_bgra`` is the whole ``(render_height, render_width, 4)`` render image, transparent
    (zero) outside ``render_bbox = (y0, y1, x0, x1)``. Only the output box that can see the
    render box is computed (``cv2.remap`` with the fixed-point maps, 1/32 px sample positions).
    Returns the output patch and its top-left output pixel ``(x0, y0)``.
    """
    y0, y1, x0, x1 = render_bbox
    if geom.identity:
        return render_bgra[y0:y1 + 1, x0:x1 + 1], x0, y0
    oy0, oy1, ox0, ox1 = output_bbox(geom, render_bbox)
    if oy1 < oy0 or ox1 < ox0:
        return np.zeros((0, 0, 4), np.uint8), 0, 0
    out = cv2.remap(render_bgra, geom.map1[oy0:oy1 + 1, ox0:ox1 + 1],
                    geom.map2[oy0:oy1 + 1, ox0:ox1 + 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, ox0, oy0
