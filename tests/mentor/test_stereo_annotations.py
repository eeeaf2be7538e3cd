"""Anchored mentor annotations in the headset (stereo) views: each eye projects the REF anchor
with its own camera and pose (overlay.stereo.StereoRenderer.annotators ->
StationSink.annotate_eye -> AnnotationBoard.draw_eye).

Truth: ``cv2.projectPoints`` with each eye's camera and ``T_EYE_REF``, and the pinhole
disparity ``f * IPD / Z`` of a point at depth Z in front of parallel eyes.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import trimesh

from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.station_sink import StationSink
from scrubin.overlay.renderer import Structure
from scrubin.overlay.stereo import DisplayCalibration, StereoRenderer
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import CT, DISPLAY, LEFT_EYE, RIGHT_EYE, Transform

IPD = 64.0
W, H = 640, 360


def _rot(ax: float, ay: float) -> np.ndarray:
    rx, _ = cv2.Rodrigues(np.array([ax, 0.0, 0.0]))
    ry, _ = cv2.Rodrigues(np.array([0.0, ay, 0.0]))
    return ry @ rx


def _setup(display: dict, anchors_ref_mm: list, color: str = "#0000ff"
           ) -> tuple[StereoRenderer, AnnotationBoard, np.ndarray]:
    """Stereo renderer (no structures) with a station sink's annotator; T_REF_CT 4x4."""
    disp = DisplayCalibration.from_json(display)
    T_ref_ct = np.eye(4)
    T_ref_ct[:3, :3], T_ref_ct[:3, 3] = _rot(0.3, -0.2), [12.0, -40.0, 250.0]
    board = AnnotationBoard()
    ev = {"op": "create", "annotation_id": "a1", "kind": "freehand", "color": color,
          "author": "mentor:m", "role": "mentor", "frame_id": 5,
          "points": [[0.5, 0.5]] * len(anchors_ref_mm)}
    board.apply(1, ev)
    board.apply(2, {**ev, "op": "anchor", "anchors_ref_mm": anchors_ref_mm,
                    "anchor_state": "anchored"})
    cam = CameraModel(disp.left.matrix, np.zeros(5), W, H)
    reg = SimpleNamespace(T_ref_ct=Transform(T_ref_ct, CT, "REF"), fre_mm=None, tre_mm=None)
    sink = StationSink(None, board, cam, reg)  # the media side is not used by annotate_eye
    # the renderer needs a structure: a 1-mm sphere 100 m behind the eyes in every pose here
    ball = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
    stereo = StereoRenderer(disp, [Structure("far", ball.vertices + [0, 0, -1e5], ball.faces)])
    stereo.annotators.append(sink.annotate_eye)
    return stereo, board, T_ref_ct


def _dot_centre(rgba: np.ndarray) -> np.ndarray:
    """Centroid (OpenCV pixel centres) of the pure-blue dot, weighted by coverage."""
    b = rgba[..., 2].astype(np.float64)   # RGBA output: blue is channel 2
    mask = (b > 0) & (rgba[..., 0] == 0) & (rgba[..., 1] == 0)   # not the grey/white label
    ys, xs = np.nonzero(mask)
    assert len(xs) > 10, "no dot drawn"
    w = b[ys, xs]
    return np.array([xs @ w / w.sum(), ys @ w / w.sum()])


def _pose(depth_mm: float) -> Transform:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = _rot(-0.1, 0.25), [5.0, 3.0, depth_mm]
    return Transform(T, CT, DISPLAY)


