"""OverlayRenderer: pixel-centre accuracy, occlusion, culling, shading, clipping, refusals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import trimesh

from scrubin.imaging.mesh import Mesh
from scrubin.overlay.errors import OverlayError
from scrubin.overlay.renderer import OverlayRenderer, Structure, closed_orientation
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform

K = np.array([[610.0, 0.0, 331.7], [0.0, 604.0, 236.2], [0.0, 0.0, 1.0]])
CAM = CameraModel(K, np.zeros(5), 640, 480)
IDENT = Transform(np.eye(4), "CT", "CAMERA")


def sphere(name: str, centre, radius: float, colour=(1.0, 1.0, 1.0), sub: int = 3,
           **kw) -> Structure:
    s = trimesh.creation.icosphere(subdivisions=sub, radius=radius)
    return Structure(name, s.vertices + np.asarray(centre, float), s.faces, colour_rgb=colour,
                     **kw)


def blob_centroids(alpha: np.ndarray) -> list[np.ndarray]:
    n, lab = cv2.connectedComponents((alpha > 0).astype(np.uint8))
    out = []
    for k in range(1, n):
        ys, xs = np.nonzero(lab == k)
        w = alpha[ys, xs].astype(np.float64)
        out.append(np.array([xs @ w, ys @ w]) / w.sum())
    return out


def centroid_errors(camera: CameraModel, centres_cam: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    truth = cv2.projectPoints(centres_cam, np.zeros(3), np.zeros(3), camera.matrix,
                              camera.dist)[0].reshape(-1, 2)
    found = blob_centroids(alpha)
    assert len(found) == len(truth)
    return np.array([np.linalg.norm(truth - c, axis=1).min() for c in found])


CENTRES = np.array([[0, 0, 300.0], [60, 40, 320], [-110, -70, 330], [120, -85, 310],
                    [-100, 80, 300], [15, -20, 280], [90, 75, 340], [-40, 10, 290.0]])


def test_small_spheres_land_where_projectpoints_puts_them() -> None:
    structs = [sphere(f"p{i}", c, 2.5) for i, c in enumerate(CENTRES)]
    ov = OverlayRenderer(CAM, structs).render(IDENT)
    err = centroid_errors(CAM, CENTRES, ov.canvas()[..., 3])
    assert err.max() < 0.2, err


def test_pose_is_applied_ct_to_camera() -> None:
    rot = cv2.Rodrigues(np.array([0.2, -0.3, 0.15]))[0]
    T = Transform.from_rt(rot, [5.0, -8.0, 40.0], "CT", "CAMERA")
    centres_cam = CENTRES[:4]
    centres_ct = T.inverse().apply(centres_cam)
    structs = [sphere(f"p{i}", c, 2.5) for i, c in enumerate(centres_ct)]
    ov = OverlayRenderer(CAM, structs).render(T)
    assert centroid_errors(CAM, centres_cam, ov.canvas()[..., 3]).max() < 0.2


def test_depth_buffer_occlusion_between_structures() -> None:
    near = sphere("near", [0, 0, 300], 20, (1.0, 0.0, 0.0))
    far = sphere("far", [30, 0, 400], 40, (0.0, 1.0, 0.0))
    for order in ([near, far], [far, near]):
        img = OverlayRenderer(CAM, order).render(IDENT).canvas()
        u, v = np.round(CAM.project(np.array([[0, 0, 300.0]]))[0]).astype(int)
        b, g, r, a = img[v, u]
        assert r > 200 and g == 0 and a == 255
        u2, v2 = np.round(CAM.project(np.array([[60, 0, 400.0]]))[0]).astype(int)
        b, g, r, a = img[v2, u2]
        assert g > 100 and r == 0


@pytest.mark.parametrize("flip", [False, True])
def test_back_face_culling_keeps_the_front_surface(flip: bool) -> None:
    outer = trimesh.creation.icosphere(subdivisions=3, radius=40)
    faces = outer.faces[:, ::-1] if flip else outer.faces
    s_out = Structure("outer", outer.vertices + [0, 0, 400], faces, colour_rgb=(0, 0, 1.0))
    assert closed_orientation(s_out.vertices_ct_mm, s_out.faces) == (-1 if flip else 1)
    inner = sphere("inner", [0, 0, 400], 20, (1.0, 0.0, 0.0))
    img = OverlayRenderer(CAM, [s_out, inner]).render(IDENT).canvas()
    covered = img[..., 3] > 0
    assert covered.sum() > 1000
    assert np.all(img[covered][:, 2] == 0), "inner sphere visible through the outer one"


def test_shading_from_normals_headlight() -> None:
    s = sphere("s", [0, 0, 300], 40, (1.0, 1.0, 1.0), sub=4)
    img = OverlayRenderer(CAM, [s], ambient=0.2).render(IDENT).canvas()
    u, v = np.round(CAM.project(np.array([[0, 0, 300.0]]))[0]).astype(int)
    centre = img[v, u, 0] / 255.0
    assert centre > 0.97
    # near the limb the surface turns away from the camera: darker, never below the ambient
    ring = CAM.project(np.array([[39.0, 0, 300.0]]))[0]
    limb = img[int(round(ring[1])), int(round(ring[0])), 0] / 255.0
    assert 0.19 < limb < 0.7 * centre


def test_near_plane_clipping_matches_ray_plane_intersection() -> None:
    # an open quad in the camera frame, from z = 5 mm (behind the near plane) to z = 200 mm
    quad = np.array([[-100.0, -50, 5], [100, -50, 5], [100, 50, 200], [-100, 50, 200]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    s = Structure("quad", quad, faces)
    near = 100.0
    alpha = OverlayRenderer(CAM, [s], near_mm=near).render(IDENT).canvas()[..., 3] > 0
    uu, vv = np.meshgrid(np.arange(CAM.width), np.arange(CAM.height))
    rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu, float)],
                    -1)
    p0, ex, ey = quad[0], quad[1] - quad[0], quad[3] - quad[0]
    n = np.cross(ex, ey)
    t = (p0 @ n) / (rays @ n)
    hit = rays * t[..., None]
    s_ = (hit - p0) @ ex / (ex @ ex)
    r_ = (hit - p0) @ ey / (ey @ ey)
    expected = (t > 0) & (s_ >= 0) & (s_ <= 1) & (r_ >= 0) & (r_ <= 1) & (hit[..., 2] > near)
    assert expected.sum() > 10000
    mismatch = (alpha != expected).sum()
    assert mismatch <= 0.01 * expected.sum(), mismatch
    # without the clip the part between z = 5 and z = near would be drawn too
    unclipped = OverlayRenderer(CAM, [s], near_mm=1.0).render(IDENT).canvas()[..., 3] > 0
    assert unclipped.sum() > alpha.sum() * 1.05


def test_draw_composites_onto_the_frame_and_leaves_the_rest() -> None:
    frame = np.full((480, 640, 3), 77, np.uint8)
    before = frame.copy()
    r = OverlayRenderer(CAM, [sphere("s", [0, 0, 300], 20, (1.0, 0.0, 0.0))])
    out = r.draw(frame, IDENT)
    assert out is frame
    alpha = r.render(IDENT).canvas()[..., 3]
    assert np.array_equal(frame[alpha == 0], before[alpha == 0])
    drawn = frame[alpha == 255]
    assert np.all(drawn[:, :2] == 0) and np.all(drawn[:, 2] >= 0.3 * 255 - 1)  # ambient 0.3


def test_warm_up_leaves_no_trace() -> None:
    # the same pose, in front of the camera, drawn by a warmed-up and by a fresh renderer:
    # pixel-identical frames (no depth, colour or warp-box state left by the warm-up renders)
    T = Transform.from_rt(np.eye(3), [20.0, -10.0, 400.0], "CT", "CAMERA")
    frames = []
    for warm in (True, False):
        r = OverlayRenderer(CAM, [sphere("s", [0, 0, 0], 50)])
        if warm:
            r.warm_up()
        frame = np.zeros((480, 640, 3), np.uint8)
        r.draw(frame, T)
        frames.append(frame)
    assert (frames[1].max(axis=2) > 0).sum() > 3000  # the sphere covers ~ pi * 76^2 pixels
    np.testing.assert_array_equal(frames[0], frames[1])


def test_structure_behind_camera_draws_nothing() -> None:
    r = OverlayRenderer(CAM, [sphere("s", [0, 0, -300], 20)])
    ov = r.render(IDENT)
    assert ov.empty
    frame = np.zeros((480, 640, 3), np.uint8)
    assert not r.draw(frame, IDENT).any()


def test_from_mesh_adapter_takes_colour_opacity_and_provenance() -> None:
    s = trimesh.creation.icosphere(subdivisions=2, radius=10)
    mesh = Mesh(s.vertices, s.faces, name="tumour", color=(1.0, 0.5, 0.0, 0.4),
                provenance={"series_instance_uid": "1.2.3", "frame_of_reference_uid": "9.8"})
    st = Structure.from_mesh(mesh)
    assert st.name == "tumour" and st.opacity == pytest.approx(0.4)
    assert st.colour_rgb == (1.0, 0.5, 0.0) and st.frame_of_reference_uid == "9.8"
    assert Structure.from_mesh(mesh, mode="outline", opacity=1.0).mode == "outline"


def test_frame_of_reference_mismatch_is_refused() -> None:
    s = sphere("s", [0, 0, 300], 10, frame_of_reference_uid="1.2.840.1")
    r = OverlayRenderer(CAM, [s])
    same = Transform(np.eye(4), "CT", "CAMERA", source={"frame_of_reference_uid": "1.2.840.1"})
    r.render(same)
    other = Transform(np.eye(4), "CT", "CAMERA", source={"frame_of_reference_uid": "1.2.840.2"})
    with pytest.raises(OverlayError, match="FrameOfReferenceUID"):
        r.render(other)
    s2 = sphere("t", [0, 0, 300], 10, frame_of_reference_uid="1.2.840.2")
    with pytest.raises(OverlayError, match="FrameOfReferenceUID"):
        OverlayRenderer(CAM, [s, s2])


def test_pose_of_wrong_frames_is_refused() -> None:
    r = OverlayRenderer(CAM, [sphere("s", [0, 0, 300], 10)])
    with pytest.raises(OverlayError, match="CT to CAMERA"):
        r.render(Transform(np.eye(4), "REF", "CAMERA"))
    with pytest.raises(OverlayError, match="Transform"):
        r.render(np.eye(4))  # type: ignore[arg-type]


def test_style_can_change_between_frames() -> None:
    r = OverlayRenderer(CAM, [sphere("s", [0, 0, 300], 20, (1.0, 0.0, 0.0))])
    r.set_style("s", colour_rgb=(0.0, 1.0, 0.0))
    img = r.render(IDENT).canvas()
    assert img[..., 1].max() > 200 and img[..., 2].max() == 0
    r.set_style("s", visible=False)
    assert r.render(IDENT).empty
    r.set_style("s", visible=True)
    assert not r.render(IDENT).empty
    with pytest.raises(OverlayError, match="no structure"):
        r.set_style("nope", opacity=0.5)
    with pytest.raises(OverlayError, match="opacity"):
        r.set_style("s", opacity=2.0)


V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
F = np.array([[0, 1, 2]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vertices_ct_mm": np.zeros((2, 3))}, "vertices"),
        ({"vertices_ct_mm": np.zeros((3, 2))}, "vertices"),
        ({"vertices_ct_mm": np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]])}, "NaN"),
        ({"faces": np.array([[0, 1, 3]])}, "face indices"),
        ({"faces": np.array([[0, 1, -1]])}, "face indices"),
        ({"faces": np.array([[0.0, 1.0, 2.0]])}, "integer"),
        ({"faces": np.zeros((0, 3), int)}, "faces"),
        ({"normals_ct": np.zeros((2, 3))}, "normals"),
        ({"colour_rgb": (1.0, 2.0, 0.0)}, "colour"),
        ({"colour_rgb": (1.0, 0.0)}, "colour"),
        ({"opacity": 0.0}, "opacity"),
        ({"opacity": 1.5}, "opacity"),
        ({"mode": "wireframe"}, "mode"),
    ],
)
def test_structure_rejects_bad_input(kwargs: dict, match: str) -> None:
    args = {"name": "x", "vertices_ct_mm": V, "faces": F} | kwargs
    with pytest.raises(OverlayError, match=match):
        Structure(**args)


def test_renderer_rejects_bad_input() -> None:
    s = Structure("x", V, F)
    with pytest.raises(OverlayError, match="at least one"):
        OverlayRenderer(CAM, [])
    with pytest.raises(OverlayError, match="unique"):
        OverlayRenderer(CAM, [s, s])
    many = [Structure(f"x{i}", V, F, opacity=0.5) for i in range(16)]
    with pytest.raises(OverlayError, match="at most 15"):
        OverlayRenderer(CAM, many)
    OverlayRenderer(CAM, [Structure(f"x{i}", V, F) for i in range(40)])  # opaque: one layer
    with pytest.raises(OverlayError, match="near_mm"):
        OverlayRenderer(CAM, [s], near_mm=0)
    with pytest.raises(OverlayError, match="outline_px"):
        OverlayRenderer(CAM, [s], outline_px=0)
    with pytest.raises(OverlayError, match="ambient"):
        OverlayRenderer(CAM, [s], ambient=1.5)
    with pytest.raises(OverlayError, match="scale"):
        OverlayRenderer(CAM, [s], scale=0.1)
    with pytest.raises(OverlayError, match="CameraModel"):
        OverlayRenderer(K, [s])  # type: ignore[arg-type]
    r = OverlayRenderer(CAM, [s])
    with pytest.raises(OverlayError, match="scaled"):
        r.draw(np.zeros((240, 320, 3), np.uint8), IDENT)


def test_closed_orientation_detects_open_meshes() -> None:
    s = trimesh.creation.icosphere(subdivisions=1)
    assert closed_orientation(s.vertices, s.faces) == 1
    assert closed_orientation(s.vertices, s.faces[:, ::-1]) == -1
    assert closed_orientation(s.vertices, s.faces[1:]) == 0


def test_camera_inside_a_closed_mesh_sees_its_inside() -> None:
    # the near plane cuts the sphere: culling is off, the inner surface covers every pixel
    r = OverlayRenderer(CAM, [sphere("room", [0, 0, 0], 200, sub=3)])
    alpha = r.render(IDENT).canvas()[..., 3]
    assert (alpha == 255).all()


def test_degenerate_and_off_screen_triangles_are_harmless() -> None:
    v = np.array([[0.0, 0, 300], [10, 0, 300], [20, 0, 300],        # collinear: zero area
                  [1e6, 1e6, 300], [1e6 + 1, 1e6, 300], [1e6, 1e6 + 1, 300],  # far off screen
                  [-5, -5, 300], [5, -5, 300], [0, 5, 300]])
    f = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 0, 0]])
    alpha = OverlayRenderer(CAM, [Structure("x", v, f)]).render(IDENT).canvas()[..., 3]
    expected_area = 0.5 * (10 * K[0, 0] / 300) * (10 * K[1, 1] / 300)
    assert abs((alpha > 0).sum() - expected_area) < 0.1 * expected_area


def test_random_poses_never_fail_and_stay_in_the_image() -> None:
    rng = np.random.default_rng(5)
    r = OverlayRenderer(CAM, [sphere("a", [0, 0, 0], 60), sphere("b", [30, 0, 0], 20,
                                                                  opacity=0.5, mode="outline")])
    for _ in range(25):
        rot = cv2.Rodrigues(rng.normal(size=3))[0]
        T = Transform.from_rt(rot, rng.uniform([-150, -150, -100], [150, 150, 400]), "CT",
                              "CAMERA")
        ov = r.render(T)
        h, w = ov.bgra.shape[:2]
        assert 0 <= ov.x0 and ov.x0 + w <= 640 and 0 <= ov.y0 and ov.y0 + h <= 480
