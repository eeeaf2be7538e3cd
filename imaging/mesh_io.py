"""Mesh files: STL, PLY, OBJ (LPS mm) and GLB (glTF 2.0, metres, +Y up), written atomically.

Coordinates
-----------
STL, PLY and OBJ hold the vertices exactly as the :class:`~imaging.mesh.Mesh` has them: DICOM
patient LPS in millimetres (PLY as float64, STL as float32 - the format's only type). GLB
follows glTF 2.0 (Khronos, section 3.4 "Coordinate System and Units": metres, +Y up, +Z
forward): glTF ``(X, Y, Z) = 0.001 · (L, S, -P)``, i.e. ``(x, z, -y)`` of LPS - a proper
rotation (det +1, never a mirror) plus the mm -> m scale, baked into the vertices. A patient
lying supine therefore stands upright in a viewer, facing +Z, with the patient's left at +X.
The 4x4 matrix (:data:`LPS_MM_TO_GLTF`) and the source UIDs are stored in ``asset.extras``
(and in each mesh's ``extras``), so :func:`load_mesh` converts a GLB back to LPS mm exactly.

Frame and axis tags (:mod:`scrubin.imaging.mesh_tags`): every file says which frame its
coordinates are in (``FRAME=CT`` in the STL header, ``frame CT`` comments in PLY/OBJ,
``frame`` in GLB extras) and carries 3D Slicer's ``SPACE=LPS`` tag; files tagged
``SPACE=RAS`` (Slicer's RAS export) are read with x and y negated into LPS.
:func:`load_meshes` with ``expected_frame`` refuses a file in another frame (a scene GLB
already placed in REF is not a CT model) and, unless allowed, a file that does not say.

Every writer writes to a temporary file in the target folder and renames it into place: a
failed write leaves no partial file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from scrubin.imaging.errors import MeshError
from scrubin.imaging.fileio import write_atomic
from scrubin.imaging.mesh import UNKNOWN_FRAME, Mesh, concatenate
from scrubin.imaging.mesh_tags import (
    apply_comments,
    check_frames,
    comment_lines,
    glb_frame,
    parse_stl_header,
    stl_header,
    to_lps,
)

#: LPS millimetres -> glTF metres (+Y up = superior, +Z = anterior, +X = patient left).
LPS_MM_TO_GLTF: np.ndarray = np.array(
    [[0.001, 0.0, 0.0, 0.0], [0.0, 0.0, 0.001, 0.0], [0.0, -0.001, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
FORMATS = (".glb", ".stl", ".ply", ".obj")
_GLB_MAGIC = 0x46546C67
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942


def mesh_format(path: str | Path) -> str:
    """The format (".glb", ".stl", ".ply", ".obj") chosen by the file name's extension."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise MeshError(
            f"cannot tell the mesh format of {str(path)!r}: expected an extension of "
            f"{', '.join(FORMATS)}"
        )
    return ext


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    if not path.parent.is_dir():
        raise MeshError(f"output folder {str(path.parent)!r} does not exist")
    write_atomic(path, write, suffix=".part")


def save_mesh(meshes: Mesh | Sequence[Mesh], path: str | Path) -> Path:
    """Write one mesh or several structures to ``path``; the extension picks the format.

    GLB keeps each structure as its own mesh node with its own material; STL, PLY and OBJ
    hold one surface, so several structures are merged (STL/PLY/OBJ carry no per-structure
    colour). Returns the path.
    """
    items = [meshes] if isinstance(meshes, Mesh) else list(meshes)
    if not items or not all(isinstance(m, Mesh) for m in items):
        raise MeshError("save_mesh needs a Mesh or a non-empty list of Mesh")
    if any(m.n_faces == 0 for m in items):
        raise MeshError(f"refusing to write an empty mesh (no triangles) to {str(path)!r}")
    fmt = mesh_format(path)
    path = Path(path)
    if fmt == ".glb":
        _atomic_write(path, lambda p: _write_glb(items, p))
        return path
    mesh = items[0] if len(items) == 1 else concatenate(items)
    writer = {".stl": _write_stl, ".ply": _write_ply, ".obj": _write_obj}[fmt]
    _atomic_write(path, lambda p: writer(mesh, p))
    return path


# ---------------------------------------------------------------------- STL / PLY / OBJ
def _write_stl(mesh: Mesh, path: Path) -> None:
    """Binary STL: 80-byte header, uint32 count, per facet normal + 3 vertices (float32)."""
    dtype = np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    rec = np.zeros(mesh.n_faces, dtype=dtype)
    cross = mesh.face_cross()
    rec["n"] = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-300)
    rec["v"] = mesh.vertices[mesh.faces]
    header = stl_header(mesh)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(struct.pack("<I", mesh.n_faces))
        fh.write(rec.tobytes())