@pytest.mark.parametrize("z_mm", [350.0, 600.0, 1000.0])
def test_anchor_in_each_eye_matches_project_points_and_disparity(z_mm: float) -> None:
    display = {"model": "stereo_display", "ipd_mm": IPD,
               "eye": {"image_size": [W, H], "fov_deg": [40.0, 23.0]}}
    # an anchor straight in front of the display centre at depth z_mm (DISPLAY frame)
    p_display = np.array([18.0, -11.0, z_mm])
    T_dc = _pose(0.0)
    T_ref_ct = _setup(display, [[0.0, 0.0, 0.0]])[2]
    p_ct = np.linalg.inv(T_dc.matrix) @ np.append(p_display, 1.0)
    p_ref = (T_ref_ct @ p_ct)[:3]
    stereo, _, _ = _setup(display, [p_ref.tolist()])
    fr = stereo.render(T_dc)
    f = (W / 2) / math.tan(math.radians(20.0))
    got = {LEFT_EYE: _dot_centre(fr.left), RIGHT_EYE: _dot_centre(fr.right)}
    for eye, cam in ((LEFT_EYE, stereo.display.left), (RIGHT_EYE, stereo.display.right)):
        T_eye_ref = (stereo.display.T_eye_display(eye) @ T_dc).matrix @ np.linalg.inv(T_ref_ct)
        pe = T_eye_ref[:3, :3] @ p_ref + T_eye_ref[:3, 3]
        uv, _ = cv2.projectPoints(pe[None], np.zeros(3), np.zeros(3), cam.matrix, cam.dist)
        assert np.linalg.norm(got[eye] - uv.reshape(2)) < 1.0, (eye, got[eye], uv)
    disparity = got[LEFT_EYE][0] - got[RIGHT_EYE][0]
    assert disparity == pytest.approx(f * IPD / z_mm, abs=1.0)
    assert abs(got[LEFT_EYE][1] - got[RIGHT_EYE][1]) < 0.5


def test_distorted_eye_piece_and_own_intrinsics_per_eye() -> None:
    """Different cameras per eye (one with eye-piece distortion): each its own projection."""
    k_left = [[700.0, 0, 330.0], [0, 705.0, 178.0], [0, 0, 1]]
    k_right = [[760.0, 0, 305.0], [0, 758.0, 185.0], [0, 0, 1]]
    display = {"model": "stereo_display", "eye_offsets_mm": {"left": [-31.0, 1.0, 0.0],
                                                             "right": [33.0, -1.0, 2.0]},
               "left": {"camera_matrix": k_left, "dist_coeffs": [-0.2, 0.05, 0.001, -0.002, 0],
                        "image_size": [W, H]},
               "right": {"camera_matrix": k_right, "dist_coeffs": [], "image_size": [W, H]}}
    p_ref = [[30.0, -20.0, 40.0]]
    stereo, _, T_ref_ct = _setup(display, p_ref)
    T_dc = _pose(520.0)
    fr = stereo.render(T_dc)
    for eye, img, cam in ((LEFT_EYE, fr.left, stereo.display.left),
                          (RIGHT_EYE, fr.right, stereo.display.right)):
        T_eye_ref = (stereo.display.T_eye_display(eye) @ T_dc).matrix @ np.linalg.inv(T_ref_ct)
        pe = T_eye_ref[:3, :3] @ np.array(p_ref[0]) + T_eye_ref[:3, 3]
        dist = cam.dist if np.size(cam.dist) else np.zeros(5)
        uv, _ = cv2.projectPoints(pe[None], np.zeros(3), np.zeros(3), cam.matrix, dist)
        assert np.linalg.norm(_dot_centre(img) - uv.reshape(2)) < 1.0, eye


