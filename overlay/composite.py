"""Resolving rendered layers into colour (shading, opacity, outline mode) and blending onto frames.

Colour images here are *premultiplied* BGRA ``uint8`` (OpenCV channel order): a pixel
(b, g, r, a) stands for colour (b, g, r) / a at coverage a / 255. Porter-Duff "over" in
premultiplied form (Porter & Duff 1984, "Compositing digital images", SIGGRAPH, Table 1) is

    out = src + dst * (1 - a_src)

which is what :func:`blend_premultiplied` applies to a live BGR frame (``dst``) and what
:func:`resolve_layers` applies between the structures of one pixel, far to near.

Layer kinds (one depth buffer each, see ``overlay.renderer``):

* ``KIND_OPAQUE`` (layer 0): all opaque filled structures, ordinary z-buffer occlusion.
* ``KIND_FILL``: one semi-transparent structure; only its nearest surface is drawn, shaded,
  at the structure's opacity, and only where it is in front of the opaque layer.
* ``KIND_OUTLINE``: one structure drawn as its silhouette / occluding-contour edges only, so
  the surgical field stays visible through the model. A covered pixel is an edge pixel when a
  pixel within ``outline_r`` (horizontally or vertically) is uncovered (silhouette) or lies
  more than ``contour_mm`` farther away (occluding contour inside the silhouette).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from scrubin.overlay.errors import OverlayError

KIND_OPAQUE = 0
KIND_FILL = 1
KIND_OUTLINE = 2
_MAX_LAYERS = 16


@njit(cache=True, nogil=True, inline="always")
def _shade(f: int, w0: float, w1: float, faces: np.ndarray, shade: np.ndarray) -> float:
    """Gouraud: the per-vertex Lambert intensities interpolated with the pixel's weights."""
    return (w0 * shade[faces[f, 0]] + w1 * shade[faces[f, 1]]
            + (1.0 - w0 - w1) * shade[faces[f, 2]])


@njit(cache=True, nogil=True)
def _is_edge(
    tid: np.ndarray, depth: np.ndarray, layer: int, y: int, x: int, radius: int,
    contour_mm: float, bbox: np.ndarray, height: int, width: int,
) -> bool:
    z0 = 1.0 / depth[layer, y, x]
    for k in range(1, radius + 1):
        for d in range(4):
            yy = y
            xx = x
            if d == 0:
                yy = y - k
            elif d == 1:
                yy = y + k
            elif d == 2:
                xx = x - k
            else:
                xx = x + k
            if yy < 0 or xx < 0 or yy >= height or xx >= width:
                continue  # the image border is not the model's silhouette
            if yy < bbox[0] or yy > bbox[1] or xx < bbox[2] or xx > bbox[3]:
                return True  # outside the drawn box: uncovered
            if tid[layer, yy, xx] < 0:
                return True
            if contour_mm > 0.0 and 1.0 / depth[layer, yy, xx] - z0 > contour_mm:
                return True
    return False


