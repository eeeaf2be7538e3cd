"""Triangle surface meshes in patient space (DICOM LPS, millimetres).

A :class:`Mesh` is what every later stage consumes: registration samples its vertices,
the overlay renders it, exports write it. Vertices are LPS mm (PS3.3 C.7.6.2.1.1); faces are
counter-clockwise seen from outside, so right-hand face normals point outward (out of the
tissue). Provenance (SeriesInstanceUID, FrameOfReferenceUID) and the name of the frame the
vertices are in (``"CT"``: the scan's patient space; ``"REF"``: placed by a registration;
``""``: unknown, e.g. a file from other software) travel with the mesh so a later stage can
refuse a model from another scan or one already moved into another frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numba
import numpy as np
from numba import njit

if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:  # skip the too-old TBB (and its warning)
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]

from scrubin.imaging.errors import MeshError

#: Frame name of a mesh built from a scan: the scan's patient space, DICOM LPS mm
#: (``registration.frames.CT``; repeated here, imaging does not import registration).
CT_FRAME = "CT"
#: Frame name of a mesh whose frame is not known (a file that does not say).
UNKNOWN_FRAME = ""

#: Default colour (RGBA, 0..1) of a structure without one: bone ivory, opaque.
DEFAULT_COLOR: tuple[float, float, float, float] = (0.89, 0.85, 0.79, 1.0)


def _empty_provenance() -> dict[str, str]:
    return {"series_instance_uid": "", "frame_of_reference_uid": ""}


@njit(cache=True)
def _accumulate_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals: sum of the adjacent faces' cross products, normalised."""
    out = np.zeros((vertices.shape[0], 3))
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        ux = vertices[b, 0] - vertices[a, 0]
        uy = vertices[b, 1] - vertices[a, 1]
        uz = vertices[b, 2] - vertices[a, 2]
        vx = vertices[c, 0] - vertices[a, 0]
        vy = vertices[c, 1] - vertices[a, 1]
        vz = vertices[c, 2] - vertices[a, 2]
        nx = uy * vz - uz * vy
        ny = uz * vx - ux * vz
        nz = ux * vy - uy * vx
        for v in (a, b, c):
            out[v, 0] += nx
            out[v, 1] += ny
            out[v, 2] += nz
    for v in range(out.shape[0]):
        n = np.sqrt(out[v, 0] ** 2 + out[v, 1] ** 2 + out[v, 2] ** 2)
        if n > 0:
            out[v, 0] /= n
            out[v, 1] /= n
            out[v, 2] /= n
    return out


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (the sum of the adjacent faces' cross products).

    The one vertex-normal function of the project (meshes, overlay shading, surface clouds).
    Vertices without a non-degenerate face get a zero normal.

    Raises
    ------
    MeshError
        ``faces`` not ``(M, 3)`` vertex indices within range.
    """
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshError(f"mesh vertices must have shape (N, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or (len(f) and (f.min() < 0 or f.max() >= len(v))):
        raise MeshError(f"mesh faces must be (M, 3) vertex indices within range 0..{len(v) - 1}")
    return _accumulate_normals(v, f)


@dataclass
class Mesh:
    """A triangle mesh in LPS mm with provenance, name and display colour.

    Attributes
    ----------
    vertices
        ``(N, 3)`` float64 vertex positions, LPS mm.
    faces
        ``(M, 3)`` integer vertex indices, counter-clockwise seen from outside.
    name
        Structure name ("skull", "skin", ...).
    color
        RGBA in 0..1; alpha < 1 asks renderers for transparency.
    provenance
        ``{"series_instance_uid": ..., "frame_of_reference_uid": ...}`` of the source scan.
    normals
        Optional ``(N, 3)`` unit vertex normals (LPS); computed from the faces when omitted.
    frame
        Name of the frame the vertices are in (LPS axes, mm): :data:`CT_FRAME` for a model of
        the scan (default), ``"REF"`` after placing it with ``T_REF_CT``, :data:`UNKNOWN_FRAME`
        when a file did not say. Mesh files record it (:mod:`scrubin.imaging.mesh_io`).
    """

    vertices: np.ndarray
    faces: np.ndarray
    name: str = ""
    color: tuple[float, float, float, float] = DEFAULT_COLOR
    provenance: dict[str, str] = field(default_factory=_empty_provenance)
    normals: np.ndarray | None = None
    frame: str = CT_FRAME

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices)
        f = np.asarray(self.faces)
        if v.ndim != 2 or v.shape[1] != 3:
            raise MeshError(f"mesh vertices must have shape (N, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise MeshError(f"mesh faces must have shape (M, 3), got {f.shape}")
        if not np.issubdtype(f.dtype, np.integer):
            raise MeshError(f"mesh faces must be integer vertex indices, got dtype {f.dtype}")
        v = np.ascontiguousarray(v, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise MeshError("mesh vertices contain NaN or infinite coordinates")
        if f.dtype not in (np.int32, np.int64):
            f = f.astype(np.int64)
        f = np.ascontiguousarray(f)
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise MeshError(
                f"mesh face indices must lie in [0, {len(v) - 1}], got [{f.min()}, {f.max()}]"
            )
        color = tuple(float(c) for c in self.color)
        if len(color) == 3:
            color = (*color, 1.0)
        if len(color) != 4 or not all(0.0 <= c <= 1.0 for c in color):
            raise MeshError(f"mesh colour must be RGB or RGBA in 0..1, got {self.color!r}")
        if self.normals is not None:
            n = np.ascontiguousarray(self.normals, dtype=np.float64)
            if n.shape != v.shape or not np.all(np.isfinite(n)):
                raise MeshError(f"mesh normals must be finite with shape {v.shape}, got {n.shape}")
            self.normals = n
        self.vertices, self.faces, self.color = v, f, color  # type: ignore[assignment]
        self.provenance = {**_empty_provenance(), **dict(self.provenance)}
        if not isinstance(self.frame, str):
            raise MeshError(f"mesh frame must be a frame name (str), got {self.frame!r}")

    # ------------------------------------------------------------------ measures
    @property
    def colour(self) -> tuple[float, float, float, float]:
        """Alias of :attr:`color` (RGBA, 0..1)."""
        return self.color

    @property
    def n_vertices(self) -> int:
        """Number of vertices."""
        return int(len(self.vertices))

    @property
    def n_faces(self) -> int:
        """Number of triangles."""
        return int(len(self.faces))

    def vertex_normals(self) -> np.ndarray:
        """``(N, 3)`` unit vertex normals in LPS (stored ones, else area-weighted face normals)."""
        if self.normals is None:
            self.normals = vertex_normals(self.vertices, self.faces)
        return self.normals

    def face_cross(self) -> np.ndarray:
        """``(M, 3)`` un-normalised face normals (b - a) x (c - a); length = 2 x area, mm²."""
        v = self.vertices
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return np.cross(b - a, c - a)

    def face_areas(self) -> np.ndarray:
        """``(M,)`` triangle areas in mm²."""
        return 0.5 * np.linalg.norm(self.face_cross(), axis=1)

    def area(self) -> float:
        """Total surface area in mm²."""
        return float(self.face_areas().sum())

    def signed_volume(self) -> float:
        """Enclosed volume in mm³ by the divergence theorem: Σ a·(b×c)/6 over faces.

        Positive for a closed, outward-oriented mesh; meaningless for an open one.
        """
        v = self.vertices
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)

    def volume_mm3(self) -> float:
        """Absolute enclosed volume in mm³ (use with :meth:`is_watertight`)."""
        return abs(self.signed_volume())

    def bounds(self) -> np.ndarray:
        """``(2, 3)`` min / max LPS mm of the vertices."""
        if self.n_vertices == 0:
            raise MeshError("an empty mesh has no bounds")
        return np.stack([self.vertices.min(axis=0), self.vertices.max(axis=0)])

    def _directed_edges(self) -> np.ndarray:
        f = self.faces.astype(np.int64)
        n = np.int64(self.n_vertices)
        a = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
        b = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
        return a * n + b, b * n + a

    def is_watertight(self) -> bool:
        """True when closed and consistently oriented: every directed edge (a, b) occurs exactly
        once and its reverse (b, a) exactly once (each edge shared by two faces, opposite
        directions)."""
        if self.n_faces == 0:
            return False
        fwd, rev = self._directed_edges()
        fwd = np.sort(fwd)
        if np.any(fwd[1:] == fwd[:-1]):
            return False
        return bool(np.array_equal(fwd, np.sort(rev)))

    # ------------------------------------------------------------------ repairs
    def remove_degenerate(self) -> Mesh:
        """Weld vertices at identical positions, then drop faces that repeat a vertex or have
        zero area, then drop unused vertices. Returns a new mesh."""
        if self.n_faces == 0:
            return self.copy()
        _, first, inverse = np.unique(
            self.vertices, axis=0, return_index=True, return_inverse=True
        )
        faces = first[inverse.reshape(-1)][self.faces]
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
        keep &= faces[:, 0] != faces[:, 2]
        welded = replace(self, faces=faces[keep], normals=None)
        keep2 = np.linalg.norm(welded.face_cross(), axis=1) > 0.0
        return replace(welded, faces=welded.faces[keep2]).remove_unused_vertices()

    def remove_unused_vertices(self) -> Mesh:
        """Drop vertices no face uses (indices renumbered)."""
        used = np.zeros(self.n_vertices, dtype=bool)
        used[self.faces.reshape(-1)] = True
        if used.all():
            return self.copy()
        new_index = np.cumsum(used) - 1
        normals = None if self.normals is None else self.normals[used]
        return replace(
            self,
            vertices=self.vertices[used],
            faces=new_index[self.faces].astype(self.faces.dtype),
            normals=normals,
        )

    def flipped(self) -> Mesh:
        """The same surface with every face reversed (normals negated)."""
        normals = None if self.normals is None else -self.normals
        return replace(self, faces=self.faces[:, ::-1].copy(), normals=normals)

    def oriented_outward(self) -> Mesh:
        """Flip all faces when the enclosed signed volume is negative (closed meshes only).

        Orientation is decided for the whole mesh, not per connected component, so inner
        cavity surfaces (which face into the cavity) keep their correct orientation.
        """
        return self.flipped() if self.signed_volume() < 0 else self.copy()

    def transformed(self, matrix: np.ndarray, frame: str | None = None) -> Mesh:
        """Apply a 4x4 affine to the vertices (and normals); a mirroring matrix (det < 0)
        also reverses the faces so they keep facing outward. ``frame`` names the frame the
        result is in (e.g. ``"REF"`` after ``T_REF_CT``); None keeps :attr:`frame` (a change
        of axes or units within the same frame)."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise MeshError(f"transform must be a finite 4x4 matrix, got shape {m.shape}")
        det = np.linalg.det(m[:3, :3])
        if abs(det) < 1e-12:
            raise MeshError("transform is singular")
        verts = self.vertices @ m[:3, :3].T + m[:3, 3]
        faces = self.faces[:, ::-1].copy() if det < 0 else self.faces
        normals = None
        if self.normals is not None:
            normals = self.normals @ np.linalg.inv(m[:3, :3])
            normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
        return replace(self, vertices=verts, faces=faces, normals=normals,
                       frame=self.frame if frame is None else frame)

    def copy(self) -> Mesh:
        """A deep copy."""
        return replace(
            self,
            vertices=self.vertices.copy(),
            faces=self.faces.copy(),
            provenance=dict(self.provenance),
            normals=None if self.normals is None else self.normals.copy(),
        )

    def summary(self) -> dict[str, object]:
        """Counts, bounds (LPS mm), area (mm²), volume (mm³ and mL), watertightness, UIDs."""
        watertight = self.is_watertight()
        vol = self.volume_mm3()
        return {
            "name": self.name,
            "triangles": self.n_faces,
            "vertices": self.n_vertices,
            "bounds_lps_mm": self.bounds().tolist() if self.n_vertices else None,
            "area_mm2": self.area(),
            "volume_mm3": vol if watertight else None,
            "volume_ml": vol / 1000.0 if watertight else None,
            "watertight": watertight,
            "frame": self.frame,
            **self.provenance,
        }


def concatenate(meshes: list[Mesh], name: str = "") -> Mesh:
    """One mesh holding all faces of ``meshes`` (first mesh's colour and provenance).

    Refuses meshes in different frames (their vertices cannot share one coordinate system).
    """
    if not meshes:
        raise MeshError("cannot concatenate an empty list of meshes")
    frames = sorted({m.frame for m in meshes})
    if len(frames) > 1:
        raise MeshError(f"cannot merge meshes in different frames {frames}")
    offsets = np.cumsum([0] + [m.n_vertices for m in meshes[:-1]])
    verts = np.concatenate([m.vertices for m in meshes])
    pairs = zip(meshes, offsets, strict=True)
    faces = np.concatenate([m.faces.astype(np.int64) + o for m, o in pairs])
    normals = None
    if all(m.normals is not None for m in meshes):
        normals = np.concatenate([m.normals for m in meshes])  # type: ignore[misc]
    first = meshes[0]
    return Mesh(verts, faces, name or first.name, first.color, dict(first.provenance), normals,
                first.frame)
