"""The command line: discovery, light start, option conventions, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scrubin.cli import _preprocess, build_parser, main

sys.path.insert(0, str(Path(__file__).parents[1] / "imaging"))
import dicom_factory as fac

#: Libraries a command may import only inside its ``func`` (top-level module names).
HEAVY = {
    "open3d", "cv2", "SimpleITK", "pydicom", "highdicom", "numba", "llvmlite", "aiortc", "av",
    "scipy", "vtk", "skimage", "grpc", "moderngl", "fast_simplification", "nibabel", "trimesh",
    "aiohttp", "pyigtl", "pylibjpeg", "PIL", "tqdm", "numpy",
}
#: Stage modules holding numba kernels (never needed to build the parser).
KERNEL_MODULES = ("scrubin.imaging.regions", "scrubin.imaging.mesh", "scrubin.overlay.raster")


def _modules_after(argv: list[str]) -> set[str]:
    """``sys.modules`` of a fresh interpreter after ``scrubin ARGV`` (a --help exits)."""
    code = (
        "import sys, json\n"
        "import scrubin.cli as c\n"
        "try:\n"
        f"    c.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stdout.flush()\n"
        "print('@@' + json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out.split("@@")[-1]))


@pytest.mark.parametrize("argv", [["--help"], ["model", "--help"],
                                  ["register", "points", "--help"], ["overlay", "--help"]])
def test_help_imports_no_heavy_library(argv):
    mods = _modules_after(argv)
    assert "scrubin.commands.model" in mods  # the parser was built with every command
    assert not {m.split(".")[0] for m in mods} & HEAVY
    assert not set(KERNEL_MODULES) & mods


#: Libraries ``scrubin model DICOM-FOLDER --preset bone --out X.stl`` has no use for: other
#: readers (SimpleITK, nibabel), mesh/render/vision stacks, DICOM SEG, the label-mode blur
#: (scipy.ndimage), the mentor's network stack.
NOT_FOR_MODEL_STL = {
    "vtk", "open3d", "SimpleITK", "nibabel", "highdicom", "skimage", "trimesh", "cv2",
    "moderngl", "aiortc", "av", "grpc", "aiohttp", "pyigtl", "scipy.ndimage", "scipy.spatial",
    "scrubin.imaging.seg_dicom", "scrubin.overlay.renderer", "scrubin.registration.icp",
}


def test_model_stl_imports_only_what_it_uses(small_phantom, tmp_path):
    # what a bone model of a DICOM series to STL imports, in a fresh interpreter
    out = tmp_path / "bone.stl"
    code = (
        "import sys, json\n"
        "import scrubin.cli as c\n"
        f"rc = c.main(['model', {str(small_phantom)!r}, '--preset', 'bone', '--out', "
        f"{str(out)!r}])\n"
        "sys.stdout.flush()\n"
        "print('@@' + json.dumps([rc, sorted(sys.modules)]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    rc, mods = json.loads(run.stdout.split("@@")[-1])
    assert rc == 0 and out.stat().st_size > 0, run.stderr
    assert {"numba", "pydicom", "scrubin.imaging.surface"} <= set(mods)  # it did the work
    loaded = set(mods) | {m.split(".")[0] for m in mods}
    assert not loaded & NOT_FOR_MODEL_STL, sorted(loaded & NOT_FOR_MODEL_STL)


def test_build_parser_imports_no_heavy_library():
    code = ("import scrubin.cli as c; c.build_parser(); import sys, json; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert not {m.split(".")[0] for m in json.loads(out)} & HEAVY


def test_help_constants_match_the_stage_modules():
    # commands repeat a few defaults/choices so that --help need not import the stages
    from scrubin import warm
    from scrubin.commands import fiducials as fid_cmd
    from scrubin.commands import sample as sample_cmd
    from scrubin.commands import warm as warm_cmd
    from scrubin.commands.calibrate import hand_eye as he_cmd
    from scrubin.registration import fiducials, handeye
    from scrubin.samples import presets

    assert fid_cmd.DEFAULT_DIAMETER_MM == fiducials.DEFAULT_DIAMETER_MM
    assert fid_cmd.DEFAULT_MIN_HU == fiducials.DEFAULT_MIN_HU
    assert he_cmd.METHODS == handeye.METHODS
    assert warm_cmd.STEPS == warm.STEPS
    assert sample_cmd.PRESETS == tuple(presets.PRESETS)
    assert sample_cmd.CUSTOM_SYNTAX == presets.CUSTOM_SYNTAX


def test_negative_values_are_joined_to_their_option():
    argv = ["model", "d", "--seed-point", "-12.5,30,40", "--threshold", "-1000:-400",
            "--out", "x"]
    assert _preprocess(argv) == [
        "model", "d", "--seed-point=-12.5,30,40", "--threshold=-1000:-400", "--out", "x"
    ]
    # A real option after an option is left alone.
    assert _preprocess(["--json", "--verbose"]) == ["--json", "--verbose"]


def test_model_seed_point_and_its_deprecated_alias(capsys):
    parser = build_parser()
    args = parser.parse_args(["model", "d", "--seed-point=-1,2,3", "--out", "x.stl"])
    assert args.seed_point == "-1,2,3"
    assert capsys.readouterr().err == ""
    old = parser.parse_args(["model", "d", "--seed=-1,2,3", "--out", "x.stl"])
    assert old.seed_point == "-1,2,3"
    err = capsys.readouterr().err
    assert err == "scrubin: warning: --seed is deprecated; use --seed-point\n"
    # register surface's --seed is still the RANSAC random seed (an integer)
    reg = parser.parse_args(["register", "surface", "--fixed", "a.ply", "--moving", "b.stl",
                             "--seed", "5", "--json", "r.json"])
    assert reg.seed == 5


@pytest.mark.parametrize("kind", ["camera", "hand-eye"])
def test_calibrate_writes_with_json_and_out_is_a_deprecated_alias(kind, capsys):
    parser = build_parser()
    head = (["calibrate", "camera", "v.png", "--board", "chessboard:9x6:25"] if kind == "camera"
            else ["calibrate", "hand-eye", "--tracker-poses", "a", "--camera-poses", "b"])
    assert parser.parse_args([*head, "--json", "c.json"]).json == Path("c.json")
    assert capsys.readouterr().err == ""
    assert parser.parse_args([*head, "--out", "c.json"]).json == Path("c.json")
    assert "--out is deprecated; use --json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(head)
    assert "--json" in capsys.readouterr().err


def test_groups_are_discovered():
    parser = build_parser()
    text = parser.format_help()
    assert "register" in text and "calibrate" in text and "warm" in text


def test_python_m_scrubin_help_and_usage_error():
    ok = subprocess.run([sys.executable, "-m", "scrubin", "--help"], capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0 and "usage: scrubin" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "scrubin", "no-such-command"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    assert "Traceback" not in bad.stderr


def _one_line_error(capsys, argv: list[str]) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("scrubin: error: ") and err.count("\n") == 1, err
    return err


def test_register_points_missing_output_folder_is_an_error(tmp_path, capsys):
    fixed = np.array([[0, 0, 0], [50, 0, 0], [0, 60, 0], [0, 0, 70]], float)
    (tmp_path / "f.csv").write_text("\n".join(",".join(map(str, p)) for p in fixed) + "\n")
    (tmp_path / "m.csv").write_text("\n".join(",".join(map(str, p + 5)) for p in fixed) + "\n")
    out = tmp_path / "nonexistent" / "dir" / "x.json"
    err = _one_line_error(capsys, ["register", "points", "--fixed", tmp_path / "f.csv",
                                   "--moving", tmp_path / "m.csv", "--json", out])
    assert f"--json {out}: output folder {out.parent} does not exist" in err
    assert not (tmp_path / "nonexistent").exists()
    # the same files with an existing folder register fine
    assert main(["register", "points", "--fixed", str(tmp_path / "f.csv"), "--moving",
                 str(tmp_path / "m.csv"), "--json", str(tmp_path / "x.json")]) == 0
    assert json.loads((tmp_path / "x.json").read_text())["n_points"] == 4


@pytest.mark.parametrize("argv, option", [
    (["model", "IN", "--preset", "bone", "--out", "OUT.glb"], "--out"),
    (["model", "IN", "--preset", "bone", "--out", "ok.glb", "--seg", "OUT.dcm"], "--seg"),
    (["model", "IN", "--preset", "bone", "--out", "ok.glb", "--json", "OUT.json"], "--json"),
    (["fiducials", "IN", "--json", "OUT.json"], "--json"),
    (["fiducials", "IN", "--json", "ok.json", "--csv", "OUT.csv"], "--csv"),
    (["register", "surface", "--fixed", "IN", "--moving", "IN", "--json", "OUT.json"], "--json"),
    (["calibrate", "camera", "IN", "--board", "chessboard:9x6:25", "--json", "OUT.json"],
     "--json"),
    (["calibrate", "hand-eye", "--tracker-poses", "IN", "--camera-poses", "IN", "--json",
      "OUT.json"], "--json"),
    (["calibrate", "pivot", "IN", "--json", "OUT.json"], "--json"),
    (["track", "IN", "--camera", "IN", "--marker-size", "50", "--json", "OUT.json"], "--json"),
    (["overlay", "--source", "synthetic", "--out", "OUT.mp4"], "--out"),
    (["overlay", "--source", "synthetic", "--out", "ok.mp4", "--json", "OUT.json"], "--json"),
    (["info", "IN", "--json", "OUT.json"], "--json"),
    (["sample", "small", "--out", "OUT"], "--out"),
])
def test_missing_output_folder_is_one_line_before_any_work(tmp_path, capsys, argv, option):
    missing = tmp_path / "no" / "such"
    subst = {"IN": tmp_path / "input-that-does-not-exist"}
    args = [subst.get(a, missing / a if a.startswith("OUT") else tmp_path / a
                      if a.startswith("ok.") else a) for a in argv]
    err = _one_line_error(capsys, args)
    assert f"{option} {missing}" in err and "output folder" in err and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_info_json_writes_the_file(tmp_path, capsys):
    series = tmp_path / "ct"
    series.mkdir()
    fac.write_series(series, slices=3, series_uid="1.2.3.9")
    out = tmp_path / "info.json"
    assert main(["info", str(series), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1.2.3.9" in printed and f"wrote {out}" in printed  # the table is still printed
    data = json.loads(out.read_text())
    (vol,) = data["volumes"]
    assert vol["series_instance_uid"] == "1.2.3.9" and vol["size"] == [8, 6, 3]
    assert vol["slice_count"] == 3 and data["skipped"] == []


def test_os_error_is_one_line_without_traceback(tmp_path, capsys):
    # the destination is an existing folder: the final rename fails with an OSError
    from scipy.spatial.transform import Rotation

    rows = []
    for q in Rotation.from_rotvec(np.random.default_rng(0).normal(0, 0.4, (10, 3))).as_matrix():
        m = np.eye(4)
        m[:3, :3] = q
        m[:3, 3] = [10, 20, -500] - q @ [1, 2, 150]
        rows.append(",".join(f"{v:.9f}" for v in m.ravel()))
    (tmp_path / "pivot.csv").write_text("\n".join(rows) + "\n")
    target = tmp_path / "tip.json"
    target.mkdir()
    err = _one_line_error(capsys, ["calibrate", "pivot", tmp_path / "pivot.csv", "--json",
                                   target])
    assert "Traceback" not in err and "tip.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pivot.csv", "tip.json"]
    assert list(target.iterdir()) == []


def test_python_m_scrubin_os_error_has_no_traceback(tmp_path):
    out = tmp_path / "x.json"
    out.mkdir()
    pts = "0,0,0\n50,0,0\n0,60,0\n0,0,70\n"
    (tmp_path / "p.csv").write_text(pts)
    run = subprocess.run([sys.executable, "-m", "scrubin", "register", "points", "--fixed",
                          str(tmp_path / "p.csv"), "--moving", str(tmp_path / "p.csv"),
                          "--json", str(out)], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("scrubin: error: ") and run.stderr.count("\n") == 1
