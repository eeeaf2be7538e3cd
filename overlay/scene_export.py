"""One GLB scene for headset apps: the models placed in the patient reference frame (REF).

Conventions (those of :mod:`scrubin.imaging.mesh_io`, glTF 2.0 section 3.4 "Coordinate System and
Units"): mesh vertices are the CT (LPS mm) vertices converted with
``M = LPS_MM_TO_GLTF`` (glTF = 0.001 (L, S, -P), metres, +Y up), exactly as ``save_mesh`` writes
them. The scene's world is the REF frame expressed through the same axis map ``M`` (glTF =
0.001 (x, z, -y) of REF mm), so each model node carries ``M @ T_REF_CT @ M^-1`` (column-major
``matrix``): a viewer shows the models where the registration puts them relative to the
reference marker. Optional nodes ``CAMERA`` (the camera's pose ``M @ T_REF_CAMERA @ M^-1``) and
one per tool (``M @ T_REF_TOOL @ M^-1``) carry the current tracking transforms.

``scene.extras`` holds the frames and UIDs: ``world_frame`` ("REF"), ``mesh_frame`` ("CT"),
``lps_mm_to_gltf``, ``T_REF_CT`` (project JSON form, mm), ``T_CAMERA_REF`` when given, tool
poses, ``frame_of_reference_uid`` and ``series_instance_uid``. ``imaging.mesh_io.load_meshes``
reads the file back in REF mm (it applies the node matrices then ``M^-1``), and so
``asset.extras.frame`` and every mesh's ``extras.frame`` say ``"REF"``
(:mod:`scrubin.imaging.mesh_tags`): loading the scene where a CT model is expected
(``load_meshes(..., expected_frame="CT")``, ``overlay --model``) is refused instead of
applying ``T_REF_CT`` a second time.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.fileio import temp_path
from scrubin.imaging.mesh import Mesh
from scrubin.imaging.mesh_io import LPS_MM_TO_GLTF, save_mesh
from scrubin.overlay.errors import OverlayError
from scrubin.overlay.provenance import check_frame_of_reference
from scrubin.registration.frames import CAMERA, CT, REF, Transform

_GLB_MAGIC = 0x46546C67
_CHUNK_JSON = 0x4E4F534A


def gltf_matrix(T: Transform) -> list[float]:
    """``M @ T @ M^-1`` as a glTF node matrix (16 floats, column-major)."""
    m = LPS_MM_TO_GLTF @ T.matrix @ np.linalg.inv(LPS_MM_TO_GLTF)
    return [float(x) for x in m.T.reshape(-1)]


def _read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    magic, _version, _length = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC:
        raise OverlayError("internal: mesh_io wrote something that is not a GLB")
    jlen, _ = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20:20 + jlen])
    return doc, data[20 + jlen:]


def export_scene(
    path: str | Path,
    meshes: Sequence[Mesh],
    T_ref_ct: Transform,
    T_camera_ref: Transform | None = None,
    tools: Mapping[str, Transform] | None = None,
) -> Path:
    """Write the scene GLB (module docstring) atomically; returns the path.

    Parameters
    ----------
    meshes
        Models in CT (LPS mm), all of the registration's FrameOfReferenceUID.
    T_ref_ct
        Registration ``T_REF_CT`` (mm).
    T_camera_ref
        Current tracking pose ``T_CAMERA_REF`` (mm), or None.
    tools
        Tool name -> ``T_REF_TOOL`` (mm).
    """
    p = Path(path)
    if p.suffix.lower() != ".glb":
        raise OverlayError(f"scene file must end in .glb, got {str(p)!r}")
    if not p.parent.is_dir():
        raise OverlayError(f"output folder {str(p.parent)!r} does not exist")
    items = list(meshes)
    if not items or not all(isinstance(m, Mesh) for m in items):
        raise OverlayError("export_scene needs a non-empty list of imaging.mesh.Mesh")
    if not isinstance(T_ref_ct, Transform) or T_ref_ct.src != CT or T_ref_ct.dst != REF:
        raise OverlayError("T_ref_ct must be a Transform from CT to REF")
    reg_uid = T_ref_ct.source.get("frame_of_reference_uid", "")
    for m in items:
        if m.frame and m.frame != CT:
            raise OverlayError(f"model {m.name!r} is in frame {m.frame!r}, expected CT: "
                               "export_scene places CT models with T_REF_CT")
        check_frame_of_reference(reg_uid, m.provenance.get("frame_of_reference_uid", ""),
                                 f"model {m.name!r}'s")
    if T_camera_ref is not None and (T_camera_ref.src != REF or T_camera_ref.dst != CAMERA):
        raise OverlayError("T_camera_ref must be a Transform from REF to CAMERA")
    for name, t in (tools or {}).items():
        if not isinstance(t, Transform) or t.dst != REF:
            raise OverlayError(f"tool {name!r}: pose must be a Transform into REF")
    tmp = temp_path(p, ".glb")
    try:
        save_mesh(items, tmp)
        doc, rest = _read_glb(tmp.read_bytes())
        # what load_meshes returns (node matrices applied) is in REF, not CT
        doc["asset"].setdefault("extras", {})["frame"] = REF
        for gm in doc["meshes"]:
            gm.setdefault("extras", {})["frame"] = REF
        node_m = gltf_matrix(T_ref_ct)
        for node in doc["nodes"]:
            node["matrix"] = node_m
            node.setdefault("extras", {})["transform"] = "T_REF_CT"
        scene_nodes = list(range(len(doc["nodes"])))
        extras: dict[str, Any] = {
            "world_frame": REF, "mesh_frame": CT,
            "lps_mm_to_gltf": LPS_MM_TO_GLTF.tolist(),
            "T_REF_CT": T_ref_ct.to_json(),
            "frame_of_reference_uid": reg_uid or items[0].provenance.get(
                "frame_of_reference_uid", ""),
            "series_instance_uid": items[0].provenance.get("series_instance_uid", ""),
        }
        if T_camera_ref is not None:
            doc["nodes"].append({"name": CAMERA, "matrix": gltf_matrix(T_camera_ref.inverse())})
            scene_nodes.append(len(doc["nodes"]) - 1)
            extras["T_CAMERA_REF"] = T_camera_ref.to_json()
        if tools:
            extras["tools"] = {}
            for name, t in tools.items():
                doc["nodes"].append({"name": str(name), "matrix": gltf_matrix(t)})
                scene_nodes.append(len(doc["nodes"]) - 1)
                extras["tools"][str(name)] = t.to_json()
        doc["scenes"] = [{"name": "scrubin scene (REF)", "nodes": scene_nodes,
                          "extras": extras}]
        js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        js += b" " * ((4 - len(js) % 4) % 4)
        total = 12 + 8 + len(js) + len(rest)
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<III", _GLB_MAGIC, 2, total))
            fh.write(struct.pack("<II", len(js), _CHUNK_JSON) + js)
            fh.write(rest)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