def _write_ply(mesh: Mesh, path: Path) -> None:
    """Binary little-endian PLY: double x y z, float nx ny nz, uchar RGBA; int faces."""
    normals = mesh.vertex_normals()
    rgba = np.round(np.asarray(mesh.color) * 255).astype(np.uint8)
    vdt = np.dtype([("p", "<f8", 3), ("n", "<f4", 3), ("c", "u1", 4)])
    vert = np.empty(mesh.n_vertices, dtype=vdt)
    vert["p"], vert["n"], vert["c"] = mesh.vertices, normals, rgba
    fdt = np.dtype([("k", "u1"), ("f", "<i4", 3)])
    face = np.empty(mesh.n_faces, dtype=fdt)
    face["k"], face["f"] = 3, mesh.faces
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {c}" for c in comment_lines(mesh)]
    header += [f"element vertex {mesh.n_vertices}"]
    header += [f"property double {a}" for a in "xyz"]
    header += [f"property float n{a}" for a in "xyz"]
    header += [f"property uchar {c}" for c in ("red", "green", "blue", "alpha")]
    header += [f"element face {mesh.n_faces}", "property list uchar int vertex_indices"]
    header += ["end_header"]
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii", "replace"))
        fh.write(vert.tobytes())
        fh.write(face.tobytes())


def _write_obj(mesh: Mesh, path: Path) -> None:
    """Wavefront OBJ text: ``v`` (LPS mm, 6 decimals), ``vn``, ``f a//a b//b c//c``."""
    n = mesh.vertex_normals()
    lines = [f"# {c}" for c in comment_lines(mesh)]
    lines.append(f"o {mesh.name or 'mesh'}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
        np.savetxt(fh, mesh.vertices, fmt="v %.6f %.6f %.6f")
        np.savetxt(fh, n, fmt="vn %.6f %.6f %.6f")
        f = mesh.faces.astype(np.int64) + 1
        np.savetxt(fh, np.repeat(f, 2, axis=1), fmt="f %d//%d %d//%d %d//%d")


# ---------------------------------------------------------------------- GLB
def _pad4(b: bytes, fill: bytes) -> bytes:
    return b + fill * ((4 - len(b) % 4) % 4)


def _gltf_extras(mesh: Mesh) -> dict[str, object]:
    return {
        "lps_mm_to_gltf": LPS_MM_TO_GLTF.tolist(),
        "series_instance_uid": mesh.provenance.get("series_instance_uid", ""),
        "frame_of_reference_uid": mesh.provenance.get("frame_of_reference_uid", ""),
        "source_frame": "DICOM LPS mm",
        "frame": mesh.frame,
        # "YES" only for a model of de-identified DICOM (scrubin deid); "NO" says it is not
        "patient_identity_removed": mesh.provenance.get("patient_identity_removed", "UNKNOWN"),
    }


def _write_glb(meshes: list[Mesh], path: Path) -> None:
    """GLB container (glTF 2.0 section 4.4): 12-byte header, JSON chunk, BIN chunk."""
    rot = LPS_MM_TO_GLTF[:3, :3]
    unit_rot = rot / 0.001
    blob = bytearray()
    views: list[dict] = []
    accessors: list[dict] = []
    gmeshes: list[dict] = []
    materials: list[dict] = []
    nodes: list[dict] = []

    def add_view(data: bytes, target: int) -> int:
        views.append(
            {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), "target": target}
        )
        blob.extend(_pad4(data, b"\0"))
        return len(views) - 1

    for m in meshes:
        pos = (m.vertices @ rot.T + LPS_MM_TO_GLTF[:3, 3]).astype("<f4")
        nrm = (m.vertex_normals() @ unit_rot.T).astype("<f4")
        idx = m.faces.astype("<u4")
        a_pos = len(accessors)
        accessors.append({
            "bufferView": add_view(pos.tobytes(), 34962), "componentType": 5126,
            "count": len(pos), "type": "VEC3",
            "min": pos.min(axis=0).tolist(), "max": pos.max(axis=0).tolist(),
        })
        accessors.append({
            "bufferView": add_view(nrm.tobytes(), 34962), "componentType": 5126,
            "count": len(nrm), "type": "VEC3",
        })
        accessors.append({
            "bufferView": add_view(idx.tobytes(), 34963), "componentType": 5125,
            "count": int(idx.size), "type": "SCALAR",
        })
        alpha = float(m.color[3])
        material = {
            "name": m.name or f"structure{len(materials)}",
            "pbrMetallicRoughness": {
                "baseColorFactor": [float(c) for c in m.color],
                "metallicFactor": 0.0, "roughnessFactor": 0.8,
            },
            "alphaMode": "BLEND" if alpha < 1.0 else "OPAQUE",
            "doubleSided": False,
        }
        materials.append(material)
        gmeshes.append({
            "name": m.name or f"structure{len(gmeshes)}",
            "primitives": [{
                "attributes": {"POSITION": a_pos, "NORMAL": a_pos + 1},
                "indices": a_pos + 2, "material": len(materials) - 1, "mode": 4,
            }],
            "extras": {**_gltf_extras(m), "name": m.name},
        })
        nodes.append({"mesh": len(gmeshes) - 1, "name": m.name or f"structure{len(nodes)}"})

    doc = {
        "asset": {"version": "2.0", "generator": "scrubin", "extras": _gltf_extras(meshes[0])},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(nodes)))}],
        "nodes": nodes, "meshes": gmeshes, "materials": materials,
        "accessors": accessors, "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    js = _pad4(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    bn = bytes(blob)
    total = 12 + 8 + len(js) + 8 + len(bn)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<III", _GLB_MAGIC, 2, total))
        fh.write(struct.pack("<II", len(js), _CHUNK_JSON) + js)
        fh.write(struct.pack("<II", len(bn), _CHUNK_BIN) + bn)


