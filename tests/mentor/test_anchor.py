"""Anchoring strokes on the phantom's models at the stroke's frame, re-projection, drawing.

Truth: the phantom's fiducial spheres (truth.json centre and diameter, LPS mm) and the
synthetic camera path's true poses. A ray through the fiducial's projected centre first meets
the sphere at ``c - r * d`` (d: unit ray direction) — the point the anchor must find.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scrubin.mentor.anchor import Anchorer, AnchorError, project_anchors
from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.station_meta import FrameMeta, MetaHistory
from scrubin.samples.phantom import ensure_sample, load_truth
from scrubin.samples.synthetic import SyntheticScene, phantom_models

FACING = ("F1_forehead_right", "F2_forehead_left")  # face the camera along the whole path


@pytest.fixture(scope="module")
def setup() -> tuple:
    scene = SyntheticScene.from_phantom("small", n_frames=150)
    models = phantom_models("small")
    truth = load_truth(ensure_sample("small"))
    fids = {f["name"]: (np.array(f["center_lps"]), f["diameter_mm"] / 2)
            for f in truth["fiducials"]}
    return scene, Anchorer([(m.vertices, m.faces) for m in models]), fids


def _meta(scene: SyntheticScene, n: int, tracking: str = "LIVE") -> FrameMeta:
    cam = scene.camera
    k = cam.matrix
    return FrameMeta(n, 1e9 + n / 30, cam.width, cam.height, (k[0, 0], k[1, 1], k[0, 2], k[1, 2]),
                     tuple(cam.dist), scene.T_camera_ref(n).matrix, scene.T_ref_ct.matrix,
                     tracking)


def _truth_hit_ref(scene: SyntheticScene, n: int, c_ct: np.ndarray, r: float) -> np.ndarray:
    t_ct_cam = np.linalg.inv(scene.pose(n).matrix)
    d = c_ct - t_ct_cam[:3, 3]
    d /= np.linalg.norm(d)
    return scene.T_ref_ct.apply((c_ct - r * d)[None])[0]


def _stroke_at(scene: SyntheticScene, n: int, p_ct: np.ndarray) -> list[list[float]]:
    """Normalised view coordinates of cv2.projectPoints of a CT point at frame n's true pose."""
    t = scene.pose(n).matrix
    uv, _ = cv2.projectPoints(p_ct[None] @ t[:3, :3].T + t[:3, 3], np.zeros(3), np.zeros(3),
                              scene.camera.matrix, scene.camera.dist)
    u, v = uv.reshape(2)
    return [[(u + 0.5) / scene.camera.width, (v + 0.5) / scene.camera.height]]


@pytest.mark.parametrize("n", [0, 40, 100])
@pytest.mark.parametrize("name", FACING)
def test_stroke_on_fiducial_anchors_within_1mm(setup: tuple, n: int, name: str) -> None:
    scene, anchorer, fids = setup
    c, r = fids[name]
    [a] = anchorer.anchor(_meta(scene, n), _stroke_at(scene, n, c))
    assert a is not None
    assert np.linalg.norm(np.array(a) - _truth_hit_ref(scene, n, c, r)) < 1.0


@pytest.mark.parametrize("name", FACING)
def test_anchored_annotation_drawn_on_later_frame_within_2px(setup: tuple, name: str) -> None:
    scene, anchorer, fids = setup
    c, r = fids[name]
    n0, n1 = 10, 70  # the camera moves between the two frames
    meta0 = _meta(scene, n0)
    board = AnnotationBoard()
    ev = {"op": "create", "annotation_id": "a1", "kind": "freehand", "color": "#00ff00",
          "author": "Dr Mentor", "frame_id": n0, "points": _stroke_at(scene, n0, c)}
    board.apply(1, ev)
    anchors = anchorer.anchor(meta0, ev["points"])
    board.apply(2, {"op": "anchor", "annotation_id": "a1", "anchors_ref_mm": anchors,
                    "anchor_state": "anchored"})
    meta1 = _meta(scene, n1)
    img = np.zeros((meta1.height, meta1.width, 3), np.uint8)
    assert board.draw(img, meta1) == 1
    g = img[:, :, 1].astype(np.float64) * ((img[:, :, 0] == 0) & (img[:, :, 2] == 0))
    ys, xs = np.nonzero(g)
    drawn = np.array([(g[ys, xs] * xs).sum(), (g[ys, xs] * ys).sum()]) / g[ys, xs].sum()
    truth_ref = _truth_hit_ref(scene, n0, c, r)
    t = meta1.T_camera_ref
    uv, _ = cv2.projectPoints(truth_ref[None] @ t[:3, :3].T + t[:3, 3], np.zeros(3),
                              np.zeros(3), scene.camera.matrix, scene.camera.dist)
    before = np.array(ev["points"][0]) * [meta1.width, meta1.height] - 0.5
    assert np.linalg.norm(drawn - uv.reshape(2)) < 2.0
    assert np.linalg.norm(drawn - before) > 20  # it moved with the anatomy, not the screen
    # the author is written next to it (white pixels)
    assert ((img == 255).all(axis=2)).sum() > 20


