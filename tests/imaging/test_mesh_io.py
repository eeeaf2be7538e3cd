"""Mesh files: exact LPS mm in STL/PLY/OBJ, the glTF frame in GLB, atomic writes, reading back."""

from __future__ import annotations

import json
import struct

import numpy as np
import open3d as o3d
import pytest
import trimesh

from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import Mesh
from scrubin.imaging.mesh_io import LPS_MM_TO_GLTF, load_mesh, load_meshes, mesh_format, save_mesh
from scrubin.imaging.surface import extract_surface
from scrubin.imaging.volume import Volume

UIDS = {"series_instance_uid": "1.2.826.0.1.3", "frame_of_reference_uid": "1.2.826.0.1.4"}


def _ball(centre_lps=(60.0, -20.0, 35.0), radius=8.0, name="ball") -> Mesh:
    """A sphere around an LPS point (patient's left when x > 0)."""
    aff = np.diag([0.9, 0.9, 1.2, 1.0])
    aff[:3, 3] = np.asarray(centre_lps) - [15 * 0.9, 15 * 0.9, 15 * 1.2]
    vol = Volume(np.zeros((31, 31, 31), np.float32), aff, **UIDS)
    lps = vol.index_to_lps(np.indices((31, 31, 31))[::-1].reshape(3, -1).T)
    d = np.linalg.norm(lps - centre_lps, axis=1).reshape(31, 31, 31)
    vol.array[...] = radius - d
    m = extract_surface(vol, level=0.0, name=name)
    m.color = (0.9, 0.2, 0.1, 0.6)
    return m


@pytest.mark.parametrize("ext", [".stl", ".ply", ".obj", ".glb"])
def test_roundtrip_and_third_party_readers(tmp_path, ext):
    m = _ball()
    path = save_mesh(m, tmp_path / f"ball{ext}")
    back = load_mesh(path)
    tol = 1e-4 if ext in (".stl", ".glb") else 1e-6  # float32 formats
    np.testing.assert_allclose(back.bounds(), m.bounds(), atol=tol)
    assert back.n_faces == m.n_faces and back.is_watertight()
    assert back.signed_volume() == pytest.approx(m.signed_volume(), rel=1e-5)
    if ext != ".stl":
        assert back.provenance == UIDS and back.name == "ball"
        np.testing.assert_allclose(back.color, m.color, atol=1 / 255)
    expected = m.bounds()
    if ext == ".glb":  # metres, (x, z, -y) of LPS
        expected = np.sort(0.001 * m.bounds()[:, [0, 2, 1]] * [1, 1, -1], axis=0)
    tm = trimesh.load(path, force="mesh")
    np.testing.assert_allclose(tm.bounds, expected, atol=tol)
    assert tm.is_watertight and len(tm.faces) == m.n_faces
    om = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_allclose(om.get_min_bound(), expected[0], atol=tol)
    np.testing.assert_allclose(om.get_max_bound(), expected[1], atol=tol)
    assert len(om.triangles) == m.n_faces
    assert not list(tmp_path.glob(".*part"))


