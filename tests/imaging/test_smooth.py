"""Taubin λ|μ smoothing: removes noise without shrinking (Taubin 1995)."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.imaging.errors import MeshError
from scrubin.imaging.smooth import taubin_smooth
from scrubin.imaging.surface import extract_surface
from scrubin.imaging.volume import Volume


def _noisy_sphere(radius=10.0, noise=0.3):
    g = np.indices((32, 32, 32), dtype=np.float64)
    d = np.sqrt(((g - 15.5) ** 2).sum(axis=0))
    m = extract_surface(Volume((radius - d).astype(np.float32), np.eye(4)), level=0.0)
    rng = np.random.default_rng(1)
    n = m.vertex_normals()
    m.vertices = m.vertices + n * rng.normal(0.0, noise, (m.n_vertices, 1))
    m.normals = None
    return m


def _radii(m):
    return np.linalg.norm(m.vertices - 15.5, axis=1)


def test_taubin_removes_noise_without_shrinkage():
    m = _noisy_sphere()
    s = taubin_smooth(m, 20)
    assert np.std(_radii(s) - 10.0) < 0.35 * np.std(_radii(m) - 10.0)
    assert abs(np.mean(_radii(s)) - 10.0) < 0.1  # no shrinkage
    assert s.is_watertight() and s.n_faces == m.n_faces
    assert s.provenance == m.provenance


def test_zero_iterations_is_a_copy():
    m = _noisy_sphere()
    s = taubin_smooth(m, 0)
    np.testing.assert_array_equal(s.vertices, m.vertices)
    assert s.vertices is not m.vertices


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"iterations": -1}, ">= 0"),
        ({"iterations": 1.5}, "integer"),
        ({"iterations": True}, "integer"),
        ({"lam": 0.6, "mu": -0.5}, "lambda"),
        ({"lam": -0.1, "mu": -0.5}, "lambda"),
        ({"lam": float("nan")}, "lambda"),
    ],
)
def test_rejections(kwargs, match):
    with pytest.raises(MeshError, match=match):
        taubin_smooth(_noisy_sphere(), **kwargs)


def test_grid_iterations_keep_the_smoothing_length():
    """Diffusion length ~ edge x sqrt(iterations): on a grid 2x coarser, N / 4 iterations
    (floored, at least one) smooth over the same length in mm as N at full resolution."""
    from scrubin.imaging.smooth import grid_iterations

    assert [grid_iterations(n, 2) for n in (0, 1, 3, 4, 10, 20)] == [0, 1, 1, 1, 2, 5]
    assert grid_iterations(10, 1) == 10 and grid_iterations(18, 3) == 2
