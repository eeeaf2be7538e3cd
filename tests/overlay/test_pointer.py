"""Pointer tracking: option parsing (tip, landmarks, pivot JSON), the not-tracked state,
IGTL tool poses, rejections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scrubin.overlay.pointer import (
    IGTL_TOOL,
    Landmark,
    NotTracked,
    PointerError,
    PointerResult,
    PointerTracking,
    load_tip,
    parse_landmark,
    parse_xyz,
)
from scrubin.registration.frames import CT, REF, TOOL, Transform
from scrubin.registration.tracker import MarkerTracker
from scrubin.samples.synthetic import default_camera
from scrubin.samples.synthetic_pointer import pointer_body


def test_parse_known_answers(tmp_path) -> None:
    np.testing.assert_array_equal(parse_xyz(" -1.5, 2e1 ,3", "--x"), [-1.5, 20.0, 3.0])
    lm = parse_landmark("nasion=-3,-95.5,12")
    assert lm.name == "nasion"
    np.testing.assert_array_equal(lm.position_ct_mm, [-3, -95.5, 12])
    np.testing.assert_array_equal(load_tip("0,-104,0"), [0, -104, 0])
    pivot = tmp_path / "pivot.json"  # as written by 'scrubin calibrate pivot --json'
    pivot.write_text(json.dumps({"tip_tool_mm": [1.0, -150.25, 3.0],
                                 "pivot_tracker_mm": [0, 0, 0], "rms_mm": 0.2, "n_poses": 40,
                                 "unit": "mm"}))
    np.testing.assert_array_equal(load_tip(str(pivot)), [1.0, -150.25, 3.0])


@pytest.mark.parametrize("text", ["1,2", "1,2,3,4", "a,b,c", "", "1,,3", "nan,1,2"])
def test_parse_xyz_rejections(text) -> None:
    with pytest.raises(PointerError, match="--x"):
        parse_xyz(text, "--x")


@pytest.mark.parametrize("text", ["F1", "=1,2,3", "F1=1,2", "F1=x,y,z"])
def test_parse_landmark_rejections(text) -> None:
    with pytest.raises(PointerError, match="--landmark"):
        parse_landmark(text)


@pytest.mark.parametrize("content, msg", [
    ("{", "not a readable pivot JSON"),
    ('{"tip": [1, 2, 3]}', "tip_tool_mm"),
    ('{"tip_tool_mm": [1, 2]}', "tip_tool_mm"),
    ('{"tip_tool_mm": [1, 2, "x"]}', "tip_tool_mm"),
    ('{"tip_tool_mm": [1, 2, 3], "unit": "m"}', "unit"),
    ("[1, 2, 3]", "tip_tool_mm"),
])
def test_load_tip_rejections(tmp_path, content, msg) -> None:
    p = tmp_path / "pivot.json"
    p.write_text(content)
    with pytest.raises(PointerError, match=msg):
        load_tip(str(p))
    with pytest.raises(PointerError, match="neither X,Y,Z"):
        load_tip(str(tmp_path / "missing.json"))


@pytest.fixture
def tracking() -> PointerTracking:
    cam = default_camera(64, 48)
    tr = MarkerTracker(cam, "DICT_4X4_50", body=pointer_body(), filter=False)
    return PointerTracking(tr, [0, -100, 0], [Landmark("a", np.zeros(3)),
                                              Landmark("b", np.array([50.0, 0, 0]))])


def test_not_tracked_without_markers(tracking: PointerTracking) -> None:
    t_ref_ct = Transform.identity(CT, REF)
    r = tracking.update(np.zeros((48, 64, 3), np.uint8), 0.0, None, True, t_ref_ct)
    assert not r.live and r.tip_ct_mm is None and r.igtl_tools() == {}
    assert isinstance(r.check, NotTracked) and not r.check.ok
    assert r.check.text() == "landmark a: pointer not tracked"
    j = r.to_json()
    assert j["landmark"] == "a" and j["landmark_distance_mm"] is None
    assert j["tool_state"] == "LOST" and j["tool_detected"] is False


def test_nearest_landmark_and_igtl_tools(tracking: PointerTracking) -> None:
    assert tracking._target(np.array([45.0, 0, 0])).name == "b"
    assert tracking._target(np.array([5.0, 0, 0])).name == "a"
    tracking.select = "b"
    assert tracking._target(np.array([5.0, 0, 0])).name == "b"
    t_ref_tool = Transform.from_rt(np.eye(3), [10, 20, 30], TOOL, REF)
    tip = np.array([0, -100.0, 5])
    r = PointerResult("LIVE", True, True, t_ref_tool, np.zeros(3), None, tip)
    tools = r.igtl_tools()
    assert sorted(tools) == [IGTL_TOOL, IGTL_TOOL + "Tip"]
    np.testing.assert_allclose(tools[IGTL_TOOL + "Tip"].translation, [10, -80, 35])
    assert len(f"{IGTL_TOOL}TipToReference") <= 20  # OpenIGTLink device-name limit


def test_tracking_rejections() -> None:
    cam = default_camera(64, 48)
    tr = MarkerTracker(cam, "DICT_4X4_50", body=pointer_body())
    lm = Landmark("a", np.zeros(3))
    with pytest.raises(PointerError, match="MarkerTracker"):
        PointerTracking("tracker", [0, 0, 0])
    with pytest.raises(PointerError, match="tip offset"):
        PointerTracking(tr, [0, 0])
    with pytest.raises(PointerError, match="tip offset"):
        PointerTracking(tr, [0, np.nan, 0])
    with pytest.raises(PointerError, match="unique"):
        PointerTracking(tr, [0, 0, 0], [lm, lm])
    with pytest.raises(PointerError, match="not among"):
        PointerTracking(tr, [0, 0, 0], [lm], select="z")
    with pytest.raises(PointerError, match="tolerance"):
        PointerTracking(tr, [0, 0, 0], [lm], tolerance_mm=0.0)
    with pytest.raises(PointerError, match="Landmark objects"):
        PointerTracking(tr, [0, 0, 0], [(1, 2, 3)])


def test_check_only_when_the_reference_was_measured_in_the_frame() -> None:
    """Known answer on a synthetic frame (tip resting on the fiducial, true reference pose):
    a real check below 1 mm with a fresh reference, "not tracked" with a held one."""
    from scrubin.samples.synthetic import POINTER_LANDMARK, SyntheticScene

    sc = SyntheticScene.from_phantom("small", default_camera(640, 480), n_frames=2,
                                     pointer_touch=(0, 2))
    fr = sc.render(1)
    lm = Landmark(POINTER_LANDMARK, sc.pointer.landmark_ct_mm)
    results = []
    for ref_fresh in (True, False):
        tr = MarkerTracker(sc.camera, "DICT_4X4_50", body=sc.tool_body, filter=False)
        pt = PointerTracking(tr, sc.tip_tool_mm, [lm])
        results.append(pt.update(fr.image_bgr, fr.capture_time_s, sc.T_camera_ref(1), ref_fresh,
                                 sc.T_ref_ct))
    fresh, held = results
    assert fresh.detected and fresh.live and not isinstance(fresh.check, NotTracked)
    assert fresh.check.distance_mm < 1.0 and fresh.check.ok
    np.testing.assert_allclose(fresh.tip_ct_mm, fr.extra["tip_ct_mm"], atol=1.0)
    assert fresh.T_ref_tool.src == TOOL and fresh.T_ref_tool.dst == REF
    assert held.detected and not held.live and isinstance(held.check, NotTracked)
