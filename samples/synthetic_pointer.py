"""The tracked pointer of the synthetic scene: a stylus with its own ArUco plate, moving in and
touching one fiducial with its tip for a stretch of frames (exact ground truth).

Pointer (TOOL frame, mm; the body frame of :mod:`scrubin.registration.bodies`)
-----------------------------------------------------------------------
* a square plate of 2x2 ``DICT_4X4_50`` markers (ids 10..13, distinct from the reference
  plate's 0..3), ``TOOL_PLATE_MM`` wide, centred on the origin in the plane z = 0, x right /
  y up as the printed markers are read, z out of the printed face;
* a shaft (round, ``SHAFT_RADIUS_MM``) from the plate's lower edge down along -y, ending in a
  conical point; the tip is ``TIP_TOOL_MM = (0, -(TOOL_PLATE_MM / 2 + SHAFT_MM), 0)``.

Motion (:class:`PointerPath`): during ``touch = (first, stop)`` frames the tip rests exactly on
the landmark (a fiducial centre, CT / LPS mm) while the pointer pivots about it (a few degrees,
as a hand does); before and after, the tip hovers up to ~50 mm away and moves in / out
smoothly. The plate faces the camera side of the head (anterior, -y in LPS) and the shaft runs
towards the patient's left and up, so the pointer neither hides the reference plate (on the
right cheek) nor leaves the image.

The scene (:mod:`scrubin.samples.synthetic`) ray casts the pointer in its own frame: each camera ray
is also expressed in TOOL (``make_rays`` with ``T_TOOL_CAMERA``) and cast against this static
mesh; rigid maps keep the ray parameter, so the nearer hit of the two casts wins per sample.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from scrubin.overlay.errors import OverlayError
from scrubin.registration.bodies import RigidBody
from scrubin.registration.frames import CT, TOOL, Transform

TOOL_MARKER_IDS = (10, 11, 12, 13)
TOOL_MARKER_MM = 26.0
TOOL_GAP_MM = 6.0
TOOL_MARGIN_MM = 5.0
TOOL_PLATE_MM = 2 * TOOL_MARKER_MM + TOOL_GAP_MM + 2 * TOOL_MARGIN_MM
SHAFT_MM = 70.0
SHAFT_RADIUS_MM = 2.5
CONE_MM = 14.0
TIP_TOOL_MM = np.array([0.0, -(TOOL_PLATE_MM / 2 + SHAFT_MM), 0.0])
TOOL_TEX_PPMM = 8.0
#: the geometry id of the plate in the pointer's own ray-casting scene (the shaft is 1)
GEOM_TOOL_PLATE = 0

#: direction from the tip to the plate (CT / LPS, unnormalised): patient left, anterior, up
_SHAFT_DIR_CT = np.array([0.85, -0.30, 0.45])
#: hover offset of the tip away from the landmark (CT mm) at full retreat
_HOVER_CT_MM = np.array([18.0, -42.0, 12.0])


def pointer_body(name: str = TOOL) -> RigidBody:
    """The pointer's marker plate as a rigid body (TOOL frame, mm)."""
    return RigidBody.grid_2x2(TOOL_MARKER_IDS, TOOL_MARKER_MM, TOOL_GAP_MM, name)


def marker_plate_texture(body: RigidBody, plate_mm: float, px_per_mm: float,
                         grey: int) -> np.ndarray:
    """Image of a square plate (uint8, ``px_per_mm``) carrying ``body``'s markers.

    Pixel (0, 0) is the plate corner at body (-plate/2, +plate/2); rows run towards -y.
    """
    side = int(round(plate_mm * px_per_mm))
    tex = np.full((side, side), grey, np.uint8)
    dic = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, body.dictionary))
    for mid, corners in body.markers.items():
        msize = int(round(np.linalg.norm(corners[1] - corners[0]) * px_per_mm))
        img = cv2.aruco.generateImageMarker(dic, mid, msize, borderBits=1)
        x0 = int(round((corners[0, 0] + plate_mm / 2) * px_per_mm))
        y0 = int(round((plate_mm / 2 - corners[0, 1]) * px_per_mm))
        tex[y0:y0 + msize, x0:x0 + msize] = img
    return tex


def pointer_texture() -> np.ndarray:
    """Grey plate image (uint8, ``TOOL_TEX_PPMM`` px/mm); pixel (0, 0) is TOOL (-P/2, +P/2)."""
    return marker_plate_texture(pointer_body(), TOOL_PLATE_MM, TOOL_TEX_PPMM, 235)


