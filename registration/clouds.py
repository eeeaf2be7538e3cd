"""Point sets with normals for surface registration: reading clouds and meshes, units, normals.

A :class:`PointSet` is an ``(N, 3)`` array of points in millimetres in a named frame (``CT``
for a model surface in DICOM LPS mm; ``REF``/``TRACKER``/``CAMERA`` for a measured cloud), with
optional unit normals and provenance (source UIDs, file).

Inputs
------
* Clouds (:func:`read_cloud`): PLY / PCD (via open3d), CSV / TXT / XYZ (columns ``x, y, z``
  and optionally ``nx, ny, nz``; a header row naming them is recognised; comma, semicolon,
  tab or space separated). Rows with NaN (invalid depth pixels) are dropped.
* Surfaces (:func:`read_surface`): STL / PLY / OBJ / GLB meshes in LPS mm (through
  ``imaging.mesh_io.load_mesh``), reduced to their vertices with area-weighted outward vertex
  normals and the mesh's provenance (source UIDs).

Units: Scrub In works in mm. Depth cameras often write metres; :func:`read_cloud` takes the
unit explicitly and :func:`check_units` refuses a cloud whose extent does not fit the model's
(e.g. 0.2 against 200), naming the unit that would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scrubin.imaging.mesh import vertex_normals
from scrubin.registration.errors import RegistrationError
from scrubin.registration.points import as_points

UNIT_SCALE_TO_MM = {"mm": 1.0, "m": 1000.0, "cm": 10.0}
_CLOUD_SUFFIXES = (".ply", ".pcd", ".csv", ".txt", ".xyz")
_MESH_SUFFIXES = (".stl", ".ply", ".obj", ".glb")
#: Extent ratios (cloud / model) accepted by :func:`check_units`: a partial patch is at least
#: ~1/20 of the model, a scene with background at most ~50 times it.
EXTENT_RATIO_RANGE = (0.05, 50.0)


class CloudError(RegistrationError):
    """A point cloud or surface file cannot be used (missing, corrupt, empty, wrong columns)."""


class UnitMismatchError(RegistrationError):
    """A cloud's extent does not fit the model's: almost surely metres against millimetres."""


@dataclass(frozen=True)
class PointSet:
    """Points (mm) in frame ``frame`` with optional unit normals.

    Attributes
    ----------
    points
        ``(N, 3)`` float64 coordinates in mm in ``frame``.
    normals
        ``(N, 3)`` unit normals (outward for a surface), or None.
    frame
        Frame name (see :mod:`scrubin.registration.frames`), e.g. ``"CT"`` or ``"REF"``.
    source
        Provenance, e.g. ``{"series_instance_uid": ...}``; carried into the transform.
    path
        File it was read from, if any.
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    frame: str = "CT"
    source: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        p = as_points(self.points, "points").copy()  # a read-only copy: the set is immutable
        p.setflags(write=False)
        object.__setattr__(self, "points", p)
        if self.normals is not None:
            n = as_points(self.normals, "normals", min_points=len(p))
            if len(n) != len(p):
                raise RegistrationError(
                    f"normals must match points: {len(n)} normals for {len(p)} points"
                )
            object.__setattr__(self, "normals", unit_rows(n))

    def __len__(self) -> int:
        return len(self.points)

    @property
    def extent_mm(self) -> float:
        """Robust extent: diagonal of the 1st-99th percentile box (mm; outliers ignored)."""
        return extent(self.points)


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Normalise rows to unit length; zero rows raise."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(norm < 1e-12):
        raise RegistrationError("normals contain zero-length vectors")
    out = v / norm
    out.setflags(write=False)
    return out


