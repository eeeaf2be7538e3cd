"""Compositing: premultiplied blend, opacity, outline/silhouette mode, layer order."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from scrubin.overlay.composite import blend_premultiplied, premultiplied_to_rgba
from scrubin.overlay.errors import OverlayError
from scrubin.overlay.renderer import OverlayRenderer, Structure
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
CAM = CameraModel(K, np.zeros(5), 640, 480)
IDENT = Transform(np.eye(4), "CT", "CAMERA")


def sphere(name: str, centre, radius: float, colour, **kw) -> Structure:
    s = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return Structure(name, s.vertices + np.asarray(centre, float), s.faces, colour_rgb=colour,
                     **kw)


def pixel(point) -> tuple[int, int]:
    u, v = np.round(CAM.project(np.array([point], float))[0]).astype(int)
    return int(v), int(u)


def test_blend_known_answer() -> None:
    frame = np.full((4, 5, 3), 100, np.uint8)
    patch = np.zeros((2, 2, 4), np.uint8)
    patch[0, 0] = (50, 0, 0, 128)     # half-covered blue-ish
    patch[1, 1] = (10, 20, 200, 255)  # opaque
    blend_premultiplied(frame, patch, x0=3, y0=1)
    expect = round(100 * 127 / 255)
    assert tuple(frame[1, 3]) == (expect + 50, expect, expect)
    assert tuple(frame[2, 4]) == (10, 20, 200)
    assert tuple(frame[1, 4]) == (100, 100, 100)  # alpha 0 leaves the frame
    assert (frame[0] == 100).all()


@pytest.mark.parametrize(
    ("frame", "patch", "xy", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), np.zeros((1, 1, 4), np.uint8), (0, 0), "uint8 BGR"),
        (np.zeros((4, 4), np.uint8), np.zeros((1, 1, 4), np.uint8), (0, 0), "uint8 BGR"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((1, 1, 3), np.uint8), (0, 0), "BGRA"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((2, 2, 4), np.uint8), (3, 0), "does not fit"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((2, 2, 4), np.uint8), (-1, 0), "does not fit"),
    ],
)
def test_blend_rejects_bad_input(frame, patch, xy, match) -> None:
    with pytest.raises(OverlayError, match=match):
        blend_premultiplied(frame, patch, *xy)


def test_blend_rejects_read_only_frame() -> None:
    frame = np.zeros((4, 4, 3), np.uint8)
    frame.setflags(write=False)
    with pytest.raises(OverlayError, match="read-only"):
        blend_premultiplied(frame, np.zeros((1, 1, 4), np.uint8))


def test_opacity_blends_model_and_frame() -> None:
    frame = np.full((480, 640, 3), (30, 60, 90), np.uint8)
    r = OverlayRenderer(CAM, [sphere("s", [0, 0, 300], 30, (1.0, 1.0, 1.0), opacity=0.4)])
    r.draw(frame, IDENT)
    v, u = pixel([0, 0, 300])
    shade = 1.0  # normal faces the camera at the centre
    expect = np.array([30, 60, 90]) * 0.6 + 255 * shade * 0.4
    assert np.abs(frame[v, u].astype(float) - expect).max() <= 2.5


def test_outline_mode_keeps_the_field_visible_inside() -> None:
    frame = np.full((480, 640, 3), 90, np.uint8)
    before = frame.copy()
    r = OverlayRenderer(CAM, [sphere("s", [0, 0, 300], 40, (0.0, 1.0, 0.0), mode="outline")],
                        outline_px=2)
    r.draw(frame, IDENT)
    v, u = pixel([0, 0, 300])
    assert (frame[v - 30:v + 30, u - 30:u + 30] == before[v - 30:v + 30, u - 30:u + 30]).all()
    changed = np.any(frame != before, axis=2)
    ys, xs = np.nonzero(changed)
    radius_px = np.hypot(xs - u, ys - v)
    silhouette = 600 * 40 / np.sqrt(300**2 - 40**2)   # tangent-cone radius of the sphere
    assert np.all(np.abs(radius_px - silhouette) < 3.5)
    # a ring about 2 px wide all around: ~ 2 * pi * R * 2 pixels
    assert 0.7 < changed.sum() / (2 * np.pi * silhouette * 2) < 1.4
    assert (frame[changed][:, 1] == 255).all()


def test_outline_draws_occluding_contours_inside_the_silhouette() -> None:
    a = trimesh.creation.icosphere(subdivisions=4, radius=40)
    b = trimesh.creation.icosphere(subdivisions=4, radius=15)
    v = np.concatenate([a.vertices + [0, 0, 400], b.vertices + [0, 0, 250]])
    f = np.concatenate([a.faces, b.faces + len(a.vertices)])
    img = OverlayRenderer(CAM, [Structure("two", v, f, mode="outline")], contour_mm=10).render(
        IDENT).canvas()
    # the small near sphere's rim lies inside the big sphere's silhouette: a depth jump
    rim = 600 * 15 / np.sqrt(250**2 - 15**2)
    vv, uu = pixel([0, 0, 250])
    assert img[vv, uu + int(rim) - 1, 3] == 255 or img[vv, uu + int(rim), 3] == 255
    assert img[vv, uu, 3] == 0
    off = OverlayRenderer(CAM, [Structure("two", v, f, mode="outline")], contour_mm=0).render(
        IDENT).canvas()
    assert off[vv, uu + int(rim) - 1, 3] == 0 and off[vv, uu + int(rim), 3] == 0


def test_transparent_in_front_of_opaque_and_hidden_behind_it() -> None:
    opaque = sphere("bone", [0, 0, 400], 40, (0.0, 0.0, 1.0))
    front = sphere("front", [0, 0, 300], 10, (1.0, 0.0, 0.0), opacity=0.5)
    behind = sphere("behind", [60, 0, 600], 50, (0.0, 1.0, 0.0), opacity=0.5)
    img = OverlayRenderer(CAM, [opaque, front, behind]).render(IDENT).canvas()
    v, u = pixel([0, 0, 300])
    b, g, r, a = img[v, u].astype(int)
    assert a == 255 and abs(r - 128) <= 2 and g == 0 and abs(b - 127) <= 4
    v2, u2 = pixel([25, 0, 360])  # on the bone, in front of the transparent far sphere
    b, g, r, a = img[v2, u2].astype(int)
    assert g == 0 and r == 0 and b > 60 and a == 255
    v3, u3 = pixel([100, 0, 600])  # only the transparent far sphere
    b, g, r, a = img[v3, u3].astype(int)
    assert abs(a - 128) <= 1 and g > 30 and r == 0 and b == 0


def test_warning_look_is_red_outline_only() -> None:
    r = OverlayRenderer(CAM, [sphere("s", [0, 0, 300], 40, (0.0, 1.0, 0.0))])
    img = r.render(IDENT, warning=True).canvas()
    drawn = img[..., 3] > 0
    assert drawn.sum() > 0 and (img[drawn][:, :2] == 0).all()
    v, u = pixel([0, 0, 300])
    assert img[v, u, 3] == 0


def test_premultiplied_to_rgba_known_answer() -> None:
    bgra = np.array([[[10, 20, 64, 128], [0, 0, 0, 0]]], np.uint8)
    pm = premultiplied_to_rgba(bgra)
    assert pm[0, 0].tolist() == [64, 20, 10, 128] and pm[0, 1].tolist() == [0, 0, 0, 0]
    st = premultiplied_to_rgba(bgra, premultiplied=False)
    assert st[0, 0].tolist() == [round(64 * 255 / 128), round(20 * 255 / 128),
                                 round(10 * 255 / 128), 128]


@pytest.mark.parametrize("opacity", [1.0, 0.6])
def test_fused_resolve_and_blend_equals_render_then_blend(opacity: float) -> None:
    r = OverlayRenderer(CAM, [sphere("s", [10, -5, 300], 60, (0.9, 0.5, 0.2), opacity=opacity)])
    video = np.random.default_rng(4).integers(0, 256, (480, 640, 3)).astype(np.uint8)
    fused = r.draw(video.copy(), IDENT)
    ov = r.render(IDENT)
    two_step = blend_premultiplied(video.copy(), ov.bgra, ov.x0, ov.y0)
    assert np.array_equal(fused, two_step)
    assert (fused != video).any(axis=2).sum() > 10000
