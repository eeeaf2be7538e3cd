"""Reading clouds and surfaces, units, normals: registration/clouds.py."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import Mesh, vertex_normals
from scrubin.imaging.mesh_io import save_mesh
from scrubin.registration.clouds import (
    CloudError,
    PointSet,
    UnitMismatchError,
    as_points,
    check_units,
    estimate_normals,
    extent,
    read_cloud,
    read_surface,
    voxel_downsample,
)
from scrubin.registration.errors import RegistrationError
from scrubin.samples.surface_sim import ellipsoid_mesh


def _sphere_cap(n: int = 800, radius: float = 50.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v = v[v[:, 2] > 0.3]
    return radius * v + np.array([10.0, -20.0, 30.0])


# ------------------------------------------------------------------ readers
def test_read_csv_with_header_and_normals(tmp_path):
    pts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5], [-7.0, 8.0, 9.0]])
    nrm = np.array([[0.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    path = tmp_path / "c.csv"
    rows = ["nx,ny,nz,x,y,z"]
    rows += [",".join(map(str, [*n, *p])) for p, n in zip(pts, nrm, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    cloud = read_cloud(path)
    np.testing.assert_array_equal(cloud.points, pts)
    np.testing.assert_allclose(cloud.normals, nrm / np.linalg.norm(nrm, axis=1, keepdims=True))
    assert cloud.frame == "REF" and cloud.path == path


def test_read_headerless_table_in_metres_drops_nan_rows(tmp_path):
    path = tmp_path / "c.xyz"
    path.write_text("# depth camera\n0.1 0.2 0.3\nnan nan nan\n0.4; 0.5; 0.6\n0 0 0.001\n")
    cloud = read_cloud(path, unit="m")
    np.testing.assert_allclose(cloud.points, [[100, 200, 300], [400, 500, 600], [0, 0, 1]])


def test_read_ply_with_normals_roundtrip(tmp_path):
    pts = _sphere_cap()
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.normals = o3d.utility.Vector3dVector((pts - [10.0, -20.0, 30.0]) / 50.0)
    path = tmp_path / "cap.ply"
    assert o3d.io.write_point_cloud(str(path), pc, write_ascii=False)
    cloud = read_cloud(path, frame="TRACKER")
    np.testing.assert_allclose(cloud.points, pts, atol=1e-9)
    assert cloud.normals is not None and cloud.frame == "TRACKER"


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.csv", "x,y,z\n1,2,3\n4,five,6\n", "line 3 is not numeric"),
        ("cols.csv", "1 2\n3 4\n", "expected 3 .* or 6"),
        ("ragged.csv", "1 2 3\n4 5 6 7\n", "different numbers of columns"),
        ("hdr.csv", "a,b,c\n1,2,3\n", "must name columns x, y, z"),
        ("empty.txt", "# nothing\n", "empty point table"),
        ("few.csv", "1 2 3\nnan 1 1\n", "fewer than 3 valid points"),
    ],
)
def test_read_cloud_rejects_bad_tables(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CloudError, match=match) as exc:
        read_cloud(path)
    assert str(path) in str(exc.value)


def test_read_cloud_rejects_missing_unsupported_and_corrupt_files(tmp_path):
    with pytest.raises(CloudError, match="not found"):
        read_cloud(tmp_path / "nope.ply")
    (tmp_path / "c.las").write_text("x")
    with pytest.raises(CloudError, match="unsupported point cloud format"):
        read_cloud(tmp_path / "c.las")
    (tmp_path / "c.ply").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CloudError, match="not a PLY file"):
        read_cloud(tmp_path / "c.ply")
    (tmp_path / "e.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n"
    )
    with pytest.raises(CloudError, match="no points"):
        read_cloud(tmp_path / "e.ply")
    (tmp_path / "ok.csv").write_text("1 2 3\n4 5 6\n7 8 9\n")
    with pytest.raises(CloudError, match="unit must be one of"):
        read_cloud(tmp_path / "ok.csv", unit="inch")


def _mesh_file(tmp_path, suffix: str, provenance: dict | None = None):
    m = ellipsoid_mesh((40.0, 50.0, 60.0), 4.0)
    mesh = Mesh(np.array(m.vertices), np.array(m.faces), name="skin",
                provenance=provenance or {})
    return save_mesh(mesh, tmp_path / f"skin{suffix}"), m


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".obj"])
def test_read_surface_gives_outward_unit_normals(tmp_path, suffix):
    path, m = _mesh_file(tmp_path, suffix)
    surf = read_surface(path)
    assert surf.frame == "CT" and len(surf) == len(m.vertices)
    radial = surf.points / np.linalg.norm(surf.points, axis=1, keepdims=True)
    assert np.all(np.einsum("ij,ij->i", surf.normals, radial) > 0.5)  # outward


def test_read_surface_keeps_provenance_and_reads_faceless_ply_as_cloud(tmp_path):
    uids = {"series_instance_uid": "1.2.3", "frame_of_reference_uid": "1.2.4"}
    path, _ = _mesh_file(tmp_path, ".ply", uids)
    assert read_surface(path).source == uids
    pts = _sphere_cap(3000)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    o3d.io.write_point_cloud(str(tmp_path / "pts.ply"), pc)
    surf = read_surface(tmp_path / "pts.ply")
    radial = (surf.points - [10.0, -20.0, 30.0]) / 50.0
    assert np.mean(np.einsum("ij,ij->i", surf.normals, radial) > 0.9) > 0.95


def test_read_surface_rejects_bad_files(tmp_path):
    with pytest.raises(CloudError, match="not found"):
        read_surface(tmp_path / "none.stl")
    (tmp_path / "m.vtk").write_text("x")
    with pytest.raises(CloudError, match="unsupported surface mesh format"):
        read_surface(tmp_path / "m.vtk")
    (tmp_path / "bad.stl").write_bytes(b"\x01" * 10)
    with pytest.raises(CloudError, match="bad.stl"):
        read_surface(tmp_path / "bad.stl")
    (tmp_path / "bad.ply").write_bytes(b"nonsense")
    with pytest.raises(CloudError, match="not a PLY file"):
        read_surface(tmp_path / "bad.ply")


# ------------------------------------------------------------------ units
def test_check_units_refuses_metres_and_names_the_option():
    model = PointSet(ellipsoid_mesh((70.0, 90.0, 100.0), 5.0).vertices)
    cloud_m = PointSet(model.points[model.points[:, 1] < 0] / 1000.0, frame="REF")
    with pytest.raises(UnitMismatchError, match="--cloud-unit m") as exc:
        check_units(cloud_m, model)
    assert "\n" not in str(exc.value)
    check_units(PointSet(cloud_m.points * 1000.0, frame="REF"), model)  # converted: fits
    with pytest.raises(UnitMismatchError, match="unit mismatch"):
        check_units(PointSet(model.points * 1000.0, frame="REF"), model)


def test_check_units_rejects_degenerate_model():
    with pytest.raises(RegistrationError, match="zero extent"):
        check_units(PointSet(np.ones((5, 3))), PointSet(np.zeros((5, 3))))


def test_extent_ignores_single_outliers():
    pts = np.random.default_rng(0).uniform(0, 100, size=(2000, 3))
    assert extent(np.vstack([pts, [[1e6, 1e6, 1e6]]])) == pytest.approx(extent(pts), rel=0.01)


# ------------------------------------------------------------------ point sets and normals
@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((4, 2)), "shape"),
        (np.array([[0.0, np.nan, 1.0]] * 3), "NaN"),
        (np.zeros((0, 3)), "at least 1"),
        ([["a", "b", "c"]], "numbers"),
    ],
)
def test_as_points_rejections(arr, match):
    with pytest.raises(RegistrationError, match=match):
        as_points(arr)


def test_pointset_rejects_mismatched_or_zero_normals():
    with pytest.raises(RegistrationError, match="normals must match"):
        PointSet(np.zeros((3, 3)), np.ones((4, 3)))
    with pytest.raises(RegistrationError, match="zero-length"):
        PointSet(np.zeros((2, 3)), np.array([[0.0, 0, 1], [0, 0, 0]]))


def test_estimate_normals_on_sphere_cap_are_accurate_and_outward():
    pts = _sphere_cap(4000)
    n = estimate_normals(pts, radius_mm=8.0)
    truth = (pts - [10.0, -20.0, 30.0]) / 50.0
    cosang = np.einsum("ij,ij->i", n, truth)
    assert np.median(cosang) > np.cos(np.radians(3.0))
    assert np.mean(cosang > 0) > 0.99
    with pytest.raises(RegistrationError, match="radius"):
        estimate_normals(pts, 0.0)
    with pytest.raises(RegistrationError, match="at least 3"):
        estimate_normals(pts[:2], 1.0)


def test_voxel_downsample_known_answer():
    pts = np.array([[0.1, 0.1, 0.1], [0.3, 0.5, 0.1], [5.2, 0.0, 0.0]])
    nrm = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out, n = voxel_downsample(pts, nrm, 1.0)
    order = np.argsort(out[:, 0])
    np.testing.assert_allclose(out[order], [[0.2, 0.3, 0.1], [5.2, 0.0, 0.0]])
    np.testing.assert_allclose(n[order], [[0.0, 2**-0.5, 2**-0.5], [1.0, 0.0, 0.0]])


def test_vertex_normals_known_answer_and_rejection():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]])
    n = vertex_normals(v, np.array([[0, 1, 2]]))
    np.testing.assert_allclose(n[:3], [[0, 0, 1]] * 3)
    np.testing.assert_array_equal(n[3], [0, 0, 0])  # unused vertex
    with pytest.raises(MeshError, match="within range"):
        vertex_normals(v, np.array([[0, 1, 7]]))


def test_normals_of_a_face_view_with_a_large_table_point_outward():
    """A depth scene: a convex cap (the face) above a larger flat table, which must not swing
    the orientation vote whichever way its normals were propagated."""
    cap = _sphere_cap(3000)
    rng = np.random.default_rng(5)
    table = np.c_[rng.uniform(-150, 150, (4000, 2)), np.full(4000, -20.0)]
    table[:, :2] += [10.0, -20.0]
    pts = np.vstack([cap, table])
    n = estimate_normals(pts, radius_mm=8.0)
    outward = (cap - [10.0, -20.0, 30.0]) / 50.0
    assert np.mean(np.einsum("ij,ij->i", n[: len(cap)], outward) > 0.9) > 0.9
