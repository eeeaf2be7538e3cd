"""Lens distortion: drawn points land where cv2.projectPoints (with distortion) puts them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import trimesh

from scrubin.overlay.distortion import output_bbox, render_geometry
from scrubin.overlay.errors import OverlayError
from scrubin.overlay.renderer import OverlayRenderer, Structure
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform

K = np.array([[610.0, 0.0, 331.7], [0.0, 604.0, 236.2], [0.0, 0.0, 1.0]])
DIST = np.array([-0.28, 0.11, 0.0012, -0.0009, -0.02])
IDENT = Transform(np.eye(4), "CT", "CAMERA")
# spread over the image, corners included, where distortion moves points by many pixels
CENTRES = np.array([[0, 0, 300.0], [60, 40, 320], [-150, -100, 330], [150, -105, 330],
                    [-150, 110, 300], [15, -20, 280], [150, 110, 320], [-40, 10, 290.0]])


def spheres(radius: float = 2.5) -> list[Structure]:
    s = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return [Structure(f"p{i}", s.vertices + c, s.faces) for i, c in enumerate(CENTRES)]


def centroid_offsets(camera: CameraModel, centres: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Signed (drawn centroid - cv2.projectPoints) per blob, (N, 2) pixels."""
    truth = cv2.projectPoints(centres, np.zeros(3), np.zeros(3), camera.matrix,
                              camera.dist)[0].reshape(-1, 2)
    n, lab = cv2.connectedComponents((alpha > 0).astype(np.uint8))
    assert n - 1 == len(truth)
    out = []
    for k in range(1, n):
        ys, xs = np.nonzero(lab == k)
        w = alpha[ys, xs].astype(np.float64)
        c = np.array([xs @ w, ys @ w]) / w.sum()
        out.append(c - truth[np.linalg.norm(truth - c, axis=1).argmin()])
    return np.array(out)


def test_points_land_where_projectpoints_with_distortion_puts_them() -> None:
    cam = CameraModel(K, DIST, 640, 480)
    ov = OverlayRenderer(cam, spheres()).render(IDENT)
    err = np.linalg.norm(centroid_offsets(cam, CENTRES, ov.canvas()[..., 3]), axis=1)
    assert err.max() < 0.2, err
    # the distortion is large here: ignoring it would miss by pixels
    pinhole = cv2.projectPoints(CENTRES, np.zeros(3), np.zeros(3), K, None)[0].reshape(-1, 2)
    assert np.abs(pinhole - cam.project(CENTRES)).max() > 10


@pytest.mark.parametrize("dist", [np.zeros(5), DIST])
def test_reduced_resolution_keeps_the_pixel_centre_convention(dist: np.ndarray) -> None:
    """At half resolution single blobs alias by up to ~0.2 render px (0.4 output px); a
    convention error (a half-pixel shift at either resolution) would show as a *mean* offset
    of 0.25-0.5 px over many blobs at random sub-pixel positions."""
    cam = CameraModel(K, dist, 640, 480)
    rng = np.random.default_rng(7)
    gx, gy = np.meshgrid(np.linspace(-150, 150, 7), np.linspace(-100, 100, 5))
    centres = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, 320.0)])
    centres[:, :2] += rng.uniform(-4, 4, (len(centres), 2))
    s = trimesh.creation.icosphere(subdivisions=3, radius=3.0)
    structs = [Structure(f"p{i}", s.vertices + c, s.faces) for i, c in enumerate(centres)]
    ov = OverlayRenderer(cam, structs, scale=0.5).render(IDENT)
    off = centroid_offsets(cam, centres, ov.canvas()[..., 3])
    assert np.abs(off.mean(axis=0)).max() < 0.05, off.mean(axis=0)
    assert np.linalg.norm(off, axis=1).max() < 0.5  # aliasing of ~3-px blobs, not a shift


