"""Hand-eye AX = XB on synthetic poses with a known X = T_TOOL_CAMERA."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.registration.frames import Transform
from scrubin.registration.handeye import (
    HandEyeError,
    _inv,
    _motion_pairs,
    calibrate_hand_eye,
)


def _t(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = t
    return m


X = _t(Rotation.from_euler("xyz", [10, -20, 95], degrees=True).as_matrix(), [30, -15, 60])
W = _t(Rotation.from_euler("xyz", [170, 5, -30], degrees=True).as_matrix(), [200, 100, -800])


def _data(n: int, seed: int, noise_mm: float = 0.0, noise_deg: float = 0.0):
    """T_TRACKER_TOOL_i and T_CAMERA_TARGET_i = (T_TRACKER_TOOL_i X)^-1 T_TRACKER_TARGET."""
    rng = np.random.default_rng(seed)
    tools, cams = [], []
    for _ in range(n):
        tool = _t(Rotation.from_rotvec(rng.normal(0, 0.4, 3)).as_matrix(),
                  rng.normal(0, 100, 3) + [0, 0, -300])
        cam = np.linalg.inv(tool @ X) @ W
        noise = Rotation.from_rotvec(rng.normal(0, np.radians(noise_deg) + 1e-300, 3))
        cam[:3, :3] = noise.as_matrix() @ cam[:3, :3]
        cam[:3, 3] += rng.normal(0, noise_mm + 1e-300, 3)
        tools.append(tool)
        cams.append(cam)
    return np.array(tools), np.array(cams)


def _err(m: np.ndarray) -> tuple[float, float]:
    d = np.linalg.inv(X) @ m
    return float(np.linalg.norm(d[:3, 3])), float(np.degrees(
        Rotation.from_matrix(d[:3, :3]).magnitude()))


@pytest.mark.parametrize("method", ["park", "tsai", "daniilidis"])
def test_exact_recovery_without_noise(method):
    tools, cams = _data(8, seed=1)
    res = calibrate_hand_eye(tools, cams, method=method)
    dt, dr = _err(res.transform.matrix)
    assert dt < 1e-6 and dr < 1e-6
    assert res.transform.src == "CAMERA" and res.transform.dst == "TOOL"
    np.testing.assert_allclose(res.target_in_tracker.matrix, W, atol=1e-6)
    assert res.residual_mm < 1e-6 and res.n_pairs == 28


@pytest.mark.parametrize("method", ["park", "tsai", "daniilidis"])
def test_recovery_with_noise(method):
    tools, cams = _data(20, seed=2, noise_mm=0.3, noise_deg=0.1)
    res = calibrate_hand_eye([Transform(m, "TOOL", "TRACKER") for m in tools], cams,
                             method=method)
    dt, dr = _err(res.transform.matrix)
    assert dt < 2.0 and dr < 0.3, (dt, dr)
    assert 0.1 < res.residual_mm < 2.0


def _opencv(tools: np.ndarray, cams: np.ndarray, method: str) -> np.ndarray:
    """The peer: OpenCV 5.1's cv2.calibrateHandEye on the same poses (same convention)."""
    flag = {"park": cv2.CALIB_HAND_EYE_PARK, "tsai": cv2.CALIB_HAND_EYE_TSAI,
            "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS}[method]
    r, t = cv2.calibrateHandEye(list(tools[:, :3, :3]), list(tools[:, :3, 3]),
                                list(cams[:, :3, :3]), list(cams[:, :3, 3]), method=flag)
    return _t(r, t.ravel())


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation mm, rotation deg) between two transforms (angle from the quaternion of
    the relative rotation: arccos of the trace loses ~1e-6 deg near zero)."""
    rel = Rotation.from_matrix(a[:3, :3].T @ b[:3, :3])
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])), float(np.degrees(rel.magnitude()))


@pytest.mark.parametrize("method", ["park", "tsai", "daniilidis"])
def test_matches_opencv_on_exact_data(method):
    tools, cams = _data(8, seed=1)
    ours = calibrate_hand_eye(tools, cams, method=method).transform.matrix
    dt, dr = _diff(ours, _opencv(tools, cams, method))
    assert dt < 1e-6 and dr < 1e-6, (dt, dr)


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize("method", ["park", "tsai", "daniilidis"])
def test_matches_opencv_on_noisy_data(method, seed):
    # 0.3 mm / 0.1 deg pose noise, 15 views: each solution is ~0.5-0.9 mm and ~0.1 deg from
    # the truth here, so two consistent estimators may differ by about that much.
    tools, cams = _data(15, seed=seed, noise_mm=0.3, noise_deg=0.1)
    ours = calibrate_hand_eye(tools, cams, method=method).transform.matrix
    peer = _opencv(tools, cams, method)
    dt, dr = _diff(ours, peer)
    if method == "daniilidis":  # the same linear system (eq. 31) and constraints (eq. 35)
        assert dt < 1e-6 and dr < 1e-6, (dt, dr)
    elif method == "park":  # M = sum beta alpha^T is unchanged when the motions are inverted
        assert dr < 1e-6 and dt < 1.0, (dt, dr)
    else:  # Tsai: rotation from the same equations, translation from inverse motions
        assert dr < 0.05 and dt < 1.0, (dt, dr)
    for m in (ours, peer):
        et, er = _err(m)
        assert et < 2.0 and er < 0.3, (et, er)


def test_opencv_park_translation_is_the_inverse_motion_least_squares():
    # The only difference between our Park and OpenCV's: OpenCV solves
    # (R_A - I) t_X = R_X t_B - t_A on A_ij^-1, B_ij^-1 (our pairs inverted). Solving that
    # with our rotation reproduces OpenCV's translation to rounding.
    tools, cams = _data(15, seed=2, noise_mm=0.3, noise_deg=0.1)
    peer = _opencv(tools, cams, "park")
    rx = calibrate_hand_eye(tools, cams, method="park").transform.matrix[:3, :3]
    a, b = _motion_pairs(tools, cams, 0.0)
    a, b = _inv(a), _inv(b)
    lhs = (a[:, :3, :3] - np.eye(3)).reshape(-1, 3)
    rhs = (np.einsum("ij,kj->ki", rx, b[:, :3, 3]) - a[:, :3, 3]).reshape(-1)
    tx = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    assert np.linalg.norm(tx - peer[:3, 3]) < 1e-9


@pytest.mark.parametrize("method", ["horaud", "andreff"])
def test_opencv_backed_methods(method):
    tools, cams = _data(8, seed=1)
    res = calibrate_hand_eye(tools, cams, method=method)
    dt, dr = _err(res.transform.matrix)
    assert dt < 1e-6 and dr < 1e-6 and res.method == method
    assert res.residual_mm < 1e-6
    tools, cams = _data(20, seed=2, noise_mm=0.3, noise_deg=0.1)
    dt, dr = _err(calibrate_hand_eye(tools, cams, method=method).transform.matrix)
    assert dt < 2.0 and dr < 0.3, (dt, dr)


def test_independent_methods_agree():
    # the three formulations on the same noisy data (each is also checked against OpenCV)
    tools, cams = _data(12, seed=3, noise_mm=0.2, noise_deg=0.05)
    results = {m: calibrate_hand_eye(tools, cams, m).transform.matrix
               for m in ("park", "tsai", "daniilidis")}
    ref = results["park"]
    for method, m in results.items():
        assert np.linalg.norm(m[:3, 3] - ref[:3, 3]) < 1.0, method
        cos = (np.trace(m[:3, :3].T @ ref[:3, :3]) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 0.2, method


def test_rejections():
    tools, cams = _data(5, seed=4)
    with pytest.raises(HandEyeError, match="unknown hand-eye method"):
        calibrate_hand_eye(tools, cams, method="magic")
    with pytest.raises(HandEyeError, match="5 tracker poses but 4 camera poses"):
        calibrate_hand_eye(tools, cams[:4])
    with pytest.raises(HandEyeError, match="at least 3"):
        calibrate_hand_eye(tools[:2], cams[:2])
    with pytest.raises(HandEyeError, match=r"\(N, 4, 4\)"):
        calibrate_hand_eye(tools[:, :3], cams)
    bad = tools.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(HandEyeError, match="NaN"):
        calibrate_hand_eye(bad, cams)
    bad = tools.copy()
    bad[2, :3, :3] *= 2
    with pytest.raises(HandEyeError, match="pose 2 has no valid rotation"):
        calibrate_hand_eye(bad, cams)
    still = np.repeat(tools[:1], 5, axis=0)
    with pytest.raises(HandEyeError, match="move the tool more"):
        calibrate_hand_eye(still, np.repeat(cams[:1], 5, axis=0))
    # rotations all about one axis: X's rotation is not observable
    axis_tools, axis_cams = [], []
    for k in range(5):
        tool = _t(Rotation.from_euler("z", 20 * k, degrees=True).as_matrix(), [k, 0, 0])
        axis_tools.append(tool)
        axis_cams.append(np.linalg.inv(tool @ X) @ W)
    for method in ("park", "tsai", "daniilidis"):
        with pytest.raises(HandEyeError, match="parallel axes"):
            calibrate_hand_eye(np.array(axis_tools), np.array(axis_cams), method=method)