def test_miss_stays_2d_and_gate_hides_anchored(setup: tuple) -> None:
    scene, anchorer, fids = setup
    meta = _meta(scene, 0)
    c, _ = fids[FACING[0]]
    pts = [[0.001, 0.001]] + _stroke_at(scene, 0, c)  # image corner: background
    anchors = anchorer.anchor(meta, pts)
    assert anchors[0] is None and anchors[1] is not None
    assert np.isnan(project_anchors(meta, anchors)[0]).all()
    board = AnnotationBoard()
    board.apply(1, {"op": "create", "annotation_id": "m", "kind": "freehand",
                    "color": "#00ff00", "author": "a", "frame_id": 0, "points": pts})
    board.apply(2, {"op": "anchor", "annotation_id": "m", "anchors_ref_mm": anchors,
                    "anchor_state": "anchored"})
    board.apply(3, {"op": "create", "annotation_id": "flat", "kind": "freehand",
                    "color": "#0000ff", "author": "b", "frame_id": 0,
                    "points": [[0.1, 0.1], [0.3, 0.1]]})
    board.apply(4, {"op": "anchor", "annotation_id": "flat", "anchors_ref_mm": [None, None],
                    "anchor_state": "2d"})
    img = np.zeros((720, 1280, 3), np.uint8)
    assert board.draw(img, _meta(scene, 5, "LIVE")) == 2
    row = img[71:73, 120:390, 0].max(axis=0)  # the dashed blue 2-D stroke along y = 71.5
    assert (row > 0).any() and (row == 0).any()  # dashes and gaps
    for state in ("STALE", "LOST"):
        img[:] = 0
        assert board.draw(img, _meta(scene, 5, state)) == 1  # only the 2-D one
        green = (img[:, :, 1] > 0) & (img[:, :, 0] == 0) & (img[:, :, 2] == 0)
        assert not green.any()  # the anchored (green) one is hidden with the model


def test_hide_all_and_replay(setup: tuple) -> None:
    scene, _, _ = setup
    board = AnnotationBoard()
    ev = {"op": "create", "annotation_id": "x", "kind": "freehand", "color": "#00ff00",
          "author": "m", "frame_id": 0, "points": [[0.5, 0.5], [0.6, 0.5]]}
    assert board.apply(1, ev)
    assert not board.apply(1, ev)  # replayed seq ignored
    board.apply(2, {"op": "hide_all"})
    board.apply(3, dict(ev, annotation_id="y"))  # a mentor's new stroke stays hidden
    img = np.zeros((720, 1280, 3), np.uint8)
    assert board.draw(img, _meta(scene, 0)) == 0 and img[:, :, 1].max() == 255  # label only
    assert img[:, :, 2].max() == 255 and img[300:400, 600:800].max() == 0
    board.apply(4, {"op": "show_all"})
    assert board.draw(img, _meta(scene, 0)) == 2
    board.apply(5, {"op": "clear_all"})
    assert board.draw(img, _meta(scene, 0)) == 0 and not board.items


def test_no_pose_refused(setup: tuple) -> None:
    scene, anchorer, _ = setup
    m = _meta(scene, 0, "LOST")
    m.T_camera_ref = None
    with pytest.raises(AnchorError, match="no camera pose"):
        anchorer.anchor(m, [[0.5, 0.5]])
    with pytest.raises(AnchorError, match="stroke points"):
        anchorer.anchor(_meta(scene, 0), [[0.5, float("nan")]])


def test_history_keeps_two_seconds() -> None:
    h = MetaHistory(2.0)
    for i in range(200):
        h.add(FrameMeta(i, 100 + i / 30, 8, 8, (1, 1, 0, 0), (0,) * 5, None, None, "LOST"))
    assert h.get(199 - 60) is not None and h.get(199 - 61) is None
    assert h.span_s() == pytest.approx(2.0, abs=1e-9)