def test_map_round_trips_through_projectpoints() -> None:
    cam = CameraModel(K, DIST, 640, 480)
    g = render_geometry(cam, 0.75)
    assert not g.identity
    rng = np.random.default_rng(3)
    v = rng.integers(0, 480, 500)
    u = rng.integers(0, 640, 500)
    mx, my = g.map_x[v, u].astype(np.float64), g.map_y[v, u].astype(np.float64)
    ok = mx > -1e5
    assert ok.mean() > 0.99
    kr = g.k_render
    yn = (my - kr[1, 2]) / kr[1, 1]
    xn = (mx - kr[0, 2] - kr[0, 1] * yn) / kr[0, 0]
    back = cam.project(np.column_stack([xn, yn, np.ones_like(xn)]))
    assert np.abs(back[ok] - np.column_stack([u, v])[ok]).max() < 0.01
    # the render image covers every valid map position with bilinear support
    assert mx[ok].min() >= 0 and mx[ok].max() <= g.render_width - 1
    assert my[ok].min() >= 0 and my[ok].max() <= g.render_height - 1


def test_identity_geometry_without_distortion_at_full_scale() -> None:
    g = render_geometry(CameraModel(K, np.zeros(5), 640, 480))
    assert g.identity and (g.render_width, g.render_height) == (640, 480)
    assert output_bbox(g, (1, 2, 3, 4)) == (1, 2, 3, 4)


def test_output_bbox_encloses_the_warped_render_box() -> None:
    cam = CameraModel(K, DIST, 640, 480)
    g = render_geometry(cam)
    y0, y1, x0, x1 = 40, 90, 30, 120
    oy0, oy1, ox0, ox1 = output_bbox(g, (y0, y1, x0, x1))
    inside = (g.map_x >= x0) & (g.map_x <= x1) & (g.map_y >= y0) & (g.map_y <= y1)
    vs, us = np.nonzero(inside)
    assert vs.min() >= oy0 and vs.max() <= oy1 and us.min() >= ox0 and us.max() <= ox1


@pytest.mark.parametrize(("scale", "fov"), [(0.1, 1.6), (3.0, 1.6), (float("nan"), 1.6),
                                            (1.0, 0.5)])
def test_render_geometry_rejects_bad_parameters(scale: float, fov: float) -> None:
    with pytest.raises(OverlayError):
        render_geometry(CameraModel(K, DIST, 640, 480), scale, fov)


def test_draw_matches_render_then_blend() -> None:
    from scrubin.overlay.composite import blend_premultiplied

    cam = CameraModel(K, DIST, 640, 480)
    s = trimesh.creation.icosphere(subdivisions=3, radius=40)
    r = OverlayRenderer(cam, [Structure("s", s.vertices + [30, -20, 350], s.faces,
                                        opacity=0.7)])
    video = np.random.default_rng(1).integers(0, 255, (480, 640, 3)).astype(np.uint8)
    fused = r.draw(video.copy(), IDENT)
    ov = r.render(IDENT)
    two_step = blend_premultiplied(video.copy(), ov.bgra, ov.x0, ov.y0)
    assert np.array_equal(fused, two_step)
    assert (fused != video).any(axis=2).sum() > 10000


def test_geometry_is_cached_per_camera_and_scale() -> None:
    from scrubin.overlay.distortion import clear_geometry_cache

    k = K * [[0.5], [0.5], [1.0]]
    cam = CameraModel(k, DIST, 320, 240)
    clear_geometry_cache()
    g1 = render_geometry(cam, 0.75)
    cam2 = CameraModel(k.copy(), DIST.copy(), 320, 240)
    g2 = render_geometry(cam2, 0.75)
    assert g2.map1 is g1.map1 and g2.map_x is g1.map_x and g2.camera is cam2
    assert not g1.map_x.flags.writeable and not g1.map1.flags.writeable
    g3 = render_geometry(cam, 0.5)
    assert g3.map_x is not g1.map_x and g3.render_width < g1.render_width
    g4 = render_geometry(CameraModel(k, DIST * 0.5, 320, 240), 0.75)
    assert not np.array_equal(g4.map_x, g1.map_x)
    clear_geometry_cache()
    g5 = render_geometry(cam, 0.75)  # rebuilt: the same maps as the first build
    assert g5.map_x is not g1.map_x
    np.testing.assert_array_equal(g5.map_x, g1.map_x)
    np.testing.assert_array_equal(g5.k_render, g1.k_render)
