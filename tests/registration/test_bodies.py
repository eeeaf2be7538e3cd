"""Rigid multi-marker bodies: file format and pose from rendered views."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.registration.bodies import BodyError, RigidBody
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform
from scrubin.registration.markers import (
    detect_markers,
    get_dictionary,
    make_detector,
    marker_object_points,
)
from scrubin.samples.synth_images import look_at_pose, marker_plane, render

CAM = CameraModel(np.array([[1000.0, 0, 639.5], [0, 1000.0, 359.5], [0, 0, 1]]), np.zeros(5),
                  1280, 720)
# markers on two planes: a flat one (id 3), one raised and tilted (id 7), a third (id 9)
TILT = Rotation.from_euler("y", 30, degrees=True).as_matrix()
OFFSETS = {
    3: Transform.from_rt(np.eye(3), [-60, 0, 0], "M3", "REF"),
    7: Transform.from_rt(TILT, [50, 20, 15], "M7", "REF"),
    9: Transform.from_rt(np.eye(3), [0, -55, 0], "M9", "REF"),
}
SIZES = {3: 40.0, 7: 50.0, 9: 45.0}


def _body() -> RigidBody:
    return RigidBody("REF", {m: OFFSETS[m].apply(marker_object_points(SIZES[m]))
                             for m in OFFSETS}, "DICT_4X4_50")


def _render(truth: Transform, ids: tuple[int, ...], seed: int = 0) -> np.ndarray:
    d = get_dictionary("DICT_4X4_50")
    planes = [marker_plane(d, m, SIZES[m], truth @ OFFSETS[m])
              for m in ids]
    return render(CAM, planes, noise_sigma=2, seed=seed, supersample=2)


def _err(est: Transform, truth: Transform) -> tuple[float, float]:
    dt = float(np.linalg.norm(est.translation - truth.translation))
    return dt, float(np.degrees(Rotation.from_matrix(est.rotation.T @ truth.rotation).magnitude()))


def test_json_round_trip(tmp_path):
    body = _body()
    path = tmp_path / "body.json"
    body.save(path)
    again = RigidBody.load(path)
    assert again.name == "REF" and again.ids == (3, 7, 9) and again.dictionary == "DICT_4X4_50"
    for m in body.ids:
        np.testing.assert_allclose(again.markers[m], body.markers[m])
    assert json.loads(path.read_text())["unit"] == "mm"


@pytest.mark.parametrize("ids", [(3, 7, 9), (7,), (3, 9)])
def test_body_pose_from_visible_markers(ids):
    truth = look_at_pose([20, -10, 550], [15, -20, 25], "REF")
    img = _render(truth, ids)
    det = detect_markers(img, make_detector("DICT_4X4_50"), camera=CAM)
    bp = _body().estimate_pose(det, CAM, timestamp=1.5)
    assert bp is not None
    assert bp.marker_ids == tuple(sorted(ids)) or set(bp.marker_ids) == set(ids)
    assert bp.n_markers == len(ids) and bp.n_corners == 4 * len(ids)
    assert bp.estimate.pose.src == "REF" and bp.estimate.pose.timestamp == 1.5
    dt, dr = _err(bp.estimate.pose, truth)
    assert dt < 1.0 and dr < 0.5, (dt, dr)


def test_body_not_visible_and_foreign_markers_ignored():
    d = get_dictionary("DICT_4X4_50")
    img = render(CAM, [marker_plane(d, 20, 50, look_at_pose([0, 0, 500], [0, 0, 0], "X"))],
                 supersample=1)
    det = detect_markers(img, make_detector(d))
    assert det.ids.tolist() == [20]
    assert _body().estimate_pose(det, CAM) is None


def test_single_marker_body_matches_marker_frame():
    body = RigidBody.single(5, 40.0, name="TOOL")
    assert body.ids == (5,) and body.name == "TOOL"
    np.testing.assert_allclose(body.markers[5], marker_object_points(40.0))


def _write(tmp_path, data) -> str:
    p = tmp_path / "b.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


def test_rejections(tmp_path):
    good = [[-1, 1, 0], [1, 1, 0], [1, -1, 0], [-1, -1, 0]]
    with pytest.raises(BodyError, match="not found"):
        RigidBody.load(tmp_path / "missing.json")
    with pytest.raises(BodyError, match=r"b\.json: not a readable body JSON"):
        RigidBody.load(_write(tmp_path, "{nope"))
    with pytest.raises(BodyError, match="b.json: marker id 1 appears twice"):
        RigidBody.load(_write(tmp_path, {"markers": [{"id": 1, "corners": good}] * 2}))
    with pytest.raises(BodyError, match="non-empty 'markers'"):
        RigidBody.load(_write(tmp_path, {"name": "X", "markers": []}))
    with pytest.raises(BodyError, match="unit"):
        RigidBody.from_json({"unit": "m", "markers": [{"id": 1, "corners": good}]})
    with pytest.raises(BodyError, match="needs 'id' and 'corners'"):
        RigidBody.from_json({"markers": [{"id": 1}]})
    with pytest.raises(BodyError, match="must be an integer"):
        RigidBody.from_json({"markers": [{"id": "a", "corners": good}]})
    with pytest.raises(BodyError, match=r"4 points \[x, y, z\] mm, got \(3, 3\)"):
        RigidBody("X", {1: good[:3]})
    with pytest.raises(BodyError, match="NaN"):
        RigidBody("X", {1: [[np.nan, 0, 0]] + good[1:]})
    with pytest.raises(BodyError, match="degenerate"):
        RigidBody("X", {1: [[0, 0, 0]] * 4})
    with pytest.raises(BodyError, match="at least one marker"):
        RigidBody("X", {})
    with pytest.raises(BodyError, match="name"):
        RigidBody("", {1: good})
    with pytest.raises(BodyError, match="> 0 mm"):
        RigidBody.single(1, 0.0)
    with pytest.raises(BodyError, match="unknown ArUco dictionary"):
        RigidBody.from_json({"dictionary": "DICT_NOPE", "markers": [{"id": 1, "corners": good}]})


def test_grid_2x2_plate_geometry_and_rejections():
    body = RigidBody.grid_2x2((4, 5, 6, 7), 40.0, 10.0, "PLATE")
    assert body.ids == (4, 5, 6, 7)
    tl = body.markers[4]
    assert np.allclose(tl[0], [-45.0, 45.0, 0.0]) and np.allclose(tl[2], [-5.0, 5.0, 0.0])
    assert np.allclose(np.linalg.norm(tl[1] - tl[0]), 40.0)
    with pytest.raises(BodyError, match="marker size > 0"):
        RigidBody.grid_2x2((0, 1, 2, 3), 0.0, 10.0, "PLATE")
    with pytest.raises(BodyError, match="gap >= 0"):
        RigidBody.grid_2x2((0, 1, 2, 3), 40.0, -1.0, "PLATE")