def extent(points_mm: np.ndarray) -> float:
    """Diagonal (mm) of the 1st-99th percentile bounding box of ``(N, 3)`` points (estimated on
    at most ~20 000 evenly strided points)."""
    p = np.asarray(points_mm, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    p = p[:: max(1, len(p) // 20_000)]
    lo, hi = np.percentile(p, [1, 99], axis=0)
    return float(np.linalg.norm(hi - lo))


def check_units(cloud: PointSet, model: PointSet, cloud_label: str = "cloud") -> None:
    """Refuse a cloud whose extent does not fit the model's (metres vs millimetres).

    A partial view covers a fraction of the model and a depth scene may include some
    background, so extent ratios in :data:`EXTENT_RATIO_RANGE` pass; anything else raises
    :class:`UnitMismatchError` naming the unit that would fit.
    """
    ec, em = cloud.extent_mm, model.extent_mm
    if em <= 0:
        raise RegistrationError("model surface has zero extent")
    ratio = ec / em
    lo, hi = EXTENT_RATIO_RANGE
    if lo <= ratio <= hi:
        return
    hint = ""
    for unit, scale in UNIT_SCALE_TO_MM.items():
        if unit != "mm" and lo <= ratio * scale <= hi:
            hint = f"; if it is in {'metres' if unit == 'm' else unit}, pass --cloud-unit {unit}"
            break
    raise UnitMismatchError(
        f"{cloud_label} extent {ec:.4g} does not fit the model extent {em:.4g} mm "
        f"(ratio {ratio:.3g}, expected {lo}-{hi}): unit mismatch{hint}"
    )


# --------------------------------------------------------------------------- normals
def estimate_normals(points_mm: np.ndarray, radius_mm: float, max_nn: int = 30) -> np.ndarray:
    """Unit normals by PCA of the neighbourhood (Hoppe et al. 1992), oriented outward.

    Orientation: propagated along a minimum spanning tree of the k-nearest-neighbour graph
    weighted by ``1 - |n_i . n_j|`` (Hoppe et al. 1992, section 3.3), then flipped as a whole
    by the local-convexity vote of :func:`orient_outward` -- outward for a closed surface and
    for a convex patch seen from outside (a face seen by a camera).
    """
    import open3d as o3d

    p = as_points(points_mm, "points", min_points=3)
    if radius_mm <= 0:
        raise RegistrationError(f"normal radius must be > 0 mm, got {radius_mm}")
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.array(p, dtype=np.float64)))
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius_mm, max_nn=max_nn))
    n = np.asarray(pc.normals).copy()
    if len(p) > 3:
        n = propagate_orientation(p, n, k=min(10, len(p) - 1))
    return orient_outward(p, n)


def propagate_orientation(points_mm: np.ndarray, normals: np.ndarray, k: int = 10) -> np.ndarray:
    """Consistent normal signs by propagation over the MST of the kNN graph (Hoppe 1992)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree
    from scipy.spatial import cKDTree

    n = normals.copy()
    m = len(points_mm)
    _, nb = cKDTree(points_mm).query(points_mm, k=k + 1)
    rows = np.repeat(np.arange(m), k)
    cols = nb[:, 1:].reshape(-1)
    w = 1.0 - np.abs(np.einsum("ij,ij->i", n[rows], n[cols])) + 1e-6
    graph = coo_matrix((w, (rows, cols)), shape=(m, m)).tocsr()
    tree = minimum_spanning_tree(graph.maximum(graph.T))
    tree = tree.maximum(tree.T)
    visited = np.zeros(m, dtype=bool)
    for root in range(m):  # one traversal per connected component
        if visited[root]:
            continue
        order, pred = breadth_first_order(tree, root, directed=False)
        visited[order] = True
        for i in order[1:]:
            if n[i] @ n[pred[i]] < 0:
                n[i] = -n[i]
    return n


def orient_outward(points_mm: np.ndarray, normals: np.ndarray, k: int = 40) -> np.ndarray:
    """Flip all (consistently oriented) ``normals`` if they point inward on the whole.

    Vote by local convexity: on a convex region a point lies ahead of the centroid of its
    ``k`` nearest neighbours along its outward normal, ``n . (p - c_local) > 0``; flat regions
    (a table, drapes) vote ~0 and concave ones (eye sockets) against. Skin and bone seen from
    outside are convex on the whole, and unlike the global centroid rule a large background
    plane in a depth scene does not swing the vote. Uses at most 2000 sample points.
    """
    from scipy.spatial import cKDTree

    m = len(points_mm)
    if m < 4:
        return normals
    sample = np.arange(0, m, max(1, m // 2000))
    _, nb = cKDTree(points_mm).query(points_mm[sample], k=min(k, m))
    local = points_mm[nb].mean(axis=1)
    if np.einsum("ij,ij->", normals[sample], points_mm[sample] - local) < 0:
        normals = -normals
    return normals


def voxel_downsample(
    points_mm: np.ndarray, normals: np.ndarray | None, voxel_mm: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average points (and normals, renormalised) per cubic voxel of ``voxel_mm``."""
    if voxel_mm <= 0:
        return points_mm, normals
    keys = np.floor(points_mm / voxel_mm).astype(np.int64)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    out = np.zeros((len(counts), 3))
    np.add.at(out, inv, points_mm)
    out /= counts[:, None]
    if normals is None:
        return out, None
    nout = np.zeros((len(counts), 3))
    np.add.at(nout, inv, normals)
    norm = np.linalg.norm(nout, axis=1, keepdims=True)
    keep = norm[:, 0] > 1e-9
    return out[keep], nout[keep] / norm[keep]


