"""One-Euro pose filter: jitter at rest, lag in fast motion, capture-time handling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from registration.errors import RegistrationError
from registration.filters import OneEuroFilter, OneEuroParams, PoseFilter, smoothing_factor
from registration.frames import Transform

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
