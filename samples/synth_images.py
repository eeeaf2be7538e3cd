"""Rendering of planar targets (ArUco markers, ChArUco boards, chessboards) at known poses.

Used by tests and benchmarks as exact ground truth: every target is a textured plane
``z = 0`` of its object frame, placed by ``T_CAMERA_OBJECT`` (mm, OpenCV camera frame: x right,
y down, z forward). For a distortion-free camera a plane maps to the image by the homography
``H = K [r1 r2 t]`` (Hartley & Zisserman, *Multiple View Geometry*, 2nd ed., eq. 8.1 / §13.1);
with lens distortion each output pixel is undistorted to its ray (``cv2.undistortPoints``
iterated to 1e-12) and the ray is intersected with the plane through the inverse of
``[r1 r2 t]`` — an exact remap. Anti-aliasing: the image is rendered at ``supersample``
times the resolution (with :meth:`CameraModel.scaled`, pixel-centre consistent) and reduced
by a box filter (``cv2.INTER_AREA`` with an integer factor), i.e. each output pixel is the
mean of ``supersample²`` point samples of the scene.

Object frames (those of OpenCV's detectors, so that poses compare directly):

* marker: centre of the marker, x right, y up, z out of the printed face (towards the viewer);
  corners top-left ``(-L/2, L/2)``, top-right, bottom-right, bottom-left (``SOLVEPNP_IPPE_SQUARE``).
* ChArUco board: top-left corner of the board, x right, y down (``CharucoBoard.getObjPoints``).
* chessboard: first inner corner, x right along the rows, y down (``inner_corners`` order).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform

_NEAR_MM = 1.0


@dataclass(frozen=True)
class Plane:
    """A textured plane: ``texture`` gray (h, w), placed by ``pose`` (``T_CAMERA_<object>``).

    ``tex_to_object`` is a 3x3 affine matrix mapping a texture pixel centre ``(col, row, 1)``
    to object-frame plane coordinates ``(x_mm, y_mm, 1)`` (``z = 0``).
    """

    texture: np.ndarray
    tex_to_object: np.ndarray
    pose: Transform

    def corners_object_mm(self) -> np.ndarray:
        """The (4, 3) object-frame corners of the texture's outer edge (mm)."""
        h, w = self.texture.shape[:2]
        uv = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1],
                       [-0.5, h - 0.5, 1]], dtype=np.float64)
        xy = uv @ self.tex_to_object.T
        return np.column_stack([xy[:, :2], np.zeros(4)])


def _check_pose(pose: Transform) -> None:
    if not isinstance(pose, Transform):
        raise RegistrationError(f"pose must be a Transform T_CAMERA_<object>, got {type(pose)}")


def marker_plane(
    dictionary: cv2.aruco.Dictionary,
    marker_id: int,
    size_mm: float,
    pose: Transform,
    quiet_zone_modules: float = 1.0,
    px_per_module: int = 16,
) -> Plane:
    """An ArUco marker of side ``size_mm`` (black border included) with a white quiet zone.

    Parameters
    ----------
    dictionary
        OpenCV ArUco dictionary (see :func:`scrubin.registration.markers.get_dictionary`).
    marker_id
        Id inside the dictionary.
    size_mm
        Side of the black square in mm (the size given to pose estimation).
    pose
        ``T_CAMERA_MARKER`` (marker frame: centre, x right, y up, z towards the viewer).
    quiet_zone_modules
        Width of the white margin around the marker, in modules (bits).
    px_per_module
        Texture resolution; 16 keeps bilinear texture sampling far below a pixel.
    """
    _check_pose(pose)
    if not np.isfinite(size_mm) or size_mm <= 0:
        raise RegistrationError(f"marker size must be > 0 mm, got {size_mm}")
    n_bits = int(dictionary.markerSize)
    if not 0 <= int(marker_id) < len(dictionary.bytesList):
        raise RegistrationError(
            f"marker id {marker_id} is outside the dictionary (0..{len(dictionary.bytesList) - 1})"
        )
    if quiet_zone_modules < 0 or px_per_module < 1:
        raise RegistrationError("quiet zone must be >= 0 modules and px_per_module >= 1")
    side = (n_bits + 2) * px_per_module
    img = cv2.aruco.generateImageMarker(dictionary, int(marker_id), side, borderBits=1)
    pad = int(round(quiet_zone_modules * px_per_module))
    tex = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    s = size_mm / side
    # texture pixel centre (j, i) -> x = -L/2 + (j - pad + 0.5) s, y = L/2 - (i - pad + 0.5) s
    a = np.array([[s, 0.0, -size_mm / 2 + (0.5 - pad) * s],
                  [0.0, -s, size_mm / 2 - (0.5 - pad) * s],
                  [0.0, 0.0, 1.0]])
    return Plane(tex, a, pose)


