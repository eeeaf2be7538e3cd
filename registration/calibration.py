"""Camera calibration from chessboard or ChArUco views (Zhang's method via OpenCV).

``cv2.calibrateCamera`` estimates intrinsics and distortion by minimising the reprojection
error over all views (Zhang, "A flexible new technique for camera calibration", IEEE TPAMI
22(11), 2000). Bad views are rejected iteratively: views with too few corners are dropped
before solving; after each solve the view with the largest per-view RMS is removed while it
exceeds ``max(outlier_px, outlier_factor × median per-view RMS)``, and the camera is solved
again, keeping at least ``min_views``.

Board specifications (OpenCV conventions): a chessboard is given by its inner corners, a
ChArUco board by its squares::

    chessboard:COLSxROWS:SQUARE_MM                # e.g. chessboard:9x6:25
    charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT    # e.g. charuco:7x5:30:22:DICT_4X4_50

Boards printed with OpenCV < 4.6 and an even number of rows use the legacy ChArUco pattern
(``legacy=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.markers import (
    as_gray,
    charuco_object_points,
    detect_charuco,
    make_charuco_board,
    make_charuco_detector,
)


class CalibrationError(RegistrationError):
    """Calibration input is unusable (bad board spec, too few views, unreadable image ...)."""


@dataclass(frozen=True)
class BoardSpec:
    """A calibration board: ``kind`` "chessboard" (cols x rows inner corners) or "charuco"
    (cols x rows squares, ``marker_mm``, ``dictionary``, ``legacy``)."""

    kind: str
    cols: int
    rows: int
    square_mm: float
    marker_mm: float | None = None
    dictionary: str | None = None
    legacy: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("chessboard", "charuco"):
            raise CalibrationError(f"board kind must be chessboard or charuco, got {self.kind!r}")
        if self.cols < 2 or self.rows < 2:
            raise CalibrationError(f"board needs at least 2x2, got {self.cols}x{self.rows}")
        if not np.isfinite(self.square_mm) or self.square_mm <= 0:
            raise CalibrationError(f"square size must be > 0 mm, got {self.square_mm}")
        if self.kind == "charuco":
            make_charuco_board(self.cols, self.rows, self.square_mm, self.marker_mm or 0.0,
                               self.dictionary or "", self.legacy)

    def charuco_board(self) -> cv2.aruco.CharucoBoard:
        """The OpenCV board object (ChArUco only)."""
        return make_charuco_board(self.cols, self.rows, self.square_mm, float(self.marker_mm or 0),
                                  str(self.dictionary), self.legacy)

    def chessboard_points(self) -> np.ndarray:
        """(cols*rows, 3) inner corners in the board frame (mm), row by row."""
        j, i = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        return np.column_stack([j.ravel(), i.ravel(), np.zeros(j.size)]) * [
            self.square_mm, self.square_mm, 1.0]


def parse_board_spec(text: str, legacy: bool = False) -> BoardSpec:
    """Parse ``chessboard:COLSxROWS:SQUARE_MM`` or ``charuco:COLSxROWS:SQUARE:MARKER:DICT``."""
    if not isinstance(text, str):
        raise CalibrationError(f"board spec must be a string, got {text!r}")
    parts = text.strip().split(":")
    usage = ("expected chessboard:COLSxROWS:SQUARE_MM (inner corners) or "
             "charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT (squares)")
    kind = parts[0].lower()
    if kind not in ("chessboard", "charuco") or len(parts) != (3 if kind == "chessboard" else 5):
        raise CalibrationError(f"board spec {text!r}: {usage}")
    try:
        cols, rows = (int(v) for v in parts[1].lower().split("x"))
        square = float(parts[2])
        marker = float(parts[3]) if kind == "charuco" else None
    except ValueError:
        raise CalibrationError(f"board spec {text!r}: {usage}") from None
    dictionary = parts[4] if kind == "charuco" else None
    try:
        return BoardSpec(kind, cols, rows, square, marker, dictionary, legacy)
    except RegistrationError as exc:
        raise CalibrationError(f"board spec {text!r}: {exc}") from None


class BoardDetector:
    """Finds a board's corners in images: (N, 3) board-frame mm and (N, 2) pixels per view."""

    def __init__(self, spec: BoardSpec, min_corners: int = 6) -> None:
        self.spec = spec
        self.min_corners = max(int(min_corners), 4)
        if spec.kind == "charuco":
            self._board = spec.charuco_board()
            self._det = make_charuco_detector(self._board)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Object points (mm) and image points (px) of one view, or None if not usable."""
        gray = as_gray(image)
        if self.spec.kind == "chessboard":
            size = (self.spec.cols, self.spec.rows)
            flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
            ok, corners = cv2.findChessboardCorners(gray, size, flags=flags)
            if not ok or corners is None:
                return None
            # saddle-point refinement: unbiased on chessboard X-corners (Foerstner-type)
            crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
            spacing = np.linalg.norm(np.diff(corners.reshape(-1, 2), axis=0), axis=1).min()
            win = int(np.clip(spacing * 0.4, 2, 11))
            corners = cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), crit)
            return self.spec.chessboard_points(), corners.reshape(-1, 2).astype(np.float64)
        ids, corners = detect_charuco(gray, self._det)
        if ids.size < self.min_corners:
            return None
        if self._board.checkCharucoCornersCollinear(ids.reshape(-1, 1)):
            return None
        return charuco_object_points(self._board, ids), corners


@dataclass
class CalibrationResult:
    """Result of :func:`calibrate_camera`.

    ``per_view_rms_px`` is indexed like the input views (NaN for views not used);
    ``rejected`` maps a view index to the reason it was left out.
    """

    camera: CameraModel
    rms_px: float
    per_view_rms_px: list[float]
    used: list[int]
    rejected: dict[int, str] = field(default_factory=dict)


def _solve(views: list[tuple[np.ndarray, np.ndarray]], size: tuple[int, int], flags: int
           ) -> tuple[float, np.ndarray, np.ndarray, list[float]]:
    obj = [o.astype(np.float32) for o, _ in views]
    img = [i.astype(np.float32).reshape(-1, 1, 2) for _, i in views]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
    rms, k, d, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, None, None, flags=flags,
                                                  criteria=crit)
    per_view = []
    for (o, i), rv, tv in zip(views, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(o, rv, tv, k, d)
        per_view.append(float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - i) ** 2, axis=1)))))
    return float(rms), k, d.reshape(-1), per_view


def calibrate_camera(
    views: list[tuple[np.ndarray, np.ndarray] | None],
    image_size: tuple[int, int],
    min_views: int = 4,
    min_corners: int = 6,
    outlier_factor: float = 3.0,
    outlier_px: float = 1.0,
    fix_k3: bool = False,
) -> CalibrationResult:
    """Calibrate from per-view correspondences, rejecting bad views.

    Parameters
    ----------
    views
        One entry per image: ``(object_points_mm (N, 3) on the board plane z = 0,
        image_points_px (N, 2))`` or None (board not found).
    image_size
        (width, height) in pixels.
    min_views
        Fewest views kept; fewer usable views is an error.
    min_corners
        Views with fewer corners are rejected before solving.
    outlier_factor, outlier_px
        A view is an outlier when its RMS exceeds both ``outlier_px`` and ``outlier_factor``
        times the median per-view RMS.
    fix_k3
        Keep k3 = 0 (5-coefficient model otherwise).
    """
    w, h = (int(v) for v in image_size)
    if w <= 0 or h <= 0:
        raise CalibrationError(f"image size must be positive, got {image_size}")
    if min_views < 3:
        raise CalibrationError(f"min_views must be >= 3, got {min_views}")
    rejected: dict[int, str] = {}
    usable: list[int] = []
    for n, v in enumerate(views):
        if v is None:
            rejected[n] = "board not found"
            continue
        o, i = np.asarray(v[0], dtype=np.float64), np.asarray(v[1], dtype=np.float64)
        if o.ndim != 2 or o.shape[1] != 3 or i.ndim != 2 or i.shape[1] != 2 or len(o) != len(i):
            raise CalibrationError(
                f"view {n}: need object points (N, 3) and image points (N, 2), got "
                f"{o.shape} and {i.shape}")
        if not (np.all(np.isfinite(o)) and np.all(np.isfinite(i))):
            raise CalibrationError(f"view {n}: points contain NaN or infinite values")
        if len(o) < min_corners:
            rejected[n] = f"only {len(o)} corners (< {min_corners})"
            continue
        if np.ptp(o[:, 2]) > 1e-6:
            raise CalibrationError(f"view {n}: object points must lie on the board plane z = 0")
        usable.append(n)
    if len(usable) < min_views:
        raise CalibrationError(
            f"only {len(usable)} usable views (need {min_views}); rejected: "
            + "; ".join(f"view {k}: {r}" for k, r in rejected.items()))
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    data = {n: (np.asarray(views[n][0], float), np.asarray(views[n][1], float)) for n in usable}
    while True:
        rms, k, d, per_view = _solve([data[n] for n in usable], (w, h), flags)
        med = float(np.median(per_view))
        limit = max(outlier_px, outlier_factor * med)
        worst = int(np.argmax(per_view))
        if per_view[worst] <= limit or len(usable) <= min_views:
            break
        rejected[usable[worst]] = (
            f"per-view RMS {per_view[worst]:.2f} px > max({outlier_px:g} px, "
            f"{outlier_factor:g} x median {med:.2f} px)")
        usable.pop(worst)
    full = [float("nan")] * len(views)
    for n, e in zip(usable, per_view, strict=True):
        full[n] = e
    camera = CameraModel(k, d, w, h, rms, {"calibration": {
        "views_used": len(usable), "views_rejected": len(rejected)}})
    return CalibrationResult(camera, rms, full, list(usable), rejected)


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as gray uint8; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"{p}: image not found")
    img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise CalibrationError(f"{p}: not a readable image")
    return img


def calibrate_images(
    images: list[np.ndarray], spec: BoardSpec, **kwargs: object
) -> CalibrationResult:
    """Detect ``spec`` in every image (all the same size) and :func:`calibrate_camera`."""
    if not images:
        raise CalibrationError("no images given")
    sizes = {as_gray(im).shape for im in images}
    if len(sizes) != 1:
        raise CalibrationError(f"images differ in size: {sorted(sizes)}")
    h, w = sizes.pop()
    det = BoardDetector(spec, int(kwargs.get("min_corners", 6)))  # type: ignore[arg-type]
    views = [det.detect(im) for im in images]
    return calibrate_camera(views, (w, h), **kwargs)  # type: ignore[arg-type]
