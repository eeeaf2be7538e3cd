"""One-Euro pose filter: jitter at rest, lag in fast motion, capture-time handling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.registration.bodies import RigidBody
from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.filters import OneEuroFilter, OneEuroParams, PoseFilter, smoothing_factor
from scrubin.registration.frames import Transform
from scrubin.registration.markers import MarkerDetections

RATE = 60.0


def _pose(r: Rotation, t: np.ndarray, ts: float) -> Transform:
    return Transform.from_rt(r.as_matrix(), t, src="MARKER", dst="CAMERA", timestamp=ts)


def test_smoothing_factor_matches_paper_formula():
    # alpha = 1 / (1 + tau / Te), tau = 1 / (2 pi fc)
    assert smoothing_factor(1.0, 1 / 60) == pytest.approx(1 / (1 + 60 / (2 * np.pi)))
    assert smoothing_factor(1e9, 0.01) == pytest.approx(1.0)


def test_static_noisy_pose_jitter_reduced():
    rng = np.random.default_rng(0)
    f = PoseFilter()
    raw_t, out_t, raw_r, out_r = [], [], [], []
    centre = np.array([10.0, -20.0, 500.0])
    for k in range(360):
        r = Rotation.from_rotvec(np.radians(rng.normal(0, 0.3, 3)))
        t = centre + rng.normal(0, 0.5, 3)
        out = f(_pose(r, t, k / RATE))
        if k >= 60:  # after the filter settled
            raw_t.append(t)
            out_t.append(out.translation)
            raw_r.append(r.magnitude())
            out_r.append(Rotation.from_matrix(out.rotation).magnitude())
    jitter_raw = np.std(raw_t, axis=0).mean()
    jitter_out = np.std(out_t, axis=0).mean()
    assert jitter_out < jitter_raw / 3
    assert np.sqrt(np.mean(np.square(out_r))) < np.sqrt(np.mean(np.square(raw_r))) / 2
    assert np.linalg.norm(np.mean(out_t, axis=0) - centre) < 0.1  # no bias


def test_fast_linear_motion_small_lag():
    """500 mm/s and 180 deg/s at 60 Hz (8.3 mm, 3 deg per frame): lag well under a frame."""
    rng = np.random.default_rng(1)
    f = PoseFilter()
    lags, rot_lags = [], []
    for k in range(120):
        ts = k / RATE
        truth_t = np.array([500.0 * ts, 0.0, 500.0])
        truth_r = Rotation.from_rotvec([0.0, 0.0, np.radians(180.0 * ts)])
        out = f(_pose(truth_r, truth_t + rng.normal(0, 0.5, 3), ts))
        if k >= 30:
            lags.append(truth_t[0] - out.translation[0])
            rot_lags.append(np.degrees((truth_r.inv() * Rotation.from_matrix(out.rotation))
                                       .magnitude()))
    assert np.mean(lags) < 0.4 * 500 / RATE  # < 0.4 frame of motion (3.3 mm)
    assert np.mean(rot_lags) < 0.5 * 180 / RATE  # < half a frame (1.5 deg)


def test_timestamps_drive_the_filter_not_call_order():
    f = OneEuroFilter(OneEuroParams(1.0, 0.0, 1.0))
    f(np.zeros(3), 0.0)
    a = f(np.ones(3), 1 / 60)
    g = OneEuroFilter(OneEuroParams(1.0, 0.0, 1.0))
    g(np.zeros(3), 0.0)
    b = g(np.ones(3), 1.0)  # a late frame moves the output further
    assert b[0] > a[0]
    # a repeated timestamp returns the previous output
    np.testing.assert_allclose(g(np.full(3, 5.0), 1.0), b)


def test_gap_restarts_pose_filter():
    f = PoseFilter(max_gap_s=0.1)
    f(_pose(Rotation.identity(), np.zeros(3), 0.0))
    f(_pose(Rotation.identity(), np.zeros(3), 1 / 60))
    jump = f(_pose(Rotation.from_euler("z", 40, degrees=True), np.full(3, 50.0), 1.0))
    np.testing.assert_allclose(jump.translation, 50.0)  # no smoothing across the gap
    assert jump.timestamp == 1.0 and jump.src == "MARKER"


def test_rejections():
    with pytest.raises(RegistrationError, match="beta"):
        OneEuroParams(beta=-1)
    with pytest.raises(RegistrationError, match="min_cutoff_hz"):
        OneEuroParams(min_cutoff_hz=float("nan"))
    with pytest.raises(RegistrationError, match="> 0 Hz"):
        OneEuroParams(min_cutoff_hz=0.0)
    f = OneEuroFilter()
    with pytest.raises(RegistrationError, match="finite"):
        f(np.array([np.nan, 0, 0]), 0.0)
    f(np.zeros(3), 0.0)
    with pytest.raises(RegistrationError, match="changed shape"):
        f(np.zeros(2), 0.1)
    pf = PoseFilter()
    with pytest.raises(RegistrationError, match="timestamp"):
        pf(Transform.identity("M", "CAMERA"))
    with pytest.raises(RegistrationError, match="Transform"):
        pf(np.eye(4), 0.0)  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="max_gap_s"):
        PoseFilter(max_gap_s=0)


def test_smoothing_factor_rejections():
    with pytest.raises(RegistrationError, match="cutoff > 0 Hz"):
        smoothing_factor(0.0, 0.01)
    with pytest.raises(RegistrationError, match="time step > 0 s"):
        smoothing_factor(1.0, -0.01)


# ---------------------------------------------------------------- measured poses, known truth
CAM = CameraModel(np.array([[1000.0, 0, 639.5], [0, 1000.0, 359.5], [0, 0, 1]]), np.zeros(5),
                  1280, 720)
#: "anatomy" points 100-150 mm from the marker (marker frame, mm): where the overlay is drawn
ANATOMY_MM = np.array([[0.0, -120.0, -40.0], [80.0, -60.0, -60.0], [-90.0, 40.0, -50.0]])
BASE_R = Rotation.from_euler("xyz", [200, 15, 5], degrees=True)
BASE_T = np.array([30.0, -20.0, 500.0])
HZ = 30.0


def _measured(truth: list[Transform], sigma_px: float, seed: int) -> list[Transform]:
    """Poses solved (as the tracker does) from a 44 mm marker's true corners + noise (px)."""
    body = RigidBody.single(0, 44.0, "MARKER")
    rng = np.random.default_rng(seed)
    out: list[Transform] = []
    for pose in truth:
        uv = CAM.project(pose.apply(body.markers[0]))[None]
        det = MarkerDetections(np.array([0]), uv + rng.normal(0.0, sigma_px, uv.shape))
        bp = body.estimate_pose(det, CAM, timestamp=pose.timestamp,
                                prior=out[-1] if out else None)
        out.append(bp.estimate.pose)
    return out


