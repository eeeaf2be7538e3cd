"""Pivot calibration (algebraic one-step least squares) with a known tip and pivot."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.registration.frames import Transform
from scrubin.registration.pivot import PivotError, pivot_calibration

TIP = np.array([5.0, -3.0, 150.0])  # TOOL frame, mm
PIVOT = np.array([100.0, 50.0, -900.0])  # TRACKER frame, mm


def _poses(n: int, seed: int, spread_rad: float = 0.4, noise_mm: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r = Rotation.from_rotvec(rng.normal(0, spread_rad, 3)).as_matrix()
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = PIVOT - r @ TIP + rng.normal(0, noise_mm + 1e-300, 3)
        out.append(m)
    return np.array(out)


def test_exact_recovery():
    res = pivot_calibration(_poses(12, seed=1))
    np.testing.assert_allclose(res.tip_tool_mm, TIP, atol=1e-8)
    np.testing.assert_allclose(res.pivot_tracker_mm, PIVOT, atol=1e-8)
    assert res.rms_mm < 1e-8 and res.n_poses == 12 and res.residuals_mm.shape == (12,)


def test_noisy_recovery_and_transforms_accepted():
    poses = _poses(40, seed=2, noise_mm=0.25)
    res = pivot_calibration([Transform(m, "TOOL", "TRACKER") for m in poses])
    assert np.linalg.norm(res.tip_tool_mm - TIP) < 0.5
    assert np.linalg.norm(res.pivot_tracker_mm - PIVOT) < 0.5
    assert 0.2 < res.rms_mm < 0.5  # ~ noise sigma * sqrt(3 - 6/N... ) order


def test_rejections():
    with pytest.raises(PivotError, match="at least 4"):
        pivot_calibration(_poses(3, seed=0))
    with pytest.raises(PivotError, match=r"\(N, 4, 4\)"):
        pivot_calibration(np.zeros((5, 3, 4)))
    bad = _poses(6, seed=0)
    bad[0, 0, 3] = np.inf
    with pytest.raises(PivotError, match="NaN or infinite"):
        pivot_calibration(bad)
    bad = _poses(6, seed=0)
    bad[1, :3, :3] *= 1.1
    with pytest.raises(PivotError, match="not orthonormal"):
        pivot_calibration(bad)
    with pytest.raises(PivotError, match="swivel"):
        pivot_calibration(_poses(10, seed=0, spread_rad=0.01))
    with pytest.raises(PivotError, match="swivel"):
        pivot_calibration(np.repeat(_poses(1, seed=0), 6, axis=0))
    one_axis = np.repeat(np.eye(4)[None], 8, axis=0)
    for k in range(8):  # swivelling about z only leaves the tip's z unobservable
        one_axis[k, :3, :3] = Rotation.from_euler("z", 10 * k, degrees=True).as_matrix()
    with pytest.raises(PivotError, match="two axes"):
        pivot_calibration(one_axis)