# ---------------------------------------------------------------------- readers
def load_meshes(
    path: str | Path, expected_frame: str | None = None, allow_unknown_frame: bool = False
) -> list[Mesh]:
    """Read every structure of a mesh file as LPS-mm :class:`Mesh` objects.

    GLB: each mesh primitive becomes one Mesh, converted back to LPS mm with the inverse of
    the matrix stored in ``asset.extras`` (a GLB without it is assumed to follow
    :data:`LPS_MM_TO_GLTF`); node transforms are applied. STL/PLY/OBJ: one Mesh in LPS mm
    (a ``SPACE=RAS`` tag, 3D Slicer's convention, converts RAS to LPS; no tag means LPS, as
    in Slicer); STL's unshared facet corners are welded. Each Mesh's ``frame`` is the frame
    the file declares (:mod:`scrubin.imaging.mesh_tags`), ``""`` when it does not say.

    Parameters
    ----------
    path
        The mesh file.
    expected_frame
        Frame the caller needs (e.g. ``"CT"``); None reads any frame.
    allow_unknown_frame
        With ``expected_frame``: accept a file that does not say its frame (the meshes keep
        ``frame == ""`` so the caller can warn).

    Raises
    ------
    MeshError
        Unreadable file; a frame other than ``expected_frame`` (message names the file, the
        frame found and the frame expected); an undeclared frame unless allowed.
    """
    path = Path(path)
    fmt = mesh_format(path)
    if not path.is_file():
        raise MeshError(f"mesh file {str(path)!r} does not exist")
    data = path.read_bytes()
    try:
        if fmt == ".glb":
            meshes = _read_glb(data, path)
        else:
            reader = {".stl": _read_stl, ".ply": _read_ply, ".obj": _read_obj}[fmt]
            meshes = [reader(data, path)]
    except MeshError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, StopIteration,
            AttributeError, RecursionError, struct.error, UnicodeDecodeError) as exc:
        raise MeshError(f"cannot read {fmt[1:].upper()} file {str(path)!r}: {exc}") from None
    check_frames(meshes, path, expected_frame, allow_unknown_frame)
    return meshes


def load_mesh(
    path: str | Path, expected_frame: str | None = None, allow_unknown_frame: bool = False
) -> Mesh:
    """Read a mesh file (GLB, STL, PLY, OBJ) as one LPS-mm Mesh (GLB structures merged);
    ``expected_frame`` and ``allow_unknown_frame`` as in :func:`load_meshes`."""
    meshes = load_meshes(path, expected_frame, allow_unknown_frame)
    return meshes[0] if len(meshes) == 1 else concatenate(meshes)