def _errors(est: list[Transform], truth: list[Transform]) -> np.ndarray:
    """(N, 3): translation (mm), rotation (deg), mean anatomy-point image error (px)."""
    rows = []
    for e, t in zip(est, truth, strict=True):
        px = np.linalg.norm(CAM.project(e.apply(ANATOMY_MM)) - CAM.project(t.apply(ANATOMY_MM)),
                            axis=1)
        rows.append([np.linalg.norm(e.translation - t.translation),
                     np.degrees(Rotation.from_matrix(e.rotation.T @ t.rotation).magnitude()),
                     px.mean()])
    return np.array(rows)


def _truth(kind: str, peak: float, n: int) -> list[Transform]:
    """Sinusoidal motions with a known peak speed (mm/s or deg/s), sampled at HZ."""
    out = []
    for k in range(n):
        ts = k / HZ
        r, t = BASE_R, BASE_T.copy()
        if kind == "linear":  # +-150 mm along a diagonal (lateral and depth)
            d = np.array([0.8, 0.3, 0.5]) / np.linalg.norm([0.8, 0.3, 0.5])
            t = t + 150.0 * np.sin(peak / 150.0 * ts) * d
        elif kind == "pan":  # the camera turns about its centre, +-25 deg: the lever-arm case
            w = np.radians(peak) / np.radians(25.0)
            c = Rotation.from_euler("y", 25.0 * np.sin(w * ts), degrees=True)
            r, t = c * r, c.apply(t)
        elif kind == "turn":  # the marker turns about its own centre, +-30 deg
            w = np.radians(peak) / np.radians(30.0)
            r = r * Rotation.from_rotvec(np.array([0.6, 0.8, 0.0]) * np.radians(30.0)
                                         * np.sin(w * ts))
        out.append(_pose(r, t, ts))
    return out


def test_static_marker_with_corner_noise_jitter_halved_without_bias():
    truth = _truth("static", 0.0, 240)
    raw = _measured(truth, 0.2, seed=5)
    f = PoseFilter()
    out = [f(p) for p in raw]

    def spread(ps: list[Transform]) -> tuple[float, float]:
        t = np.array([p.translation for p in ps[30:]])
        rv = np.array([(Rotation.from_matrix(p.rotation) * BASE_R.inv()).as_rotvec()
                       for p in ps[30:]])
        return float(t.std(axis=0).mean()), float(np.degrees(rv.std(axis=0).mean()))

    (t_raw, r_raw), (t_out, r_out) = spread(raw), spread(out)
    assert t_out < t_raw / 2 and r_out < r_raw / 2
    e_raw, e_out = _errors(raw[30:], truth[30:]), _errors(out[30:], truth[30:])
    assert np.all(e_out.mean(axis=0) < e_raw.mean(axis=0) / 2)  # mm, deg and px
    mean_t = np.mean([p.translation for p in out[30:]], axis=0)
    assert np.linalg.norm(mean_t - BASE_T) < np.linalg.norm(
        np.mean([p.translation for p in raw[30:]], axis=0) - BASE_T) + 0.1  # no bias added