# --------------------------------------------------------------------------- readers
def _require_file(path: Path, kinds: tuple[str, ...], what: str) -> Path:
    if not path.is_file():
        raise CloudError(f"{path}: {what} file not found")
    if path.suffix.lower() not in kinds:
        raise CloudError(
            f"{path}: unsupported {what} format {path.suffix or '(none)'!r}; "
            f"expected one of {', '.join(kinds)}"
        )
    return path


def read_cloud(path: str | Path, unit: str = "mm", frame: str = "REF") -> PointSet:
    """Read a measured point cloud (PLY, PCD, CSV, TXT, XYZ) and convert it to mm.

    Parameters
    ----------
    path
        The file.
    unit
        Unit of the file's coordinates: ``"mm"`` (default), ``"cm"`` or ``"m"``.
    frame
        Frame the cloud is expressed in (the tracker / reference frame, by default ``REF``).
    """
    p = _require_file(Path(path), _CLOUD_SUFFIXES, "point cloud")
    if unit not in UNIT_SCALE_TO_MM:
        raise CloudError(f"cloud unit must be one of {', '.join(UNIT_SCALE_TO_MM)}, got {unit!r}")
    if p.suffix.lower() in (".ply", ".pcd"):
        pts, nrm = _read_o3d_cloud(p)
    else:
        pts, nrm = _read_table(p)
    finite = np.all(np.isfinite(pts), axis=1)
    if nrm is not None:
        finite &= np.all(np.isfinite(nrm), axis=1) & (np.linalg.norm(nrm, axis=1) > 1e-12)
    pts = pts[finite]
    nrm = nrm[finite] if nrm is not None else None
    if len(pts) < 3:
        raise CloudError(f"{p}: fewer than 3 valid points ({len(pts)} after dropping NaN rows)")
    return PointSet(pts * UNIT_SCALE_TO_MM[unit], nrm, frame=frame, path=p)


