"""``scrubin overlay``: synthetic and video sources end to end, report content, one-line errors
and no partial outputs."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from scrubin.cli import main
from scrubin.imaging.mesh_io import save_mesh
from scrubin.overlay.sinks import SinkItem, VideoFileSink
from scrubin.registration.frames import CT, REF, Transform
from scrubin.samples.synthetic import SyntheticScene, default_camera, phantom_models


def overlay(*argv: str) -> int:
    return main(["overlay", *argv])


def _frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


DISPLAY = {"model": "stereo_display", "ipd_mm": 63.0,
           "eye": {"image_size": [320, 180], "fov_deg": [40.0, 23.0]},
           "T_DISPLAY_CAMERA": [[1, 0, 0, 0], [0, 1, 0, -20], [0, 0, 1, -10], [0, 0, 0, 1]]}


def test_synthetic_needs_nothing_else(tmp_path, capsys) -> None:
    out, rep = tmp_path / "o.mp4", tmp_path / "r.json"
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "display.json").write_text(json.dumps(DISPLAY))
    assert overlay("--source", "synthetic", "--frames", "4", "--supersample", "1",
                   "--out", str(out), "--json", str(rep), "--igtl-port", "0",
                   "--stereo", str(inputs / "display.json")) == 0
    line = capsys.readouterr().out
    assert "4 frames" in line and "reprojection median" in line and "latency" in line
    assert _frames(out) == 4
    data = json.loads(rep.read_text())
    assert len(data["frames"]) == 4
    f0 = data["frames"][0]
    assert f0["frame_id"] == 0 and f0["capture_time_s"] == 0.0 and f0["state"] == "LIVE"
    assert len(f0["reprojection_error_px"]) == len(data["meta"]["truth_points"]) == 9
    assert set(f0["stages_ms"]) >= {"capture", "track", "render", "hud", "sink"}
    assert data["summary"]["reprojection_error_px"]["median"] < 1.0
    assert data["meta"]["frame_of_reference_uid"]
    assert data["meta"]["igtl_port"] > 0
    # one state machine, one state per frame, the defaults scrubin track uses too
    assert data["meta"]["tracking_limits"] == {"sync_s": 0.02, "stale_after_s": 0.1,
                                               "lost_after_s": 0.5, "recover_frames": 1}
    assert "tracker_state" not in f0 and f0["pose_age_s"] == 0.0
    assert set(data["summary"]["states"]) == {"LIVE", "HELD", "STALE", "LOST"}
    with av.open(str(tmp_path / "o_stereo.mp4")) as c:  # both eyes side by side
        eyes = list(c.decode(video=0))
    assert len(eyes) == 4 and (eyes[0].width, eyes[0].height) == (640, 180)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "o.mp4", "o_stereo.mp4",
                                                          "r.json"]


@pytest.fixture(scope="module")
def video_inputs(tmp_path_factory):
    """A recorded video of the synthetic scene plus camera, body, registration and model."""
    d = tmp_path_factory.mktemp("video")
    scene = SyntheticScene.from_phantom("small", default_camera(640, 480), n_frames=3,
                                        supersample=1)
    sink = VideoFileSink(d / "in.mp4", fps=30, crf=12)
    for i in range(3):
        sink.write(SinkItem(i, i / 30, scene.render(i).image_bgr, ""))
    sink.close()
    scene.camera.save(d / "camera.json")
    scene.body.save(d / "body.json")
    report = {"transform": scene.T_ref_ct.to_json(), "fre_mm": 0.5,
              "targets": [{"predicted_tre_mm": 1.2}]}
    (d / "reg.json").write_text(json.dumps(report))
    save_mesh(phantom_models("small")[1], d / "skull.glb")
    bad = Transform(scene.T_ref_ct.matrix, CT, REF, source={"frame_of_reference_uid": "9.9"})
    bad.save(d / "other_reg.json")
    return d


def test_video_source_end_to_end(video_inputs, tmp_path) -> None:
    d = video_inputs
    out, rep = tmp_path / "o.mp4", tmp_path / "r.json"
    assert overlay("--source", str(d / "in.mp4"), "--camera", str(d / "camera.json"),
                   "--model", str(d / "skull.glb"), "--registration", str(d / "reg.json"),
                   "--body", str(d / "body.json"), "--out", str(out), "--json", str(rep)) == 0
    data = json.loads(rep.read_text())
    assert [f["frame_id"] for f in data["frames"]] == [0, 1, 2]
    np.testing.assert_allclose([f["capture_time_s"] for f in data["frames"]],
                               [0, 1 / 30, 2 / 30], atol=1e-6)
    assert all(f["detected"] and f["state"] == "LIVE" for f in data["frames"])
    assert data["meta"]["registration_fre_mm"] == 0.5
    assert data["meta"]["registration_predicted_tre_mm"] == 1.2
    assert _frames(out) == 3


def _one_line_error(capsys, text: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("scrubin: error:") and "\n" not in err and text in err, err


@pytest.mark.parametrize("args, text", [
    (["--source", "{d}/in.mp4"], "needs --camera, --registration, --model"),
    (["--source", "{d}/bad.mp4", "--camera", "{d}/camera.json", "--model", "{d}/skull.glb",
      "--registration", "{d}/reg.json", "--marker-size", "30"], "not a readable video"),
    (["--source", "synthetic", "--frames", "2", "--registration", "{d}/other_reg.json"],
     "FrameOfReferenceUID 9.9 differs"),
    (["--source", "{d}/in.mp4", "--camera", "{d}/camera.json", "--model", "{d}/missing.glb",
      "--registration", "{d}/reg.json", "--marker-size", "30"], "missing.glb: file not found"),
    (["--source", "camera:x", "--camera", "{d}/camera.json", "--model", "{d}/skull.glb",
      "--registration", "{d}/reg.json", "--marker-size", "30"], "camera:N"),
    (["--source", "synthetic", "--frames", "0"], "--frames must be >= 1"),
    (["--source", "synthetic", "--igtl-port", "70000"], "--igtl-port must be 0..65535"),
    (["--source", "{d}/in.mp4", "--camera", "{d}/camera.json", "--model", "{d}/skull.glb",
      "--registration", "{d}/reg.json", "--marker-size", "-3"], "--marker-size must be > 0"),
    (["--source", "{d}/in.mp4", "--camera", "{d}/camera.json", "--model", "{d}/skull.glb",
      "--registration", "{d}/reg.json", "--body", "{d}/nobody.json"], "nobody.json: file not"),
])
def test_one_line_errors_and_no_output(video_inputs, tmp_path, capsys, args, text) -> None:
    d = video_inputs
    (d / "bad.mp4").write_text("this is not a video")
    out, rep = tmp_path / "o.mp4", tmp_path / "r.json"
    argv = [a.format(d=d) for a in args] + ["--out", str(out), "--json", str(rep)]
    assert overlay(*argv) == 2
    _one_line_error(capsys, text)
    assert list(tmp_path.iterdir()) == []


def test_out_must_be_mp4(tmp_path, capsys) -> None:
    assert overlay("--source", "synthetic", "--out", str(tmp_path / "o.avi")) == 2
    _one_line_error(capsys, "expected an .mp4")
    assert list(tmp_path.iterdir()) == []


def test_synthetic_pointer_landmark_and_scene_glb(tmp_path, capsys) -> None:
    """The synthetic source brings the pointer and its landmark; --scene writes the GLB with the
    models in REF and the last live transforms."""
    import trimesh

    from scrubin.imaging.mesh_io import LPS_MM_TO_GLTF
    from scrubin.samples.synthetic import POINTER_LANDMARK

    out, rep, glb = tmp_path / "o.mp4", tmp_path / "r.json", tmp_path / "scene.glb"
    assert overlay("--source", "synthetic", "--frames", "3", "--out", str(out), "--json",
                   str(rep), "--scene", str(glb), "--landmark", "nasion=0,-100,20") == 0
    assert "landmark distance median" in capsys.readouterr().out
    data = json.loads(rep.read_text())
    assert POINTER_LANDMARK in data["meta"]["pointer"]["landmarks"]
    for f in data["frames"]:
        p = f["pointer"]
        assert p["touching_truth"] and p["landmark"] == POINTER_LANDMARK
        assert p["landmark_distance_mm"] < 1.0 and p["tip_error_mm"] < 1.0
    assert data["summary"]["pointer"]["landmark_distance_touching_mm"]["n"] == 3
    assert data["meta"]["scene"] == {"path": str(glb), "T_CAMERA_REF": True, "T_REF_TOOL": True}
    # the scene: models placed by the exact T_REF_CT, camera and pointer near their truth
    scene = SyntheticScene.from_phantom("small", default_camera(1280, 720), n_frames=3,
                                        pointer_touch=(0, 3))
    g = trimesh.load(glb, force="scene")
    models = {m.name: m for m in phantom_models("small")}
    for node in g.graph.nodes_geometry:
        m, geom = g.graph[node]
        got = trimesh.transform_points(g.geometry[geom].vertices, m)
        expect = scene.T_ref_ct.apply(models[node].vertices) @ LPS_MM_TO_GLTF[:3, :3].T
        d = np.linalg.norm(got[:, None] - expect[None, :200], axis=2).min(axis=0)
        assert d.max() < 1e-6
    t_ref_cam_truth = scene.T_camera_ref(2).inverse()
    t_ref_tool_truth = scene.T_ref_ct @ scene.pointer.T_ct_tool(2)
    for name, truth in (("CAMERA", t_ref_cam_truth), ("Stylus", t_ref_tool_truth)):
        m = g.graph.get(name)[0]
        # glTF metres; tracking of both plates within 2 mm of the true poses
        np.testing.assert_allclose(m[:3, 3], LPS_MM_TO_GLTF[:3, :3] @ truth.translation,
                                   atol=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4", "r.json", "scene.glb"]


@pytest.mark.parametrize("args, text", [
    (["--tool-tip", "0,-100,0"], "--tool-tip needs --tool-body"),
    (["--tool-body", "{d}/body.json"], "--tool-body needs --tool-tip"),
    (["--tool-body", "{d}/body.json", "--tool-tip", "0,-100"], "expected three numbers"),
    (["--tool-body", "{d}/body.json", "--tool-tip", "{d}/pivot_bad.json"],
     "not a readable pivot JSON"),
    (["--tool-body", "{d}/body.json", "--tool-tip", "{d}/pivot_nofield.json"], "tip_tool_mm"),
    (["--tool-body", "{d}/body.json", "--tool-tip", "{d}/pivot_missing.json"],
     "neither X,Y,Z"),
    (["--landmark", "F1=1,2"], "--landmark F1: '1,2': expected three numbers"),
    (["--landmark", "=1,2,3"], "expected NAME=X,Y,Z"),
    (["--landmark", "a=1,2,3", "--landmark", "a=4,5,6"], "names must be unique"),
    (["--tool-body", "{d}/nobody.json", "--tool-tip", "1,2,3"], "nobody.json: file not"),
    (["--scene", "{d}/scene.gltf"], "expected a .glb"),
    (["--scene", "{d}/no/scene.glb"], "does not exist"),
])
def test_pointer_option_errors(video_inputs, tmp_path, capsys, args, text) -> None:
    d = video_inputs
    (d / "pivot_bad.json").write_text("{")
    (d / "pivot_nofield.json").write_text('{"tip": [0, 0, 0]}')
    out = tmp_path / "o.mp4"
    argv = ["--source", "synthetic", "--frames", "2"] + [a.format(d=d) for a in args]
    assert overlay(*argv, "--out", str(out), "--json", str(tmp_path / "r.json")) == 2
    _one_line_error(capsys, text)
    assert list(tmp_path.iterdir()) == []


def test_landmark_needs_a_pointer_for_other_sources(video_inputs, tmp_path, capsys) -> None:
    d = video_inputs
    assert overlay("--source", str(d / "in.mp4"), "--camera", str(d / "camera.json"),
                   "--model", str(d / "skull.glb"), "--registration", str(d / "reg.json"),
                   "--body", str(d / "body.json"), "--landmark", "a=1,2,3",
                   "--out", str(tmp_path / "o.mp4")) == 2
    _one_line_error(capsys, "--landmark needs a tracked pointer")
    assert list(tmp_path.iterdir()) == []


def _video_args(d, model: str, tmp_path) -> list[str]:
    return ["--source", str(d / "in.mp4"), "--camera", str(d / "camera.json"), "--model", model,
            "--registration", str(d / "reg.json"), "--body", str(d / "body.json"),
            "--out", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "r.json")]


def test_scene_glb_is_refused_as_a_ct_model(video_inputs, tmp_path, capsys) -> None:
    """Issue 7: the scene GLB of ``overlay --scene`` holds the models already in REF; as a
    ``--model`` it would get T_REF_CT a second time. Refused, naming file and frames."""
    from scrubin.overlay.pipeline import load_registration
    from scrubin.overlay.scene_export import export_scene

    d = video_inputs
    inputs = tmp_path / "in"
    inputs.mkdir()
    reg = load_registration(d / "reg.json")
    export_scene(inputs / "scene.glb", [phantom_models("small")[1]], reg.T_ref_ct)
    outs = tmp_path / "out"
    outs.mkdir()
    assert overlay(*_video_args(d, str(inputs / "scene.glb"), outs)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scrubin: error:") and "\n" not in err
    assert "scene.glb" in err and "'REF'" in err and "expected frame 'CT'" in err
    assert list(outs.iterdir()) == []


@pytest.mark.parametrize("ext", [".stl", ".glb"])
def test_unknown_provenance_needs_the_flag_and_warns(video_inputs, tmp_path, capsys,
                                                     ext) -> None:
    """An STL (no UIDs) or a GLB without Scrub In's extras would switch the Frame-of-Reference
    guard off silently: refused without --allow-unknown-provenance, warned about with it."""
    import trimesh

    d = video_inputs
    inputs = tmp_path / "in"
    inputs.mkdir()
    skull = phantom_models("small")[1]
    model = inputs / f"skull{ext}"
    if ext == ".stl":
        save_mesh(skull, model)  # says FRAME=CT but an STL cannot hold the UIDs
    else:  # a third-party GLB: same geometry (glTF metres), no extras at all
        from scrubin.imaging.mesh_io import LPS_MM_TO_GLTF

        gl = skull.vertices @ LPS_MM_TO_GLTF[:3, :3].T
        trimesh.Trimesh(gl, skull.faces, process=False).export(model)
    outs = tmp_path / "out"
    outs.mkdir()
    assert overlay(*_video_args(d, str(model), outs)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scrubin: error:") and "\n" not in err
    assert f"skull{ext}" in err and "unknown provenance" in err
    assert "--allow-unknown-provenance" in err
    assert list(outs.iterdir()) == []
    assert overlay(*_video_args(d, str(model), outs), "--allow-unknown-provenance") == 0
    err = capsys.readouterr().err
    assert "scrubin: warning:" in err and f"skull{ext}" in err
    assert "Frame-of-Reference guard is OFF" in err
    assert sorted(p.name for p in outs.iterdir()) == ["o.mp4", "r.json"]
