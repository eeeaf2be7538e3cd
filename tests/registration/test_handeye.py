"""Hand-eye AX = XB on synthetic poses with a known X = T_TOOL_CAMERA."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.registration.frames import Transform
from scrubin.registration.handeye import HandEyeError, calibrate_hand_eye


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


def test_independent_methods_agree():
    # OpenCV 5.0's Python package lacks cv2.calibrateHandEye (opencv issue #29565), so the
    # peer check is between the three independent formulations on the same noisy data.
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
