"""Renderer: exact geometry (corners land where the camera model projects them)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform
from scrubin.registration.markers import get_dictionary, marker_object_points
from scrubin.registration.subpixel import refine_corners_edges
from scrubin.samples.synth_images import (
    chessboard_plane,
    look_at_pose,
    marker_plane,
    render,
)

K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])


def _camera(dist: tuple = (0, 0, 0, 0, 0)) -> CameraModel:
    return CameraModel(K, np.array(dist, float), 640, 480)


@pytest.mark.parametrize("dist", [(0, 0, 0, 0, 0), (-0.2, 0.05, 0.001, -0.001, 0)])
def test_chessboard_x_corners_project_exactly(dist):
    cam = _camera(dist)
    pose = look_at_pose([-60, -40, 420], [15, -20, 10], "BOARD", y_up=False)
    img = render(cam, [chessboard_plane(6, 5, 20, pose, px_per_mm=6)],
                 supersample=3 if any(dist) else 4)
    obj = np.array([[j * 20, i * 20, 0] for i in range(5) for j in range(6)], float)
    truth = cam.project(pose.apply(obj)).astype(np.float32)
    start = (truth + 0.4).reshape(-1, 1, 2).copy()
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    found = cv2.cornerSubPix(img, start, (5, 5), (-1, -1), crit).reshape(-1, 2)
    # saddle points are unbiased: residual is the renderer's (and cornerSubPix's) error
    assert np.abs(found - truth).max() < 0.08


def test_marker_corners_project_exactly_with_distortion():
    cam = _camera((-0.2, 0.05, 0.001, -0.001, 0))
    d = get_dictionary("DICT_4X4_50")
    pose = look_at_pose([70, 50, 400], [20, -25, 30], "MARKER")
    img = render(cam, [marker_plane(d, 3, 50, pose)], supersample=3)
    truth = cam.project(pose.apply(marker_object_points(50)))
    refined = refine_corners_edges(img, (truth + [0.8, -0.6])[None], cam)[0]
    assert np.abs(refined - truth).max() < 0.05


def test_later_planes_paint_over_earlier_and_background_kept():
    cam = _camera()
    d = get_dictionary("DICT_4X4_50")
    far = look_at_pose([0, 0, 600], [0, 0, 0], "A")
    near = look_at_pose([0, 0, 300], [0, 0, 0], "B")
    img = render(cam, [marker_plane(d, 0, 40, far), marker_plane(d, 1, 40, near)],
                 background=77, supersample=1)
    assert img[0, 0] == 77
    alone = render(cam, [marker_plane(d, 1, 40, near)], background=77, supersample=1)
    np.testing.assert_array_equal(img[200:280, 280:360], alone[200:280, 280:360])


def test_noise_is_seeded_and_blur_smooths():
    cam = _camera()
    d = get_dictionary("DICT_4X4_50")
    pl = marker_plane(d, 0, 40, look_at_pose([0, 0, 300], [0, 0, 0], "M"))
    a = render(cam, [pl], noise_sigma=3, seed=1, supersample=1)
    b = render(cam, [pl], noise_sigma=3, seed=1, supersample=1)
    np.testing.assert_array_equal(a, b)
    sharp = render(cam, [pl], supersample=1).astype(float)
    blurred = render(cam, [pl], blur_sigma_px=2, supersample=1).astype(float)
    assert np.abs(np.diff(blurred, axis=1)).max() < np.abs(np.diff(sharp, axis=1)).max()


def test_render_rejections():
    cam = _camera()
    d = get_dictionary("DICT_4X4_50")
    pl = marker_plane(d, 0, 40, look_at_pose([0, 0, 300], [0, 0, 0], "M"))
    with pytest.raises(RegistrationError, match="supersample"):
        render(cam, [pl], supersample=0)
    with pytest.raises(RegistrationError, match="noise_sigma"):
        render(cam, [pl], noise_sigma=-1)
    behind = marker_plane(d, 0, 40, look_at_pose([0, 0, -300], [0, 0, 0], "M"))
    with pytest.raises(RegistrationError, match="behind the camera"):
        render(cam, [behind])
    with pytest.raises(RegistrationError, match="> 0 mm"):
        marker_plane(d, 0, 0.0, pl.pose)
    with pytest.raises(RegistrationError, match="outside the dictionary"):
        marker_plane(d, 50, 40, pl.pose)
    with pytest.raises(RegistrationError, match="Transform"):
        marker_plane(d, 0, 40, np.eye(4))  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="inner corners"):
        chessboard_plane(1, 5, 20, Transform.identity("B", "CAMERA"))


def test_look_at_pose_rejections():
    with pytest.raises(RegistrationError, match="3 values each"):
        look_at_pose([0, 0], [0, 0, 0], "M")
    with pytest.raises(RegistrationError, match="finite"):
        look_at_pose([0, 0, np.nan], [0, 0, 0], "M")
    p = look_at_pose([1, 2, 300], [0, 0, 0], "M")
    np.testing.assert_allclose(p.apply(np.array([[0, 10.0, 0]])), [[1, -8, 300]])  # y up
