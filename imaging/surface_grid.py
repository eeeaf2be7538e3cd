"""Choosing the extraction grid: a 2x-coarser grid only where it keeps full-resolution accuracy.

Extracting on a grid ``step`` times coarser (:func:`scrubin.imaging.surface.extract_surface`
with ``step > 1``) cuts the triangle count ~``step``² and makes smoothing and decimation fast;
its vertices are snapped onto the full-resolution marching-cubes surface. Between vertices the
coarse triangles can still cut corners the full-resolution surface follows (thin walls, sharp
creases, a sharp-kernel scan whose edges are one voxel wide). So the coarse surface is
*checked*: at a fixed-seed sample of its vertices (along the vertex normal) and triangle
centroids (along the face normal) the distance to the full-resolution level set (trilinear
interpolant of the fine voxels, mask-consistent) is measured, and the coarse grid is kept only
when the 99th percentile of that residual is within :data:`RESIDUAL_TOLERANCE_VOXELS` of a fine
voxel - the size of the full-resolution surface's own departure from that level set: marching
cubes puts vertices on cell edges by linear interpolation (Lorensen & Cline 1987, eq. 1) and
joins them by flat triangles, which on the ``sharp`` phantom lie up to 0.165 voxel (p99) /
0.20 voxel (p99.9) from the trilinear level set. Otherwise the full-resolution grid is used.
The check costs ~60 k line searches (tens of ms).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from scrubin.imaging.mesh import Mesh
from scrubin.imaging.surface import extract_surface, fine_field
from scrubin.imaging.volume import Volume

#: Volumes larger than this (voxels) with voxels finer than :data:`COARSE_MAX_SPACING_MM` are
#: candidates for the coarse grid (below it, full resolution is fast anyway).
COARSE_MIN_VOXELS = 16_000_000
COARSE_MAX_SPACING_MM = 1.0
#: Coarse grid kept when the residual's 99th percentile is at most this many fine voxels.
RESIDUAL_TOLERANCE_VOXELS = 0.25
#: Points sampled for the check (vertices + centroids, fixed seed).
CHECK_POINTS = 60_000


@dataclass(frozen=True)
class GridChoice:
    """Which extraction grid was used and why.

    Attributes
    ----------
    step
        Grid used (1 = full resolution).
    tried
        Coarse grid tried first (1 when none was: small or coarse volume, or ``step`` given).
    residual_p99_mm
        99th percentile distance (mm) of the coarse surface's sample points to the
        full-resolution level set (NaN when not checked); a point without the level set within
        reach (2 fine voxels) counts as that far.
    tolerance_mm
        The limit it was compared with.
    reason
        One line: "requested", "small or coarse volume", "coarse grid within tolerance",
        "coarse grid off the full-resolution surface".
    """

    step: int
    tried: int
    residual_p99_mm: float
    tolerance_mm: float
    reason: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (NaN as None)."""
        d = asdict(self)
        for k in ("residual_p99_mm", "tolerance_mm"):
            d[k] = None if not np.isfinite(d[k]) else round(float(d[k]), 4)
        return d


def coarse_candidate(shape: tuple[int, ...], spacing: np.ndarray) -> int:
    """2 for large fine volumes (> :data:`COARSE_MIN_VOXELS`, voxels < 1 mm), else 1."""
    big = int(np.prod(shape)) > COARSE_MIN_VOXELS
    return 2 if big and float(np.max(spacing)) < COARSE_MAX_SPACING_MM else 1


def grid_residual(mesh: Mesh, volume: Volume, mask: np.ndarray | None, level: float,
                  inside_below: bool = False, points: int = CHECK_POINTS,
                  seed: int = 0) -> np.ndarray:
    """Distances (mm) from a sample of ``mesh``'s vertices and triangle centroids (LPS mm) to
    the full-resolution level set of ``volume``, along the vertex / face normal, searched up
    to 2 fine voxels each way; the reach itself where there is none within it. Points within 1.5
    fine voxels of the volume's border (the caps that close an object cut by the field of
    view, not a boundary in the image) are left out."""
    field = fine_field(volume, mask, level, inside_below)
    rng = np.random.default_rng(seed)
    half = points // 2
    vi = rng.choice(mesh.n_vertices, size=min(half, mesh.n_vertices), replace=False)
    fi = rng.choice(mesh.n_faces, size=min(half, mesh.n_faces), replace=False)
    cross = mesh.face_cross()[fi]
    fn = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-300)
    pts = np.concatenate([mesh.vertices[vi], mesh.vertices[mesh.faces[fi]].mean(axis=1)])
    dirs = np.concatenate([mesh.vertex_normals()[vi], fn])
    ijk = pts @ field.inv[:3, :3].T + field.inv[:3, 3]
    inner = np.all((ijk >= 1.5) & (ijk <= np.asarray(volume.array.shape[::-1]) - 2.5), axis=1)
    pts, dirs = np.ascontiguousarray(pts[inner]), np.ascontiguousarray(dirs[inner])
    if len(pts) == 0:
        return np.zeros(0)
    reach = 2.0 * field.voxel_mm
    d = np.abs(field.along(pts, dirs, reach, False))
    d[np.isnan(d)] = reach  # no crossing within reach: at least that far
    return d


def extract_surface_auto(
    volume: Volume, mask: np.ndarray | None = None, level: float | None = None,
    step: int = 0, name: str = "", inside_below: bool = False,
) -> tuple[Mesh, GridChoice]:
    """:func:`~scrubin.imaging.surface.extract_surface` on a grid chosen by a checked rule.

    ``step >= 1`` is used as given. ``step = 0`` (automatic): for a large fine volume (see
    :func:`coarse_candidate`) the 2x-coarser grid is tried and kept only if
    :func:`grid_residual` has its 99th percentile within
    ``RESIDUAL_TOLERANCE_VOXELS x`` the fine voxel's largest side; otherwise, and for other
    volumes, full resolution. A label map without ``level`` is never coarsened.
    """
    if step:
        return (extract_surface(volume, mask=mask, level=level, step=step, name=name,
                                inside_below=inside_below),
                GridChoice(int(step), 1, float("nan"), float("nan"), "requested"))
    tried = coarse_candidate(volume.array.shape, volume.spacing) if level is not None else 1
    if tried == 1:
        return (extract_surface(volume, mask=mask, level=level, step=1, name=name,
                                inside_below=inside_below),
                GridChoice(1, 1, float("nan"), float("nan"), "small or coarse volume"))
    coarse = extract_surface(volume, mask=mask, level=level, step=tried, name=name,
                             inside_below=inside_below)
    tol = RESIDUAL_TOLERANCE_VOXELS * float(np.max(volume.spacing))
    p99 = float("nan")
    residual = grid_residual(coarse, volume, mask, float(level), inside_below)
    if len(residual):
        p99 = float(np.percentile(residual, 99))
        if p99 <= tol:
            return coarse, GridChoice(tried, tried, p99, tol, "coarse grid within tolerance")
    return (extract_surface(volume, mask=mask, level=level, step=1, name=name,
                            inside_below=inside_below),
            GridChoice(1, tried, p99, tol, "coarse grid off the full-resolution surface"))
