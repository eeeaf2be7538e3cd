"""Sub-pixel refinement of square-marker corners from their four straight edges.

The black border of an ArUco marker is a quadrilateral whose sides are straight lines in the
undistorted image. The corners that ``cornerSubPix`` finds on such L-shaped corners are biased
(measured ~0.1–0.2 px towards the inside on rendered markers, see ``benchmarks/bench_tracking.py``),
and the AprilTag quad fit is offset by ~0.4–0.9 px. Here each side is re-measured: at
``samples`` stations along the middle 70 % of a side, the gray profile across the edge is read
(bilinear), normalised between the dark inside and the light outside, and the edge offset is
taken from its area: for a step at ``e`` on ``[-h, h]`` the integral of the normalised profile
is ``h - e`` (a first-moment edge estimator, unbiased for a symmetric blur and for pixel-area
sampling). A total-least-squares line is fitted to each side's points and
adjacent lines are intersected (homogeneous cross product, Hartley & Zisserman, *Multiple View
Geometry*, 2nd ed., §2.2.1). With a camera model, edge points are undistorted first and the
corners re-distorted, so curved (distorted) edges stay exact.

The passes without distortion run in a numba-compiled kernel
(:mod:`scrubin.registration._edge_kernel`, ~40 us for three markers; compiled once and cached on
disk); :func:`_refine_all` is the NumPy reference (and the path with lens distortion).
Measured on rendered markers (``benchmarks/bench_tracking.py``): median corner error
0.014 px, against 0.2 px for ``CORNER_REFINE_SUBPIX``.
"""

from __future__ import annotations

import cv2
import numpy as np

from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError


