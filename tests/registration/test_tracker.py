"""MarkerTracker: poses per frame, LIVE/HELD/STALE/LOST on capture timestamps, ROI search."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.registration.bodies import RigidBody
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform
from scrubin.registration.markers import get_dictionary, marker_object_points
from scrubin.registration.tracker import (
    HELD,
    LIVE,
    LOST,
    STALE,
    MarkerTracker,
    TrackingError,
)
from scrubin.registration.tracking_state import DEFAULT_LIMITS, TrackingLimits
from scrubin.samples.synth_images import look_at_pose, marker_plane, render

CAM = CameraModel(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), np.zeros(5),
                  640, 480)
DICT = get_dictionary("DICT_4X4_50")
EMPTY = np.full((480, 640), 128, np.uint8)


def _truth(k: int) -> Transform:
    return look_at_pose([-40 + 6 * k, 20 - 3 * k, 350 + 4 * k], [20, -15 + k, 5 * k], "MARKER")


def _frame(k: int, marker_id: int = 4, extra: tuple = ()) -> np.ndarray:
    planes = [marker_plane(DICT, marker_id, 40, _truth(k))]
    planes += [marker_plane(DICT, m, 40, p) for m, p in extra]
    return render(CAM, planes, noise_sigma=1.5, seed=k, supersample=2)


@lru_cache(maxsize=32)
def _moving(k: int) -> np.ndarray:
    return _frame(k)


def _err(est: Transform, truth: Transform) -> tuple[float, float]:
    dt = float(np.linalg.norm(est.translation - truth.translation))
    return dt, float(np.degrees(Rotation.from_matrix(est.rotation.T @ truth.rotation).magnitude()))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [_frame(k) for k in range(6)]


def test_states_follow_capture_timestamps_that_jump(frames):
    tr = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, stale_after_s=0.2,
                       lost_after_s=2.0, filter=False, predict_held=False)
    r = tr.update(EMPTY, 0.0)
    assert r.state == LOST and r.pose is None and r.age_s is None
    results = [tr.update(img, 0.1 + k / 30) for k, img in enumerate(frames)]
    assert all(x.state == LIVE and x.detected for x in results)
    assert [x.searched_roi for x in results] == [False] + [True] * 5
    for k, x in enumerate(results):
        dt, dr = _err(x.pose, _truth(k))
        assert dt < 1.0 and dr < 0.5, (k, dt, dr)
        assert x.n_markers == 1 and x.n_corners == 4 and x.marker_ids == (4,)
        assert x.reproj_rms_px < 0.3 and x.pose.timestamp == pytest.approx(0.1 + k / 30)
    t_last = 0.1 + 5 / 30
    held = tr.update(EMPTY, t_last + 0.1)  # missed, within stale_after: HELD
    assert held.state == HELD and not held.detected and held.age_s == pytest.approx(0.1)
    # predict_held=False: the last pose unchanged
    assert not held.predicted
    np.testing.assert_array_equal(held.pose.matrix, results[-1].pose.matrix)
    assert held.raw_pose is None and held.reproj_rms_px is None
    stale = tr.update(EMPTY, t_last + 1.5)  # capture time jumps by 1.4 s
    assert stale.state == STALE and stale.pose is not None and stale.age_s == pytest.approx(1.5)
    lost = tr.update(EMPTY, t_last + 30.0)
    assert lost.state == LOST and lost.pose is None
    back = tr.update(frames[2], t_last + 30.1)  # re-acquisition: full-frame search
    assert back.state == LIVE and back.detected and not back.searched_roi
    assert _err(back.pose, _truth(2))[0] < 1.0
    with pytest.raises(TrackingError, match="earlier than the previous frame"):
        tr.update(frames[0], 1.0)
    tr.reset()
    assert tr.update(EMPTY, 1.0).state == LOST


def test_detected_every_frame_stays_live_across_large_jumps(frames):
    tr = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, stale_after_s=0.05)
    for k, img in enumerate(frames[:3]):
        r = tr.update(img, 100.0 * k)  # 100 s between frames, all detected
        assert r.state == LIVE and r.detected and r.age_s == 0.0


def test_locks_onto_requested_or_lowest_id():
    other = (9, look_at_pose([90, -60, 380], [0, 0, 0], "X"))
    img = _frame(0, marker_id=4, extra=(other,))
    tr = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, filter=False)
    assert tr.update(img, 0.0).marker_ids == (4,)
    only9 = render(CAM, [marker_plane(DICT, 9, 40, other[1])], supersample=2)
    tr.reset()  # an automatic choice is made again after reset
    assert tr.update(only9, 1.0).marker_ids == (9,)
    tr9 = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, marker_id=9, filter=False)
    r = tr9.update(img, 0.0)
    assert r.marker_ids == (9,)
    assert _err(r.pose, other[1])[0] < 1.0


def test_body_tracking_and_json_form():
    offs = {1: [-35.0, 0.0, 0.0], 2: [35.0, 0.0, 0.0]}
    body = RigidBody("REF", {m: marker_object_points(30) + o for m, o in offs.items()})
    truth = look_at_pose([10, 5, 400], [15, 20, 10], "REF")
    planes = [marker_plane(DICT, m, 30, truth @ Transform.from_rt(np.eye(3), o, "M", "REF"))
              for m, o in offs.items()]
    img = render(CAM, planes, noise_sigma=1.5, seed=2, supersample=2)
    tr = MarkerTracker(CAM, "DICT_4X4_50", body=body, filter=True)
    r = tr.update(img, 0.5)
    assert r.n_markers == 2 and r.n_corners == 8 and r.pose.src == "REF"
    assert _err(r.pose, truth)[0] < 1.0
    data = r.to_json()
    assert data["state"] == "LIVE" and data["pose"]["from"] == "REF"
    assert np.asarray(data["pose"]["matrix"]).shape == (4, 4)


def test_rejections():
    with pytest.raises(TrackingError, match="either marker_size_mm"):
        MarkerTracker(CAM, "DICT_4X4_50")
    with pytest.raises(TrackingError, match="> 0 mm"):
        MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=0)
    with pytest.raises(TrackingError, match="> 0 mm"):
        MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=float("nan"))
    with pytest.raises(TrackingError, match="stale_after_s"):
        MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, stale_after_s=-1)
    with pytest.raises(TrackingError, match=r"lost_after_s \(0.5\) must be >="):
        MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, stale_after_s=1, lost_after_s=0.5)
    with pytest.raises(TrackingError, match="marker id"):
        MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, marker_id=-2)
    with pytest.raises(TrackingError, match="CameraModel"):
        MarkerTracker(None, "DICT_4X4_50", marker_size_mm=40)  # type: ignore[arg-type]
    with pytest.raises(TrackingError, match="refinement"):
        MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, refinement="x")
    from scrubin.registration.markers import MarkerError

    with pytest.raises(MarkerError, match="unknown ArUco dictionary"):
        MarkerTracker(CAM, "DICT_1X1", marker_size_mm=40)
    tr = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40)
    with pytest.raises(TrackingError, match="frame is 320x240 but the camera is 640x480"):
        tr.update(np.zeros((240, 320), np.uint8), 0.0)
    with pytest.raises(TrackingError, match="finite"):
        tr.update(EMPTY, float("nan"))
    with pytest.raises(TrackingError, match="number of seconds"):
        tr.update(EMPTY, "soon")  # type: ignore[arg-type]


def test_filter_reduces_jitter_on_a_static_rendered_marker():
    truth = look_at_pose([20, -10, 600], [10, 15, 20], "MARKER")
    frames = [render(CAM, [marker_plane(DICT, 2, 30, truth)], noise_sigma=6, seed=k,
                     supersample=1) for k in range(40)]
    tr = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=30, filter=True)
    res = [tr.update(img, k / 30) for k, img in enumerate(frames)][10:]
    raw = np.array([r.raw_pose.translation for r in res])
    out = np.array([r.pose.translation for r in res])
    assert np.std(out, axis=0).mean() < 0.5 * np.std(raw, axis=0).mean()
    assert np.linalg.norm(out.mean(axis=0) - truth.translation) < 0.5


def test_filter_adds_no_lag_on_a_moving_rendered_marker():
    """~190 mm/s and 30-150 deg/s per axis at 30 Hz (the _truth path): filtered ~ raw error."""
    tr = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, filter=True)
    res = [tr.update(_moving(k), k / 30) for k in range(16)]
    assert all(r.detected for r in res)
    raw = np.array([_err(r.raw_pose, _truth(k)) for k, r in enumerate(res)])
    out = np.array([_err(r.pose, _truth(k)) for k, r in enumerate(res)])
    assert np.all(out.mean(axis=0) <= raw.mean(axis=0) + np.array([0.3, 0.1]))
    assert np.all(out.max(axis=0) <= raw.max(axis=0) + np.array([0.6, 0.2]))


def test_default_limits_are_the_shared_ones():
    tr = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40)
    assert tr.limits == DEFAULT_LIMITS == TrackingLimits()
    assert (tr.stale_after_s, tr.lost_after_s) == (0.1, 0.5)


@pytest.mark.parametrize("filt", [True, False])
def test_held_frames_are_predicted_to_their_capture_time(filt: bool):
    """The marker moves ~230 mm/s (the _truth path); two frames without it are HELD and drawn
    with the pose predicted to their capture times, much nearer the truth than the last pose
    (with filtering off too: a filter then runs only to predict)."""
    tr = MarkerTracker(CAM, "DICT_4X4_50", marker_size_mm=40, filter=filt)
    res = [tr.update(_moving(k), k / 30) for k in range(14)]
    assert all(r.state == LIVE and r.detected and not r.predicted for r in res)
    if not filt:
        assert all(r.pose is r.raw_pose for r in res)
    last = res[-1].pose
    for k in (14, 15):  # the marker is hidden in these frames
        r = tr.update(EMPTY, k / 30)
        assert r.state == HELD and not r.detected and r.age_s == pytest.approx((k - 13) / 30)
        assert r.predicted and r.pose.timestamp == pytest.approx(k / 30)
        d_pred, _ = _err(r.pose, _truth(k))
        d_held, _ = _err(last, _truth(k))
        assert d_held > 6.0 and d_pred < 0.3 * d_held, (k, d_pred, d_held)
    r = tr.update(EMPTY, 13 / 30 + 0.15)  # past stale_after_s: the last pose, unpredicted
    assert r.state == STALE and not r.predicted
    np.testing.assert_allclose(r.pose.matrix, last.matrix)
