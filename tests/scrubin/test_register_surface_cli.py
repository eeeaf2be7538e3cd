"""``scrubin register surface`` end to end: files in, JSON out, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import open3d as o3d
import pytest

from scrubin.cli import main
from scrubin.imaging.mesh import Mesh
from scrubin.imaging.mesh_io import save_mesh
from scrubin.registration.frames import Transform
from scrubin.samples.surface_sim import partial_view, phantom_skin_mesh, random_pose


@pytest.fixture(scope="module")
def case(small_truth, tmp_path_factory):
    """Skin mesh (PLY with the series UIDs), a partial cloud in REF (PLY, mm) and the truth."""
    d = tmp_path_factory.mktemp("surf")
    skin = phantom_skin_mesh(small_truth, 3.0)
    uids = {k: small_truth[k] for k in ("series_instance_uid", "frame_of_reference_uid")}
    mesh_path = save_mesh(Mesh(np.array(skin.vertices), np.array(skin.faces), "skin",
                               provenance=uids), d / "skin.ply")
    rng = np.random.default_rng(21)
    pts_ct, _ = partial_view(skin, rng, fraction=0.3, n_points=2500)
    t_ref_ct = random_pose(35.0, 40.0, skin.vertices.mean(0), rng)
    cloud_ref = pts_ct @ t_ref_ct[:3, :3].T + t_ref_ct[:3, 3]
    cloud_path = d / "cloud.ply"
    o3d.io.write_point_cloud(str(cloud_path), o3d.geometry.PointCloud(
        o3d.utility.Vector3dVector(cloud_ref)))
    metres = d / "cloud_m.csv"
    np.savetxt(metres, cloud_ref / 1000.0, delimiter=",", header="x,y,z", comments="")
    return {"dir": d, "mesh": mesh_path, "cloud": cloud_path, "metres": metres,
            "truth": t_ref_ct, "target": np.asarray(small_truth["target_lps"]), "uids": uids}


def _tre(doc: dict, case: dict) -> float:
    m = np.asarray(doc["transform"]["matrix"])
    t, tt = case["target"], case["truth"]
    return float(np.linalg.norm(m[:3, :3] @ t + m[:3, 3] - (tt[:3, :3] @ t + tt[:3, 3])))


def test_register_surface_global(case, capsys):
    out = case["dir"] / "out.json"
    rc = main(["register", "surface", "--fixed", str(case["cloud"]), "--moving",
               str(case["mesh"]), "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["transform"]["from"] == "CT" and doc["transform"]["to"] == "REF"
    assert doc["transform"]["source"] == case["uids"]
    assert doc["method"] == "global" and doc["ambiguous"] is False
    assert _tre(doc, case) < 1.0
    assert doc["inlier_fraction"] > 0.9 and doc["rms_mm"] < 1.0 and doc["iterations"] > 0
    assert doc["timing_s"]["total"] > 0 and doc["inputs"]["cloud_unit"] == "mm"
    assert Transform.load(out).dst == "REF"  # the result is a loadable transform file
    assert "T_REF_CT" in capsys.readouterr().out


def test_register_surface_refuses_metres_then_converts(case, capsys):
    out = case["dir"] / "m.json"
    args = ["register", "surface", "--fixed", str(case["metres"]), "--moving",
            str(case["mesh"]), "--json", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cloud-unit m" in err and "cloud_m.csv" in err
    assert not out.exists()
    assert main([*args, "--cloud-unit", "m"]) == 0
    assert _tre(json.loads(out.read_text()), case) < 1.0


def test_register_surface_with_init_skips_global(case):
    start = random_pose(3.0, 4.0, np.zeros(3), np.random.default_rng(3)) @ case["truth"]
    init = case["dir"] / "init.json"
    Transform(start, "CT", "REF").save(init)
    out = case["dir"] / "i.json"
    rc = main(["register", "surface", "--fixed", str(case["cloud"]), "--moving",
               str(case["mesh"]), "--init", str(init), "--max-distance", "8", "--json",
               str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["method"] == "init" and doc["inputs"]["max_distance_mm"] == 8.0
    assert _tre(doc, case) < 1.0


def _fails(case, capsys, fixed, moving, extra=(), name=None) -> str:
    out = case["dir"] / "bad.json"
    rc = main(["register", "surface", "--fixed", str(fixed), "--moving", str(moving),
               "--json", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("scrubin: error:") and "\n" not in err
    assert not out.exists()
    if name is not None:
        assert name in err
    return err


def test_register_surface_bad_files_one_line(case, capsys):
    d = case["dir"]
    _fails(case, capsys, d / "missing.ply", case["mesh"], name="missing.ply")
    (d / "junk.ply").write_bytes(b"not a ply at all")
    _fails(case, capsys, d / "junk.ply", case["mesh"], name="junk.ply")
    _fails(case, capsys, case["cloud"], d / "nomesh.stl", name="nomesh.stl")
    (d / "junk.stl").write_bytes(b"\x00" * 30)
    _fails(case, capsys, case["cloud"], d / "junk.stl", name="junk.stl")
    _fails(case, capsys, case["cloud"], case["mesh"], ["--init", str(d / "noinit.json")],
           name="noinit.json")
    wrong = d / "wrong.json"
    Transform(np.eye(4), "CT", "TRACKER").save(wrong)
    err = _fails(case, capsys, case["cloud"], case["mesh"], ["--init", str(wrong)],
                 name="wrong.json")
    assert "expected CT to REF" in err
    err = _fails(case, capsys, case["cloud"], case["mesh"], ["--max-distance", "-1"])
    assert "--max-distance" in err
