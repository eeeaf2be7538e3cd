"""CameraModel: projection convention, scaling and camera.json."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError

K = np.array([[900.0, 0, 640.2], [0, 905.0, 359.7], [0, 0, 1]])
D = np.array([-0.12, 0.05, 0.001, -0.0005, 0.0])


def test_project_matches_opencv():
    cam = CameraModel(K, D, 1280, 720)
    pts = np.array([[10.0, -20.0, 400.0], [-50.0, 30.0, 650.0]])
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, D)
    assert np.allclose(cam.project(pts), ref.reshape(-1, 2))


def test_scaled_keeps_pixel_centres():
    # A point at the centre of pixel (u, v) at full size lands at ((u + .5) s - .5) scaled.
    cam = CameraModel(K, np.zeros(5), 1280, 720)
    half = cam.scaled(0.5)
    p = np.array([[12.0, 7.0, 300.0]])
    u_full = cam.project(p)[0]
    assert np.allclose(half.project(p)[0], (u_full + 0.5) * 0.5 - 0.5)
    assert half.size == (640, 360)


def test_json_roundtrip(tmp_path):
    cam = CameraModel(K, D, 1280, 720, rms_px=0.3)
    cam.save(tmp_path / "camera.json")
    data = json.loads((tmp_path / "camera.json").read_text())
    assert data["image_size"] == [1280, 720] and len(data["dist_coeffs"]) == 5
    back = CameraModel.load(tmp_path / "camera.json")
    assert np.allclose(back.matrix, K) and np.allclose(back.dist, D) and back.rms_px == 0.3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"matrix": np.eye(2)}, "3x3"),
        ({"matrix": np.diag([-1.0, 1.0, 1.0])}, "fx, fy > 0"),
        ({"dist": np.zeros(3)}, "distortion"),
        ({"dist": np.array([np.nan] * 5)}, "distortion"),
        ({"width": 0}, "image size"),
    ],
)
def test_rejects_bad_camera(kwargs, match):
    args = {"matrix": K, "dist": D, "width": 1280, "height": 720} | kwargs
    with pytest.raises(RegistrationError, match=match):
        CameraModel(**args)


def test_load_errors(tmp_path):
    with pytest.raises(RegistrationError, match="not found"):
        CameraModel.load(tmp_path / "nope.json")
    (tmp_path / "c.json").write_text('{"camera_matrix": [[1,0,0],[0,1,0],[0,0,1]]}')
    with pytest.raises(RegistrationError, match="image_size"):
        CameraModel.load(tmp_path / "c.json")
