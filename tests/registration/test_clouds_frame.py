"""read_surface refuses a mesh file that declares another frame (a scene GLB already in REF)."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.imaging.mesh import Mesh
from scrubin.imaging.mesh_io import save_mesh
from scrubin.registration.clouds import CloudError, read_surface

VERTS = np.array([[0, 0, 0], [30, 0, 0], [0, 30, 0], [0, 0, 30.0]])
FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_a_ref_model_is_not_a_ct_surface(tmp_path) -> None:
    path = save_mesh(Mesh(VERTS, FACES, "skin", frame="REF"), tmp_path / "placed.glb")
    with pytest.raises(CloudError, match=r"placed\.glb.*'REF', expected frame 'CT'"):
        read_surface(path)
    assert len(read_surface(path, frame="REF").points) == 4
    ct = save_mesh(Mesh(VERTS, FACES, "skin"), tmp_path / "skin.stl")
    assert read_surface(ct).frame == "CT"
