"""Mesh measures and repairs on meshes with exact known answers."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import Mesh, concatenate

# Unit cube [0, 1]^3, 12 triangles, counter-clockwise seen from outside.
CUBE_V = np.array(
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]],
    dtype=float,
)
CUBE_F = np.array(
    [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
     [2, 3, 7], [2, 7, 6], [1, 2, 6], [1, 6, 5], [0, 4, 7], [0, 7, 3]]
)


def cube(scale=(2.0, 3.0, 4.0), offset=(10.0, -5.0, 1.0)) -> Mesh:
    return Mesh(CUBE_V * scale + offset, CUBE_F, "box", provenance={"series_instance_uid": "9"})


def test_box_measures():
    m = cube()
    assert m.is_watertight()
    assert m.area() == pytest.approx(2 * (6 + 8 + 12))
    assert m.signed_volume() == pytest.approx(24.0)
    assert m.volume_mm3() == pytest.approx(24.0)
    np.testing.assert_allclose(m.bounds(), [[10, -5, 1], [12, -2, 5]])
    s = m.summary()
    assert s["triangles"] == 12 and s["vertices"] == 8 and s["watertight"]
    assert s["volume_ml"] == pytest.approx(0.024)
    assert s["series_instance_uid"] == "9" and s["frame_of_reference_uid"] == ""


def test_vertex_normals_point_outward():
    m = cube()
    n = m.vertex_normals()
    centre = m.vertices.mean(axis=0)
    assert np.all(np.einsum("ij,ij->i", n, m.vertices - centre) > 0)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)


def test_watertight_detects_hole_and_flipped_face():
    assert not Mesh(CUBE_V, CUBE_F[:-1]).is_watertight()
    bad = CUBE_F.copy()
    bad[0] = bad[0, ::-1]
    assert not Mesh(CUBE_V, bad).is_watertight()
    assert not Mesh(np.zeros((0, 3)), np.zeros((0, 3), int)).is_watertight()


def test_flip_and_orient_outward():
    m = cube().flipped()
    assert m.signed_volume() == pytest.approx(-24.0)
    assert m.oriented_outward().signed_volume() == pytest.approx(24.0)


def test_mirror_transform_keeps_outward_orientation():
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    m = cube().transformed(mirror)
    assert m.signed_volume() == pytest.approx(24.0)
    np.testing.assert_allclose(m.bounds()[:, 0], [-12, -10])
    with pytest.raises(MeshError, match="4x4"):
        cube().transformed(np.eye(3))
    with pytest.raises(MeshError, match="singular"):
        cube().transformed(np.diag([1.0, 0.0, 1.0, 1.0]))


def test_remove_degenerate_welds_and_drops():
    # duplicate vertex 8 == vertex 0, a face repeating an index and a collinear face
    v = np.vstack([CUBE_V, CUBE_V[0], [0.5, 0, 0]])
    f = np.vstack([CUBE_F, [[8, 1, 2]], [[0, 0, 1]], [[0, 9, 1]]])
    f[0] = [8, 2, 1]  # uses the duplicate of vertex 0
    m = Mesh(v, f).remove_degenerate()
    assert m.n_vertices == 8
    assert m.n_faces == 13  # the cube (12) + the duplicated face [0, 1, 2] reversed
    assert np.all(m.face_areas() > 0)


def test_remove_unused_vertices_renumbers():
    v = np.vstack([[99, 99, 99], CUBE_V])
    m = Mesh(v, CUBE_F + 1).remove_unused_vertices()
    assert m.n_vertices == 8 and m.is_watertight()
    assert m.signed_volume() == pytest.approx(1.0)


def test_concatenate_offsets_faces():
    a, b = cube(), cube(offset=(100.0, 0.0, 0.0))
    m = concatenate([a, b])
    assert m.n_faces == 24 and m.is_watertight()
    assert m.signed_volume() == pytest.approx(48.0)
    with pytest.raises(MeshError, match="empty"):
        concatenate([])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vertices": np.zeros((4, 2))}, "vertices"),
        ({"faces": np.zeros((4, 4), int)}, "faces must have"),
        ({"faces": CUBE_F.astype(float)}, "integer"),
        ({"faces": CUBE_F + 8}, "indices"),
        ({"faces": CUBE_F - 1}, "indices"),
        ({"vertices": np.where(CUBE_V == 1, np.nan, CUBE_V)}, "NaN"),
        ({"color": (2.0, 0, 0)}, "colour"),
        ({"color": (1.0, 0.0)}, "colour"),
        ({"normals": np.zeros((3, 3))}, "normals"),
    ],
)
def test_rejections(kwargs, match):
    args = {"vertices": CUBE_V, "faces": CUBE_F, **kwargs}
    with pytest.raises(MeshError, match=match):
        Mesh(**args)


def test_empty_mesh_has_no_bounds():
    with pytest.raises(MeshError, match="bounds"):
        Mesh(np.zeros((0, 3)), np.zeros((0, 3), int)).bounds()


def test_rgb_colour_gets_alpha():
    assert Mesh(CUBE_V, CUBE_F, color=(1, 0, 0)).color == (1.0, 0.0, 0.0, 1.0)


def test_frame_is_carried_and_named_by_transforms():
    m = cube()
    assert m.frame == "CT" and m.summary()["frame"] == "CT"
    t = np.eye(4)
    t[:3, 3] = [100.0, 0.0, 0.0]
    assert m.transformed(t).frame == "CT"  # no frame named: same frame
    placed = m.transformed(t, frame="REF")
    assert placed.frame == "REF" and placed.copy().frame == "REF"
    np.testing.assert_allclose(placed.bounds()[:, 0], [110, 112])
    with pytest.raises(MeshError, match="different frames"):
        concatenate([m, placed])
    with pytest.raises(MeshError, match="frame name"):
        Mesh(CUBE_V, CUBE_F, frame=None)  # type: ignore[arg-type]