@pytest.mark.parametrize(("kind", "peak"), [("linear", 500.0), ("linear", 1000.0),
                                            ("pan", 90.0), ("pan", 180.0), ("turn", 90.0),
                                            ("turn", 180.0)])
def test_fast_motion_adds_no_lag(kind: str, peak: float):
    """0.5-1 m/s and 90-180 deg/s (sinusoids: speeding up, slowing down, reversing)."""
    truth = _truth(kind, peak, 150)
    raw = _measured(truth, 0.2, seed=int(peak))
    f = PoseFilter()
    e_raw = _errors(raw, truth)[15:]
    e_out = _errors([f(p) for p in raw], truth)[15:]
    margin = np.array([0.1, 0.03, 0.1])  # mm, deg, px: "no material growth"
    p95_raw, p95_out = np.percentile(e_raw, 95, axis=0), np.percentile(e_out, 95, axis=0)
    assert np.all(p95_out <= 1.05 * p95_raw + margin), (p95_raw, p95_out)
    assert np.all(e_out.mean(axis=0) <= 1.05 * e_raw.mean(axis=0) + margin), (
        e_raw.mean(axis=0), e_out.mean(axis=0))


def test_noise_free_input_passes_unchanged():
    """No measurement noise: the lag bound (a few noise sigmas) is zero, the output exact."""
    f = PoseFilter()
    for k in range(40):
        ts = k / HZ
        truth = _pose(BASE_R, BASE_T + np.array([800.0 * ts, -300.0 * ts, 100.0 * ts]), ts)
        out = f(truth)
        np.testing.assert_allclose(out.matrix, truth.matrix, atol=1e-9)
    assert f.noise_sigma_mm == pytest.approx(0.0, abs=1e-9)


def test_noise_estimate_matches_the_input_noise():
    """Translation noise only (sigma 0.4 mm per axis), moving at constant velocity."""
    rng = np.random.default_rng(2)
    f = PoseFilter()
    for k in range(300):
        ts = k / HZ
        f(_pose(BASE_R, BASE_T + np.array([300.0 * ts, 0, 0]) + rng.normal(0, 0.4, 3), ts))
    cov = f.noise_cov_mm2  # 6 pose coordinates: translation (mm), lever x rotation (mm)
    np.testing.assert_allclose(np.diag(cov)[:3], 0.4 ** 2, rtol=0.35)
    assert np.abs(cov[3:, 3:]).max() < 1e-9  # the rotation is noise-free
    assert f.noise_sigma_mm == pytest.approx(0.4 / np.sqrt(2), rel=0.25)


def test_sudden_jump_followed_within_the_lag_bound():
    rng = np.random.default_rng(4)
    f = PoseFilter(clamp_sigma=4.0)
    for k in range(60):
        f(_pose(BASE_R, BASE_T + rng.normal(0, 0.3, 3), k / HZ))
    jumped = BASE_T + np.array([25.0, 0.0, 0.0])
    out = f(_pose(BASE_R, jumped, 60 / HZ))
    # the output is within 4 noise sigmas (Mahalanobis) of the measurement
    largest_sigma = np.sqrt(np.linalg.eigvalsh(f.noise_cov_mm2).max())
    assert np.linalg.norm(out.translation - jumped) <= 4.0 * largest_sigma + 1e-9
    assert f.last_state["cutoff_hz"] > 100.0  # the innovation opened the filter


def test_repeated_timestamp_returns_previous_output():
    f = PoseFilter()
    for k in range(5):
        a = f(_pose(BASE_R, BASE_T + k, k / HZ))
    b = f(_pose(BASE_R, BASE_T + 50.0, 4 / HZ))
    np.testing.assert_allclose(b.matrix, a.matrix)


def test_pose_filter_rejections():
    with pytest.raises(RegistrationError, match="OneEuroParams"):
        PoseFilter(params=(1.0, 0.1, 1.0))  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="lever_mm"):
        PoseFilter(lever_mm=0.0)
    with pytest.raises(RegistrationError, match="clamp_sigma"):
        PoseFilter(clamp_sigma=float("inf"))
    with pytest.raises(RegistrationError, match="noise_gate"):
        PoseFilter(noise_gate=-1.0)
    with pytest.raises(RegistrationError, match="timestamp"):
        PoseFilter()(Transform.identity("M", "CAMERA"), float("nan"))


