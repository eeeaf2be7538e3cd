"""Tracking gate: state machine on capture timestamps, and the drawn pixels it allows."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from scrubin.overlay.errors import OverlayError
from scrubin.overlay.hud import draw_guarded
from scrubin.overlay.renderer import OverlayRenderer, Structure
from scrubin.overlay.safety import SafetyConfig, TrackingGate, TrackingLimits, TrackingState
from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform
from scrubin.registration.tracker import MarkerTracker
from scrubin.registration.tracking_state import DEFAULT_LIMITS

CFG = SafetyConfig(TrackingLimits(sync_s=0.02, stale_after_s=0.1, lost_after_s=0.5))


def test_no_pose_is_lost() -> None:
    st = TrackingGate(CFG).evaluate(10.0)
    assert st.state is TrackingState.LOST and not st.show_overlay and st.age_s is None
    assert "OVERLAY HIDDEN" in st.message


def test_live_then_stale_then_lost_as_the_marker_disappears() -> None:
    g = TrackingGate(CFG)
    for k in range(5):                      # 30 Hz tracking and video, marker visible
        g.observe_pose(10.0 + k / 30)
        st = g.evaluate(10.0 + k / 30 + 0.01)
        assert st.state is TrackingState.LIVE and st.show_overlay
        assert st.age_s == pytest.approx(0.01)
    last = 10.0 + 4 / 30
    g.observe_pose(last + 1 / 30, valid=False)   # marker gone: messages keep coming
    st = g.evaluate(last + 1 / 30, predicted=True)   # no pose for this frame: held
    assert st.state is TrackingState.HELD and st.show_overlay and not st.marker_visible
    assert st.message == "POSE HELD 33 ms (PREDICTED)"
    assert g.evaluate(last + 1 / 30).message == "POSE HELD 33 ms (NOT PREDICTED)"
    st = g.evaluate(last + 0.1)                  # exactly at the limit: still held
    assert st.state is TrackingState.HELD and st.show_overlay
    st = g.evaluate(last + 0.1001)
    assert st.state is TrackingState.STALE and not st.show_overlay and not st.warn_overlay
    assert st.age_s == pytest.approx(0.1001) and "STALE 100 ms" in st.message
    st = g.evaluate(last + 0.5001)
    assert st.state is TrackingState.LOST and not st.show_overlay


def test_explicit_pose_time_overrides_the_newest_pose() -> None:
    g = TrackingGate(CFG)
    g.observe_pose(5.0)
    assert g.evaluate(5.05, pose_time_s=4.8).state is TrackingState.STALE
    assert g.evaluate(5.05).state is TrackingState.HELD
    assert g.evaluate(5.06, pose_time_s=5.05).state is TrackingState.LIVE


def test_pose_from_the_future_is_not_current() -> None:
    g = TrackingGate(CFG)
    g.observe_pose(5.0)
    assert g.evaluate(4.99).state is TrackingState.LIVE       # 10 ms ahead: tolerated
    st = g.evaluate(4.9)
    assert st.state is TrackingState.STALE and "AHEAD" in st.message


def test_warn_policy_draws_warning_not_current() -> None:
    g = TrackingGate(SafetyConfig(stale_policy="warn"))
    g.observe_pose(1.0)
    st = g.evaluate(1.2)
    assert st.state is TrackingState.STALE and st.warn_overlay and not st.show_overlay
    assert "NOT CURRENT" in st.message
    assert not g.evaluate(3.0).warn_overlay          # LOST always hides


def test_recovery_needs_consecutive_live_frames() -> None:
    g = TrackingGate(SafetyConfig(TrackingLimits(recover_frames=3)))
    g.observe_pose(0.0)
    states = [g.evaluate(0.01 * (k + 1)).show_overlay for k in range(4)]
    assert states == [False, False, True, True]
    assert not g.evaluate(0.3).show_overlay          # stale
    g.observe_pose(0.31)
    assert [g.evaluate(t).show_overlay for t in (0.32, 0.33, 0.34)] == [False, False, True]


def test_old_or_invalid_messages_do_not_refresh_the_pose() -> None:
    g = TrackingGate(CFG)
    g.observe_pose(2.0)
    g.observe_pose(1.5)              # late, out-of-order message
    g.observe_pose(2.5, valid=False)
    assert g.evaluate(2.05).age_s == pytest.approx(0.05)
    g.reset()
    assert g.evaluate(2.05).state is TrackingState.LOST


def test_frame_time_going_back_restarts_recovery() -> None:
    g = TrackingGate(SafetyConfig(TrackingLimits(recover_frames=2)))
    g.observe_pose(1.0)
    g.evaluate(1.01)
    assert g.evaluate(1.02).show_overlay
    assert not g.evaluate(1.005).show_overlay       # replay restarted: recover again
    assert g.evaluate(1.006).show_overlay


@pytest.mark.parametrize(
    "kwargs",
    [{"stale_after_s": -0.1}, {"stale_after_s": float("nan")}, {"lost_after_s": 0.05},
     {"sync_s": float("inf")}, {"sync_s": 0.2}, {"recover_frames": 0},
     {"stale_after_s": "0.1"}, {"recover_frames": True}],
)
def test_limits_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(RegistrationError, match="tracking limit"):
        TrackingLimits(**kwargs)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(OverlayError, match="safety config stale_policy"):
        SafetyConfig(stale_policy="freeze")
    with pytest.raises(OverlayError, match="safety config limits"):
        SafetyConfig(limits={"stale_after_s": 0.1})  # type: ignore[arg-type]


def test_one_machine_one_set_of_defaults() -> None:
    """The overlay's gate and the tracker (scrubin track) share the machine and its limits."""
    gate = TrackingGate()
    assert gate.config.limits == DEFAULT_LIMITS
    tracker = MarkerTracker(CameraModel(np.eye(3) * [500, 500, 1] + [[0, 0, 160], [0, 0, 120],
                                                                      [0, 0, 0]],
                                        np.zeros(5), 320, 240), marker_size_mm=40)
    assert tracker.limits == DEFAULT_LIMITS
    assert type(gate.machine) is type(tracker.machine)
    empty = np.zeros((240, 320), np.uint8)
    for t in (0.0, 0.05, 0.2, 0.7):  # never seen: both LOST
        r = tracker.update(empty, t)
        assert gate.status(r.verdict, r.detected).state.value == r.state == "LOST"


