"""Synthetic pointer: body/texture agree, exact tip on the landmark, rendered markers where the
true pose projects them, rejections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scrubin.overlay.errors import OverlayError
from scrubin.registration.frames import CT, TOOL
from scrubin.samples.synthetic import (
    POINTER_LANDMARK,
    SyntheticScene,
    default_camera,
    phantom_points,
)
from scrubin.samples.synthetic_pointer import (
    TIP_TOOL_MM,
    TOOL_MARKER_IDS,
    TOOL_PLATE_MM,
    TOOL_TEX_PPMM,
    PointerPath,
    pointer_body,
    pointer_mesh,
    pointer_texture,
)
from scrubin.samples.synthetic_raycast import PLATE_MM

DETECTOR = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50))


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return SyntheticScene.from_phantom("small", default_camera(640, 480), n_frames=8,
                                       pointer_touch=(2, 5))


def test_body_and_texture_agree() -> None:
    body = pointer_body()
    assert body.name == TOOL and body.ids == TOOL_MARKER_IDS
    assert not set(TOOL_MARKER_IDS) & {0, 1, 2, 3}  # distinct from the reference plate
    tex = pointer_texture()
    assert tex.shape[0] == round(TOOL_PLATE_MM * TOOL_TEX_PPMM)
    corners, ids, _ = DETECTOR.detectMarkers(cv2.copyMakeBorder(
        tex, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=245))
    assert sorted(ids.ravel().tolist()) == list(TOOL_MARKER_IDS)
    half = tex.shape[0] / 2
    for c, i in zip(corners, ids.ravel(), strict=True):
        mm = np.column_stack([(c[0, :, 0] - 40 + 0.5 - half) / TOOL_TEX_PPMM,
                              (half - (c[0, :, 1] - 40 + 0.5)) / TOOL_TEX_PPMM])
        np.testing.assert_allclose(mm, body.markers[int(i)][:, :2], atol=0.3)
    assert TOOL_PLATE_MM < PLATE_MM


def test_mesh_ends_at_the_tip() -> None:
    (plate_v, shaft_v), (plate_f, shaft_f) = pointer_mesh()
    np.testing.assert_array_equal(shaft_v[-1], TIP_TOOL_MM)
    assert shaft_v[:, 1].min() == TIP_TOOL_MM[1] and np.abs(plate_v[:, 2]).max() == 0
    assert plate_f.max() < len(plate_v) and shaft_f.max() < len(shaft_v)


def test_path_tip_rests_exactly_on_the_landmark_while_touching() -> None:
    lm = np.array([36.0, -72.0, 45.0])
    path = PointerPath(lm, (10, 20), fps=30.0, ramp_frames=5)
    for i in range(10, 20):
        assert path.touching(i)
        np.testing.assert_allclose(path.tip_ct(i), lm, atol=1e-9)
        t = path.T_ct_tool(i)
        assert t.src == TOOL and t.dst == CT
    # the pointer pivots about the tip while touching
    assert not np.allclose(path.T_ct_tool(10).rotation, path.T_ct_tool(15).rotation)
    for i in (0, 4, 25):
        assert not path.touching(i)
        assert np.linalg.norm(path.tip_ct(i) - lm) > 40.0  # fully retreated
    assert 0 < np.linalg.norm(path.tip_ct(8) - lm) < np.linalg.norm(path.tip_ct(5) - lm)


@pytest.mark.parametrize("args, msg", [
    (([0, 0, np.nan], (0, 2)), "landmark"),
    (([0, 0], (0, 2)), "landmark"),
    (([0, 0, 0], (3, 3)), "touch"),
    (([0, 0, 0], (-1, 3)), "touch"),
])
def test_path_rejections(args, msg) -> None:
    with pytest.raises(OverlayError, match=msg):
        PointerPath(*args)
    with pytest.raises(OverlayError, match="fps"):
        PointerPath([0, 0, 0], (0, 2), fps=0.0)


def test_scene_truth_and_rendered_tool_markers(scene: SyntheticScene) -> None:
    pts, names, _ = phantom_points("small")
    lm = pts[names.index(POINTER_LANDMARK)]
    fr = scene.render(3)
    ex = fr.extra
    assert ex["pointer_touching"] and np.allclose(ex["tip_ct_mm"], lm, atol=1e-9)
    t_cam_tool = ex["T_camera_tool"]
    np.testing.assert_allclose(t_cam_tool.apply(TIP_TOOL_MM), fr.T_camera_ct.apply(lm),
                               atol=1e-9)
    gray = cv2.cvtColor(fr.image_bgr, cv2.COLOR_BGR2GRAY)
    corners, ids, _ = DETECTOR.detectMarkers(gray)
    found = set(ids.ravel().tolist())
    assert set(TOOL_MARKER_IDS) <= found and {0, 1, 2, 3} <= found  # both plates visible
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    body = scene.tool_body
    for c, i in zip(corners, ids.ravel(), strict=True):
        if int(i) not in body.markers:
            continue
        c = cv2.cornerSubPix(gray, c.reshape(-1, 1, 2), (3, 3), (-1, -1), crit).reshape(4, 2)
        truth = scene.camera.project(t_cam_tool.apply(body.markers[int(i)]))
        assert np.abs(c - truth).max() < 0.6


def test_scene_without_pointer_has_no_tool(scene: SyntheticScene) -> None:
    plain = SyntheticScene.from_phantom("small", default_camera(640, 480), n_frames=2)
    assert plain.pointer is None and plain.tool_body is None
    assert plain.render(0).extra == {}
    with pytest.raises(OverlayError, match="PointerPath"):
        SyntheticScene(default_camera(64, 48), np.eye(3), np.array([[0, 1, 2]]),
                       np.zeros((1, 3)), ["p"], pointer="pen")
