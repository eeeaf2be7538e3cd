"""Unpaired fiducial matching: permutations, a dropped point, an outlier, noise, symmetry."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.registration.correspondence import (
    AmbiguousCorrespondenceError,
    CorrespondenceError,
    match_points,
)
from scrubin.registration.points import PointSetError, register_points


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def scenario(rng: np.random.Generator, n: int, fle: float = 0.5):
    """CT fiducials, and the same fiducials tracked in REF: moved, noisy, shuffled.

    Returns (ct_mm, ref_mm, truth) with truth[ct index] = REF index.
    """
    ct_mm = rng.uniform(-70.0, 70.0, size=(n, 3))
    rot, t = random_rotation(rng), rng.uniform(-400, 400, 3)
    ref_mm = ct_mm @ rot.T + t + rng.normal(0, fle / np.sqrt(3), (n, 3))
    perm = rng.permutation(n)  # ref row r holds ct point perm[r]
    truth = {int(perm[r]): r for r in range(n)}
    return ct_mm, ref_mm[perm], truth, (rot, t)


def pairs(c) -> dict[int, int]:
    return dict(zip(c.moving_index.tolist(), c.fixed_index.tolist(), strict=True))


@pytest.mark.parametrize("n", [4, 5, 6, 8, 10])
def test_permuted_points_are_matched(n):
    rng = np.random.default_rng(n)
    for _ in range(10):
        ct, ref, truth, _ = scenario(rng, n)
        c = match_points(ref, ct)
        assert pairs(c) == truth
        assert c.unmatched_fixed.size == 0 and c.unmatched_moving.size == 0
        assert c.rms_mm < 1.0


@pytest.mark.parametrize("n", [5, 6, 8])
def test_one_tracked_point_missing(n):
    rng = np.random.default_rng(10 + n)
    for _ in range(10):
        ct, ref, truth, _ = scenario(rng, n)
        drop = int(rng.integers(n))
        lost_ct = [m for m, r in truth.items() if r == drop][0]
        ref = np.delete(ref, drop, axis=0)
        expected = {m: (r - 1 if r > drop else r) for m, r in truth.items() if r != drop}
        c = match_points(ref, ct)
        assert pairs(c) == expected
        assert c.unmatched_moving.tolist() == [lost_ct]


@pytest.mark.parametrize("n", [5, 6, 8])
def test_one_extra_tracked_point(n):
    rng = np.random.default_rng(20 + n)
    for _ in range(10):
        ct, ref, truth, (rot, t) = scenario(rng, n)
        stray = rng.uniform(-70, 70, 3) @ rot.T + t
        pos = int(rng.integers(n + 1))
        ref = np.insert(ref, pos, stray, axis=0)
        expected = {m: (r + 1 if r >= pos else r) for m, r in truth.items()}
        c = match_points(ref, ct)
        assert pairs(c) == expected
        assert c.unmatched_fixed.tolist() == [pos]


def test_one_missing_and_one_extra_ct_candidate():
    rng = np.random.default_rng(30)
    ct, ref, truth, _ = scenario(rng, 7)
    ct_plus = np.vstack([ct, [200.0, -150.0, 90.0]])  # a false CT candidate
    ref_minus = ref[1:]
    c = match_points(ref_minus, ct_plus)
    expected = {m: r - 1 for m, r in truth.items() if r != 0}
    assert pairs(c) == expected
    assert 7 in c.unmatched_moving.tolist()


def test_matched_pairs_register_to_the_true_transform():
    rng = np.random.default_rng(31)
    ct, ref, _, (rot, t) = scenario(rng, 8, fle=0.3)
    c = match_points(ref, ct)
    reg = register_points(ref[c.fixed_index], ct[c.moving_index])
    assert np.degrees(np.arccos((np.trace(reg.transform.rotation.T @ rot) - 1) / 2)) < 0.5
    assert np.linalg.norm(reg.transform.translation - t) < 2.0


def test_symmetric_layout_is_refused():
    rect = np.array([[0, 0, 0], [60, 0, 0], [60, 90, 0], [0, 90, 0]], float)
    rng = np.random.default_rng(32)
    ref = rect @ random_rotation(rng).T + 5.0
    with pytest.raises(AmbiguousCorrespondenceError, match="symmetric"):
        match_points(ref[rng.permutation(4)], rect)
    # a regular tetrahedron with noise is just as ambiguous
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) * 40
    with pytest.raises(AmbiguousCorrespondenceError):
        match_points(tet + rng.normal(0, 0.2, tet.shape), tet)


def test_breaking_the_symmetry_resolves_it():
    rect = np.array([[0, 0, 0], [60, 0, 0], [60, 90, 0], [0, 90, 0], [20, 30, 25]], float)
    ref = rect[[3, 1, 4, 0, 2]] + [1, 2, 3]
    c = match_points(ref, rect)
    assert pairs(c) == {3: 0, 1: 1, 4: 2, 0: 3, 2: 4}


def test_unrelated_point_sets_are_refused():
    rng = np.random.default_rng(33)
    a = rng.uniform(-50, 50, (6, 3))
    b = rng.uniform(-50, 50, (6, 3)) * 3.0
    with pytest.raises(CorrespondenceError):
        match_points(a, b)


def test_too_many_missing_points_are_refused():
    rng = np.random.default_rng(34)
    ct, ref, _, _ = scenario(rng, 8)
    far = rng.uniform(500, 600, (3, 3))  # three tracked points that are not fiducials
    with pytest.raises(CorrespondenceError, match="only 5 of 8"):
        match_points(np.vstack([ref[:5], far]), ct)
    assert match_points(np.vstack([ref[:5], far]), ct, max_unmatched=3).moving_index.size == 5


def test_rejections():
    rng = np.random.default_rng(35)
    pts = rng.uniform(-50, 50, (5, 3))
    with pytest.raises(PointSetError, match="at least 3"):
        match_points(pts[:2], pts)
    with pytest.raises(PointSetError, match=r"\(N, 3\)"):
        match_points(pts[:, :2], pts)
    bad = pts.copy()
    bad[1, 1] = np.nan
    with pytest.raises(PointSetError, match="NaN"):
        match_points(pts, bad)
    with pytest.raises(PointSetError, match="collinear"):
        match_points(np.outer(np.arange(5.0), [1, 2, 3]), pts)
    with pytest.raises(CorrespondenceError, match="tolerance"):
        match_points(pts, pts, tol_mm=-1.0)
    with pytest.raises(CorrespondenceError, match="at most"):
        match_points(rng.uniform(-50, 50, (25, 3)), pts)
