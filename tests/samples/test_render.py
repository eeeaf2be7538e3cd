"""Voxeliser: exact partial-volume fractions, volume conservation, PSF and noise."""

from __future__ import annotations

import numpy as np

from scrubin.samples.render import blur_and_noise, render_hu


def _structs(prim: dict, hu: float) -> dict:
    return {"x": {"paint_order": 0, "parts": [[prim]], "hu_inside": hu, "hu_outside": -1000.0}}


def test_box_partial_volume_is_exact() -> None:
    # unit voxels at integer LPS positions; box faces through voxel centres (-> 1/2) and at
    # quarter offsets (-> 1/4 or 3/4 of a voxel with 4 sub-samples per axis)
    box = {"type": "box", "min": [2.0, 1.75, 3.25], "max": [5.0, 6.25, 7.0]}
    hu = render_hu(_structs(box, 1000.0), np.eye(4), (10, 9, 8), supersample=4)

    def frac(lo: float, hi: float, n: int) -> np.ndarray:
        c = np.arange(n, dtype=float)
        return np.clip(np.minimum(hi, c + 0.5) - np.maximum(lo, c - 0.5), 0.0, 1.0)

    f = (frac(3.25, 7.0, 10)[:, None, None] * frac(1.75, 6.25, 9)[None, :, None]
         * frac(2.0, 5.0, 8)[None, None, :])
    np.testing.assert_allclose(hu, -1000.0 + 2000.0 * f, atol=1e-3)


def test_sphere_volume_conserved_on_anisotropic_oblique_grid() -> None:
    rot = np.linalg.qr(np.array([[1.0, 0.3, 0.2], [0.1, 1.0, 0.4], [0.2, 0.1, 1.0]]))[0]
    affine = np.eye(4)
    affine[:3, :3] = rot * np.array([0.9, 1.1, 1.3])
    affine[:3, 3] = rot @ np.array([-13.5, -13.2, -13.0])
    sphere = {"type": "capsule", "p0": [0.3, -0.2, 0.1], "p1": [0.3, -0.2, 0.1], "radius": 6.0}
    hu = render_hu(_structs(sphere, 0.0), affine, (21, 25, 31), supersample=4)
    vox = abs(np.linalg.det(affine[:3, :3]))
    volume = np.sum((hu + 1000.0) / 1000.0) * vox
    assert abs(volume - 4.0 / 3.0 * np.pi * 6.0**3) < 0.01 * 4.0 / 3.0 * np.pi * 6.0**3


def test_blur_and_noise_statistics_and_determinism() -> None:
    hu = np.zeros((40, 30, 30), np.float32)
    hu[:, :, 15:] = 1000.0
    a = blur_and_noise(hu.copy(), np.array([0.5, 0.5, 0.5]), 0.6, 15.0, seed=7)
    b = blur_and_noise(hu.copy(), np.array([0.5, 0.5, 0.5]), 0.6, 15.0, seed=7)
    c = blur_and_noise(hu.copy(), np.array([0.5, 0.5, 0.5]), 0.6, 15.0, seed=8)
    assert a.dtype == np.int16 and np.array_equal(a, b) and not np.array_equal(a, c)
    flat = a[:, :, :8].astype(float) - 1024.0
    assert abs(flat.mean()) < 1.0 and abs(flat.std() - 15.0) < 0.6
    # edge: the step convolved with the sampled Gaussian of sigma 0.6 mm = 1.2 voxels
    clean = blur_and_noise(hu.copy(), np.array([0.5, 0.5, 0.5]), 0.6, 0.0, seed=0)
    prof = clean[0, 0, :].astype(float) - 1024.0
    m = np.arange(-5, 6)  # scipy radius = int(4 * sigma + 0.5)
    w = np.exp(-0.5 * (m / 1.2) ** 2)
    w /= w.sum()
    expected = [1000.0 * w[(n - m) >= 15].sum() for n in range(30)]
    np.testing.assert_allclose(prof, expected, atol=0.51)  # rounding to integers
