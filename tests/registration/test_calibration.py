"""Camera calibration on rendered views with known intrinsics and distortion."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.registration.calibration import (
    BoardDetector,
    CalibrationError,
    calibrate_camera,
    calibrate_images,
    parse_board_spec,
    read_gray,
)
from scrubin.registration.camera import CameraModel
from scrubin.samples.synth_images import charuco_plane, chessboard_plane, look_at_pose, render

TRUE = CameraModel(np.array([[560.0, 0, 322.0], [0, 550.0, 236.0], [0, 0, 1]]),
                   np.array([-0.2, 0.05, 0.0, 0.0, 0.0]), 640, 480)


def _poses(n: int, width_mm: float, height_mm: float, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ang = [rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-20, 20)]
        pos = [-width_mm / 2 + rng.uniform(-30, 30), -height_mm / 2 + rng.uniform(-20, 20),
               rng.uniform(380, 480)]
        out.append(look_at_pose(pos, ang, "BOARD", y_up=False))
    return out


@pytest.fixture(scope="module")
def charuco_views() -> tuple:
    spec = parse_board_spec("charuco:7x5:30:22:DICT_4X4_50")
    board = spec.charuco_board()
    imgs = [render(TRUE, [charuco_plane(board, p, px_per_mm=4)], noise_sigma=1.5, seed=k,
                   supersample=2) for k, p in enumerate(_poses(8, 210, 150, seed=3))]
    return spec, imgs


def _check_intrinsics(cam: CameraModel) -> None:
    k, kt = cam.matrix, TRUE.matrix
    assert abs(k[0, 0] / kt[0, 0] - 1) < 0.01 and abs(k[1, 1] / kt[1, 1] - 1) < 0.01
    assert abs(k[0, 2] - kt[0, 2]) < 3 and abs(k[1, 2] - kt[1, 2]) < 3
    assert abs(cam.dist[0] - TRUE.dist[0]) < 0.03  # k1


def test_charuco_calibration_recovers_intrinsics(charuco_views):
    spec, imgs = charuco_views
    res = calibrate_images(imgs, spec)
    _check_intrinsics(res.camera)
    assert res.rms_px < 0.3 and res.rejected == {} and len(res.used) == 8
    assert res.camera.size == (640, 480) and res.camera.rms_px == pytest.approx(res.rms_px)


def test_chessboard_calibration_recovers_intrinsics():
    spec = parse_board_spec("chessboard:8x6:25")
    imgs = [render(TRUE, [chessboard_plane(8, 6, 25, p, px_per_mm=4)], noise_sigma=1.5, seed=k,
                   supersample=2) for k, p in enumerate(_poses(8, 175, 125, seed=5))]
    res = calibrate_images(imgs, spec, fix_k3=True)
    _check_intrinsics(res.camera)
    assert res.camera.dist[4] == 0.0


def test_legacy_charuco_board_calibrates():
    spec = parse_board_spec("charuco:6x4:30:22:DICT_4X4_50", legacy=True)
    assert spec.charuco_board().getLegacyPattern()
    imgs = [render(TRUE, [charuco_plane(spec.charuco_board(), p, px_per_mm=4)], seed=k,
                   supersample=2) for k, p in enumerate(_poses(6, 180, 120, seed=7))]
    det = BoardDetector(spec)
    assert all(det.detect(im) is not None for im in imgs)
    modern = BoardDetector(parse_board_spec("charuco:6x4:30:22:DICT_4X4_50"))
    found = [modern.detect(im) for im in imgs]
    assert sum(len(f[0]) for f in found if f is not None) < sum(
        len(det.detect(im)[0]) for im in imgs)


def test_outlier_and_sparse_views_rejected(charuco_views):
    spec, imgs = charuco_views
    det = BoardDetector(spec)
    views = [det.detect(im) for im in imgs]
    obj, img = views[2]
    views[2] = (obj, img + np.random.default_rng(0).normal(0, 4.0, img.shape))  # bad view
    views.append((obj[:4], img[:4]))  # too few corners
    views.append(None)  # board not found
    res = calibrate_camera(views, (640, 480))
    assert set(res.rejected) == {2, 8, 9}
    assert "per-view RMS" in res.rejected[2] and "only 4 corners" in res.rejected[8]
    assert np.isnan(res.per_view_rms_px[2]) and res.per_view_rms_px[0] < 0.3
    _check_intrinsics(res.camera)


def test_board_spec_parsing():
    s = parse_board_spec("charuco:7x5:30:22:DICT_4X4_50")
    assert (s.kind, s.cols, s.rows, s.square_mm, s.marker_mm) == ("charuco", 7, 5, 30, 22)
    c = parse_board_spec("chessboard:9x6:25")
    assert c.chessboard_points().shape == (54, 3) and c.chessboard_points()[1, 0] == 25
    for bad in ("chessboard:9x6", "circles:4x4:10", "chessboard:9by6:25", "charuco:7x5:30:22",
                "chessboard:9x6:abc"):
        with pytest.raises(CalibrationError, match="expected chessboard:COLSxROWS"):
            parse_board_spec(bad)
    with pytest.raises(CalibrationError, match="> 0 mm"):
        parse_board_spec("chessboard:9x6:0")
    with pytest.raises(CalibrationError, match="at least 2x2"):
        parse_board_spec("chessboard:1x6:20")
    with pytest.raises(CalibrationError, match="unknown ArUco dictionary"):
        parse_board_spec("charuco:7x5:30:22:DICT_NOPE")
    with pytest.raises(CalibrationError, match="32.0 mm must be smaller than the square"):
        parse_board_spec("charuco:7x5:30:32:DICT_4X4_50")


def test_calibration_rejections(tmp_path):
    obj = parse_board_spec("chessboard:4x3:10").chessboard_points()
    img = np.random.default_rng(0).uniform(0, 600, (12, 2))
    with pytest.raises(CalibrationError, match="only 2 usable views"):
        calibrate_camera([(obj, img), (obj, img), None], (640, 480))
    with pytest.raises(CalibrationError, match=r"view 0: need object points \(N, 3\)"):
        calibrate_camera([(obj[:, :2], img)] * 4, (640, 480))
    with pytest.raises(CalibrationError, match="view 0: points contain NaN"):
        calibrate_camera([(obj, np.full_like(img, np.nan))] * 4, (640, 480))
    bumped = obj.copy()
    bumped[0, 2] = 5
    with pytest.raises(CalibrationError, match="board plane z = 0"):
        calibrate_camera([(bumped, img)] * 4, (640, 480))
    with pytest.raises(CalibrationError, match="image size"):
        calibrate_camera([(obj, img)] * 4, (0, 480))
    with pytest.raises(CalibrationError, match="min_views"):
        calibrate_camera([(obj, img)] * 4, (640, 480), min_views=2)
    with pytest.raises(CalibrationError, match="no images"):
        calibrate_images([], parse_board_spec("chessboard:4x3:10"))
    with pytest.raises(CalibrationError, match="differ in size"):
        calibrate_images([np.zeros((10, 10), np.uint8), np.zeros((12, 10), np.uint8)],
                         parse_board_spec("chessboard:4x3:10"))
    with pytest.raises(CalibrationError, match="image not found"):
        read_gray(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(CalibrationError, match="bad.png: not a readable image"):
        read_gray(tmp_path / "bad.png")
