"""Scene GLB: opens in trimesh with the models placed by T_REF_CT; extras; rejections."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh

from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import Mesh
from scrubin.imaging.mesh_io import LPS_MM_TO_GLTF, load_meshes
from scrubin.overlay.errors import OverlayError
from scrubin.overlay.scene_export import export_scene
from scrubin.registration.frames import CAMERA, CT, REF, TOOL, Transform

UID = "1.2.826.0.1.3680043.2.1125.1"


def _tetra(name: str, offset: float) -> Mesh:
    v = np.array([[0, 0, 0], [30, 0, 0], [0, 30, 0], [0, 0, 30.0]]) + offset
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return Mesh(v, f, name, (0.9, 0.8, 0.7, 1.0),
                {"series_instance_uid": "1.2.3", "frame_of_reference_uid": UID})


def _reg() -> Transform:
    c, s = np.cos(0.4), np.sin(0.4)
    r = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return Transform.from_rt(r, [100.0, -50.0, 20.0], CT, REF,
                             source={"frame_of_reference_uid": UID})


def test_trimesh_places_the_models_in_ref(tmp_path) -> None:
    meshes = [_tetra("skull", 0.0), _tetra("skin", 50.0)]
    t_ref_ct = _reg()
    t_cam_ref = Transform.from_rt(np.eye(3), [0, 0, 500.0], REF, CAMERA)
    tool = Transform.from_rt(np.eye(3), [5, 6, 7.0], TOOL, REF)
    out = export_scene(tmp_path / "scene.glb", meshes, t_ref_ct, t_cam_ref, {"Pointer": tool})
    scene = trimesh.load(out, force="scene")
    placed = {}
    for node in scene.graph.nodes_geometry:
        m, geom = scene.graph[node]
        g = scene.geometry[geom]
        placed[node] = trimesh.transform_points(g.vertices, m)
    assert sorted(placed) == ["skin", "skull"]
    for mesh in meshes:
        ref_mm = t_ref_ct.apply(mesh.vertices)
        expect = ref_mm @ LPS_MM_TO_GLTF[:3, :3].T  # metres, glTF axes of REF
        got = placed[mesh.name]
        assert got.shape == expect.shape
        # trimesh may reorder vertices: compare as sets
        d = np.linalg.norm(got[:, None] - expect[None], axis=2).min(axis=1)
        assert d.max() < 1e-6
    back = load_meshes(out)  # mesh_io reads it back in REF mm
    np.testing.assert_allclose(back[0].vertices, t_ref_ct.apply(meshes[0].vertices), atol=1e-3)
    # camera node: the camera centre in REF (0, 0, -500) mm -> glTF metres
    cam_m = scene.graph.get("CAMERA")[0]
    np.testing.assert_allclose(cam_m[:3, 3], LPS_MM_TO_GLTF[:3, :3] @ [0, 0, -500.0],
                               atol=1e-9)


def test_extras_hold_frames_and_uids(tmp_path) -> None:
    out = export_scene(tmp_path / "s.glb", [_tetra("skull", 0.0)], _reg())
    data = out.read_bytes()
    jlen = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20:20 + jlen])
    ex = doc["scenes"][0]["extras"]
    assert ex["world_frame"] == REF and ex["mesh_frame"] == CT
    assert ex["frame_of_reference_uid"] == UID and ex["series_instance_uid"] == "1.2.3"
    np.testing.assert_allclose(ex["T_REF_CT"]["matrix"], _reg().matrix)
    assert "T_CAMERA_REF" not in ex
    assert doc["nodes"][0]["extras"]["transform"] == "T_REF_CT"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.glb"]


def test_rejections_leave_no_file(tmp_path) -> None:
    m = [_tetra("skull", 0.0)]
    with pytest.raises(OverlayError, match=".glb"):
        export_scene(tmp_path / "s.gltf", m, _reg())
    with pytest.raises(OverlayError, match="does not exist"):
        export_scene(tmp_path / "no" / "s.glb", m, _reg())
    with pytest.raises(OverlayError, match="non-empty list"):
        export_scene(tmp_path / "s.glb", [], _reg())
    with pytest.raises(OverlayError, match="CT to REF"):
        export_scene(tmp_path / "s.glb", m, _reg().inverse())
    other = Transform(_reg().matrix, CT, REF, source={"frame_of_reference_uid": "9.9"})
    with pytest.raises(OverlayError, match="another scan"):
        export_scene(tmp_path / "s.glb", m, other)
    with pytest.raises(OverlayError, match="REF to CAMERA"):
        export_scene(tmp_path / "s.glb", m, _reg(), Transform.identity(CAMERA, REF))
    with pytest.raises(OverlayError, match="tool"):
        export_scene(tmp_path / "s.glb", m, _reg(), tools={"P": Transform.identity(REF, TOOL)})
    assert list(tmp_path.iterdir()) == []


def test_scene_loads_back_in_ref_and_is_refused_as_a_ct_model(tmp_path) -> None:
    """Issue 7: a scene GLB (models already moved by T_REF_CT) loaded where a CT model is
    expected would get T_REF_CT applied twice; it must say REF and be refused as CT."""
    m = _tetra("skull", 0.0)
    out = export_scene(tmp_path / "s.glb", [m], _reg())
    back = load_meshes(out)
    assert [b.frame for b in back] == [REF]
    np.testing.assert_allclose(back[0].vertices, _reg().apply(m.vertices), atol=1e-4)
    assert back[0].provenance["frame_of_reference_uid"] == UID  # same scan, other frame
    with pytest.raises(MeshError) as err:
        load_meshes(out, expected_frame=CT)
    msg = str(err.value)
    assert "s.glb" in msg and "'REF'" in msg and "expected frame 'CT'" in msg and "\n" not in msg
    # a scene written before the frame tag existed is recognised by scenes[].extras.world_frame
    data = out.read_bytes()
    jlen = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20:20 + jlen])
    del doc["asset"]["extras"]["frame"]
    for gm in doc["meshes"]:
        del gm["extras"]["frame"]
    js = json.dumps(doc).encode()
    js += b" " * ((4 - len(js) % 4) % 4)
    rest = data[20 + jlen:]
    old = tmp_path / "old.glb"
    old.write_bytes(struct.pack("<III", 0x46546C67, 2, 20 + len(js) + len(rest))
                    + struct.pack("<II", len(js), 0x4E4F534A) + js + rest)
    assert [b.frame for b in load_meshes(old)] == [REF]
    with pytest.raises(MeshError, match="expected frame 'CT'"):
        load_meshes(old, expected_frame=CT)


def test_a_ref_model_is_not_placed_again(tmp_path) -> None:
    ref_model = Mesh(_tetra("skull", 0.0).vertices, _tetra("skull", 0.0).faces, "skull",
                     frame=REF)
    with pytest.raises(OverlayError, match="frame 'REF', expected CT"):
        export_scene(tmp_path / "s.glb", [ref_model], _reg())
    assert list(tmp_path.iterdir()) == []