def test_hidden_and_unanchored_strokes_stay_out_of_the_eyes() -> None:
    display = {"model": "stereo_display", "ipd_mm": IPD,
               "eye": {"image_size": [W, H], "fov_deg": [40.0, 23.0]}}
    stereo, board, T_ref_ct = _setup(display, [[0.0, 0.0, 0.0]])
    T_display_ref = np.eye(4)
    T_display_ref[:3, 3] = [0.0, 0.0, 500.0]     # the anchor (REF origin) 0.5 m ahead
    T_dc = Transform(T_display_ref @ T_ref_ct, CT, DISPLAY)
    assert stereo.render(T_dc).left[..., 3].any()           # anchored: drawn
    board.apply(3, {"op": "hide_all"})
    fr = stereo.render(T_dc)
    assert not fr.left[..., 3].any() and not fr.right[..., 3].any()
    board.apply(4, {"op": "show_all"})
    # a pending (not yet anchored) screen-space stroke is the camera view's, not the eyes'
    board.apply(5, {"op": "create", "annotation_id": "a2", "points": [[0.2, 0.2], [0.4, 0.3]],
                    "frame_id": 6, "author": "mentor:m", "role": "mentor"})
    board.apply(6, {"op": "delete", "annotation_id": "a1"})
    fr = stereo.render(T_dc)
    assert not fr.left[..., 3].any() and not fr.right[..., 3].any()
    assert board.draw(np.zeros((H, W, 3), np.uint8), _meta()) == 1   # camera view: drawn


def _meta():  # a camera-view frame with tracking live
    from scrubin.mentor.station_meta import FrameMeta
    return FrameMeta(1, 0.0, W, H, (500.0, 500.0, 320.0, 180.0), (0.0,) * 5, np.eye(4), None,
                     "LIVE")


def test_scrubin_overlay_stereo_draws_the_station_board_in_both_eyes(tmp_path) -> None:
    """Wiring: run_overlay(--stereo) with the station's sink (real SurgeonStation, encoder,
    board) draws an anchored stroke on a phantom fiducial into both eyes of the stereo video;
    the same run without the stroke has no such green there."""
    import json

    import av

    from scrubin.mentor.media import StreamEncoder, VideoFanout
    from scrubin.mentor.station import SurgeonStation
    from scrubin.mentor.strip import STRIP_HEIGHT
    from scrubin.samples.phantom import ensure_sample, load_truth
    from scrubin.workflows.overlay import OverlayRequest, run_overlay

    display = {"model": "stereo_display", "ipd_mm": 63.0,
               "eye": {"image_size": [320, 180], "fov_deg": [40.0, 23.0]},
               "T_DISPLAY_CAMERA": [[1, 0, 0, 0], [0, 1, 0, -20], [0, 0, 1, -10],
                                    [0, 0, 0, 1]]}
    (tmp_path / "display.json").write_text(json.dumps(display))
    truth = load_truth(ensure_sample("small"))
    c_ct = np.array(truth["fiducials"][0]["center_lps"], np.float64)

    def green_per_eye(anchored: bool) -> tuple[int, int]:
        board = AnnotationBoard()

        def sinks(camera, structures, registration):
            if anchored:
                p_ref = registration.T_ref_ct.matrix @ np.append(c_ct, 1.0)
                ev = {"op": "create", "annotation_id": "a", "color": "#00ff00",
                      "author": "mentor:m", "role": "mentor", "frame_id": 1,
                      "points": [[0.5, 0.5]]}
                board.apply(1, ev)
                board.apply(2, {**ev, "op": "anchor", "anchors_ref_mm": [p_ref[:3].tolist()],
                                "anchor_state": "anchored"})
            enc = StreamEncoder(camera.width, camera.height + STRIP_HEIGHT)
            return [StationSink(SurgeonStation(VideoFanout(enc)), board, camera, registration)]

        out = tmp_path / f"o{int(anchored)}.mp4"
        run_overlay(OverlayRequest("synthetic", out, frames=3, width=320, height=180,
                                   stereo=tmp_path / "display.json"), extra_sinks=sinks)
        with av.open(str(out.with_name(out.stem + "_stereo.mp4"))) as c:
            img = next(iter(c.decode(video=0))).to_ndarray(format="bgr24").astype(int)
        green = (img[..., 1] > 150) & (img[..., 0] < 90) & (img[..., 2] < 90)
        return int(green[:, :320].sum()), int(green[:, 320:].sum())

    left, right = green_per_eye(True)
    assert left > 15 and right > 15, (left, right)
    assert green_per_eye(False) == (0, 0)
