"""Transforms between named frames: mapping, composition, inversion, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scrubin.registration.errors import FrameMismatchError, RegistrationError
from scrubin.registration.frames import CAMERA, CT, REF, Transform


def _rot(axis: np.ndarray, deg: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(deg)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def test_apply_compose_invert():
    t_ref_ct = Transform.from_rt(_rot([0, 0, 1], 90), [10, 0, 0], CT, REF)
    t_cam_ref = Transform.from_rt(_rot([1, 0, 0], 90), [0, 0, 500], REF, CAMERA)
    p_ct = np.array([[1.0, 2.0, 3.0]])
    p_ref = t_ref_ct.apply(p_ct, frame=CT)
    assert np.allclose(p_ref, [[8.0, 1.0, 3.0]])
    t_cam_ct = t_cam_ref @ t_ref_ct
    assert (t_cam_ct.src, t_cam_ct.dst) == (CT, CAMERA)
    assert np.allclose(t_cam_ct.apply(p_ct), t_cam_ref.apply(p_ref))
    back = t_cam_ct.inverse().apply(t_cam_ct.apply(p_ct))
    assert np.allclose(back, p_ct)


def test_composition_refuses_mismatched_frames_and_sources():
    a = Transform.identity(CT, REF)
    with pytest.raises(FrameMismatchError, match="REF"):
        _ = a @ a
    with pytest.raises(FrameMismatchError, match="frame"):
        a.apply(np.zeros(3), frame=CAMERA)
    b = Transform(np.eye(4), REF, CAMERA, source={"frame_of_reference_uid": "1.2"})
    c = Transform(np.eye(4), CT, REF, source={"frame_of_reference_uid": "1.3"})
    with pytest.raises(FrameMismatchError, match="different sources"):
        _ = b @ c


def test_json_roundtrip(tmp_path):
    t = Transform.from_rt(_rot([1, 2, 3], 33), [1, -2, 3], CT, REF, timestamp=1.5,
                          source={"series_instance_uid": "1.2.3"})
    path = tmp_path / "t.json"
    t.save(path)
    data = json.loads(path.read_text())
    assert data["from"] == CT and data["to"] == REF and data["unit"] == "mm"
    u = Transform.load(path)
    assert np.allclose(u.matrix, t.matrix) and u.source == t.source and u.timestamp == 1.5


@pytest.mark.parametrize(
    "matrix, match",
    [
        (np.eye(3), "4x4"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), "reflection"),
        (np.diag([2.0, 2.0, 2.0, 1.0]), "not rigid"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1.0]]), "last row"),
        (np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "orthonormal"),
    ],
)
def test_rejects_non_rigid(matrix, match):
    with pytest.raises(RegistrationError, match=match):
        Transform(matrix, CT, REF)


def test_json_errors(tmp_path):
    with pytest.raises(RegistrationError, match="not found"):
        Transform.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"from": "CT", "to": "REF", "unit": "m", "matrix": [[1,0,0,0],[0,1,0,0],'
                   '[0,0,1,0],[0,0,0,1]]}')
    with pytest.raises(RegistrationError, match="unit"):
        Transform.load(bad)
    bad.write_text("{")
    with pytest.raises(RegistrationError, match="bad.json"):
        Transform.load(bad)
    bad.write_text('{"from": "CT"}')
    with pytest.raises(RegistrationError, match="matrix"):
        Transform.load(bad)


def test_composition_never_stamps_one_clock_with_the_others_time():
    """A tracked pose (capture clock) composed with a registration stamped on another clock."""
    t_cam_ref = Transform.from_rt(_rot([1, 0, 0], 10), [0, 0, 500], REF, CAMERA,
                                  timestamp=12.5, clock="capture")
    t_ref_ct = Transform.from_rt(_rot([0, 0, 1], 30), [5, 0, 0], CT, REF,
                                 timestamp=1.7e9, clock="unix")
    mixed = t_cam_ref @ t_ref_ct
    assert mixed.timestamp is None and mixed.clock is None  # not 12.5 presented as unix time
    unnamed = Transform.from_rt(np.eye(3), [1, 2, 3], CT, REF, timestamp=3.0)
    assert (t_cam_ref @ unnamed).timestamp is None  # an unnamed clock is not "capture"
    same = Transform.from_rt(np.eye(3), [1, 2, 3], CT, REF, timestamp=11.0, clock="capture")
    both = t_cam_ref @ same
    assert (both.timestamp, both.clock) == (11.0, "capture")  # the older input bounds it
    static = Transform.from_rt(np.eye(3), [1, 2, 3], CT, REF)
    one = t_cam_ref @ static
    assert (one.timestamp, one.clock) == (12.5, "capture")
    assert one.inverse().clock == "capture"
    back = Transform.from_json(json.loads(json.dumps(one.to_json())))
    assert back.clock == "capture" and back.timestamp == 12.5
    assert "clock" not in static.to_json()
