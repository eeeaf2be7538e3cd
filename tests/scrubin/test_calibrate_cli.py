"""``scrubin calibrate camera | hand-eye | pivot`` end to end on synthetic data."""

from __future__ import annotations

import json

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from scrubin.cli import main
from scrubin.registration.calibration import parse_board_spec
from scrubin.registration.camera import CameraModel
from scrubin.registration.posefile import write_pose_file
from scrubin.samples.synth_images import charuco_plane, look_at_pose, render

TRUE = CameraModel(np.array([[560.0, 0, 322.0], [0, 550.0, 236.0], [0, 0, 1]]),
                   np.array([-0.1, 0.02, 0.0, 0.0, 0.0]), 640, 480)


def _t(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = t
    return m


def test_calibrate_camera_charuco(tmp_path, capsys):
    board = parse_board_spec("charuco:7x5:30:22:DICT_4X4_50").charuco_board()
    rng = np.random.default_rng(11)
    paths = []
    for k in range(7):
        pose = look_at_pose([-105 + rng.uniform(-25, 25), -75 + rng.uniform(-20, 20),
                             rng.uniform(380, 460)],
                            [rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-15, 15)],
                            "BOARD", y_up=False)
        img = render(TRUE, [charuco_plane(board, pose, px_per_mm=4)], noise_sigma=1, seed=k,
                     supersample=2)
        paths.append(tmp_path / f"view{k}.png")
        cv2.imwrite(str(paths[-1]), img)
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((480, 640), 128, np.uint8))
    out = tmp_path / "camera.json"
    rc = main(["calibrate", "camera", *map(str, paths), str(tmp_path / "blank.png"),
               "--board", "charuco:7x5:30:22:DICT_4X4_50", "--json", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    # a rejected view is a warning: stderr, one line, not on stdout
    assert "scrubin: warning: rejected " in captured.err
    assert "blank.png: board not found" in captured.err and "rejected" not in captured.out
    cam = CameraModel.load(out)
    assert abs(cam.matrix[0, 0] / 560 - 1) < 0.01 and abs(cam.matrix[1, 1] / 550 - 1) < 0.01
    assert abs(cam.matrix[0, 2] - 322) < 3 and abs(cam.matrix[1, 2] - 236) < 3
    assert cam.rms_px is not None and cam.rms_px < 0.3


def test_calibrate_camera_errors(tmp_path, capsys):
    out = tmp_path / "camera.json"
    assert main(["calibrate", "camera", str(tmp_path / "x.png"), "--board",
                 "chessboard:9x6", "--json", str(out)]) == 2
    assert "expected chessboard:COLSxROWS:SQUARE_MM" in capsys.readouterr().err
    assert main(["calibrate", "camera", str(tmp_path / "x.png"), "--board",
                 "chessboard:9x6:25", "--json", str(out)]) == 2
    assert "x.png: image not found" in capsys.readouterr().err
    assert not out.exists()


def test_calibrate_hand_eye_and_pivot(tmp_path, capsys):
    rng = np.random.default_rng(5)
    x = _t(Rotation.from_euler("xyz", [5, 10, -80], degrees=True).as_matrix(), [20, 30, 40])
    w = _t(Rotation.from_euler("xyz", [180, 0, 20], degrees=True).as_matrix(), [0, 50, -700])
    tools, cams = [], []
    for _ in range(10):
        tool = _t(Rotation.from_rotvec(rng.normal(0, 0.4, 3)).as_matrix(),
                  rng.normal(0, 80, 3))
        tools.append(tool)
        cams.append(np.linalg.inv(tool @ x) @ w)
    ts = np.arange(10) * 0.1
    write_pose_file(tmp_path / "a.csv", np.array(tools), ts)
    write_pose_file(tmp_path / "b.csv", np.array(cams), ts + 0.001, quaternion=True)
    out = tmp_path / "x.json"
    assert main(["calibrate", "hand-eye", "--tracker-poses", str(tmp_path / "a.csv"),
                 "--camera-poses", str(tmp_path / "b.csv"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["transform"]["from"] == "CAMERA" and res["transform"]["to"] == "TOOL"
    np.testing.assert_allclose(res["transform"]["matrix"], x, atol=1e-5)
    assert res["n_views"] == 10
    # an OpenCV-backed method through the same command (cv2.calibrateHandEye, Andreff 1999)
    assert main(["calibrate", "hand-eye", "--tracker-poses", str(tmp_path / "a.csv"),
                 "--camera-poses", str(tmp_path / "b.csv"), "--method", "andreff", "--json",
                 str(tmp_path / "andreff.json")]) == 0
    res = json.loads((tmp_path / "andreff.json").read_text())
    assert res["method"] == "andreff"
    np.testing.assert_allclose(res["transform"]["matrix"], x, atol=1e-5)
    write_pose_file(tmp_path / "short.csv", np.array(cams[:4]))
    assert main(["calibrate", "hand-eye", "--tracker-poses", str(tmp_path / "a.csv"),
                 "--camera-poses", str(tmp_path / "short.csv"), "--json",
                 str(tmp_path / "y.json")]) == 2
    assert "rows must pair one to one" in capsys.readouterr().err
    assert not (tmp_path / "y.json").exists()

    tip, pivot = np.array([1.0, 2.0, 160.0]), np.array([10.0, -20.0, -500.0])
    poses = []
    for _ in range(20):
        r = Rotation.from_rotvec(rng.normal(0, 0.4, 3)).as_matrix()
        poses.append(_t(r, pivot - r @ tip))
    write_pose_file(tmp_path / "pivot.csv", np.array(poses))
    capsys.readouterr()
    assert main(["calibrate", "pivot", str(tmp_path / "pivot.csv"), "--json",
                 str(tmp_path / "tip.json")]) == 0
    assert "tip (TOOL) 1.000 2.000 160.000 mm" in capsys.readouterr().out
    res = json.loads((tmp_path / "tip.json").read_text())
    np.testing.assert_allclose(res["pivot_tracker_mm"], pivot, atol=1e-4)
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    assert main(["calibrate", "pivot", str(tmp_path / "bad.csv")]) == 2
    assert "bad.csv:1: 3 columns" in capsys.readouterr().err