@njit(cache=True, nogil=True, inline="always", fastmath=True)
def _single_px(
    f: int, w0: float, w1: float, faces: np.ndarray, shade: np.ndarray,
    face_struct: np.ndarray, struct_bgr: np.ndarray, struct_alpha: np.ndarray,
) -> tuple[np.uint8, np.uint8, np.uint8, np.uint8]:
    """Premultiplied BGRA of a pixel of one filled layer covered by triangle ``f``."""
    s = face_struct[f]
    al = struct_alpha[s]
    sh = _shade(f, w0, w1, faces, shade) * al * 255.0
    return (np.uint8(min(struct_bgr[s, 0] * sh + 0.5, 255.0)),
            np.uint8(min(struct_bgr[s, 1] * sh + 0.5, 255.0)),
            np.uint8(min(struct_bgr[s, 2] * sh + 0.5, 255.0)),
            np.uint8(min(al * 255.0 + 0.5, 255.0)))


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _resolve_single(
    tid: np.ndarray, bary: np.ndarray, faces: np.ndarray, shade: np.ndarray,
    face_struct: np.ndarray, struct_bgr: np.ndarray, struct_alpha: np.ndarray,
    bbox: np.ndarray, out: np.ndarray,
) -> None:
    """:func:`resolve_layers` for the common case of one filled layer."""
    for y in prange(bbox[0], bbox[1] + 1):
        j = y - bbox[0]
        for x in range(bbox[2], bbox[3] + 1):
            i = x - bbox[2]
            f = tid[0, y, x]
            if f < 0:
                out[j, i, 0] = 0
                out[j, i, 1] = 0
                out[j, i, 2] = 0
                out[j, i, 3] = 0
                continue
            b, g, r, a = _single_px(f, bary[0, y, x, 0], bary[0, y, x, 1], faces, shade,
                                    face_struct, struct_bgr, struct_alpha)
            out[j, i, 0] = b
            out[j, i, 1] = g
            out[j, i, 2] = r
            out[j, i, 3] = a


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def resolve_blend_single(
    tid: np.ndarray, bary: np.ndarray, faces: np.ndarray, shade: np.ndarray,
    face_struct: np.ndarray, struct_bgr: np.ndarray, struct_alpha: np.ndarray,
    bbox: np.ndarray, frame: np.ndarray,
) -> None:
    """Unchecked kernel: one filled (or opaque, alpha 1) layer resolved as
    :func:`resolve_layers` does and blended onto ``frame`` as :func:`blend_premultiplied` does,
    bit for bit, in one pass (render pixel = frame pixel, no lens warp)."""
    for y in prange(bbox[0], bbox[1] + 1):
        for x in range(bbox[2], bbox[3] + 1):
            f = tid[0, y, x]
            if f < 0:
                continue
            b, g, r, a = _single_px(f, bary[0, y, x, 0], bary[0, y, x, 1], faces, shade,
                                    face_struct, struct_bgr, struct_alpha)
            if a == 0:
                continue
            inv = 255 - np.int64(a)
            frame[y, x, 0] = np.uint8(min((np.int64(frame[y, x, 0]) * inv + 127) // 255 + b, 255))
            frame[y, x, 1] = np.uint8(min((np.int64(frame[y, x, 1]) * inv + 127) // 255 + g, 255))
            frame[y, x, 2] = np.uint8(min((np.int64(frame[y, x, 2]) * inv + 127) // 255 + r, 255))


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def resolve_layers(
    depth: np.ndarray,
    tid: np.ndarray,
    bary: np.ndarray,
    faces: np.ndarray,
    shade: np.ndarray,
    face_struct: np.ndarray,
    layer_kind: np.ndarray,
    struct_bgr: np.ndarray,
    struct_alpha: np.ndarray,
    bbox: np.ndarray,
    outline_r: int,
    contour_mm: float,
    out: np.ndarray,
) -> None:
    """Shade and composite all layers inside ``bbox = (y0, y1, x0, x1)`` into ``out``.

    ``out[j, i]`` receives premultiplied BGRA for render pixel ``(bbox[0] + j, bbox[2] + i)``.
    Colours are BGR in 0..1; ``struct_alpha`` is each structure's opacity; ``shade`` the
    per-vertex intensity from ``overlay.raster.transform_project``.
    """
    n_layers = depth.shape[0]
    height = depth.shape[1]
    width = depth.shape[2]
    if n_layers == 1 and layer_kind[0] != KIND_OUTLINE:
        _resolve_single(tid, bary, faces, shade, face_struct, struct_bgr,
                        struct_alpha if layer_kind[0] == KIND_FILL else np.ones_like(struct_alpha),
                        bbox, out)
        return
    for y in prange(bbox[0], bbox[1] + 1):
        zs = np.empty(_MAX_LAYERS)
        cs = np.empty((_MAX_LAYERS, 4))
        for x in range(bbox[2], bbox[3] + 1):
            cb = 0.0
            cg = 0.0
            cr = 0.0
            ca = 0.0
            iz0 = 0.0
            n = 0
            for layer in range(n_layers):
                f = tid[layer, y, x]
                if f < 0:
                    continue
                iz = depth[layer, y, x]
                s = face_struct[f]
                kind = layer_kind[layer]
                if kind == KIND_OPAQUE:
                    sh = _shade(f, bary[layer, y, x, 0], bary[layer, y, x, 1], faces, shade)
                    cb = struct_bgr[s, 0] * sh
                    cg = struct_bgr[s, 1] * sh
                    cr = struct_bgr[s, 2] * sh
                    ca = 1.0
                    iz0 = iz
                    continue
                if kind == KIND_FILL:
                    sh = _shade(f, bary[layer, y, x, 0], bary[layer, y, x, 1], faces, shade)
                elif _is_edge(tid, depth, layer, y, x, outline_r, contour_mm, bbox, height,
                              width):
                    sh = 1.0
                else:
                    continue
                al = struct_alpha[s]
                zs[n] = iz
                cs[n, 0] = struct_bgr[s, 0] * sh * al
                cs[n, 1] = struct_bgr[s, 1] * sh * al
                cs[n, 2] = struct_bgr[s, 2] * sh * al
                cs[n, 3] = al
                n += 1
            # far (small 1/z) to near, skipping what the opaque layer hides
            for _ in range(n):
                best = -1
                for k in range(n):
                    if zs[k] >= 0.0 and (best < 0 or zs[k] < zs[best]):
                        best = k
                if zs[best] >= iz0:
                    al = cs[best, 3]
                    cb = cs[best, 0] + cb * (1.0 - al)
                    cg = cs[best, 1] + cg * (1.0 - al)
                    cr = cs[best, 2] + cr * (1.0 - al)
                    ca = al + ca * (1.0 - al)
                zs[best] = -1.0
            j = y - bbox[0]
            i = x - bbox[2]
            out[j, i, 0] = np.uint8(min(cb * 255.0 + 0.5, 255.0))
            out[j, i, 1] = np.uint8(min(cg * 255.0 + 0.5, 255.0))
            out[j, i, 2] = np.uint8(min(cr * 255.0 + 0.5, 255.0))
            out[j, i, 3] = np.uint8(min(ca * 255.0 + 0.5, 255.0))


@njit(cache=True, nogil=True, parallel=True)
def _blend(frame: np.ndarray, bgra: np.ndarray, y0: int, x0: int) -> None:
    h = bgra.shape[0]
    w = bgra.shape[1]
    for j in prange(h):
        for i in range(w):
            a = np.int32(bgra[j, i, 3])
            if a == 0:
                continue
            inv = 255 - a
            for ch in range(3):
                v = (np.int32(frame[y0 + j, x0 + i, ch]) * inv + 127) // 255 + np.int32(
                    bgra[j, i, ch]
                )
                frame[y0 + j, x0 + i, ch] = np.uint8(min(v, 255))


def blend_premultiplied(
    frame_bgr: np.ndarray, overlay_bgra: np.ndarray, x0: int = 0, y0: int = 0
) -> np.ndarray:
    """Blend a premultiplied BGRA patch onto a BGR ``uint8`` frame in place ("over").

    Parameters
    ----------
    frame_bgr
        ``(H, W, 3)`` uint8 live frame, modified in place and returned.
    overlay_bgra
        ``(h, w, 4)`` uint8 premultiplied patch whose top-left pixel lands on frame pixel
        ``(x0, y0)``; it must lie inside the frame.
    """
    if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise OverlayError(
            f"frame must be an (H, W, 3) uint8 BGR image, got {frame_bgr.shape} {frame_bgr.dtype}"
        )
    if overlay_bgra.dtype != np.uint8 or overlay_bgra.ndim != 3 or overlay_bgra.shape[2] != 4:
        raise OverlayError(
            f"overlay must be an (h, w, 4) uint8 premultiplied BGRA image, got "
            f"{overlay_bgra.shape} {overlay_bgra.dtype}"
        )
    h, w = overlay_bgra.shape[:2]
    if x0 < 0 or y0 < 0 or y0 + h > frame_bgr.shape[0] or x0 + w > frame_bgr.shape[1]:
        raise OverlayError(
            f"overlay patch {w}x{h} at ({x0}, {y0}) does not fit in the "
            f"{frame_bgr.shape[1]}x{frame_bgr.shape[0]} frame"
        )
    if not frame_bgr.flags.writeable:
        raise OverlayError("frame is read-only; pass a writable copy")
    if h and w:
        _blend(frame_bgr, overlay_bgra, int(y0), int(x0))
    return frame_bgr


def premultiplied_to_rgba(bgra: np.ndarray, premultiplied: bool = True) -> np.ndarray:
    """Premultiplied BGRA -> RGBA (premultiplied, or straight alpha for PNG-style consumers)."""
    rgba = bgra[..., [2, 1, 0, 3]].copy()
    if not premultiplied:
        a = rgba[..., 3:4].astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(a > 0, rgba[..., :3] * (255.0 / np.maximum(a, 1.0)), 0.0)
        rgba[..., :3] = np.clip(c + 0.5, 0, 255).astype(np.uint8)
    return rgba