def charuco_plane(
    board: cv2.aruco.CharucoBoard, pose: Transform, margin_mm: float = 10.0, px_per_mm: float = 8.0
) -> Plane:
    """A ChArUco board (``board.generateImage``) with a white margin; ``pose`` = ``T_CAMERA_BOARD``.

    The legacy pattern is honoured through the board object (``board.setLegacyPattern``).
    """
    _check_pose(pose)
    cols, rows = board.getChessboardSize()
    sq = float(board.getSquareLength())
    w = int(round(cols * sq * px_per_mm))
    h = int(round(rows * sq * px_per_mm))
    img = board.generateImage((w, h), marginSize=0, borderBits=1)
    return _padded_plane(img, cols * sq / w, rows * sq / h, margin_mm, pose)


def chessboard_plane(
    inner_cols: int, inner_rows: int, square_mm: float, pose: Transform, px_per_mm: float = 8.0
) -> Plane:
    """A chessboard with ``inner_cols x inner_rows`` inner corners and a one-square white margin.

    Object frame: origin at the first inner corner, x along a row, y down; the top-left square
    is black. ``pose`` = ``T_CAMERA_BOARD``.
    """
    _check_pose(pose)
    if inner_cols < 2 or inner_rows < 2 or square_mm <= 0:
        raise RegistrationError("chessboard needs >= 2x2 inner corners and a square > 0 mm")
    p = max(2, int(round(square_mm * px_per_mm)))
    nx, ny = inner_cols + 1, inner_rows + 1
    yy, xx = np.mgrid[0:ny * p, 0:nx * p]
    img = np.where(((yy // p) + (xx // p)) % 2 == 0, 0, 255).astype(np.uint8)
    s = square_mm / p
    plane = _padded_plane(img, s, s, square_mm, pose)
    # shift the origin from the board's outer corner to the first inner corner
    a = plane.tex_to_object.copy()
    a[:2, 2] -= square_mm
    return Plane(plane.texture, a, pose)


def _padded_plane(
    img: np.ndarray, sx: float, sy: float, margin_mm: float, pose: Transform
) -> Plane:
    pad = int(round(margin_mm / sx)) if margin_mm > 0 else 0
    tex = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    a = np.array([[sx, 0.0, (0.5 - pad) * sx], [0.0, sy, (0.5 - pad) * sy], [0.0, 0.0, 1.0]])
    return Plane(tex, a, pose)


@lru_cache(maxsize=8)
def _normalized_rays(key: tuple) -> np.ndarray:
    """(H, W, 2) undistorted normalized coordinates of every pixel of a distorted camera."""
    k = np.array(key[0]).reshape(3, 3)
    dist = np.array(key[1])
    w, h = key[2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 60, 1e-12)
    xy = cv2.undistortPoints(pts, k, dist, criteria=crit)
    return xy.reshape(h, w, 2)


def render(
    camera: CameraModel,
    planes: list[Plane],
    background: float = 128.0,
    supersample: int = 3,
    noise_sigma: float = 0.0,
    blur_sigma_px: float = 0.0,
    seed: int | None = None,
) -> np.ndarray:
    """Render ``planes`` (painted in order, later ones on top) into a uint8 gray image.

    Parameters
    ----------
    camera
        Intrinsics, distortion and image size of the virtual camera.
    planes
        Textured planes with their poses ``T_CAMERA_<object>``; each must lie in front of the
        camera (all texture corners at z > 1 mm).
    background
        Gray level of the empty scene.
    supersample
        Integer anti-aliasing factor (box filter over ``supersample²`` samples per pixel).
    noise_sigma
        Standard deviation of additive Gaussian noise in gray levels (0: none).
    blur_sigma_px
        Gaussian optical blur in output pixels, applied before sampling (0: none).
    seed
        Seed of the noise generator.

    Returns
    -------
    (height, width) uint8 image.
    """
    if int(supersample) < 1:
        raise RegistrationError(f"supersample must be >= 1, got {supersample}")
    if noise_sigma < 0 or blur_sigma_px < 0:
        raise RegistrationError("noise_sigma and blur_sigma_px must be >= 0")
    s = int(supersample)
    cam = camera.scaled(s) if s > 1 else camera
    w, h = cam.width, cam.height
    canvas = np.full((h, w), float(background), dtype=np.float32)
    distorted = bool(np.any(cam.dist != 0))
    rays = None
    if distorted:
        rays = _normalized_rays((tuple(cam.matrix.ravel()), tuple(cam.dist), (w, h)))
    for plane in planes:
        _check_pose(plane.pose)
        corners_cam = plane.pose.apply(plane.corners_object_mm())
        if np.any(corners_cam[:, 2] <= _NEAR_MM):
            raise RegistrationError("a rendered plane reaches behind the camera (z <= 1 mm)")
        rt = plane.pose.matrix[:3][:, [0, 1, 3]]  # [r1 r2 t]: object plane -> normalized rays
        h_norm = rt @ plane.tex_to_object  # texture pixel -> normalized homogeneous ray
        tex = plane.texture.astype(np.float32)
        ones = np.ones_like(tex)
        if rays is None:
            # warp only the plane's bounding box (same homography, shifted origin)
            uv = cam.project(corners_cam)
            x0 = int(np.clip(np.floor(uv[:, 0].min()) - 2, 0, w))
            y0 = int(np.clip(np.floor(uv[:, 1].min()) - 2, 0, h))
            x1 = int(np.clip(np.ceil(uv[:, 0].max()) + 3, 0, w))
            y1 = int(np.clip(np.ceil(uv[:, 1].max()) + 3, 0, h))
            if x1 <= x0 or y1 <= y0:
                continue
            shift = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1.0]])
            hom = shift @ cam.matrix @ h_norm
            size = (x1 - x0, y1 - y0)
            warped = cv2.warpPerspective(tex, hom, size, flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            mask = cv2.warpPerspective(ones, hom, size, flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            sub = canvas[y0:y1, x0:x1]
            sub *= 1.0 - mask
            sub += warped * mask
        else:
            inv = np.linalg.inv(h_norm)
            x, y = rays[..., 0], rays[..., 1]
            den = inv[2, 0] * x + inv[2, 1] * y + inv[2, 2]
            mx = ((inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]) / den).astype(np.float32)
            my = ((inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]) / den).astype(np.float32)
            warped = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)
            mask = cv2.remap(ones, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0)
            canvas = canvas * (1.0 - mask) + warped * mask
    if blur_sigma_px > 0:
        canvas = cv2.GaussianBlur(canvas, (0, 0), blur_sigma_px * s)
    if s > 1:
        canvas = cv2.resize(canvas, camera.size, interpolation=cv2.INTER_AREA)
    if noise_sigma > 0:
        rng = np.random.default_rng(seed)
        canvas = canvas + np.float32(noise_sigma) * rng.standard_normal(canvas.shape,
                                                                       dtype=np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def look_at_pose(
    position_cam_mm: np.ndarray,
    rotation_deg: np.ndarray,
    src: str,
    dst: str = "CAMERA",
    y_up: bool = True,
) -> Transform:
    """``T_dst_src`` with the object at ``position_cam_mm`` facing the camera, then rotated.

    The object first faces the camera upright — with ``y_up`` (markers) x right, y up and z
    towards the camera; otherwise (boards) x right, y down, z away from the camera — then it
    is rotated by the XYZ Euler angles ``rotation_deg`` (degrees, about its own axes).
    """
    from scipy.spatial.transform import Rotation

    pos = np.asarray(position_cam_mm, dtype=np.float64)
    ang = np.asarray(rotation_deg, dtype=np.float64)
    if pos.shape != (3,) or ang.shape != (3,):
        raise RegistrationError(
            f"position and rotation must be 3 values each, got {pos.shape} and {ang.shape}")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(ang))):
        raise RegistrationError("position and rotation must be finite")
    face_on = np.diag([1.0, -1.0, -1.0]) if y_up else np.eye(3)
    r = face_on @ Rotation.from_euler("xyz", ang, degrees=True).as_matrix()
    return Transform.from_rt(r, pos, src=src, dst=dst)
