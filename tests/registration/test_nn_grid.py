"""Closest-point grid: registration/nn_grid.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from scrubin.registration.errors import RegistrationError
from scrubin.registration.nn_grid import ClosestPointGrid


def test_grid_matches_kdtree_within_a_cell():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5000, 3))
    v = 60.0 * v / np.linalg.norm(v, axis=1, keepdims=True)
    grid = ClosestPointGrid.build(v, 2.0, 15.0)
    q = v[rng.choice(5000, 1000)] + rng.normal(scale=3.0, size=(1000, 3))
    d, i = grid.query(q, 10.0)
    d_true, _ = cKDTree(v).query(q)
    ok = np.isfinite(d)
    np.testing.assert_allclose(d[ok], np.linalg.norm(q[ok] - v[i[ok]], axis=1))
    # the grid's neighbour is at most about one cell diagonal farther than the true one
    assert np.all(d[ok] - d_true[ok] <= 2.0 * np.sqrt(3) + 1e-9)
    assert np.median(d[ok] - d_true[ok]) < 0.5
    assert ok.mean() > 0.99


def test_grid_gate_and_outside_queries():
    v = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    grid = ClosestPointGrid.build(v, 1.0, 5.0)
    d, i = grid.query(np.array([[1.0, 0.2, 0.0], [9.0, 0.0, 0.0], [3.0, 4.0, 0.0],
                                [100.0, 0.0, 0.0]]), 2.0)
    np.testing.assert_allclose(d[:2], [np.hypot(1.0, 0.2), 1.0])
    assert list(i) == [0, 1, 2, 2] and np.all(np.isinf(d[2:]))


def test_grid_rejections():
    with pytest.raises(RegistrationError, match="shape"):
        ClosestPointGrid.build(np.zeros((3, 2)), 1.0, 1.0)
    with pytest.raises(RegistrationError, match="cell"):
        ClosestPointGrid.build(np.zeros((3, 3)), 0.0, 1.0)
    with pytest.raises(RegistrationError, match="exceeds"):
        ClosestPointGrid.build(np.array([[0.0, 0, 0], [1000, 1000, 1000]]), 1.0, 0.0)
