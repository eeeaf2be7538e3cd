"""Marker / ChArUco detection and pose on rendered images with exact ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform
from scrubin.registration.markers import (
    MarkerError,
    as_gray,
    charuco_object_points,
    detect_charuco,
    detect_markers,
    detector_parameters,
    estimate_charuco_pose,
    estimate_marker_pose,
    get_dictionary,
    make_charuco_board,
    make_charuco_detector,
    make_detector,
    marker_object_points,
    reprojection_rms,
    solve_pose,
)
from scrubin.samples.synth_images import charuco_plane, look_at_pose, marker_plane, render

CAM = CameraModel(np.array([[1000.0, 0, 639.5], [0, 1000.0, 359.5], [0, 0, 1]]), np.zeros(5),
                  1280, 720)


def pose_error(est: Transform, truth: Transform) -> tuple[float, float]:
    """Translation error (mm) and rotation error (deg)."""
    dt = float(np.linalg.norm(est.translation - truth.translation))
    dr = Rotation.from_matrix(est.rotation.T @ truth.rotation).magnitude()
    return dt, float(np.degrees(dr))


def _views(n: int, seed: int) -> list[Transform]:
    rng = np.random.default_rng(seed)
    return [look_at_pose([rng.uniform(-80, 80), rng.uniform(-60, 60), 500],
                         [rng.uniform(-35, 35), rng.uniform(-35, 35), rng.uniform(-180, 180)],
                         "MARKER") for _ in range(n)]


def test_dictionary_names():
    a = get_dictionary("DICT_4X4_50")
    for name in ("4x4_50", "dict_4x4_50", " DICT_4X4_50 "):
        assert np.array_equal(get_dictionary(name).bytesList, a.bytesList)
    assert get_dictionary("APRILTAG_36h11").markerSize == 6
    with pytest.raises(MarkerError, match="unknown ArUco dictionary 'DICT_9X9_1'"):
        get_dictionary("DICT_9X9_1")
    with pytest.raises(MarkerError, match="non-empty"):
        get_dictionary("")


def test_single_marker_pose_accuracy_50mm_at_half_metre():
    """<= 1 mm / 0.5 deg for a 50 mm marker at 0.5 m, 1280x720, noise sigma 2."""
    d = get_dictionary("DICT_4X4_50")
    det = make_detector(d)
    errs = []
    for k, truth in enumerate(_views(6, seed=1)):
        img = render(CAM, [marker_plane(d, 7, 50, truth)], noise_sigma=2, seed=k, supersample=2)
        found = detect_markers(img, det)
        assert found.ids.tolist() == [7]
        est = estimate_marker_pose(found.get(7), 50, CAM)
        assert est.pose.src == "MARKER" and est.pose.dst == "CAMERA"
        assert est.reproj_rms_px < 0.2
        errs.append(pose_error(est.pose, truth))
    errs = np.array(errs)
    assert errs[:, 0].max() < 1.0 and errs[:, 1].max() < 0.5, errs


def test_edge_refinement_beats_opencv_subpix():
    d = get_dictionary("DICT_4X4_50")
    truth = look_at_pose([30, -20, 500], [25, -15, 40], "MARKER")
    img = render(CAM, [marker_plane(d, 2, 50, truth)], noise_sigma=1, seed=3, supersample=2)
    gt = CAM.project(truth.apply(marker_object_points(50)))
    err = {}
    for ref in ("edge", "subpix"):
        found = detect_markers(img, make_detector(d, detector_parameters(ref)), refinement=ref)
        err[ref] = np.abs(found.get(2) - gt).max()
    assert err["edge"] < 0.05
    assert err["edge"] < err["subpix"]


def test_detection_in_bgr_and_crop_offset():
    d = get_dictionary("DICT_5X5_100")
    truth = look_at_pose([100, 60, 450], [10, 10, 0], "MARKER")
    img = render(CAM, [marker_plane(d, 42, 50, truth)], supersample=2)
    det = make_detector("DICT_5X5_100")
    full = detect_markers(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), det)
    crop = detect_markers(img[300:700, 600:1100], det, offset_px=(600, 300))
    assert full.ids.tolist() == crop.ids.tolist() == [42]
    np.testing.assert_allclose(full.get(42), crop.get(42), atol=0.02)
    assert len(detect_markers(np.full((720, 1280), 128, np.uint8), det)) == 0


@pytest.mark.parametrize("legacy", [False, True])
def test_charuco_pose_including_legacy_pattern(legacy):
    # 5x4 squares: even row count, where the legacy and new patterns differ
    board = make_charuco_board(5, 4, 30, 22, "DICT_4X4_50", legacy=legacy)
    truth = look_at_pose([-60, -50, 480], [20, -15, 10], "BOARD", y_up=False)
    img = render(CAM, [charuco_plane(board, truth, px_per_mm=6)], noise_sigma=1, seed=0,
                 supersample=2)
    est = estimate_charuco_pose(img, make_charuco_detector(board), CAM)
    assert est is not None and est.n_points == 12  # (5-1) x (4-1) inner corners
    dt, dr = pose_error(est.pose, truth)
    assert dt < 0.5 and dr < 0.2, (dt, dr)
    # the other pattern's detector does not read this board correctly
    other = make_charuco_board(5, 4, 30, 22, "DICT_4X4_50", legacy=not legacy)
    ids, _ = detect_charuco(img, make_charuco_detector(other))
    assert ids.size < 12


def test_solve_pose_non_planar_and_reprojection():
    rng = np.random.default_rng(0)
    obj = rng.uniform(-50, 50, (8, 3))
    truth = look_at_pose([10, 20, 400], [30, 10, 5], "TOOL")
    img = CAM.project(truth.apply(obj))
    est = solve_pose(obj, img, CAM, "TOOL")
    dt, dr = pose_error(est.pose, truth)
    assert dt < 1e-6 and dr < 1e-6
    assert reprojection_rms(obj, img, est.pose, CAM) < 1e-6


def test_rejections():
    with pytest.raises(MarkerError, match="> 0 mm"):
        marker_object_points(0)
    with pytest.raises(MarkerError, match="> 0 mm"):
        marker_object_points(-5)
    with pytest.raises(MarkerError, match="number"):
        marker_object_points("big")  # type: ignore[arg-type]
    with pytest.raises(MarkerError, match=r"shape \(4, 2\)"):
        estimate_marker_pose(np.zeros((3, 2)), 50, CAM)
    with pytest.raises(MarkerError, match="NaN"):
        estimate_marker_pose(np.full((4, 2), np.nan), 50, CAM)
    obj = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0.0]])
    with pytest.raises(MarkerError, match="collinear"):
        solve_pose(obj, np.zeros((4, 2)), CAM, "X")
    with pytest.raises(MarkerError, match="at least 4"):
        solve_pose(obj[:3], np.zeros((3, 2)), CAM, "X")
    with pytest.raises(MarkerError, match="4 object points but 5"):
        solve_pose(obj, np.zeros((5, 2)), CAM, "X")
    with pytest.raises(MarkerError, match=r"\(N, 3\)"):
        solve_pose(np.zeros((4, 2)), np.zeros((4, 2)), CAM, "X")
    with pytest.raises(MarkerError, match="uint8"):
        as_gray(np.zeros((10, 10), np.float32))
    with pytest.raises(MarkerError, match="shape"):
        as_gray(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(MarkerError, match="unknown corner refinement"):
        detector_parameters("magic")
    with pytest.raises(MarkerError, match="min_marker_ratio"):
        detector_parameters(min_marker_ratio=0)
    with pytest.raises(MarkerError, match="smaller than the square"):
        make_charuco_board(5, 4, 30, 30, "DICT_4X4_50")
    with pytest.raises(MarkerError, match="at least 2x2"):
        make_charuco_board(1, 4, 30, 20, "DICT_4X4_50")
    with pytest.raises(MarkerError, match="needs 55 markers; the dictionary has 50"):
        make_charuco_board(11, 10, 30, 20, "DICT_4X4_50")
    with pytest.raises(MarkerError, match="unknown ArUco dictionary"):
        make_charuco_board(5, 4, 30, 20, "NOPE")
    board = make_charuco_board(5, 4, 30, 20, "DICT_4X4_50")
    with pytest.raises(MarkerError, match="min_corners"):
        estimate_charuco_pose(np.zeros((720, 1280), np.uint8), make_charuco_detector(board),
                              CAM, min_corners=3)


def test_compiled_edge_pass_matches_numpy_reference():
    from scrubin.registration._edge_kernel import refine_pass
    from scrubin.registration.subpixel import _refine_all

    d = get_dictionary("DICT_4X4_50")
    planes = [marker_plane(d, m, 50, look_at_pose([x, 0, 500], [20, 10, 30 * m], "M"))
              for m, x in ((1, -120.0), (2, 0.0), (3, 120.0))]
    img = render(CAM, planes, noise_sigma=2, seed=5, supersample=2)
    found = detect_markers(img, make_detector(d, detector_parameters("subpix")), "subpix")
    a, ok_a = refine_pass(img, found.corners_px, 16, 2.5, 21, False, np.eye(3), np.zeros(12),
                          np.zeros(2))
    b, ok_b = _refine_all(img, found.corners_px, 16, 2.5, np.zeros(2), None)
    assert ok_a.all() and ok_b.all()
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_reduced_scale_detection_and_edge_rejections():
    from scrubin.registration.subpixel import refine_corners_edges

    d = get_dictionary("DICT_4X4_50")
    truth = look_at_pose([40, 30, 350], [20, -20, 15], "MARKER")
    img = render(CAM, [marker_plane(d, 9, 50, truth)], noise_sigma=2, seed=9, supersample=2)
    gt = CAM.project(truth.apply(marker_object_points(50)))
    det = make_detector(d, detector_parameters("none", fast_threshold=True))
    for scale in (0.5, 0.25):
        found = detect_markers(img, det, scale=scale)
        assert np.abs(found.get(9) - gt).max() < 0.05, scale
    with pytest.raises(MarkerError, match="scale must be in"):
        detect_markers(img, det, scale=2.0)
    with pytest.raises(MarkerError, match=r"ids must be in 0\.\.11"):
        charuco_object_points(make_charuco_board(5, 4, 30, 20, "DICT_4X4_50"), np.array([12]))
    with pytest.raises(RegistrationError, match="2-D"):
        refine_corners_edges(np.zeros((4, 4, 3), np.uint8), np.zeros((1, 4, 2)))
    with pytest.raises(RegistrationError, match=r"\(N, 4, 2\)"):
        refine_corners_edges(img, np.zeros((4, 2)))
    with pytest.raises(RegistrationError, match="NaN"):
        refine_corners_edges(img, np.full((1, 4, 2), np.nan))
    with pytest.raises(RegistrationError, match="half_width_px"):
        refine_corners_edges(img, gt[None], half_width_px=(0.0,))
    # a quad on a flat image cannot be measured: corners are returned unchanged
    flat = np.full_like(img, 128)
    np.testing.assert_array_equal(refine_corners_edges(flat, gt[None])[0], gt)


def test_prior_resolves_planar_flip_ambiguity():
    """A small, distant, nearly face-on marker: IPPE's two solutions fit about equally well."""
    truth = look_at_pose([0, 0, 1500], [8, -6, 0], "MARKER")
    obj = marker_object_points(20)
    rng = np.random.default_rng(4)
    img = CAM.project(truth.apply(obj)) + rng.normal(0, 0.15, (4, 2))
    n, rvecs, _, errs = cv2.solvePnPGeneric(obj, img, CAM.matrix, CAM.dist,
                                            flags=cv2.SOLVEPNP_IPPE_SQUARE)
    flipped = [cv2.Rodrigues(rv)[0] for rv in rvecs]
    angles = [np.degrees(Rotation.from_matrix(r.T @ truth.rotation).magnitude())
              for r in flipped]
    assert n == 2 and max(angles) > 5  # two distinct candidate rotations
    est = solve_pose(obj, img, CAM, "MARKER", square=True, prior=truth)
    assert pose_error(est.pose, truth)[1] == pytest.approx(min(angles), abs=1e-6)
    wrong = Transform.from_rt(flipped[int(np.argmax(angles))], truth.translation, "MARKER",
                              "CAMERA")
    est_wrong = solve_pose(obj, img, CAM, "MARKER", square=True, prior=wrong)
    assert pose_error(est_wrong.pose, truth)[1] == pytest.approx(max(angles), abs=1e-6)