def pointer_mesh(segments: int = 16) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``([plate_vertices, shaft_vertices], [plate_faces, shaft_faces])`` in TOOL mm.

    The shaft is a closed cylinder from the plate's lower edge to the cone, then the cone to
    the tip (its apex is exactly ``TIP_TOOL_MM``).
    """
    q = TOOL_PLATE_MM / 2
    plate_v = np.array([[-q, q, 0], [q, q, 0], [q, -q, 0], [-q, -q, 0]], np.float64)
    plate_f = np.array([[0, 2, 1], [0, 3, 2]])
    a = 2 * np.pi * np.arange(segments) / segments
    ring = np.column_stack([SHAFT_RADIUS_MM * np.cos(a), np.zeros(segments),
                            SHAFT_RADIUS_MM * np.sin(a)])
    y_top, y_cone = -q, TIP_TOOL_MM[1] + CONE_MM
    top = ring + [0.0, y_top, 0.0]
    bottom = ring + [0.0, y_cone, 0.0]
    cap = np.array([[0.0, y_top, 0.0]])  # the shaft's axis is the TOOL y axis
    v = np.concatenate([top, bottom, cap, TIP_TOOL_MM[None]])
    n = segments
    f = []
    for i in range(n):
        j = (i + 1) % n
        f += [[i, j, n + i], [j, n + j, n + i], [2 * n, j, i], [n + i, n + j, 2 * n + 1]]
    return [plate_v, v], [plate_f, np.array(f)]


def _rot(axis: np.ndarray, deg: float) -> np.ndarray:
    r, _ = cv2.Rodrigues(np.asarray(axis, np.float64).reshape(3) * math.radians(deg))
    return r


class PointerPath:
    """Where the pointer is in each frame (CT / LPS mm), see module docstring.

    Parameters
    ----------
    landmark_ct_mm
        The point the tip touches (a fiducial centre), LPS mm.
    touch
        ``(first, stop)``: frames in which the tip rests on the landmark.
    fps
        Frame rate of the scene (the wobble is a function of time).
    ramp_frames
        Frames over which the tip moves in from / out to full hover.
    """

    def __init__(self, landmark_ct_mm: np.ndarray, touch: tuple[int, int], fps: float = 30.0,
                 ramp_frames: int = 12) -> None:
        lm = np.asarray(landmark_ct_mm, np.float64).reshape(-1)
        if lm.shape != (3,) or not np.all(np.isfinite(lm)):
            raise OverlayError(f"pointer landmark must be 3 finite LPS mm, got {landmark_ct_mm!r}")
        a, b = touch
        if not 0 <= a < b:
            raise OverlayError(f"pointer touch must be a frame range (first, stop) with "
                               f"0 <= first < stop, got {touch}")
        if not math.isfinite(fps) or fps <= 0 or ramp_frames < 1:
            raise OverlayError(f"pointer path needs fps > 0 and ramp_frames >= 1, got {fps}, "
                               f"{ramp_frames}")
        self.landmark_ct_mm = lm
        self.touch = (int(a), int(b))
        self.fps = float(fps)
        self.ramp = int(ramp_frames)
        y = _SHAFT_DIR_CT / np.linalg.norm(_SHAFT_DIR_CT)
        front = np.array([0.0, -1.0, 0.0])  # the plate faces anterior, orthogonal to y
        z = front - (front @ y) * y
        z /= np.linalg.norm(z)
        self._r0 = np.stack([np.cross(y, z), y, z], axis=1)  # columns: TOOL axes in CT

    def touching(self, index: int) -> bool:
        """Whether the tip rests on the landmark in frame ``index``."""
        return self.touch[0] <= index < self.touch[1]

    def T_ct_tool(self, index: int) -> Transform:
        """True ``T_CT_TOOL`` of frame ``index``."""
        t = index / self.fps
        a, b = self.touch
        d = a - index if index < a else (index - b + 1 if index >= b else 0)
        s = min(1.0, d / self.ramp)
        s = s * s * (3 - 2 * s)  # smoothstep
        tip = self.landmark_ct_mm + s * _HOVER_CT_MM
        # pivoting about the tip: a few degrees about the plate normal and the plate's x axis
        r = (self._r0 @ _rot([0, 0, 1], 7.0 * math.sin(2 * math.pi * t / 1.9))
             @ _rot([1, 0, 0], 6.0 * math.sin(2 * math.pi * t / 2.6 + 0.5)))
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = tip - r @ TIP_TOOL_MM
        return Transform(m, TOOL, CT, timestamp=t)

    def tip_ct(self, index: int) -> np.ndarray:
        """True tip position (CT / LPS mm) in frame ``index``."""
        return self.T_ct_tool(index).apply(TIP_TOOL_MM)