def _read_o3d_cloud(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import open3d as o3d

    head = path.read_bytes()[:4]
    if path.suffix.lower() == ".ply" and head[:3] != b"ply":
        raise CloudError(f"{path}: not a PLY file (no 'ply' magic)")
    pc = o3d.io.read_point_cloud(str(path), format=path.suffix.lower()[1:])
    pts = np.asarray(pc.points, dtype=np.float64)
    if len(pts) == 0:
        raise CloudError(f"{path}: no points could be read (corrupt or empty point cloud)")
    nrm = np.asarray(pc.normals, dtype=np.float64) if pc.has_normals() else None
    return pts.copy(), (nrm.copy() if nrm is not None else None)


def _read_table(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CloudError(f"{path}: not a readable text point table ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise CloudError(f"{path}: empty point table")
    split = re.compile(r"[,;\s]+")
    first = [t for t in split.split(lines[0].strip()) if t]
    columns: dict[str, int] | None = None
    try:
        [float(t) for t in first]
    except ValueError:
        names = [t.strip().strip('"').lower() for t in first]
        columns = {name: i for i, name in enumerate(names)}
        if not {"x", "y", "z"} <= columns.keys():
            raise CloudError(
                f"{path}: header {first} must name columns x, y, z (and optionally nx, ny, nz)"
            ) from None
        lines = lines[1:]
    rows: list[list[float]] = []
    for lineno, ln in enumerate(lines, start=2 if columns else 1):
        toks = [t for t in split.split(ln.strip()) if t]
        try:
            rows.append([float(t) for t in toks])
        except ValueError:
            raise CloudError(f"{path}: line {lineno} is not numeric: {ln.strip()[:60]!r}") from None
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise CloudError(f"{path}: rows have different numbers of columns {sorted(widths)}")
    table = np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    if columns is None:
        if table.shape[1] not in (3, 6):
            raise CloudError(
                f"{path}: expected 3 (x y z) or 6 (x y z nx ny nz) columns, got {table.shape[1]}"
            )
        columns = {"x": 0, "y": 1, "z": 2}
        if table.shape[1] == 6:
            columns.update(nx=3, ny=4, nz=5)
    if len(table) and table.shape[1] <= max(columns.values()):
        raise CloudError(f"{path}: header names more columns than the rows have")
    pts = table[:, [columns["x"], columns["y"], columns["z"]]]
    nrm = None
    if {"nx", "ny", "nz"} <= columns.keys():
        nrm = table[:, [columns["nx"], columns["ny"], columns["nz"]]]
    return pts, nrm


def read_surface(path: str | Path, frame: str = "CT", max_points: int = 200_000) -> PointSet:
    """Read a model surface mesh (LPS mm) as its vertices with outward vertex normals.

    Parameters
    ----------
    path
        STL, PLY, OBJ or GLB mesh in LPS mm, read by :func:`scrubin.imaging.mesh_io.load_mesh` (GLB
        converted back from glTF metres); its provenance (source UIDs) is kept. A PLY without
        faces is read as a point cloud and its normals estimated.
    frame
        Frame of the model (``CT`` by default).
    max_points
        Larger meshes are voxel-downsampled to about this many points.
    """
    p = _require_file(Path(path), _MESH_SUFFIXES, "surface mesh")
    if p.suffix.lower() == ".ply" and not _ply_has_faces(p):
        cloud = read_cloud(p, frame=frame)
        nrm = cloud.normals
        if nrm is None:
            nrm = estimate_normals(cloud.points, 3.0 * _spacing(cloud.points))
        return PointSet(cloud.points, orient_outward(cloud.points, nrm), frame=frame, path=p)
    from scrubin.imaging.errors import ImagingError
    from scrubin.imaging.mesh_io import load_mesh

    try:
        mesh = load_mesh(p, expected_frame=frame, allow_unknown_frame=True)  # not a REF scene
    except ImagingError as exc:
        raise CloudError(f"{p}: {exc}") from None
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0:
        raise CloudError(f"{p}: mesh has no triangles")
    nrm = vertex_normals(verts, faces)
    used = np.linalg.norm(nrm, axis=1) > 0
    verts, nrm = verts[used], nrm[used]
    if len(verts) < 3:
        raise CloudError(f"{p}: mesh has fewer than 3 usable vertices")
    nrm = orient_outward(verts, nrm)
    if len(verts) > max_points:
        voxel = _spacing(verts) * np.sqrt(len(verts) / max_points)
        verts, nrm = voxel_downsample(verts, nrm, voxel)
    source = {k: v for k, v in dict(mesh.provenance).items() if v}
    return PointSet(verts, nrm, frame=frame, source=source, path=p)


def _ply_has_faces(path: Path) -> bool:
    """Whether a PLY header declares a non-empty ``face`` element."""
    head = path.read_bytes()[:4096]
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise CloudError(f"{path}: not a PLY file (no 'ply' magic or end_header)")
    m = re.search(rb"element\s+face\s+(\d+)", head[:end])
    return bool(m and int(m.group(1)) > 0)


def _spacing(points_mm: np.ndarray) -> float:
    """Median nearest-neighbour distance (mm) of a sample of the points."""
    from scipy.spatial import cKDTree

    p = np.asarray(points_mm)
    sample = p[:: max(1, len(p) // 2000)]
    d, _ = cKDTree(p).query(sample, k=2)
    return float(max(np.median(d[:, 1]), 1e-6))
