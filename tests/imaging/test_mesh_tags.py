"""Frame and axis tags of mesh files: CT/REF frame, 3D Slicer's SPACE=RAS/LPS, unknown frames.

Slicer-style files are written with VTK's own writers configured exactly as 3D Slicer's
``vtkMRMLModelStorageNode::WriteDataInternal`` does (``vtkSTLWriter::SetHeader("3D Slicer
output. SPACE=RAS")``, ``vtkPLYWriter::AddComment("SPACE=RAS")``); expected LPS coordinates
are the RAS ones with x and y negated, written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from vtk.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray

from scrubin.imaging.errors import MeshError
from scrubin.imaging.mesh import Mesh
from scrubin.imaging.mesh_io import load_mesh, load_meshes, save_mesh

UIDS = {"series_instance_uid": "1.2.826.0.1.3", "frame_of_reference_uid": "1.2.826.0.1.4"}
#: An asymmetric tetrahedron in RAS mm (every coordinate distinct, none zero in x or y).
RAS_VERTS = np.array([[10.0, 20.0, 30.0], [41.0, -5.0, 7.0], [-3.0, 8.0, 52.0],
                      [12.0, 33.0, -9.0]])
#: The same points in LPS, by hand: (x, y, z)_LPS = (-x, -y, z)_RAS.
LPS_VERTS = np.array([[-10.0, -20.0, 30.0], [-41.0, 5.0, 7.0], [3.0, -8.0, 52.0],
                      [-12.0, -33.0, -9.0]])
FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _polydata(verts: np.ndarray) -> vtk.vtkPolyData:
    pd = vtk.vtkPolyData()
    pts = vtk.vtkPoints()
    pts.SetData(numpy_to_vtk(verts.astype(np.float32), deep=True))
    pd.SetPoints(pts)
    cells = vtk.vtkCellArray()
    conn = np.hstack([np.full((len(FACES), 1), 3), FACES]).ravel()
    cells.ImportLegacyFormat(numpy_to_vtkIdTypeArray(conn.astype(np.int64), deep=True))
    pd.SetPolys(cells)
    return pd


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


@pytest.mark.parametrize("binary", [True, False])
def test_slicer_ras_stl_loads_with_x_y_negated(tmp_path, binary) -> None:
    path = tmp_path / "slicer.stl"
    w = vtk.vtkSTLWriter()
    w.SetFileName(str(path))
    w.SetFileType(vtk.VTK_BINARY if binary else vtk.VTK_ASCII)
    w.SetHeader("3D Slicer output. SPACE=RAS")
    w.SetInputData(_polydata(RAS_VERTS))
    assert w.Write() == 1
    m = load_mesh(path, allow_unknown_frame=True)
    np.testing.assert_allclose(_sorted_rows(m.vertices), _sorted_rows(LPS_VERTS), atol=1e-5)
    assert m.frame == ""  # Slicer's tag gives the axes, not the operating-room frame
    # RAS -> LPS is a rotation (det +1): the surface still faces outward
    assert m.signed_volume() > 0 and m.signed_volume() == pytest.approx(
        Mesh(LPS_VERTS, FACES).signed_volume(), rel=1e-5)


def test_slicer_ras_ply_and_obj_load_with_x_y_negated(tmp_path) -> None:
    ply = tmp_path / "slicer.ply"
    w = vtk.vtkPLYWriter()
    w.SetFileName(str(ply))
    w.AddComment("SPACE=RAS")
    w.SetInputData(_polydata(RAS_VERTS))
    assert w.Write() == 1
    obj = tmp_path / "slicer.obj"
    lines = ["# 3D Slicer output. SPACE=RAS"] + [f"v {x} {y} {z}" for x, y, z in RAS_VERTS]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in FACES]
    obj.write_text("\n".join(lines) + "\n")
    for path in (ply, obj):
        m = load_mesh(path, allow_unknown_frame=True)
        np.testing.assert_allclose(_sorted_rows(m.vertices), _sorted_rows(LPS_VERTS),
                                   atol=1e-5, err_msg=path.name)


def test_untagged_file_is_lps_like_slicer_and_its_frame_unknown(tmp_path) -> None:
    """No SPACE tag: Slicer assumes LPS (storage node default), so do we; no frame: unknown."""
    path = tmp_path / "plain.stl"
    w = vtk.vtkSTLWriter()
    w.SetFileName(str(path))
    w.SetFileType(vtk.VTK_BINARY)
    w.SetInputData(_polydata(LPS_VERTS))
    assert w.Write() == 1
    m = load_mesh(path)
    np.testing.assert_allclose(_sorted_rows(m.vertices), _sorted_rows(LPS_VERTS), atol=1e-5)
    assert m.frame == ""
    with pytest.raises(MeshError, match=r"plain\.stl.*does not say which frame.*'CT'"):
        load_meshes(path, expected_frame="CT")
    assert load_meshes(path, expected_frame="CT", allow_unknown_frame=True)[0].frame == ""


@pytest.mark.parametrize("ext", [".stl", ".ply", ".obj", ".glb"])
def test_frame_written_and_read_back_and_wrong_frame_refused(tmp_path, ext) -> None:
    ct = Mesh(LPS_VERTS, FACES, "skull", provenance=UIDS)
    assert ct.frame == "CT"
    assert load_mesh(save_mesh(ct, tmp_path / f"ct{ext}"), expected_frame="CT").frame == "CT"
    ref = Mesh(LPS_VERTS, FACES, "skull", provenance=UIDS, frame="REF")
    path = save_mesh(ref, tmp_path / f"ref{ext}")
    back = load_mesh(path)
    assert back.frame == "REF"
    np.testing.assert_allclose(back.vertices[np.argsort(back.vertices[:, 2])],
                               LPS_VERTS[np.argsort(LPS_VERTS[:, 2])], atol=1e-5)
    with pytest.raises(MeshError) as err:
        load_meshes(path, expected_frame="CT")
    msg = str(err.value)
    assert "\n" not in msg and f"ref{ext}" in msg and "'REF'" in msg
    assert "expected frame 'CT'" in msg


def test_our_stl_header_follows_slicer_and_vtk_reads_it(tmp_path) -> None:
    path = save_mesh(Mesh(LPS_VERTS, FACES, "a=b SPACE=RAS"), tmp_path / "x.stl")
    header = path.read_bytes()[:80].decode("ascii")
    assert "SPACE=LPS" in header and "FRAME=CT" in header and "SPACE=RAS" not in header
    r = vtk.vtkSTLReader()
    r.SetFileName(str(path))
    r.Update()
    assert "SPACE=LPS" in r.GetHeader()  # what Slicer's GetCoordinateSystemFromFileHeader sees
    assert r.GetOutput().GetNumberOfCells() == len(FACES)
    back = load_mesh(path).vertices
    np.testing.assert_allclose(back[np.argsort(back[:, 2])],
                               LPS_VERTS[np.argsort(LPS_VERTS[:, 2])], atol=1e-5)


def test_files_written_before_the_frame_tag_are_ct(tmp_path) -> None:
    """Old Scrub In writers: STL header 'scrubin NAME LPS mm', comment 'frame LPS unit mm'."""
    stl = save_mesh(Mesh(LPS_VERTS, FACES, "skull"), tmp_path / "old.stl")
    data = bytearray(stl.read_bytes())
    data[:80] = b"scrubin skull LPS mm".ljust(80, b" ")
    stl.write_bytes(bytes(data))
    m = load_mesh(stl, expected_frame="CT")
    assert m.frame == "CT" and m.name == "skull"
    obj = tmp_path / "old.obj"
    lines = ["# frame LPS unit mm", "# name skull"] + [f"v {x} {y} {z}" for x, y, z in LPS_VERTS]
    obj.write_text("\n".join(lines + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in FACES]) + "\n")
    assert load_mesh(obj, expected_frame="CT").frame == "CT"


def test_merging_meshes_of_different_frames_is_refused() -> None:
    from scrubin.imaging.mesh import concatenate

    with pytest.raises(MeshError, match="different frames"):
        concatenate([Mesh(LPS_VERTS, FACES), Mesh(LPS_VERTS, FACES, frame="REF")])


@pytest.mark.parametrize("ext", [".stl", ".ply", ".obj", ".glb"])
def test_an_unknown_frame_stays_unknown_through_a_file(tmp_path, ext) -> None:
    m = Mesh(LPS_VERTS, FACES, "foreign", frame="")
    assert load_mesh(save_mesh(m, tmp_path / f"u{ext}")).frame == ""