@pytest.mark.parametrize("t", [float("nan"), float("inf"), None, "1.0", True])
def test_gate_rejects_bad_timestamps(t) -> None:
    g = TrackingGate(CFG)
    with pytest.raises(OverlayError, match="capture time"):
        g.observe_pose(t)
    with pytest.raises(OverlayError, match="capture time"):
        g.evaluate(t)


def test_gate_rejects_a_wrong_config_type() -> None:
    with pytest.raises(OverlayError, match="SafetyConfig"):
        TrackingGate({"max_pose_age_s": 0.1})  # type: ignore[arg-type]


# ---------------------------------------------------------------- pixels
MAGENTA = (1.0, 0.0, 1.0)


def _scene() -> tuple[OverlayRenderer, Transform, np.ndarray]:
    cam = CameraModel(np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]]), np.zeros(5),
                      640, 480)
    s = trimesh.creation.icosphere(subdivisions=3, radius=30)
    r = OverlayRenderer(cam, [Structure("model", s.vertices, s.faces, colour_rgb=MAGENTA)])
    T = Transform.from_rt(np.eye(3), [20.0, 60.0, 350.0], "CT", "CAMERA")
    rng = np.random.default_rng(0)
    frame = rng.integers(40, 120, (480, 640, 3)).astype(np.uint8)   # "live video", no magenta
    return r, T, frame


def _magenta_pixels(img: np.ndarray) -> int:
    b, g, r = (img[..., k].astype(int) for k in range(3))
    # the shaded model: r == b >= ambient * 255, g == 0; the video never has g < 40
    return int(np.sum((b > 60) & (np.abs(r - b) <= 1) & (g < 10)))


def test_model_drawn_while_live_and_absent_once_marker_gone_for_stale_time() -> None:
    r, T, video = _scene()
    gate = TrackingGate(CFG)
    model = r.render(T).canvas()[..., 3] > 0
    ys, xs = np.nonzero(model)
    region = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    t0 = 100.0
    gate.observe_pose(t0)                                  # last time the marker is seen
    live = draw_guarded(video.copy(), r, T, gate.evaluate(t0 + 0.03))
    assert _magenta_pixels(live) == model.sum()
    assert not np.array_equal(live[region], video[region])
    for dt in (0.11, 0.3, 0.6, 5.0):                       # marker gone for >= the stale time
        gate.observe_pose(t0 + dt, valid=False)
        out = draw_guarded(video.copy(), r, T, gate.evaluate(t0 + dt))
        assert np.array_equal(out[region], video[region]), dt   # frame untouched there
        assert _magenta_pixels(out) == 0
        assert tuple(out[2, 320]) in {(0, 0, 255), (0, 170, 255)}  # red/amber border


def test_warn_policy_pixels_are_red_outline_not_the_model() -> None:
    r, T, video = _scene()
    gate = TrackingGate(SafetyConfig(stale_policy="warn"))
    gate.observe_pose(1.0)
    out = draw_guarded(video.copy(), r, T, gate.evaluate(1.2))
    assert _magenta_pixels(out) == 0
    b, g, rr = (out[..., k].astype(int) for k in range(3))
    assert np.sum((rr == 255) & (g == 0) & (b == 0)) > 100