def refine_corners_edges(
    gray: np.ndarray,
    corners_px: np.ndarray,
    camera: CameraModel | None = None,
    samples: int = 16,
    half_width_px: tuple[float, ...] = (6.0, 2.5),
    offset_px: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Refine ``(N, 4, 2)`` marker corners (pixels, clockwise from top-left) on ``gray``.

    Parameters
    ----------
    gray
        (H, W) uint8 image the corners were detected in.
    corners_px
        Initial corners, accurate to about a pixel; the inside of each quad must be darker
        than the outside (ArUco border).
    camera
        When given, its distortion is removed from the edge points before fitting lines.
    samples
        Edge stations per side.
    half_width_px
        Half length of each profile across the edge, one value per pass (each capped at a
        tenth of the marker's shortest side, to stay inside the one-module black border). The
        first, wide pass captures corners that are several pixels off (ArUco3 detection on a
        downscaled image); the next one measures with less noise.
    offset_px
        (x, y) position of ``gray`` in the full frame when it is a crop; added to the result
        (and used to undistort in full-frame pixels).

    Returns
    -------
    ``(N, 4, 2)`` refined corners (full-frame pixels); a marker whose edges cannot be
    measured (too small, too little contrast) keeps its input corners.
    """
    img = np.asarray(gray)
    if not half_width_px or min(half_width_px) <= 0:
        raise RegistrationError(f"half_width_px needs positive values, got {half_width_px}")
    if img.ndim != 2:
        raise RegistrationError(f"gray image must be 2-D, got shape {img.shape}")
    c = np.asarray(corners_px, dtype=np.float64)
    if c.ndim != 3 or c.shape[1:] != (4, 2):
        raise RegistrationError(f"corners must have shape (N, 4, 2), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise RegistrationError("corners contain NaN or infinite values")
    off = np.asarray(offset_px, dtype=np.float64).reshape(2)
    out = c + off
    if c.shape[0] == 0:
        return out
    current = c.copy()
    ok_all = np.ones(c.shape[0], dtype=bool)
    gray8 = img
    # imported here: numba's import costs ~0.3 s, not to be paid by every `scrubin` command
    from scrubin.registration._edge_kernel import refine_pass
    for half in half_width_px:
        if gray8.dtype == np.uint8:
            refined, ok = refine_pass(gray8, current, int(samples), float(half), 21, False,
                                      _EYE3, _ZEROS12, off)
        else:
            refined, ok = _refine_all(img, current, samples, float(half), np.zeros(2), None)
        ok_all &= ok
        current[ok] = refined[ok]
    dist = camera.dist if camera is not None else np.zeros(0)
    if np.any(dist != 0) and np.any(ok_all):
        # final pass on undistorted edge points, full-frame coordinates
        if gray8.dtype == np.uint8 and dist.size <= 12:
            d12 = np.zeros(12)
            d12[: dist.size] = dist
            und, ok = refine_pass(gray8, current, int(samples), float(half_width_px[-1]), 21,
                                  True, camera.matrix, d12, off)
            rays = np.concatenate([und, np.ones(und.shape[:2] + (1,))], axis=-1)
            rays = rays.reshape(-1, 3) @ np.linalg.inv(camera.matrix).T
            refined = camera.project(np.ascontiguousarray(rays)).reshape(und.shape)
            with np.errstate(invalid="ignore"):
                moved = np.abs(refined - current - off).max(axis=(1, 2))
            ok &= moved <= 3.0
        else:
            refined, ok = _refine_all(img, current, samples, float(half_width_px[-1]), off,
                                      camera)
        ok_all &= ok
        out[ok_all] = refined[ok_all]
    else:
        out[ok_all] = current[ok_all] + off
    return out


_EYE3 = np.eye(3)
_ZEROS12 = np.zeros(12)


def _bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at ``xy`` (..., 2) pixel coordinates (edge-clamped)."""
    h, w = img.shape
    x = np.clip(xy[..., 0], 0.0, w - 1.001)
    y = np.clip(xy[..., 1], 0.0, h - 1.001)
    x0 = x.astype(np.intp)
    y0 = y.astype(np.intp)
    fx = x - x0
    fy = y - y0
    f = img.dtype != np.float64
    i00 = img[y0, x0].astype(np.float64) if f else img[y0, x0]
    i01 = img[y0, x0 + 1].astype(np.float64) if f else img[y0, x0 + 1]
    i10 = img[y0 + 1, x0].astype(np.float64) if f else img[y0 + 1, x0]
    i11 = img[y0 + 1, x0 + 1].astype(np.float64) if f else img[y0 + 1, x0 + 1]
    top = i00 + fx * (i01 - i00)
    bottom = i10 + fx * (i11 - i10)
    return top + fy * (bottom - top)


def _refine_all(
    img: np.ndarray,
    quads: np.ndarray,
    samples: int,
    half: float,
    offset: np.ndarray,
    camera: CameraModel | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised refinement of (N, 4, 2) quads: corners (full frame) and a validity mask."""
    n_q = quads.shape[0]
    p0 = quads
    p1 = np.roll(quads, -1, axis=1)
    side = np.linalg.norm(p1 - p0, axis=2)  # (N, 4)
    # the border is one module of (bits + 2) wide: keep each profile inside it
    hw = np.minimum(half, 0.1 * side.min(axis=1))  # (N,)
    n_steps = 21
    u = np.linspace(-1.0, 1.0, n_steps)
    steps = hw[:, None] * u[None, :]  # (N, P)
    d = (p1 - p0) / np.maximum(side, 1e-9)[..., None]
    nrm = np.stack([d[..., 1], -d[..., 0]], axis=-1)  # (N, 4, 2)
    centre = quads.mean(axis=1, keepdims=True)
    mid = 0.5 * (p0 + p1)
    flip = np.einsum("nsk,nsk->ns", nrm, mid - centre) < 0
    nrm[flip] *= -1.0  # outwards: the marker's inside is dark
    t = np.linspace(0.15, 0.85, samples)
    stations = p0[:, :, None, :] + t[None, None, :, None] * (p1 - p0)[:, :, None, :]  # N,4,S,2
    pts = (stations[:, :, :, None, :]
           + steps[:, None, None, :, None] * nrm[:, :, None, None, :])  # N,4,S,P,2
    prof = _bilinear(img, pts)  # (N, 4, S, P)
    dark = np.median(prof[..., :2].reshape(n_q, 4, -1), axis=2)
    light = np.median(prof[..., -2:].reshape(n_q, 4, -1), axis=2)
    contrast = light - dark
    norm = (prof - dark[..., None, None]) / np.maximum(contrast, 1e-9)[..., None, None]
    # a step at offset e gives integral_{-h}^{h} norm ds = h - e; the area (first moment)
    # estimate is unbiased for any symmetric blur and for pixel-area sampling, unlike the
    # 50 % level crossing of the bilinear profile (phase-dependent, up to ~0.08 px)
    wgt = ((norm[..., 0] < 0.3) & (norm[..., -1] > 0.7)).astype(np.float64)  # (N, 4, S)
    area = np.trapezoid(np.clip(norm, -0.5, 1.5), dx=1.0, axis=-1) * (2.0 / (n_steps - 1))
    off = hw[:, None, None] * (1.0 - area)  # (N, 4, S) px along the outward normal
    edge = stations + off[..., None] * nrm[:, :, None, :] + offset  # full-frame pixels
    if camera is not None:
        flat = edge.reshape(-1, 1, 2)
        edge = cv2.undistortPoints(flat, camera.matrix, camera.dist,
                                   P=camera.matrix).reshape(edge.shape)
    # weighted total-least-squares line per side: normal = minor eigenvector of the scatter
    wsum = wgt.sum(axis=2)  # (N, 4)
    m = (edge * wgt[..., None]).sum(axis=2) / np.maximum(wsum, 1e-9)[..., None]
    dxy = (edge - m[:, :, None, :]) * np.sqrt(wgt)[..., None]
    sxx = (dxy[..., 0] ** 2).sum(axis=2)
    syy = (dxy[..., 1] ** 2).sum(axis=2)
    sxy = (dxy[..., 0] * dxy[..., 1]).sum(axis=2)
    theta = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)  # major axis angle
    a = -np.sin(theta)
    b = np.cos(theta)
    lines = np.stack([a, b, -(a * m[..., 0] + b * m[..., 1])], axis=-1)  # (N, 4, 3)
    x = np.cross(np.roll(lines, 1, axis=1), lines)  # corner k = side k-1 x side k
    with np.errstate(divide="ignore", invalid="ignore"):
        corners = x[..., :2] / x[..., 2:3]
    if camera is not None:
        rays = np.concatenate([corners, np.ones((n_q, 4, 1))], axis=-1).reshape(-1, 3)
        rays = rays @ np.linalg.inv(camera.matrix).T
        corners = camera.project(np.nan_to_num(rays, nan=0.0) + [0, 0, 1e-12]).reshape(n_q, 4, 2)
    ok = (
        (side.min(axis=1) >= 8.0)
        & (contrast.min(axis=1) >= 10.0)
        & (wsum.min(axis=1) >= max(4, samples // 3))
        & np.all(np.isfinite(corners), axis=(1, 2))
    )
    with np.errstate(invalid="ignore"):
        moved = np.abs(corners - quads - offset).max(axis=(1, 2))
    ok &= moved <= np.maximum(3.0, 2.0 * hw)
    return corners, ok
