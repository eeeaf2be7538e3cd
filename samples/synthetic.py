"""Synthetic surgical scene: a textured head phantom with a reference marker plate, seen by a
moving, distorting camera, with exact ground truth per frame.

Independent of the overlay renderer on purpose (a shared renderer's errors would cancel in the
accuracy test): images are ray cast with ``open3d.t.geometry.RaycastingScene`` (CPU). One ray per
sub-pixel sample goes through the *distorted* sample position: the pixel grid is undistorted once
with ``cv2.undistortPoints`` (iterated to 1e-12), so the image is a true distorted view and a CT
point lands on ``cv2.projectPoints(p, T_CAMERA_CT, K, dist)`` (the ground truth).

Scene (CT = DICOM LPS mm of the phantom; REF = the marker plate)
----------------------------------------------------------------
* skin surface of the sample phantom (built by the imaging pipeline), shaded by interpolated
  vertex normals (head-light Lambert) and a procedural skin texture (smooth colour field plus
  per-vertex noise, interpolated with the hit's barycentric coordinates);
* the phantom's fiducials as 4 mm spheres;
* a rigid plate carrying 2x2 ArUco markers (``DICT_4X4_50`` ids 0..3), fixed to the head
  (``T_REF_CT`` exact). REF frame: origin at the plate centre, x right / y up as the printed
  markers are read, z out of the printed face (the body frame of :mod:`~registration.bodies`);
  texture sampled bilinearly at the hit point's plate coordinates;
* an occluder (a gloved hand, a box 40 mm in front of the plate) in the frames of the
  occlusion gap, so tracking goes stale / lost and must re-acquire;
* optionally a tracked pointer (:mod:`.synthetic_pointer`: its own 2x2 marker plate, ids
  10..13, and a shaft) that moves in and rests its tip on one fiducial for a stretch of frames
  (``SceneFrame.extra``: true ``T_CAMERA_TOOL``, tip in CT, whether it touches).

Frames are rendered offline at their own pace; capture times are simulated at ``fps``
(frame ``i`` at ``i / fps`` s). Anti-aliasing: ``supersample`` x ``supersample`` rays per pixel
over the image and ``plate_supersample`` x ``plate_supersample`` (default 2x2) over the marker
plate, box-filtered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrubin.overlay.errors import OverlayError
from scrubin.registration.bodies import RigidBody
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import CAMERA, CT, REF, TOOL, Transform
from scrubin.samples.synthetic_models import phantom_models, phantom_points
from scrubin.samples.synthetic_pointer import (
    TIP_TOOL_MM,
    TOOL_PLATE_MM,
    TOOL_TEX_PPMM,
    PointerPath,
    marker_plate_texture,
    pointer_body,
    pointer_mesh,
    pointer_texture,
)
from scrubin.samples.synthetic_raycast import (
    _SKIN_BGR,
    _TEX_PPMM,
    GAP_MM,
    MARKER_MM,
    PLATE_MM,
    make_rays,
    sample_directions,
    shade,
)

#: Marker plate: 2x2 markers of MARKER_MM with GAP_MM between them and a MARGIN_MM white rim.
DICTIONARY = "DICT_4X4_50"
MARKER_IDS = (0, 1, 2, 3)

#: Plate centre (LPS mm) and face normal in the phantom's CT: anterior to the right cheek.
PLATE_CENTRE_CT_MM = np.array([-112.0, -92.0, 50.0])
PLATE_NORMAL_CT = np.array([0.3, -1.0, 0.08])
#: the fiducial the synthetic pointer touches (the planned landmark of ``--source synthetic``)
POINTER_LANDMARK = "F2_forehead_left"


def default_camera(width: int = 1280, height: int = 720) -> CameraModel:
    """The scene camera: ~60 deg horizontal field of view, barrel distortion, offset centre."""
    if int(width) < 64 or int(height) < 48:
        raise OverlayError(f"synthetic camera must be at least 64x48 px, got {width}x{height}")
    f = 0.86 * width
    k = np.array([[f, 0.0, width / 2 - 0.5 + 0.004 * width],
                  [0.0, f, height / 2 - 0.5 - 0.005 * height], [0.0, 0.0, 1.0]])
    return CameraModel(k, np.array([-0.12, 0.05, 0.001, -0.0008, 0.0]), width, height,
                       extra={"note": "synthetic scene camera"})


def plate_body(name: str = REF) -> RigidBody:
    """The plate as a rigid body (REF frame, mm; corners TL, TR, BR, BL as printed)."""
    return RigidBody.grid_2x2(MARKER_IDS, MARKER_MM, GAP_MM, name, DICTIONARY)


def plate_texture() -> np.ndarray:
    """Grey plate image (uint8, ``_TEX_PPMM`` px/mm); pixel (0, 0) is REF (-P/2, +P/2)."""
    return marker_plate_texture(plate_body(), PLATE_MM, _TEX_PPMM, 245)


def plate_pose(centre_ct_mm: np.ndarray = PLATE_CENTRE_CT_MM,
               normal_ct: np.ndarray = PLATE_NORMAL_CT) -> Transform:
    """``T_REF_CT``: the plate frame (z = face normal, y towards superior) in the CT."""
    z = np.asarray(normal_ct, float) / np.linalg.norm(normal_ct)
    up = np.array([0.0, 0.0, 1.0])
    y = up - (up @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    t_ct_ref = np.eye(4)
    t_ct_ref[:3, :3] = np.stack([x, y, z], axis=1)
    t_ct_ref[:3, 3] = centre_ct_mm
    return Transform(t_ct_ref, REF, CT).inverse()


def camera_path(t_s: float, look_at_ct_mm: np.ndarray) -> Transform:
    """``T_CAMERA_CT`` of the moving camera at simulated time ``t_s``.

    The camera circles in front of the face (azimuth +-22 deg, elevation +-8 deg, distance
    500-570 mm, roll +-5 deg), looking at ``look_at_ct_mm`` (LPS).
    """
    az = math.radians(22.0) * math.sin(2 * math.pi * t_s / 6.0)
    el = math.radians(8.0) * math.sin(2 * math.pi * t_s / 4.3 + 0.7)
    dist = 535.0 + 35.0 * math.sin(2 * math.pi * t_s / 3.1)
    roll = math.radians(5.0) * math.sin(2 * math.pi * t_s / 2.7)
    d = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    centre = np.asarray(look_at_ct_mm, float) + dist * d
    z = -d
    up = np.array([0.0, 0.0, 1.0])
    y = -(up - (up @ z) * z)
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    r = np.stack([x, y, z])  # rows: camera axes in CT
    cr, sr = math.cos(roll), math.sin(roll)
    r = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]]) @ r
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = -r @ centre
    return Transform(m, CT, CAMERA)


@dataclass
class SceneFrame:
    """One rendered frame and its ground truth.

    Attributes
    ----------
    index, capture_time_s
        Frame number and simulated capture time (``index / fps`` s).
    image_bgr
        ``(H, W, 3)`` uint8.
    T_camera_ct
        True pose of the CT in the camera (mm).
    marker_occluded
        Whether the occluder hides the plate in this frame.
    points_ct_mm, point_names
        Ground-truth points (fiducials then target), CT / LPS mm.
    points_px
        Their ``cv2.projectPoints`` pixels (distorted), ``(K, 2)``.
    points_depth_mm
        Their camera-frame depth z (mm).
    extra
        With a pointer: ``T_camera_tool`` (true), ``tip_ct_mm`` (true tip, LPS mm),
        ``pointer_touching`` and ``landmark_ct_mm`` (the touched fiducial); else empty.
    """

    index: int
    capture_time_s: float
    image_bgr: np.ndarray
    T_camera_ct: Transform
    marker_occluded: bool
    points_ct_mm: np.ndarray
    point_names: list[str]
    points_px: np.ndarray
    points_depth_mm: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


class SyntheticScene:
    """Ray-cast surgical scene with ground truth (see module docstring).

    Parameters
    ----------
    camera
        Scene camera (its distortion is rendered).
    skin_vertices_ct_mm, skin_faces
        Skin surface, CT / LPS mm, faces counter-clockwise from outside.
    points_ct_mm, point_names
        Ground-truth points (fiducials and targets), LPS mm.
    fiducials_ct_mm
        Centres of the fiducial spheres drawn (4 mm), LPS mm.
    n_frames, fps
        Length of the sequence and nominal frame rate.
    occlusion
        ``(first, stop)`` frame range in which the plate is occluded, or None.
    supersample
        Rays per pixel side over the whole image (1..4).
    plate_supersample
        Rays per pixel side inside the marker plate's image region (>= ``supersample``; the
        tracking accuracy depends on the marker edges, so they get the most samples).
    frame_of_reference_uid
        Of the CT the skin came from; carried by ``T_ref_ct``.
    seed
        Texture noise seed.
    pointer
        The tracked pointer's motion (:class:`~scrubin.samples.synthetic_pointer.PointerPath`), or
        None for no pointer.
    """

    def __init__(
        self,
        camera: CameraModel,
        skin_vertices_ct_mm: np.ndarray,
        skin_faces: np.ndarray,
        points_ct_mm: np.ndarray,
        point_names: list[str],
        fiducials_ct_mm: np.ndarray | None = None,
        n_frames: int = 150,
        fps: float = 30.0,
        occlusion: tuple[int, int] | None = None,
        supersample: int = 1,
        plate_supersample: int = 2,
        frame_of_reference_uid: str = "",
        seed: int = 7,
        pointer: PointerPath | None = None,
    ) -> None:
        import open3d as o3d

        if not isinstance(camera, CameraModel):
            raise OverlayError(f"camera must be a CameraModel, got {type(camera).__name__}")
        v = np.asarray(skin_vertices_ct_mm, np.float64)
        f = np.asarray(skin_faces)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3 or not np.all(np.isfinite(v)):
            raise OverlayError(f"skin vertices must be finite (N>=3, 3) LPS mm, got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3 or len(f) < 1 or f.min() < 0 or f.max() >= len(v):
            raise OverlayError(f"skin faces must be (M, 3) indices into the vertices, got "
                               f"{f.shape}")
        pts = np.asarray(points_ct_mm, np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 1 or not np.all(np.isfinite(pts)):
            raise OverlayError(f"ground-truth points must be finite (K>=1, 3) LPS mm, got "
                               f"{pts.shape}")
        if len(point_names) != len(pts):
            raise OverlayError(f"{len(point_names)} point names for {len(pts)} points")
        if not isinstance(n_frames, int) or n_frames < 1:
            raise OverlayError(f"n_frames must be an integer >= 1, got {n_frames!r}")
        if not math.isfinite(fps) or fps <= 0:
            raise OverlayError(f"fps must be > 0, got {fps}")
        for label, ss in (("supersample", supersample), ("plate_supersample", plate_supersample)):
            if isinstance(ss, bool) or not isinstance(ss, int) or not 1 <= ss <= 4:
                raise OverlayError(f"{label} must be an integer 1..4, got {ss!r}")
        plate_supersample = max(plate_supersample, supersample)
        if occlusion is not None:
            a, b = occlusion
            if not 0 <= a < b:
                raise OverlayError(f"occlusion must be a frame range (first, stop) with "
                                   f"0 <= first < stop, got {occlusion}")
        self.camera = camera
        self.n_frames = n_frames
        self.fps = float(fps)
        self.occlusion = occlusion
        if pointer is not None and not isinstance(pointer, PointerPath):
            raise OverlayError(f"pointer must be a PointerPath, got {type(pointer).__name__}")
        self.pointer = pointer
        self.tool_body = pointer_body() if pointer is not None else None
        self.tip_tool_mm = TIP_TOOL_MM.copy()
        self.supersample = supersample
        self.plate_supersample = plate_supersample
        self.points_ct_mm = pts
        self.point_names = [str(n) for n in point_names]
        self.frame_of_reference_uid = frame_of_reference_uid
        self.body = plate_body()
        src = {"frame_of_reference_uid": frame_of_reference_uid} if frame_of_reference_uid else {}
        tp = plate_pose()
        self.T_ref_ct = Transform(tp.matrix, CT, REF, source=src)
        self.look_at_ct_mm = 0.5 * (v.min(axis=0) + v.max(axis=0)) + np.array([0.0, -30.0, 15.0])
        self._tex = plate_texture()
        # skin colour field: smooth bands plus per-vertex noise (procedural texture)
        rng = np.random.default_rng(seed)
        smooth = (np.sin(v[:, 0] / 9.0) * np.sin(v[:, 2] / 11.0) + np.sin(v[:, 1] / 7.0 + 1.0))
        tint = 1.0 + 0.07 * smooth[:, None] + rng.normal(0.0, 0.06, (len(v), 1))
        self._skin_bgr = np.clip(_SKIN_BGR * tint * (1.0 + rng.normal(0, 0.02, (len(v), 3))),
                                 0, 255).astype(np.float32)
        self._skin_f = np.ascontiguousarray(f, np.int64)
        from scrubin.imaging.mesh import Mesh

        self._skin_n = np.ascontiguousarray(Mesh(v, self._skin_f).vertex_normals(), np.float32)

        def tmesh(verts: np.ndarray, faces: np.ndarray) -> Any:
            m = o3d.t.geometry.TriangleMesh()
            m.vertex.positions = o3d.core.Tensor(np.ascontiguousarray(verts, np.float32))
            m.triangle.indices = o3d.core.Tensor(np.ascontiguousarray(faces, np.int32))
            return m

        t_ct_ref = self.T_ref_ct.inverse()
        q = PLATE_MM / 2
        plate_ct = t_ct_ref.apply(np.array([[-q, q, 0], [q, q, 0], [q, -q, 0], [-q, -q, 0]]))
        plate_f = np.array([[0, 2, 1], [0, 3, 2]])
        fid = np.asarray(fiducials_ct_mm if fiducials_ct_mm is not None else np.zeros((0, 3)),
                         np.float64).reshape(-1, 3)
        sph = o3d.geometry.TriangleMesh.create_sphere(2.0, 12)
        sv, sf = np.asarray(sph.vertices), np.asarray(sph.triangles)
        fv = np.concatenate([sv + c for c in fid]) if len(fid) else sv + 1e6
        ff = np.concatenate([sf + k * len(sv) for k in range(max(1, len(fid)))])
        box = o3d.geometry.TriangleMesh.create_box(1.6 * PLATE_MM, 1.4 * PLATE_MM, 20.0)
        bv = np.asarray(box.vertices) - [0.8 * PLATE_MM, 0.75 * PLATE_MM, -40.0]
        occl_ct = t_ct_ref.apply(bv)
        self._scenes = []
        for with_occluder in (False, True):
            sc = o3d.t.geometry.RaycastingScene()
            sc.add_triangles(tmesh(v, self._skin_f))
            sc.add_triangles(tmesh(plate_ct, plate_f))
            sc.add_triangles(tmesh(fv, ff))
            if with_occluder:
                sc.add_triangles(tmesh(occl_ct, np.asarray(box.triangles)))
            self._scenes.append(sc)
        # sample directions (camera frame, z = 1) through the distorted sample positions
        self._dirs_cam = {s: sample_directions(camera, s)
                          for s in {supersample, plate_supersample}}
        yy, xx = np.mgrid[0:camera.height, 0:camera.width]
        bg = 0.5 + 0.08 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + rng.normal(0, 0.02, xx.shape)
        self._background = np.clip(np.stack([bg * 120, bg * 150, bg * 95], -1), 0,
                                   255).astype(np.float32)
        self._background_u8 = np.clip(self._background + 0.5, 0, 255).astype(np.uint8)
        # points on the edges of every object's bounding box (CT mm) -> pixel box per frame
        edge_t = np.linspace(0.0, 1.0, 9)[:, None]
        boxes = [v, plate_ct]
        self._hull_pts = [_box_edge_points(np.concatenate(boxes), edge_t),
                          _box_edge_points(np.concatenate(boxes + [occl_ct]), edge_t)]
        self._plate_pts = _box_edge_points(plate_ct, edge_t)
        if pointer is not None:  # static in TOOL: rays are cast in the pointer's own frame
            tv, tf = pointer_mesh()
            self._tool_scene = o3d.t.geometry.RaycastingScene()
            for verts, faces in zip(tv, tf, strict=True):
                self._tool_scene.add_triangles(tmesh(verts, faces))
            self._tool_tex = pointer_texture()
            self._tool_pts = _box_edge_points(np.concatenate(tv), edge_t)
            self._tool_plate_pts = _box_edge_points(tv[0], edge_t)
        self._no_tool = (np.empty((0, 6), np.float32), np.empty(0, np.float32),
                         np.empty(0, np.uint32), np.empty((0, 3), np.float32))

    # ------------------------------------------------------------------ truth
    @classmethod
    def from_phantom(
        cls, name: str = "small", camera: CameraModel | None = None,
        pointer_touch: tuple[int, int] | None = None, **kw: Any
    ) -> SyntheticScene:
        """The scene around a sample phantom (skin built by the imaging pipeline, cached).

        ``pointer_touch = (first, stop)`` adds the tracked pointer, its tip resting on the
        fiducial :data:`POINTER_LANDMARK` during those frames.
        """
        models = phantom_models(name)
        skin = next(m for m in models if m.name == "skin")
        pts, names, fid = phantom_points(name)
        if pointer_touch is not None:
            k = names.index(POINTER_LANDMARK) if POINTER_LANDMARK in names else 0
            kw["pointer"] = PointerPath(pts[k], pointer_touch, kw.get("fps", 30.0))
        return cls(camera or default_camera(), skin.vertices, skin.faces, pts, names, fid,
                   frame_of_reference_uid=skin.provenance.get("frame_of_reference_uid", ""),
                   **kw)

    def _pixel_box(self, pose: Transform, hull_ct_mm: np.ndarray
                   ) -> tuple[int, int, int, int] | None:
        """Pixel box (x0, y0, x1, y1) holding the image of ``hull_ct_mm``'s box, or None."""
        cam = self.camera
        p = pose.apply(hull_ct_mm)
        if np.any(p[:, 2] <= 1.0):
            return 0, 0, cam.width, cam.height
        uv = cam.project(p)
        m = 6
        x0 = int(max(np.floor(uv[:, 0].min()) - m, 0))
        y0 = int(max(np.floor(uv[:, 1].min()) - m, 0))
        x1 = int(min(np.ceil(uv[:, 0].max()) + m, cam.width))
        y1 = int(min(np.ceil(uv[:, 1].max()) + m, cam.height))
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def capture_time(self, index: int) -> float:
        """Simulated capture time of frame ``index`` (s)."""
        return index / self.fps

    def pose(self, index: int) -> Transform:
        """True ``T_CAMERA_CT`` of frame ``index``."""
        src = self.T_ref_ct.source
        tr = camera_path(self.capture_time(index), self.look_at_ct_mm)
        return Transform(tr.matrix, CT, CAMERA, timestamp=self.capture_time(index), source=src)

    def T_camera_ref(self, index: int) -> Transform:
        """True ``T_CAMERA_REF`` of frame ``index`` (what the tracker should measure)."""
        return self.pose(index) @ self.T_ref_ct.inverse()

    def occluded(self, index: int) -> bool:
        """Whether the plate is hidden in frame ``index``."""
        return self.occlusion is not None and self.occlusion[0] <= index < self.occlusion[1]

    # ------------------------------------------------------------------ render
    def render(self, index: int) -> SceneFrame:
        """Ray cast frame ``index`` (0 <= index < n_frames) and its ground truth."""
        import open3d as o3d

        if isinstance(index, bool) or not isinstance(index, int | np.integer) or not (
                0 <= index < self.n_frames):
            raise OverlayError(f"frame index must be 0..{self.n_frames - 1}, got {index!r}")
        index = int(index)
        pose = self.pose(index)
        occl = self.occluded(index)
        cam = self.camera
        img = self._background_u8.copy()
        t_ct_cam = pose.inverse().matrix
        box = self._pixel_box(pose, self._hull_pts[int(occl)])
        extra: dict[str, Any] = {}
        if self.pointer is not None:
            t_ct_tool = self.pointer.T_ct_tool(index)
            t_cam_tool = Transform(pose.matrix @ t_ct_tool.matrix, TOOL, CAMERA,
                                   timestamp=self.capture_time(index))
            t_tool_cam = t_cam_tool.inverse().matrix
            tbox = self._pixel_box(t_cam_tool, self._tool_pts)
            if box is None or tbox is None:
                box = box or tbox
            else:
                box = (min(box[0], tbox[0]), min(box[1], tbox[1]), max(box[2], tbox[2]),
                       max(box[3], tbox[3]))
            extra = {"T_camera_tool": t_cam_tool, "tip_ct_mm": self.pointer.tip_ct(index),
                     "pointer_touching": self.pointer.touching(index),
                     "landmark_ct_mm": self.pointer.landmark_ct_mm.copy()}
        passes = [(box, self.supersample)]
        if self.plate_supersample > self.supersample:  # marker plates again, finer
            passes.append((self._pixel_box(pose, self._plate_pts), self.plate_supersample))
            if self.pointer is not None:
                passes.append((self._pixel_box(t_cam_tool, self._tool_plate_pts),
                               self.plate_supersample))
        for box, sss in passes:
            if box is None:
                continue
            x0, y0, x1, y1 = box
            dirs = self._dirs_cam[sss][y0 * sss:y1 * sss, x0 * sss:x1 * sss].reshape(-1, 3)
            rays = np.empty((len(dirs), 6), np.float32)
            make_rays(np.ascontiguousarray(dirs), t_ct_cam[:3, :3].copy(),
                      t_ct_cam[:3, 3].copy(), rays)
            hit = self._scenes[int(occl)].cast_rays(o3d.core.Tensor(rays))
            tool = self._no_tool
            if self.pointer is not None:
                trays = np.empty_like(rays)
                make_rays(np.ascontiguousarray(dirs), t_tool_cam[:3, :3].copy(),
                          t_tool_cam[:3, 3].copy(), trays)
                th = self._tool_scene.cast_rays(o3d.core.Tensor(trays))
                tool = (trays, th["t_hit"].numpy(), th["geometry_ids"].numpy(),
                        th["primitive_normals"].numpy())
            shade(rays, hit["geometry_ids"].numpy(), hit["primitive_ids"].numpy(),
                  hit["primitive_uvs"].numpy(), hit["t_hit"].numpy(),
                  hit["primitive_normals"].numpy(), self._skin_f, self._skin_bgr, self._skin_n,
                  self.T_ref_ct.matrix.copy(), self._tex, self._background, sss, x0, y0,
                  x1 - x0, img, *tool, self._tool_tex if self.pointer is not None else
                  self._tex, TOOL_PLATE_MM / 2, TOOL_TEX_PPMM)
        p_cam = pose.apply(self.points_ct_mm)
        px = cam.project(p_cam)
        return SceneFrame(index, self.capture_time(index), img, pose, occl,
                          self.points_ct_mm.copy(), list(self.point_names), px,
                          p_cam[:, 2].copy(), extra)


def _box_edge_points(points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points along the 12 edges of the axis-aligned box of ``points`` (same frame)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    corners = np.array([[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]]
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    out = []
    for a in range(8):
        for b in range(a + 1, 8):
            if bin(a ^ b).count("1") == 1:
                out.append(corners[a] + t * (corners[b] - corners[a]))
    return np.concatenate(out)
