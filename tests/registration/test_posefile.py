"""Pose files: matrix / quaternion rows, timestamps, headers, errors naming file:line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.registration.frames import Transform
from scrubin.registration.posefile import (
    PoseFileError,
    PoseSeries,
    format_poses,
    pair_poses,
    parse_pose_text,
    read_pose_file,
    write_pose_file,
)


def _poses(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.repeat(np.eye(4)[None], n, axis=0)
    out[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.5, (n, 3))).as_matrix()
    out[:, :3, 3] = rng.normal(0, 100, (n, 3))
    return out


def test_matrix_rows_with_header_comments_and_separators():
    m = _poses(2)
    text = "# tracker export\nm00,m01,m02,m03,m10,m11,m12,m13,m20,m21,m22,m23,m30,m31,m32,m33\n"
    text += ",".join(f"{v:.12g}" for v in m[0].ravel()) + "\n\n"
    text += " ".join(f"{v:.12g}" for v in m[1].ravel()) + "\n"
    s = parse_pose_text(text, "a.csv")
    assert s.timestamps is None and len(s) == 2
    np.testing.assert_allclose(s.matrices, m, atol=1e-9)


def test_quaternion_rows_are_scalar_first():
    # 90 deg about z: qw = cos 45, qz = sin 45
    s = parse_pose_text("0.7071067811865476;0;0;0.7071067811865476;1;2;3\n")
    np.testing.assert_allclose(s.matrices[0, :3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(s.matrices[0, :3, 3], [1, 2, 3])


@pytest.mark.parametrize("quaternion", [False, True])
def test_round_trip_with_timestamps(tmp_path, quaternion):
    m = _poses(5)
    ts = np.arange(5) * 0.033 + 10.0
    path = tmp_path / "p.csv"
    write_pose_file(path, m, ts, quaternion=quaternion)
    s = read_pose_file(path)
    np.testing.assert_allclose(s.matrices, m, atol=1e-6)
    np.testing.assert_allclose(s.timestamps, ts)
    assert not (tmp_path / "p.csv.part").exists()


def test_json_forms(tmp_path):
    m = _poses(3)
    p = tmp_path / "t.json"
    p.write_text(json.dumps([Transform(x, "TOOL", "TRACKER", timestamp=float(k)).to_json()
                             for k, x in enumerate(m)]))
    s = read_pose_file(p)
    np.testing.assert_allclose(s.matrices, m)
    np.testing.assert_allclose(s.timestamps, [0, 1, 2])
    track = {"frames": [
        {"detected": True, "timestamp": 0.5, "raw_pose": Transform(m[0], "M", "CAMERA").to_json()},
        {"detected": False, "timestamp": 0.6, "raw_pose": None},
        {"detected": True, "timestamp": 0.7, "raw_pose": Transform(m[1], "M", "CAMERA").to_json()},
    ]}
    p.write_text(json.dumps(track))
    s = read_pose_file(p)
    assert len(s) == 2 and s.timestamps.tolist() == [0.5, 0.7]


def test_pairing_by_timestamp_and_by_row():
    m = _poses(4)
    a = PoseSeries(m, np.array([0.0, 1.0, 2.0, 3.0]), "a")
    b = PoseSeries(m[::-1], np.array([3.001, 2.0, 0.9, 0.0]), "b")
    pa, pb = pair_poses(a, b, max_dt_s=0.005)
    assert len(pa) == 3  # 1.0 vs 0.9 is too far apart
    np.testing.assert_allclose(pa, pb)
    pa, pb = pair_poses(PoseSeries(m, None, "a"), PoseSeries(m, None, "b"))
    assert len(pa) == 4
    with pytest.raises(PoseFileError, match="a has 4 poses but b has 3"):
        pair_poses(PoseSeries(m, None, "a"), PoseSeries(m[:3], None, "b"))
    with pytest.raises(PoseFileError, match="no timestamps"):
        pair_poses(a, PoseSeries(m, a.timestamps + 10, "b"))


def test_rejections_name_file_and_line(tmp_path):
    with pytest.raises(PoseFileError, match="not found"):
        read_pose_file(tmp_path / "none.csv")
    cases = {
        "1,2,3\n": "f.csv:1: 3 columns; expected 16",
        "1,0,0,0,0,0,0\n1,0,0,0,0,0,0,0\n": "f.csv:2: 8 columns, earlier lines 7",
        "qw,qx\n1,0,0,0,0,0,x\n": "f.csv:2: non-numeric",
        "1,0,0,0,0,0,x\n1,0,0,0,0,0,0\n": "f.csv:1: non-numeric",
        "1,0,0,0,nan,0,0\n": "f.csv:1: NaN",
        "2,0,0,0,0,0,0\n": "f.csv:1: quaternion .* norm is 2",
        "# only comments\n": "f.csv: no poses found",
        ",".join(["1"] * 16) + "\n": "f.csv:1: last matrix row must be 0 0 0 1",
        "2,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1\n": "f.csv:1: rotation part is not a rotation",
    }
    for text, msg in cases.items():
        p = tmp_path / "f.csv"
        p.write_text(text)
        with pytest.raises(PoseFileError, match=msg):
            read_pose_file(p)
    p = tmp_path / "f.json"
    p.write_text("{bad")
    with pytest.raises(PoseFileError, match="f.json: invalid JSON"):
        read_pose_file(p)
    p.write_text(json.dumps({"x": 1}))
    with pytest.raises(PoseFileError, match="list of transforms"):
        read_pose_file(p)
    p.write_text(json.dumps([{"from": "A", "to": "B", "matrix": [[1, 0], [0, 1]]}]))
    with pytest.raises(PoseFileError, match="f.json: pose 0"):
        read_pose_file(p)
    with pytest.raises(PoseFileError, match=r"\(N, 4, 4\)"):
        format_poses(np.zeros((2, 3, 3)))
    with pytest.raises(PoseFileError, match="2 timestamps for 3 poses"):
        format_poses(_poses(3), np.zeros(2))