def test_glb_frame_left_is_plus_x_and_extras(tmp_path):
    left = _ball((70.0, 0.0, 0.0), name="left")  # +L = patient's left
    sup = _ball((0.0, 0.0, 50.0), name="superior")
    ant = _ball((0.0, -60.0, 0.0), name="anterior")  # -P = anterior
    path = save_mesh([left, sup, ant], tmp_path / "scene.glb")
    scene = trimesh.load(path)
    centres = {
        name: geom.bounds.mean(axis=0) for name, geom in scene.geometry.items()
    }
    by = dict(zip(sorted(centres), (centres[k] for k in sorted(centres)), strict=True))
    np.testing.assert_allclose(by["left"], [0.070, 0.0, 0.0], atol=2e-4)
    np.testing.assert_allclose(by["superior"], [0.0, 0.050, 0.0], atol=2e-4)
    np.testing.assert_allclose(by["anterior"], [0.0, 0.0, 0.060], atol=2e-4)
    data = path.read_bytes()
    (jlen,) = struct.unpack_from("<I", data, 12)
    doc = json.loads(data[20:20 + jlen])
    extras = doc["asset"]["extras"]
    mat = np.array(extras["lps_mm_to_gltf"])
    np.testing.assert_allclose(mat, LPS_MM_TO_GLTF)
    assert np.linalg.det(mat[:3, :3] / 0.001) == pytest.approx(1.0)  # rotation, no mirror
    assert extras["series_instance_uid"] == UIDS["series_instance_uid"]
    assert extras["frame_of_reference_uid"] == UIDS["frame_of_reference_uid"]
    assert doc["materials"][0]["pbrMetallicRoughness"]["baseColorFactor"] == pytest.approx(
        [0.9, 0.2, 0.1, 0.6])
    assert doc["materials"][0]["alphaMode"] == "BLEND"
    assert "NORMAL" in doc["meshes"][0]["primitives"][0]["attributes"]
    parts = load_meshes(path)
    assert [p.name for p in parts] == ["left", "superior", "anterior"]
    np.testing.assert_allclose(parts[0].bounds(), left.bounds(), atol=1e-4)
    # GLB normals point outward in the glTF frame too (proper rotation)
    geom = scene.geometry["left"]
    out = np.einsum("ij,ij->i", geom.vertex_normals, geom.vertices - geom.centroid)
    assert np.all(out > 0)


def test_several_structures_merge_in_single_surface_formats(tmp_path):
    a, b = _ball((50.0, 0.0, 0.0)), _ball((-50.0, 0.0, 0.0))
    back = load_mesh(save_mesh([a, b], tmp_path / "both.ply"))
    assert back.n_faces == a.n_faces + b.n_faces


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "taken.stl"
    target.mkdir()  # renaming onto a directory fails after the data were written
    with pytest.raises(OSError):
        save_mesh(_ball(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.stl"]
    assert target.is_dir() and not any(target.iterdir())


@pytest.mark.parametrize("name", ["x.vtk", "x", "x.gltf"])
def test_unknown_extension(tmp_path, name):
    with pytest.raises(MeshError, match="extension"):
        save_mesh(_ball(), tmp_path / name)
    with pytest.raises(MeshError, match="extension"):
        mesh_format(name)


def test_write_rejections(tmp_path):
    with pytest.raises(MeshError, match="empty"):
        save_mesh(Mesh(np.zeros((0, 3)), np.zeros((0, 3), int)), tmp_path / "e.stl")
    with pytest.raises(MeshError, match="does not exist"):
        save_mesh(_ball(), tmp_path / "nope" / "x.stl")
    with pytest.raises(MeshError, match="Mesh"):
        save_mesh([], tmp_path / "x.stl")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("ext", [".stl", ".ply", ".obj", ".glb"])
def test_read_rejections(tmp_path, ext):
    with pytest.raises(MeshError, match="does not exist"):
        load_mesh(tmp_path / f"missing{ext}")
    bad = tmp_path / f"bad{ext}"
    bad.write_bytes(b"\x00\x01garbage" * 3)
    with pytest.raises(MeshError):
        load_mesh(bad)


def test_ascii_stl_and_ascii_ply_read(tmp_path):
    stl = tmp_path / "t.stl"
    stl.write_text(
        "solid t\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\n"
        "endloop\nendfacet\nendsolid t\n"
    )
    m = load_mesh(stl)
    assert m.n_faces == 1 and m.area() == pytest.approx(0.5)
    ply = tmp_path / "q.ply"
    ply.write_text(
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "0 0 0\n2 0 0\n2 2 0\n0 2 0\n4 0 1 2 3\n"
    )
    q = load_mesh(ply)
    assert q.n_faces == 2 and q.area() == pytest.approx(4.0)
