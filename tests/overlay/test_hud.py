"""HUD: registration text, landmark check, frame rate, state border/banner."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from scrubin.overlay.errors import OverlayError
from scrubin.overlay.hud import (
    FrameRate,
    HudInfo,
    draw_guarded,
    draw_hud,
    landmark_check,
    registration_text,
)
from scrubin.overlay.renderer import OverlayRenderer, Structure
from scrubin.overlay.safety import SafetyConfig, TrackingGate, TrackingLimits, TrackingState
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform


def test_registration_text_is_labelled_registration_only() -> None:
    assert registration_text(0.42, 0.9) == (
        "reg. FRE 0.42 mm, pred. TRE 0.9 mm @ target (registration only)")
    assert registration_text(None, 1.25, "tumour") == (
        "reg. pred. TRE 1.2 mm @ tumour (registration only)")
    assert registration_text(None, None) == "registration error unknown"
    with pytest.raises(OverlayError, match="FRE"):
        registration_text(float("nan"), 1.0)
    with pytest.raises(OverlayError, match="TRE"):
        registration_text(0.4, -1.0)


def test_landmark_check_distance() -> None:
    c = landmark_check([1.0, 2.0, 3.0], [1.0, 5.0, 7.0], "nasion", tolerance_mm=4.0)
    assert c.distance_mm == pytest.approx(5.0) and not c.ok
    assert c.text() == "landmark nasion: tip 5.0 mm (tol 4.0) CHECK"
    assert landmark_check([0, 0, 0], [0, 0, 1.5], "x", 2.0).ok


@pytest.mark.parametrize(
    ("tip", "lm", "tol", "match"),
    [([0, 0], [0, 0, 0], 2.0, "pointer tip"), ([0, 0, np.nan], [0, 0, 0], 2.0, "pointer tip"),
     ([0, 0, 0], [0, 0, 0, 0], 2.0, "landmark"), ([0, 0, 0], [0, 0, 0], 0.0, "tolerance"),
     ([0, 0, 0], [0, 0, 0], float("nan"), "tolerance")],
)
def test_landmark_check_rejects_bad_input(tip, lm, tol, match) -> None:
    with pytest.raises(OverlayError, match=match):
        landmark_check(tip, lm, "x", tol)


def test_frame_rate_from_capture_times() -> None:
    fr = FrameRate(window=10)
    assert fr.update(0.0) is None
    for k in range(1, 20):
        fps = fr.update(k / 30.0)
    assert fps == pytest.approx(30.0)
    assert fr.update(0.0) is None        # time went back: start over
    with pytest.raises(OverlayError, match="window"):
        FrameRate(1)
    with pytest.raises(OverlayError, match="finite"):
        fr.update(float("nan"))


def _frame() -> np.ndarray:
    return np.full((360, 640, 3), 100, np.uint8)


def test_lost_draws_red_border_and_banner() -> None:
    st = TrackingGate().evaluate(1.0)
    img = draw_hud(_frame(), st, HudInfo(fre_mm=0.42, tre_mm=0.9, fps=29.97, latency_ms=41))
    assert tuple(img[1, 1]) == (0, 0, 255) and tuple(img[180, 638]) == (0, 0, 255)
    # banner text in the state colour near the top centre
    top = img[10:60, 100:540]
    assert np.sum(np.all(top == (0, 0, 255), axis=-1)) > 200


def test_live_has_no_border() -> None:
    g = TrackingGate()
    g.observe_pose(1.0)
    img = draw_hud(_frame(), g.evaluate(1.01), HudInfo(fre_mm=0.4))
    assert tuple(img[1, 1]) == (100, 100, 100) and tuple(img[180, 638]) == (100, 100, 100)
    assert (img != 100).any()                     # text drawn


def test_stale_border_is_amber() -> None:
    g = TrackingGate(SafetyConfig(TrackingLimits(stale_after_s=0.1, lost_after_s=1.0)))
    g.observe_pose(1.0)
    img = draw_hud(_frame(), g.evaluate(1.3))
    assert tuple(img[1, 1]) == (0, 170, 255)


def test_held_pose_says_held_with_its_age_and_no_border() -> None:
    g = TrackingGate()
    g.observe_pose(1.0)
    st = g.evaluate(1.067, predicted=True)
    assert st.state is TrackingState.HELD and st.show_overlay
    assert st.message == "POSE HELD 67 ms (PREDICTED)"
    img = draw_hud(_frame(), st, HudInfo(fre_mm=0.4))
    assert tuple(img[1, 1]) == (100, 100, 100) and tuple(img[180, 638]) == (100, 100, 100)
    def amber(im: np.ndarray) -> np.ndarray:  # amber text anti-aliased onto its black box
        b, g, r = (im[..., k].astype(float) for k in range(3))
        return (b < 20) & (r > 120) & (np.abs(g - r * 170 / 255) < 20)

    ys, xs = np.nonzero(amber(img))
    assert len(ys) > 50 and ys.max() < 60 and xs.max() < 320  # the state line, top left
    live = TrackingGate()
    live.observe_pose(1.0)
    assert not amber(draw_hud(_frame(), live.evaluate(1.0))).any()  # LIVE: green


def test_draw_hud_rejects_bad_input() -> None:
    st = TrackingGate().evaluate(1.0)
    with pytest.raises(OverlayError, match="uint8 BGR"):
        draw_hud(np.zeros((10, 10), np.uint8), st)
    with pytest.raises(OverlayError, match="TrackingStatus"):
        draw_hud(_frame(), "LIVE")  # type: ignore[arg-type]


def test_landmark_marks_drawn_when_live_and_missing_pose_refused() -> None:
    cam = CameraModel(np.array([[500.0, 0, 319.5], [0, 500.0, 179.5], [0, 0, 1]]), np.zeros(5),
                      640, 360)
    s = trimesh.creation.icosphere(subdivisions=2, radius=5)
    r = OverlayRenderer(cam, [Structure("m", s.vertices + [0, 0, 300], s.faces)])
    T = Transform(np.eye(4), "CT", "CAMERA")
    g = TrackingGate()
    g.observe_pose(1.0)
    st = g.evaluate(1.0)
    info = HudInfo(landmark=landmark_check([80.0, 40.0, 300.0], [80.0, 40.0, 301.0], "L1"))
    img = draw_guarded(_frame(), r, T, st, info)
    u, v = np.round(cam.project(np.array([[80.0, 40.0, 300.0]]))[0]).astype(int)
    assert (img[v - 12:v + 12, u - 12:u + 12] != 100).any()
    with pytest.raises(OverlayError, match="no pose"):
        draw_guarded(_frame(), r, None, st)
