"""Stereo views for a see-through headset: disparity of known points, RGBA output, display.json."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import trimesh

from scrubin.overlay.errors import OverlayError
from scrubin.overlay.renderer import Structure
from scrubin.overlay.stereo import DisplayCalibration, StereoRenderer
from scrubin.registration.frames import LEFT_EYE, Transform

DISPLAY = {"model": "stereo_display", "ipd_mm": 64.0,
           "eye": {"image_size": [640, 360], "fov_deg": [40.0, 23.0]}}
T_DISPLAY_CT = Transform(np.eye(4), "CT", "DISPLAY")


def blobs(alpha: np.ndarray) -> np.ndarray:
    n, lab = cv2.connectedComponents((alpha > 0).astype(np.uint8))
    out = []
    for k in range(1, n):
        ys, xs = np.nonzero(lab == k)
        w = alpha[ys, xs].astype(np.float64)
        out.append([xs @ w / w.sum(), ys @ w / w.sum()])
    return np.array(sorted(out))


def test_disparity_is_f_ipd_over_z() -> None:
    disp = DisplayCalibration.from_json(DISPLAY)
    f = (640 / 2) / math.tan(math.radians(20.0))
    assert disp.left.matrix[0, 0] == pytest.approx(f) and disp.ipd_mm == 64.0
    for z in (400.0, 700.0, 1200.0):
        s = trimesh.creation.icosphere(subdivisions=3, radius=z / 150)
        pts = [[-0.25 * z, -0.05 * z, z], [0.02 * z, 0.0, z], [0.2 * z, 0.07 * z, z]]
        structs = [Structure(f"p{i}", s.vertices + p, s.faces) for i, p in enumerate(pts)]
        fr = StereoRenderer(disp, structs).render(T_DISPLAY_CT)
        left, right = blobs(fr.left[..., 3]), blobs(fr.right[..., 3])
        assert len(left) == len(right) == 3
        disparity = left[:, 0] - right[:, 0]
        assert np.abs(disparity - f * 64.0 / z).max() < 0.2, (z, disparity)
        assert np.abs(left[:, 1] - right[:, 1]).max() < 0.2


def test_rgba_output_transparent_background_and_side_by_side() -> None:
    disp = DisplayCalibration.from_json(DISPLAY)
    s = trimesh.creation.icosphere(subdivisions=3, radius=30)
    st = Structure("m", s.vertices + [0, 0, 500], s.faces, colour_rgb=(1.0, 0.5, 0.0),
                   opacity=0.5)
    r = StereoRenderer(disp, [st])
    fr = r.render(T_DISPLAY_CT, premultiplied=False)
    assert fr.left.shape == (360, 640, 4) and fr.left.dtype == np.uint8
    assert fr.left[0, 0].tolist() == [0, 0, 0, 0]
    a = fr.left[..., 3]
    assert a.max() == 128 and (a == 0).mean() > 0.8
    u = 320 + int(round(disp.left.matrix[0, 0] * 32 / 500))   # left eye sits at x = -32
    centre = fr.left[180, u]
    assert centre[3] == 128 and abs(int(centre[0]) - 255) <= 2          # straight alpha: RGB
    assert abs(int(centre[1]) / int(centre[0]) - 0.5) < 0.02
    pm = r.render(T_DISPLAY_CT).left
    assert abs(int(pm[180, u, 0]) - 128) <= 2                           # premultiplied
    assert fr.side_by_side().shape == (360, 1280, 4)


def test_display_camera_transform_and_explicit_eyes(tmp_path) -> None:
    data = {
        "left": {"camera_matrix": [[500, 0, 319.5], [0, 500, 179.5], [0, 0, 1]],
                 "image_size": [640, 360]},
        "right": {"camera_matrix": [[500, 0, 319.5], [0, 500, 179.5], [0, 0, 1]],
                  "image_size": [640, 360]},
        "eye_offsets_mm": {"left": [-30.0, 0, 0], "right": [32.0, 0, 0]},
        "T_DISPLAY_CAMERA": [[1, 0, 0, 0], [0, 1, 0, -20.0], [0, 0, 1, 0], [0, 0, 0, 1]],
    }
    p = tmp_path / "display.json"
    p.write_text(json.dumps(data))
    disp = DisplayCalibration.load(p)
    assert disp.ipd_mm == pytest.approx(62.0)
    assert np.allclose(disp.T_eye_display(LEFT_EYE).apply([0.0, 0, 0]), [30.0, 0, 0])
    s = trimesh.creation.icosphere(subdivisions=3, radius=4)
    r = StereoRenderer(disp, [Structure("p", s.vertices + [0, 20.0, 500], s.faces)])
    T_cam_ct = Transform(np.eye(4), "CT", "CAMERA")
    via_cam = r.render_from_camera(T_cam_ct)
    # by hand: camera (0, 20, 500) mm -> display (0, 0, 500) (T_DISPLAY_CAMERA shifts y by -20)
    # -> left eye (30, 0, 500), right eye (-32, 0, 500) -> u = 319.5 + 500 * x / 500, v = 179.5
    left, right = blobs(via_cam.left[..., 3]), blobs(via_cam.right[..., 3])
    np.testing.assert_allclose(left[0], [319.5 + 30.0, 179.5], atol=0.2)
    np.testing.assert_allclose(right[0], [319.5 - 32.0, 179.5], atol=0.2)
    with pytest.raises(OverlayError, match="CT to DISPLAY"):
        r.render(T_cam_ct)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"ipd_mm": None}, "ipd_mm"),
        ({"ipd_mm": 200.0}, "ipd_mm"),
        ({"ipd_mm": "64"}, "ipd_mm"),
        ({"eye": {"image_size": [640, 360]}}, "fov_deg"),
        ({"eye": {"image_size": [640, 360], "fov_deg": [190, 20]}}, "fov_deg"),
        ({"eye": {"image_size": [0, 360], "fov_deg": [40, 20]}}, "image_size"),
        ({"eye": "wide"}, "object"),
        ({"eye_offsets_mm": {"left": [0, 0], "right": [1, 0, 0]}}, "eye_offsets_mm.left"),
        ({"eye_offsets_mm": {"left": [0, 0, 0], "right": [0, 0, 0]}}, "zero IPD"),
        ({"T_DISPLAY_CAMERA": [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]},
         "T_DISPLAY_CAMERA"),
    ],
)
def test_display_json_rejections(patch: dict, match: str) -> None:
    with pytest.raises(OverlayError, match=match):
        DisplayCalibration.from_json(DISPLAY | patch)


def test_display_file_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(OverlayError, match="not found"):
        DisplayCalibration.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(OverlayError, match="bad.json"):
        DisplayCalibration.load(bad)
    with pytest.raises(OverlayError, match="DisplayCalibration"):
        StereoRenderer(DISPLAY, [])  # type: ignore[arg-type]