def _weld(tri_vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = tri_vertices.reshape(-1, 3)
    verts, inverse = np.unique(flat, axis=0, return_inverse=True)
    return verts, inverse.reshape(-1, 3)


def _read_stl(data: bytes, path: Path) -> Mesh:
    if len(data) >= 84:
        (n,) = struct.unpack_from("<I", data, 80)
        if 84 + 50 * n == len(data):
            dtype = np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
            rec = np.frombuffer(data, dtype=dtype, count=n, offset=84)
            verts, faces = _weld(rec["v"].astype(np.float64))
            name, frame, space = parse_stl_header(data[:80].decode("ascii", "replace"))
            return to_lps(Mesh(verts, faces, name, frame=frame), space)
    text = data.decode("ascii")
    if not text.lstrip().startswith("solid"):
        raise MeshError(f"{str(path)!r} is neither binary nor ASCII STL")
    name, frame, space = parse_stl_header(text.lstrip().splitlines()[0][5:])
    coords = [line.split()[1:4] for line in text.splitlines() if line.strip().startswith("vertex")]
    arr = np.asarray(coords, dtype=np.float64)
    if len(arr) == 0 or len(arr) % 3:
        raise MeshError(f"ASCII STL {str(path)!r} has no complete facets")
    verts, faces = _weld(arr.reshape(-1, 3, 3))
    return to_lps(Mesh(verts, faces, name, frame=frame), space)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _read_ply(data: bytes, path: Path) -> Mesh:
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise MeshError(f"{str(path)!r} is not a PLY file (no 'ply' magic or end_header)")
    header = data[:end].decode("ascii").splitlines()
    body = data[end + len(b"end_header"):]
    body = body[2:] if body.startswith(b"\r\n") else body[1:]
    fmt = next(line.split()[1] for line in header if line.startswith("format"))
    comments = [line[8:] for line in header if line.startswith("comment ")]
    elements: list[tuple[str, int, list[list[str]]]] = []
    for line in header:
        parts = line.split()
        if parts and parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts and parts[0] == "property":
            elements[-1][2].append(parts[1:])
    if fmt == "ascii":
        tokens = body.decode("ascii").split()
        pos = 0
        verts = faces = None
        for name, count, props in elements:
            if name == "vertex":
                k = len(props)
                arr = np.asarray(tokens[pos: pos + k * count], dtype=np.float64).reshape(count, k)
                names = [p[-1] for p in props]
                verts = arr[:, [names.index(a) for a in "xyz"]]
                pos += k * count
            elif name == "face":
                rows = []
                for _ in range(count):
                    n = int(tokens[pos])
                    rows.append([int(t) for t in tokens[pos + 1: pos + 1 + n]])
                    pos += 1 + n
                faces = _fan(rows)
    elif fmt == "binary_little_endian":
        offset = 0
        verts = faces = None
        for name, count, props in elements:
            if props and props[0][0] == "list":
                ctype, itype = _PLY_TYPES[props[0][1]], _PLY_TYPES[props[0][2]]
                first = np.frombuffer(body, dtype="<" + ctype, count=1, offset=offset)
                n = int(first[0]) if count else 3
                dt = np.dtype([("k", "<" + ctype), ("f", "<" + itype, n)])
                rec = np.frombuffer(body, dtype=dt, count=count, offset=offset)
                if np.any(rec["k"] != n):
                    raise MeshError(f"PLY {str(path)!r}: mixed polygon sizes are not supported")
                offset += dt.itemsize * count
                if name == "face":
                    faces = _fan(rec["f"].tolist()) if n != 3 else rec["f"].astype(np.int64)
                continue
            dt = np.dtype([(p[1], "<" + _PLY_TYPES[p[0]]) for p in props])
            rec = np.frombuffer(body, dtype=dt, count=count, offset=offset)
            offset += dt.itemsize * count
            if name == "vertex":
                verts = np.stack([rec[a].astype(np.float64) for a in "xyz"], axis=1)
    else:
        raise MeshError(f"PLY {str(path)!r}: format {fmt!r} not supported (ascii, binary LE)")
    if verts is None or faces is None:
        raise MeshError(f"PLY {str(path)!r} lacks a vertex or face element")
    return apply_comments(Mesh(verts, faces, frame=UNKNOWN_FRAME), comments)


def _fan(polygons: list[list[int]]) -> np.ndarray:
    tris = [(p[0], p[t], p[t + 1]) for p in polygons for t in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _read_obj(data: bytes, path: Path) -> Mesh:
    verts: list[list[float]] = []
    polys: list[list[int]] = []
    comments: list[str] = []
    for line in data.decode("utf-8").splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
            polys.append([i - 1 if i > 0 else len(verts) + i for i in idx])
        elif line.startswith("#"):
            comments.append(line[1:].strip())
    if not verts or not polys:
        raise MeshError(f"OBJ {str(path)!r} has no vertices or faces")
    return apply_comments(Mesh(np.asarray(verts), _fan(polys), frame=UNKNOWN_FRAME), comments)


def _node_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major
    m = np.eye(4)
    x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    m[:3, :3] = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]) * np.asarray(node.get("scale", [1.0, 1.0, 1.0]))
    m[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
    return m


_COMPONENTS = {5120: "i1", 5121: "u1", 5122: "i2", 5123: "u2", 5125: "u4", 5126: "f4"}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _read_glb(data: bytes, path: Path) -> list[Mesh]:
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2 or length > len(data):
        raise MeshError(f"{str(path)!r} is not a glTF 2.0 binary (GLB) file")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    if jtype != _CHUNK_JSON:
        raise MeshError(f"GLB {str(path)!r}: first chunk is not JSON")
    doc = json.loads(data[20: 20 + jlen])
    boff = 20 + jlen
    blen, btype = struct.unpack_from("<II", data, boff) if boff + 8 <= len(data) else (0, 0)
    binary = data[boff + 8: boff + 8 + blen] if btype == _CHUNK_BIN else b""
    extras = doc.get("asset", {}).get("extras", {})
    to_gltf = np.asarray(extras.get("lps_mm_to_gltf", LPS_MM_TO_GLTF), dtype=np.float64)
    if to_gltf.shape != (4, 4) or abs(np.linalg.det(to_gltf[:3, :3])) < 1e-15:
        raise MeshError(f"GLB {str(path)!r}: asset.extras.lps_mm_to_gltf is not an invertible 4x4")
    to_lps = np.linalg.inv(to_gltf)

    def accessor(i: int) -> np.ndarray:
        acc = doc["accessors"][i]
        view = doc["bufferViews"][acc["bufferView"]]
        width = _WIDTH[acc["type"]]
        dt = np.dtype("<" + _COMPONENTS[acc["componentType"]])
        size, count = dt.itemsize * width, int(acc["count"])
        vstart, vlen = int(view.get("byteOffset", 0)), int(view["byteLength"])
        start = vstart + int(acc.get("byteOffset", 0))
        stride = int(view.get("byteStride", size))
        # glTF 2.0 §3.6.2.4 / §5.11: the accessor lies inside its bufferView, the view inside
        # the buffer, byteStride 4..252 and at least one element (no overlap, never negative)
        if (count < 1 or vstart < 0 or start < vstart or not size <= stride <= max(252, size)
                or vstart + vlen > len(binary)
                or start + stride * (count - 1) + size > vstart + vlen):
            raise MeshError(f"GLB {str(path)!r}: accessor {i} (count {count}, stride {stride}) "
                            f"or its bufferView (offset {vstart}, length {vlen}) lies outside "
                            f"the {len(binary)}-byte binary buffer")
        raw = np.frombuffer(binary, dtype=np.uint8, count=stride * (count - 1) + size,
                            offset=start)
        rows = np.lib.stride_tricks.as_strided(raw, (count, size), (stride, 1))
        return np.ascontiguousarray(rows).view(dt).reshape(count, width)

    node_of_mesh = {n["mesh"]: _node_matrix(n) for n in doc.get("nodes", []) if "mesh" in n}
    out = []
    for mi, gm in enumerate(doc.get("meshes", [])):
        node = node_of_mesh.get(mi, np.eye(4))
        mx = gm.get("extras", {})
        for prim in gm["primitives"]:
            if prim.get("mode", 4) != 4:
                continue
            pos = accessor(prim["attributes"]["POSITION"]).astype(np.float64)
            pos = pos @ node[:3, :3].T + node[:3, 3]
            if "indices" in prim:
                faces = accessor(prim["indices"]).reshape(-1, 3).astype(np.int64)
            else:
                faces = np.arange(len(pos), dtype=np.int64).reshape(-1, 3)
            color = (0.8, 0.8, 0.8, 1.0)
            if "material" in prim:
                mat = doc["materials"][prim["material"]]
                color = mat.get("pbrMetallicRoughness", {}).get("baseColorFactor", color)
            mesh = Mesh(pos, faces, mx.get("name", gm.get("name", "")), tuple(color), {
                "series_instance_uid": mx.get("series_instance_uid",
                                              extras.get("series_instance_uid", "")),
                "frame_of_reference_uid": mx.get("frame_of_reference_uid",
                                                 extras.get("frame_of_reference_uid", "")),
            }, frame=glb_frame(doc, mx, node))
            out.append(mesh.transformed(to_lps))
    if not out:
        raise MeshError(f"GLB {str(path)!r} holds no triangle mesh")
    return out