# ---------------------------------------------------------------- held poses on a moving camera
FX_PX = 1100.0  # 720p camera of the synthetic overlay scene (0.86 x 1280)


def _orbit(t_s: float) -> Transform:
    """``T_CAMERA_REF`` of a camera orbiting a target 60 mm from REF at 500-570 mm (mm, s).

    Azimuth +-22 deg (6 s period), elevation +-8 deg (4.3 s), distance 535 +- 35 mm (3.1 s),
    roll +-5 deg (2.7 s): the motion of the synthetic overlay scene's camera.
    """
    w = 2 * np.pi
    az, el = np.radians(22) * np.sin(w * t_s / 6), np.radians(8) * np.sin(w * t_s / 4.3 + 0.7)
    dist = 535 + 35 * np.sin(w * t_s / 3.1)
    roll = np.radians(5) * np.sin(w * t_s / 2.7)
    d = np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)])
    look = np.array([0.0, 60.0, 0.0])  # REF mm
    z = -d
    y = -(np.array([0, 0, 1.0]) - z[2] * z)
    y /= np.linalg.norm(y)
    r = Rotation.from_euler("z", roll).as_matrix() @ np.stack([np.cross(y, z), y, z])
    return Transform.from_rt(r, -r @ (look + dist * d), "REF", "CAMERA", timestamp=t_s)


def _px(T: Transform, p_ref_mm: np.ndarray) -> np.ndarray:
    q = T.apply(p_ref_mm)  # CAMERA mm
    return FX_PX * q[:, :2] / q[:, 2:3]


def test_held_pose_predicted_to_the_frame_time_on_a_moving_camera():
    """Frames 1-3 after the last measurement (33-100 ms, the HELD range) on a moving camera.

    Truth: the analytic orbit. Noise as the tracker measures on the synthetic scene (plate at
    0.5 m: translation 0.007 / 0.003 / 0.023 mm, rotation 0.04 deg rms). Error: largest image
    distance (px, f 1100) of four anatomy points 60-120 mm from REF. Measured: the held
    (filtered, unpredicted) pose 2.55 px median, 5.71 px max; predicted (PoseFilter.predict)
    0.36 px median, 0.72 px p95, 0.90 px max.
    """
    rng = np.random.default_rng(1)
    anatomy_ref_mm = np.array([[0, 60, 0], [-60, 90, 20], [60, 90, 20], [0, 100, -40.0]])
    held, pred = [], []
    for start in np.arange(0.5, 12.0, 0.37):
        f = PoseFilter(max_gap_s=0.1)
        ts = start + np.arange(33) / 30
        for t in ts[:30]:
            truth = _orbit(t)
            rot = Rotation.from_rotvec(rng.normal(0, np.radians(0.04), 3)).as_matrix()
            shift = rng.normal(0, [0.007, 0.003, 0.023])
            out = f(Transform.from_rt(rot @ truth.rotation, truth.translation + shift,
                                      "REF", "CAMERA"), t)
        for t in ts[30:]:  # no measurement in these frames
            want = _px(_orbit(t), anatomy_ref_mm)
            held.append(np.linalg.norm(_px(out, anatomy_ref_mm) - want, axis=1).max())
            p = f.predict(t)
            assert p is not None and p.timestamp == t and (p.src, p.dst) == ("REF", "CAMERA")
            pred.append(np.linalg.norm(_px(p, anatomy_ref_mm) - want, axis=1).max())
    held, pred = np.array(held), np.array(pred)
    print(f"held px median {np.median(held):.2f} max {held.max():.2f}; predicted median "
          f"{np.median(pred):.2f} p95 {np.percentile(pred, 95):.2f} max {pred.max():.2f}")
    assert np.median(held) > 2.0 and held.max() > 4.5  # the problem is real on this path
    assert np.median(pred) < 0.5 and np.percentile(pred, 95) < 1.0 and pred.max() < 1.5


def test_prediction_holds_at_rest_and_before_a_trend():
    f = PoseFilter()
    assert f.predict(1.0) is None
    rng = np.random.default_rng(3)
    for k in range(60):  # at rest with noise: the trend gate stays shut
        out = f(_pose(Rotation.from_rotvec(rng.normal(0, 1e-3, 3)),
                      np.array([0, 0, 500.0]) + rng.normal(0, 0.05, 3), k / 30))
    p = f.predict(60 / 30 + 0.05)
    np.testing.assert_allclose(p.matrix, out.matrix, atol=1e-9)
    assert f.predict(0.5).timestamp == 0.5  # not after the last sample: the last output
    with pytest.raises(RegistrationError, match="prediction time"):
        f.predict(float("nan"))
