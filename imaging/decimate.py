"""Decimation to a triangle budget, and the surface distance that measures what it cost.

Decimation uses quadric-error edge collapse (Garland & Heckbert 1997, SIGGRAPH, "Surface
simplification using quadric error metrics") as implemented by the ``fast-simplification``
package. The distance between two surfaces is point-to-triangle (exact, via Open3D's
``RaycastingScene.compute_distance``), measured both ways (symmetric Hausdorff).
"""

from __future__ import annotations

import numpy as np

from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import Mesh


def decimate(mesh: Mesh, max_triangles: int, aggressiveness: float = 7.0) -> Mesh:
    """Reduce ``mesh`` to at most ``max_triangles`` triangles (quadric edge collapse).

    A mesh already within budget is returned unchanged (copied). Triangles left with a
    repeated vertex index by collapses are removed; vertices are never welded by position and
    zero-area triangles are kept, since either would open a closed surface. When a watertight
    input comes out non-manifold (the collapses joined two sheets along an edge), decimation is
    redone with other aggressiveness values (:data:`RETRY_AGGRESSIVENESS`) and the first
    closed result within budget is returned; if there is none (very thin sheets decimated
    hard), the first result is.

    Raises
    ------
    MeshError
        ``max_triangles`` below 4 or not an integer.
    """
    if isinstance(max_triangles, bool) or not isinstance(max_triangles, int | np.integer):
        raise MeshError(f"triangle budget must be an integer, got {max_triangles!r}")
    if max_triangles < 4:
        raise MeshError(f"triangle budget must be at least 4, got {max_triangles}")
    if mesh.n_faces <= max_triangles:
        return mesh.copy()
    out = _simplify(mesh, max_triangles, aggressiveness)
    if out.is_watertight() or not mesh.is_watertight():
        return out
    for agg in RETRY_AGGRESSIVENESS:
        # the edge collapses occasionally join two sheets along one edge (shared by 4 faces);
        # another collapse order (aggressiveness) often avoids it
        retry = _simplify(mesh, max_triangles, agg)
        if retry.n_faces <= max_triangles and retry.is_watertight():
            return retry
    return out


#: Aggressiveness values tried, in order, when a closed input decimated to a non-manifold mesh.
RETRY_AGGRESSIVENESS = (5.0, 9.0, 3.0, 6.0, 8.0)


def _simplify(mesh: Mesh, max_triangles: int, aggressiveness: float) -> Mesh:
    import fast_simplification

    reduction = 1.0 - max_triangles / mesh.n_faces
    target = max_triangles
    for _ in range(4):
        pts, tris = fast_simplification.simplify(
            mesh.vertices,
            mesh.faces.astype(np.int32),
            target_reduction=reduction,
            agg=aggressiveness,
        )
        if len(tris) <= max_triangles:
            break
        target = int(target * max_triangles / len(tris)) - 1
        if target < 4:  # the collapses cannot reach the budget; keep the closest result
            break
        reduction = 1.0 - target / mesh.n_faces
    tris = np.asarray(tris, dtype=np.int64)
    keep = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
    out = Mesh(
        np.asarray(pts, dtype=np.float64), tris[keep], mesh.name, mesh.color,
        dict(mesh.provenance),
    )
    return out.remove_unused_vertices()


def _points_on(mesh: Mesh, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Vertices and triangle centroids of ``mesh`` (LPS mm), subsampled to ``max_points``."""
    cent = mesh.vertices[mesh.faces].mean(axis=1)
    pts = np.concatenate([mesh.vertices, cent])
    if len(pts) > max_points:
        pts = pts[rng.choice(len(pts), size=max_points, replace=False)]
    return pts


def _distance_to(mesh: Mesh, points_lps: np.ndarray) -> np.ndarray:
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)),
        o3d.core.Tensor(mesh.faces.astype(np.uint32)),
    )
    q = o3d.core.Tensor(points_lps.astype(np.float32))
    return scene.compute_distance(q).numpy().astype(np.float64)


def surface_distance(
    a: Mesh, b: Mesh, max_points: int = 400_000, seed: int = 0
) -> dict[str, float]:
    """Symmetric surface distance (mm) between meshes ``a`` and ``b``.

    Points on each surface (vertices and triangle centroids, at most ``max_points`` per side,
    a fixed-seed random subset beyond that) are measured point-to-triangle to the other
    surface. Returns ``max`` (≈ Hausdorff distance), ``p99``, ``mean`` over both directions,
    and the per-direction maxima ``a_to_b_max`` / ``b_to_a_max`` and the number of points.

    Raises
    ------
    MeshError
        Either mesh has no triangles.
    """
    if a.n_faces == 0 or b.n_faces == 0:
        raise MeshError("surface distance needs two meshes with triangles")
    rng = np.random.default_rng(seed)
    da = _distance_to(b, _points_on(a, max_points, rng))
    db = _distance_to(a, _points_on(b, max_points, rng))
    both = np.concatenate([da, db])
    return {
        "max": float(both.max()),
        "p99": float(np.percentile(both, 99)),
        "mean": float(both.mean()),
        "a_to_b_max": float(da.max()),
        "b_to_a_max": float(db.max()),
        "points": int(len(both)),
    }
