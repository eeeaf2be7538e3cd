"""Mesh smoothing without shrinkage: Taubin's λ|μ algorithm.

G. Taubin, "A signal processing approach to fair surface design", SIGGRAPH 1995, 351-358
(doi:10.1145/218380.218473). Each iteration applies two Laplacian steps (Taubin eq. 8)

    x_i <- x_i + λ Δx_i,   then   x_i <- x_i + μ Δx_i,   Δx_i = (1/|N_i|) Σ_{j∈N_i} (x_j - x_i)

with 0 < λ < -μ: the pair is a low-pass filter with transfer function
f(k) = (1 - λk)(1 - μk) that is ≈ 1 below the pass-band frequency k_PB = 1/λ + 1/μ (eq. 11)
and attenuates higher frequencies (voxel staircase, noise), without the shrinkage of plain
Laplacian smoothing. Defaults λ = 0.5, μ = -0.53 (k_PB ≈ 0.11, Taubin's recommended range
0.01-0.1 upper end). Uniform (umbrella) weights; connectivity is unchanged.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:  # skip the too-old TBB (and its warning)
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]

from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import Mesh

LAMBDA = 0.5
MU = -0.53


@njit(cache=True)
def _adjacency(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR neighbour lists: for each face corner, the two other corners (an interior edge of a
    closed mesh is listed from both faces, so every neighbour has the same weight)."""
    deg = np.zeros(n + 1, dtype=np.int64)
    for f in range(faces.shape[0]):
        for c in range(3):
            deg[faces[f, c] + 1] += 2
    ptr = np.cumsum(deg)
    fill = ptr[:-1].copy()
    nbr = np.empty(ptr[-1], dtype=np.int64)
    for f in range(faces.shape[0]):
        for c in range(3):
            v = faces[f, c]
            nbr[fill[v]] = faces[f, (c + 1) % 3]
            nbr[fill[v] + 1] = faces[f, (c + 2) % 3]
            fill[v] += 2
    return ptr, nbr


@njit(cache=True, parallel=True)
def _laplacian_step(
    x: np.ndarray, out: np.ndarray, ptr: np.ndarray, nbr: np.ndarray, factor: float
) -> None:
    for v in prange(x.shape[0]):
        a, b = ptr[v], ptr[v + 1]
        if b == a:
            for d in range(3):
                out[v, d] = x[v, d]
            continue
        inv = 1.0 / (b - a)
        for d in range(3):
            s = 0.0
            for e in range(a, b):
                s += x[nbr[e], d]
            out[v, d] = x[v, d] + factor * (s * inv - x[v, d])


def grid_iterations(iterations: int, step: int) -> int:
    """Iterations on a mesh extracted on a grid ``step`` times coarser that smooth over the
    same length in mm as ``iterations`` at full resolution (at most): Laplacian smoothing
    diffuses over ~ edge length x sqrt(iterations) (Taubin 1995, sec. 4), so
    ``floor(iterations / step**2)``, at least 1 when ``iterations > 0``."""
    if iterations <= 0 or step <= 1:
        return int(iterations)
    return max(1, int(iterations) // (int(step) ** 2))


def taubin_smooth(
    mesh: Mesh, iterations: int = 10, lam: float = LAMBDA, mu: float = MU
) -> Mesh:
    """Smooth a mesh with ``iterations`` λ|μ pairs (Taubin 1995, eq. 8); returns a new mesh.

    Raises
    ------
    MeshError
        ``iterations`` negative, or not ``0 < lam < -mu``.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int | np.integer):
        raise MeshError(f"smoothing iterations must be an integer, got {iterations!r}")
    if iterations < 0:
        raise MeshError(f"smoothing iterations must be >= 0, got {iterations}")
    if not (0.0 < lam < -mu) or not np.isfinite(lam + mu):
        raise MeshError(f"Taubin smoothing needs 0 < lambda < -mu, got lambda={lam}, mu={mu}")
    if iterations == 0 or mesh.n_faces == 0:
        return mesh.copy()
    ptr, nbr = _adjacency(mesh.faces.astype(np.int64), mesh.n_vertices)
    x = mesh.vertices.copy()
    y = np.empty_like(x)
    for _ in range(int(iterations)):
        _laplacian_step(x, y, ptr, nbr, lam)
        _laplacian_step(y, x, ptr, nbr, mu)
    out = mesh.copy()
    out.vertices = x
    out.normals = None
    return out
