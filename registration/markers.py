"""ArUco marker and ChArUco board detection, sub-pixel corners and pose (OpenCV 5 API).

Detection uses ``cv2.aruco.ArucoDetector`` / ``cv2.aruco.CharucoDetector`` (the free function
``cv2.aruco.detectMarkers`` is gone in OpenCV 5). Corner refinement ``"edge"`` (default) is
this package's line-fit refinement (:mod:`scrubin.registration.subpixel`); ``"subpix"``,
``"contour"``, ``"apriltag"`` and ``"none"`` are OpenCV's ``CORNER_REFINE_*`` methods. Measured
on rendered markers (50 mm at 0.5 m, 1280x720, noise sigma 2): corner error edge ~0.01 px,
subpix ~0.1-0.2 px (biased inwards on the L-shaped marker corners), apriltag 0.4-0.9 px
(constant offset), contour 0.6-0.8 px, none ~0.5-1 px.

Poses are ``T_CAMERA_<object>`` in mm (camera frame: OpenCV, x right, y down, z forward).
A single marker's frame is OpenCV's ``SOLVEPNP_IPPE_SQUARE`` one: origin at the marker
centre, x right, y up, z out of the printed face; corners (top-left, top-right, bottom-right,
bottom-left) = ``(-L/2, L/2, 0), (L/2, L/2, 0), (L/2, -L/2, 0), (-L/2, -L/2, 0)``.
Poses from more than four points use ``SOLVEPNP_IPPE`` (planar) or ``SOLVEPNP_SQPNP``
(non-planar), then ``cv2.solvePnPRefineLM``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import CAMERA, Transform
from scrubin.registration.subpixel import refine_corners_edges

REFINEMENTS = {
    "edge": cv2.aruco.CORNER_REFINE_SUBPIX,  # OpenCV subpix first, then edge lines
    "subpix": cv2.aruco.CORNER_REFINE_SUBPIX,
    "contour": cv2.aruco.CORNER_REFINE_CONTOUR,
    "apriltag": cv2.aruco.CORNER_REFINE_APRILTAG,
    "none": cv2.aruco.CORNER_REFINE_NONE,
}


class MarkerError(RegistrationError):
    """Bad marker / board input (unknown dictionary, size <= 0, malformed corners ...)."""


def dictionary_names() -> list[str]:
    """Names accepted by :func:`get_dictionary` (``DICT_4X4_50``, ``DICT_APRILTAG_36h11`` ...)."""
    return sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))


def get_dictionary(name: str) -> cv2.aruco.Dictionary:
    """The predefined dictionary ``name``; ``DICT_`` prefix and letter case are optional."""
    if not isinstance(name, str) or not name.strip():
        raise MarkerError(f"dictionary name must be a non-empty string, got {name!r}")
    key = name.strip()
    key = key if key.upper().startswith("DICT_") else "DICT_" + key
    table = {n.upper(): getattr(cv2.aruco, n) for n in dictionary_names()}
    if key.upper() not in table:
        raise MarkerError(
            f"unknown ArUco dictionary {name!r}; expected one of e.g. DICT_4X4_50, DICT_5X5_100, "
            "DICT_6X6_250, DICT_ARUCO_ORIGINAL, DICT_APRILTAG_36h11"
        )
    return cv2.aruco.getPredefinedDictionary(table[key.upper()])


def _check_size(size_mm: float, what: str = "marker size") -> float:
    try:
        v = float(size_mm)
    except (TypeError, ValueError):
        raise MarkerError(f"{what} must be a number of mm, got {size_mm!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise MarkerError(f"{what} must be > 0 mm, got {size_mm}")
    return v


def as_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 view of a gray or BGR (H, W, 3) / BGRA uint8 image."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise MarkerError(f"image must be uint8, got {img.dtype}")
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    raise MarkerError(f"image must be (H, W) gray or (H, W, 3) BGR, got shape {img.shape}")


def detector_parameters(
    refinement: str = "edge",
    aruco3: bool = False,
    min_marker_ratio: float = 0.02,
    min_side_canonical_px: int = 32,
    fast_threshold: bool = False,
) -> cv2.aruco.DetectorParameters:
    """OpenCV detector parameters.

    Parameters
    ----------
    refinement
        One of :data:`REFINEMENTS`.
    aruco3
        Enable the ArUco3 fast mode (Romero-Ramirez et al., "Speeded up detection of squared
        fiducial markers", Image and Vision Computing 76, 2018): the image is downscaled so
        that the smallest expected marker (``min_marker_ratio`` of the larger image side)
        becomes ``min_side_canonical_px`` pixels. Measured with OpenCV 5.0.0 on rendered
        1080p scenes (40-60 mm markers at 0.3-0.8 m): it misses 10-60 % of the markers, so
        the tracker downscales explicitly instead (``detect_markers(scale=...)``).
    fast_threshold
        Two adaptive-threshold windows (3 and 13 px) instead of three (3, 13, 23).
    """
    if refinement not in REFINEMENTS:
        raise MarkerError(f"unknown corner refinement {refinement!r}; expected {list(REFINEMENTS)}")
    if not 0 < min_marker_ratio < 1:
        raise MarkerError(f"min_marker_ratio must be in (0, 1), got {min_marker_ratio}")
    p = cv2.aruco.DetectorParameters()
    p.cornerRefinementMethod = REFINEMENTS[refinement]
    if refinement == "edge":
        p.cornerRefinementMaxIterations = 10
    if fast_threshold:
        p.adaptiveThreshWinSizeMin, p.adaptiveThreshWinSizeMax = 3, 13
        p.adaptiveThreshWinSizeStep = 10
    if aruco3:
        p.useAruco3Detection = True
        p.minMarkerLengthRatioOriginalImg = float(min_marker_ratio)
        p.minSideLengthCanonicalImg = int(min_side_canonical_px)
    return p


@dataclass(frozen=True)
class MarkerDetections:
    """Markers found in one image: ``ids`` (N,) and ``corners_px`` (N, 4, 2) image pixels.

    Corners run clockwise from the printed top-left corner (OpenCV order).
    """

    ids: np.ndarray
    corners_px: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.size)

    def get(self, marker_id: int) -> np.ndarray | None:
        """(4, 2) corners of ``marker_id`` or None (first occurrence)."""
        hit = np.flatnonzero(self.ids == marker_id)
        return None if hit.size == 0 else self.corners_px[hit[0]]

    @staticmethod
    def empty() -> MarkerDetections:
        """No markers."""
        return MarkerDetections(np.zeros(0, dtype=np.int32), np.zeros((0, 4, 2)))


def make_detector(
    dictionary: str | cv2.aruco.Dictionary, params: cv2.aruco.DetectorParameters | None = None
) -> cv2.aruco.ArucoDetector:
    """An ``ArucoDetector`` for a dictionary (name or object)."""
    d = get_dictionary(dictionary) if isinstance(dictionary, str) else dictionary
    return cv2.aruco.ArucoDetector(d, params if params is not None else detector_parameters())


def detect_markers(
    image: np.ndarray,
    detector: cv2.aruco.ArucoDetector,
    refinement: str = "edge",
    camera: CameraModel | None = None,
    offset_px: tuple[int, int] = (0, 0),
    scale: float = 1.0,
) -> MarkerDetections:
    """Detect markers in ``image`` (gray or BGR uint8).

    Parameters
    ----------
    refinement
        ``"edge"`` re-fits the corners on the marker edges at full resolution after the
        detector's own refinement (undistorting edge points with ``camera`` when given).
    offset_px
        (x, y) added to the corners: the position of ``image`` as a crop of a larger frame.
    scale
        Detect on the image resized by ``scale`` (<= 1, area averaging), then map the
        corners back (pixel centres: ``u = (u_s + 0.5) / scale - 0.5``) and refine them on
        the full-resolution image with ``"edge"`` (forced when ``scale < 1``). A marker
        must stay >= ~16 px wide at the reduced size.
    """
    gray = as_gray(image)
    s = float(scale)
    if not 0.05 <= s <= 1.0:
        raise MarkerError(f"detection scale must be in [0.05, 1], got {scale}")
    small = gray
    if s < 1.0:
        halvings = -np.log2(s)
        if abs(halvings - round(halvings)) < 1e-9:
            # power-of-two factors: repeated 2x2 area averaging (OpenCV's fast path; a
            # non-integer INTER_AREA resize of a 1080p frame costs ~10x more)
            for _ in range(round(halvings)):
                size = (max(1, small.shape[1] // 2), max(1, small.shape[0] // 2))
                small = cv2.resize(small[: 2 * size[1], : 2 * size[0]], size,
                                   interpolation=cv2.INTER_AREA)
        else:
            size = (max(1, round(gray.shape[1] * s)), max(1, round(gray.shape[0] * s)))
            small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        refinement = "edge"
    corners, ids, _ = detector.detectMarkers(small)
    if ids is None or len(ids) == 0:
        return MarkerDetections.empty()
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    if small is not gray:
        f = round(1.0 / s) if abs(1.0 / s - round(1.0 / s)) < 1e-9 else None
        sx = f if f else gray.shape[1] / small.shape[1]
        sy = f if f else gray.shape[0] / small.shape[0]
        c = (c + 0.5) * [sx, sy] - 0.5
    if refinement == "edge":
        c = refine_corners_edges(gray, c, camera, offset_px=offset_px)
    else:
        c = c + np.asarray(offset_px, dtype=np.float64)
    return MarkerDetections(np.asarray(ids, dtype=np.int32).reshape(-1), c)


def marker_object_points(size_mm: float) -> np.ndarray:
    """(4, 3) marker corners in the marker frame (mm), OpenCV ``SOLVEPNP_IPPE_SQUARE`` order."""
    h = _check_size(size_mm) / 2.0
    return np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])


@dataclass(frozen=True)
class PoseEstimate:
    """A pose ``T_CAMERA_<object>`` (mm) with its reprojection RMS (px) and point count."""

    pose: Transform
    reproj_rms_px: float
    n_points: int


def _check_points(obj: np.ndarray, img: np.ndarray, min_points: int) -> tuple[np.ndarray, ...]:
    o = np.asarray(obj, dtype=np.float64)
    i = np.asarray(img, dtype=np.float64)
    if o.ndim != 2 or o.shape[1] != 3:
        raise MarkerError(f"object points must have shape (N, 3) mm, got {o.shape}")
    if i.ndim != 2 or i.shape[1] != 2:
        raise MarkerError(f"image points must have shape (N, 2) px, got {i.shape}")
    if o.shape[0] != i.shape[0]:
        raise MarkerError(f"{o.shape[0]} object points but {i.shape[0]} image points")
    if o.shape[0] < min_points:
        raise MarkerError(f"pose needs at least {min_points} points, got {o.shape[0]}")
    if not (np.all(np.isfinite(o)) and np.all(np.isfinite(i))):
        raise MarkerError("points contain NaN or infinite values")
    return o, i


def reprojection_rms(
    object_points_mm: np.ndarray, image_points_px: np.ndarray, pose: Transform,
    camera: CameraModel,
) -> float:
    """RMS distance (px) between ``image_points_px`` and the projected ``object_points_mm``."""
    o, i = _check_points(object_points_mm, image_points_px, 1)
    proj = camera.project(pose.apply(o))
    return float(np.sqrt(np.mean(np.sum((proj - i) ** 2, axis=1))))


def solve_pose(
    object_points_mm: np.ndarray,
    image_points_px: np.ndarray,
    camera: CameraModel,
    src: str,
    timestamp: float | None = None,
    square: bool = False,
    prior: Transform | None = None,
    ambiguity_ratio: float = 2.0,
) -> PoseEstimate:
    """``T_CAMERA_src`` from 2-D/3-D correspondences (``cv2.solvePnP``), refined by LM.

    ``square=True`` requires the four corners of :func:`marker_object_points` in that order
    and uses ``SOLVEPNP_IPPE_SQUARE`` (Collins & Bartoli, "Infinitesimal Plane-Based Pose
    Estimation", IJCV 109, 2014). Otherwise planar point sets use ``SOLVEPNP_IPPE``, others
    ``SOLVEPNP_SQPNP`` (Terzakis & Lourakis, ECCV 2020). Of IPPE's two solutions the one with
    the lower reprojection error is kept — unless the two errors are within
    ``ambiguity_ratio`` of each other (the planar flip ambiguity of small or distant targets)
    and a ``prior`` pose (e.g. the previous frame's) is given: then the solution whose
    rotation is closer to the prior's is kept.
    """
    o, i = _check_points(object_points_mm, image_points_px, 4)
    k, d = camera.matrix, camera.dist
    if square:
        method = cv2.SOLVEPNP_IPPE_SQUARE
    else:
        centred = o - o.mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False)
        if sv[1] < 1e-9 * max(sv[0], 1e-12):
            raise MarkerError("object points are collinear; a pose needs a 2-D spread")
        method = cv2.SOLVEPNP_IPPE if sv[2] < 1e-6 * sv[0] else cv2.SOLVEPNP_SQPNP
    n, rvecs, tvecs, errs = cv2.solvePnPGeneric(o, i, k, d, flags=method)
    if n < 1:
        raise MarkerError("solvePnP found no pose for these points")
    e = np.asarray(errs, dtype=np.float64).reshape(-1) if errs is not None else np.zeros(1)
    best = int(np.argmin(e))
    if prior is not None and n >= 2 and e.size >= 2:
        lo, hi = np.sort(e[:2])
        if hi <= ambiguity_ratio * max(lo, 1e-9):
            angles = []
            for rv in rvecs[:2]:
                r_cand, _ = cv2.Rodrigues(rv)
                c = (np.trace(r_cand.T @ prior.rotation) - 1.0) / 2.0
                angles.append(np.arccos(np.clip(c, -1.0, 1.0)))
            best = int(np.argmin(angles))
    rvec, tvec = rvecs[best].copy(), tvecs[best].copy()
    if o.shape[0] > 4 or method != cv2.SOLVEPNP_IPPE_SQUARE:
        rvec, tvec = cv2.solvePnPRefineLM(o, i, k, d, rvec, tvec)
    r, _ = cv2.Rodrigues(rvec)
    pose = Transform.from_rt(r, tvec.reshape(3), src=src, dst=CAMERA, timestamp=timestamp)
    return PoseEstimate(pose, reprojection_rms(o, i, pose, camera), int(o.shape[0]))


def estimate_marker_pose(
    corners_px: np.ndarray,
    size_mm: float,
    camera: CameraModel,
    src: str = "MARKER",
    timestamp: float | None = None,
) -> PoseEstimate:
    """Pose ``T_CAMERA_<src>`` of one square marker from its (4, 2) corners (px).

    Parameters
    ----------
    corners_px
        Corners clockwise from the top-left (OpenCV detection order), distorted pixels.
    size_mm
        Side of the marker's black square, mm (> 0).
    camera
        Calibrated camera.
    """
    c = np.asarray(corners_px, dtype=np.float64)
    if c.shape not in ((4, 2), (1, 4, 2)):
        raise MarkerError(f"marker corners must have shape (4, 2), got {c.shape}")
    return solve_pose(marker_object_points(size_mm), c.reshape(4, 2), camera, src,
                      timestamp=timestamp, square=True)


# ---------------------------------------------------------------------------- ChArUco
def make_charuco_board(
    cols: int,
    rows: int,
    square_mm: float,
    marker_mm: float,
    dictionary: str | cv2.aruco.Dictionary,
    legacy: bool = False,
) -> cv2.aruco.CharucoBoard:
    """A ChArUco board of ``cols x rows`` squares (OpenCV convention: squares, not corners).

    ``legacy=True`` selects the pattern of boards printed with OpenCV < 4.6 (differs for an
    even number of rows; ``CharucoBoard.setLegacyPattern``, opencv issue #23152).
    Board frame: top-left board corner, x right, y down, mm.
    """
    if int(cols) < 2 or int(rows) < 2:
        raise MarkerError(f"a ChArUco board needs at least 2x2 squares, got {cols}x{rows}")
    sq = _check_size(square_mm, "square size")
    mk = _check_size(marker_mm, "marker size")
    if mk >= sq:
        raise MarkerError(f"marker size {mk} mm must be smaller than the square {sq} mm")
    d = get_dictionary(dictionary) if isinstance(dictionary, str) else dictionary
    n_markers = (int(cols) * int(rows)) // 2
    if n_markers > len(d.bytesList):
        raise MarkerError(
            f"a {cols}x{rows} board needs {n_markers} markers; the dictionary has "
            f"{len(d.bytesList)}"
        )
    board = cv2.aruco.CharucoBoard((int(cols), int(rows)), sq, mk, d)
    board.setLegacyPattern(bool(legacy))
    return board


def make_charuco_detector(
    board: cv2.aruco.CharucoBoard, refinement: str = "subpix"
) -> cv2.aruco.CharucoDetector:
    """A ``CharucoDetector`` (chessboard corners are refined with ``cornerSubPix`` internally)."""
    if refinement == "edge":
        refinement = "subpix"
    return cv2.aruco.CharucoDetector(board, cv2.aruco.CharucoParameters(),
                                     detector_parameters(refinement))


def detect_charuco(
    image: np.ndarray, detector: cv2.aruco.CharucoDetector
) -> tuple[np.ndarray, np.ndarray]:
    """ChArUco corners: ``ids`` (M,) and ``corners_px`` (M, 2); empty arrays if none found."""
    gray = as_gray(image)
    ch_corners, ch_ids, _, _ = detector.detectBoard(gray)
    if ch_ids is None or len(ch_ids) == 0:
        return np.zeros(0, dtype=np.int32), np.zeros((0, 2))
    return (np.asarray(ch_ids, dtype=np.int32).reshape(-1),
            np.asarray(ch_corners, dtype=np.float64).reshape(-1, 2))


def charuco_object_points(board: cv2.aruco.CharucoBoard, ids: np.ndarray) -> np.ndarray:
    """(M, 3) board-frame positions (mm) of ChArUco corners ``ids``."""
    all_pts = np.asarray(board.getChessboardCorners(), dtype=np.float64).reshape(-1, 3)
    idx = np.asarray(ids, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= all_pts.shape[0]):
        raise MarkerError(f"ChArUco corner ids must be in 0..{all_pts.shape[0] - 1}")
    return all_pts[idx]


def estimate_charuco_pose(
    image: np.ndarray,
    detector: cv2.aruco.CharucoDetector,
    camera: CameraModel,
    src: str = "BOARD",
    min_corners: int = 6,
    timestamp: float | None = None,
) -> PoseEstimate | None:
    """Pose ``T_CAMERA_<src>`` of a ChArUco board, or None with fewer than ``min_corners``."""
    if min_corners < 4:
        raise MarkerError(f"min_corners must be >= 4, got {min_corners}")
    ids, corners = detect_charuco(image, detector)
    if ids.size < min_corners:
        return None
    obj = charuco_object_points(detector.getBoard(), ids)
    return solve_pose(obj, corners, camera, src, timestamp=timestamp)
