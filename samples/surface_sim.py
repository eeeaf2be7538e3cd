"""Simulated surfaces and partial depth-camera views for surface-registration trials.

Used by the tests and the benchmark of :mod:`~registration.surface` to measure accuracy against
exact ground truth (target registration error at a deep point, mean surface-point error) and
success rates over many random partial-overlap trials. Nothing here is needed at run time.

* :func:`synthetic_head_mesh` -- a face-like, asymmetric head skin (cranium, face, nose, brow,
  chin, ears, eye sockets as a smooth signed-distance union) in LPS mm, extracted with
  marching cubes (Lorensen & Cline 1987; scikit-image's Lewiner variant).
* :func:`ellipsoid_mesh` -- a surface of revolution, rotationally ambiguous on purpose.
* :func:`partial_view` -- the part of a surface visible from a random viewpoint (front-facing,
  not occluded, nearest the view axis) covering a chosen fraction of it, with Gaussian noise
  and outliers, as a depth camera or a pointer sweep of the exposed face would give.
* :func:`random_pose` -- a rotation of a given angle about a random axis through a centre,
  plus a translation of a given length.
* :func:`phantom_skin_mesh` / :func:`ct_skin_surface` -- the sample phantom's true skin (its
  analytic model) and the skin the imaging pipeline extracts from its CT series.

Frames: meshes are in the model frame (CT, LPS mm); a simulated cloud is first taken in the
model frame, then mapped into the fixed frame (REF) by the ground-truth ``T_REF_CT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from scrubin.registration.errors import RegistrationError

#: A deep target of the synthetic head (LPS mm, model frame): near the brain's centre.
HEAD_DEEP_TARGET_LPS = np.array([0.0, 15.0, 25.0])


def _ellipsoid_sdf(p: np.ndarray, centre: tuple, radii: tuple) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (scaled-sphere bound, mm)."""
    r = np.asarray(radii, dtype=np.float64)
    q = (p - np.asarray(centre, dtype=np.float64)) / r
    k = np.linalg.norm(q, axis=-1)
    return (k - 1.0) * r.min()


def _smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two signed distances (Quilez), blend width ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _smooth_subtract(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth ``a \\ b`` for signed distances."""
    return -_smooth_union(-a, b, k)


def head_sdf(p_lps: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside) of the synthetic head skin at LPS points ``(..., 3)``.

    +x is the patient's left, +y posterior, +z superior; the face looks towards -y. Slightly
    asymmetric (left ear larger and higher, nose tilted) so no rigid motion maps it onto itself.
    """
    p = np.asarray(p_lps, dtype=np.float64)
    d = _ellipsoid_sdf(p, (0, 12, 20), (74, 94, 84))  # cranium
    d = _smooth_union(d, _ellipsoid_sdf(p, (0, -28, -38), (58, 62, 56)), 14)  # face / jaw
    d = _smooth_union(d, _ellipsoid_sdf(p, (3, -92, -18), (11, 16, 26)), 6)  # nose (tilted)
    d = _smooth_union(d, _ellipsoid_sdf(p, (0, -80, 22), (52, 12, 10)), 8)  # brow ridge
    d = _smooth_union(d, _ellipsoid_sdf(p, (0, -74, -84), (24, 14, 14)), 8)  # chin
    d = _smooth_union(d, _ellipsoid_sdf(p, (77, 14, -4), (9, 19, 31)), 5)  # left ear
    d = _smooth_union(d, _ellipsoid_sdf(p, (-75, 16, -12), (8, 16, 26)), 5)  # right ear
    d = _smooth_union(d, _ellipsoid_sdf(p, (0, 10, -120), (40, 44, 60)), 10)  # neck
    for x in (30.0, -30.0):  # eye sockets
        d = _smooth_subtract(d, _ellipsoid_sdf(p, (x, -84, 4), (15, 14, 11)), 4)
    d = _smooth_subtract(d, p[..., 2] + 150.0, 2)  # cut the neck flat at z = -150
    return d


@dataclass(frozen=True)
class SurfaceMesh:
    """A triangle mesh in the model frame (LPS mm) with outward unit vertex normals."""

    vertices: np.ndarray  # (V, 3) LPS mm
    faces: np.ndarray  # (F, 3) int vertex indices, counter-clockwise seen from outside
    normals: np.ndarray  # (V, 3) outward unit normals


def _mesh_from_sdf(sdf_grid: np.ndarray, origin: np.ndarray, spacing: float) -> SurfaceMesh:
    from skimage.measure import marching_cubes

    verts, faces, normals, _ = marching_cubes(
        sdf_grid, level=0.0, spacing=(spacing, spacing, spacing), allow_degenerate=False
    )
    # scikit-image's normals point down the gradient (towards lower values): inward for an
    # SDF, so flip them to point outward.
    verts = verts + origin
    normals = -normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    v = verts.astype(np.float64)
    # orient faces counter-clockwise seen from outside (face normal along the vertex normals)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    flip = np.einsum("ij,ij->i", fn, normals[faces].sum(axis=1)) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    for a in (v, faces, normals):
        a.setflags(write=False)
    return SurfaceMesh(v, faces.astype(np.int64), normals.astype(np.float64))


@lru_cache(maxsize=4)
def synthetic_head_mesh(spacing: float = 3.0) -> SurfaceMesh:
    """Marching-cubes skin of :func:`head_sdf` on a grid of ``spacing`` mm (cached).

    Parameters
    ----------
    spacing
        Grid step in mm (3 mm gives ~15 k vertices, 1 mm ~140 k).
    """
    if not 0.3 <= spacing <= 10:
        raise RegistrationError(f"synthetic head grid spacing must be 0.3-10 mm, got {spacing}")
    lo = np.array([-100.0, -120.0, -160.0])
    hi = np.array([100.0, 120.0, 120.0])
    axes = [np.arange(a, b + spacing, spacing) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return _mesh_from_sdf(head_sdf(grid), lo, spacing)


@lru_cache(maxsize=4)
def ellipsoid_mesh(radii: tuple[float, float, float] = (70.0, 70.0, 95.0), spacing: float = 3.0
                   ) -> SurfaceMesh:
    """Marching-cubes surface of an ellipsoid centred at the origin (LPS mm).

    With two equal radii it is a surface of revolution: rotation about its axis leaves it
    unchanged, so surface registration of it is ambiguous by construction.
    """
    r = np.asarray(radii, dtype=np.float64)
    lo, hi = -r - 2 * spacing, r + 2 * spacing
    axes = [np.arange(a, b + spacing, spacing) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    # exact-enough SDF near the surface: first-order distance to the implicit surface
    q = grid / r
    f = np.linalg.norm(q, axis=-1)
    grad = np.linalg.norm(q / r / np.maximum(f[..., None], 1e-9), axis=-1)
    return _mesh_from_sdf((f - 1.0) / np.maximum(grad, 1e-9), lo, spacing)


def random_rotation(angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """3x3 rotation of ``angle_deg`` about a uniformly random axis (Rodrigues' formula)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.deg2rad(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def random_pose(
    angle_deg: float, shift_mm: float, centre: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """4x4 pose: rotate ``angle_deg`` about a random axis through ``centre``, then translate
    ``shift_mm`` in a random direction."""
    r = random_rotation(angle_deg, rng)
    d = rng.normal(size=3)
    d *= shift_mm / np.linalg.norm(d)
    m = np.eye(4)
    m[:3, :3] = r
    c = np.asarray(centre, dtype=np.float64)
    m[:3, 3] = c - r @ c + d
    return m


def partial_view(
    mesh: SurfaceMesh,
    rng: np.random.Generator,
    fraction: float = 0.3,
    n_points: int = 3000,
    noise_mm: float = 0.5,
    outlier_fraction: float = 0.03,
    view_dir: np.ndarray | None = None,
    cone_deg: float = 35.0,
    distance_mm: float = 500.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a partial scan of ``mesh`` in the model frame.

    A camera is put ``distance_mm`` from the centroid along a random direction within
    ``cone_deg`` of ``view_dir`` (default: the face, -y). The visible vertices are those facing
    the camera and not occluded (open3d ray casting); of them the ``fraction`` of all vertices
    nearest the view axis are kept, ``n_points`` are drawn, perturbed along the viewing ray by
    Gaussian noise of ``noise_mm`` (depth noise), and a share ``outlier_fraction`` is replaced by
    outliers (uniform in a box 30 mm around the patch and in front of it).

    Returns
    -------
    points_mm, is_outlier
        ``(n_points, 3)`` model-frame (LPS mm) points and a boolean mask of the outliers.
    """
    import open3d as o3d

    if not 0 < fraction <= 1:
        raise RegistrationError(f"visible fraction must be in (0, 1], got {fraction}")
    v, n = mesh.vertices, mesh.normals
    centre = v.mean(axis=0)
    axis0 = np.array([0.0, -1.0, 0.0]) if view_dir is None else np.asarray(view_dir, float)
    axis0 = axis0 / np.linalg.norm(axis0)
    tilt = random_rotation(rng.uniform(0, cone_deg), rng)
    view = tilt @ axis0
    cam = centre + distance_mm * view
    to_cam = cam - v
    dist = np.linalg.norm(to_cam, axis=1)
    front = np.einsum("ij,ij->i", n, to_cam) > 0.05 * dist
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32))
    )
    dirs = -to_cam / dist[:, None]
    rays = np.hstack([np.broadcast_to(cam, v.shape), dirs]).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    visible = front & (np.abs(hit - dist) < 1.0)
    idx = np.flatnonzero(visible)
    # keep the visible vertices nearest the viewing axis, up to `fraction` of the surface
    ang = np.einsum("ij,j->i", dirs[idx], -view)
    keep = idx[np.argsort(-ang)[: max(int(fraction * len(v)), 10)]]
    if len(keep) < 10:
        raise RegistrationError("simulated view sees fewer than 10 vertices")
    pick = rng.choice(keep, size=n_points, replace=len(keep) < n_points)
    # jitter within the triangle fan (half a vertex spacing) so cloud != vertices
    jit = rng.normal(scale=0.3, size=(n_points, 3))
    jit -= np.einsum("ij,ij->i", jit, n[pick])[:, None] * n[pick]  # tangential only
    pts = v[pick] + jit
    pts = pts + rng.normal(scale=noise_mm, size=(n_points, 1)) * dirs[pick]
    n_out = int(round(outlier_fraction * n_points))
    is_out = np.zeros(n_points, dtype=bool)
    if n_out:
        lo, hi = pts.min(axis=0) - 30, pts.max(axis=0) + 30
        out_idx = rng.choice(n_points, size=n_out, replace=False)
        pts[out_idx] = rng.uniform(lo, hi, size=(n_out, 3))
        is_out[out_idx] = True
    return pts, is_out


_PHANTOM_CACHE: dict[tuple[str, float], SurfaceMesh] = {}


def phantom_skin_mesh(truth: dict, spacing: float = 3.0) -> SurfaceMesh:
    """Marching-cubes skin (with the fiducial bumps) of the sample phantom's analytic model.

    Cached per (``truth["spec_hash"]``, spacing) within the process.

    Parameters
    ----------
    truth
        The phantom's ``truth.json`` dictionary (:func:`scrubin.samples.phantom.load_truth`); its
        ``structures`` define the signed distances (LPS mm).
    spacing
        Grid step in mm.
    """
    from scrubin.samples.model import phantom_model

    key = (str(truth.get("spec_hash", id(truth))), float(spacing))
    if key in _PHANTOM_CACHE:
        return _PHANTOM_CACHE[key]
    model = phantom_model(truth)
    names = [n for n in ("skin", "fiducials") if n in model.structure_names]
    if "skin" not in names:
        raise RegistrationError("phantom truth has no 'skin' structure")
    lo = np.array([-100.0, -125.0, -110.0])
    hi = np.array([100.0, 115.0, 115.0])
    axes = [np.arange(a, b + spacing, spacing) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    flat = grid.reshape(-1, 3)
    sdf = np.min([model.signed_distance(n, flat) for n in names], axis=0)
    mesh = _mesh_from_sdf(sdf.reshape(grid.shape[:3]), lo, spacing)
    _PHANTOM_CACHE[key] = mesh
    return mesh


def ct_skin_surface(folder: str | Path, truth: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """The skin as the imaging pipeline extracts it from the phantom's CT series.

    Loads the DICOM series (:func:`scrubin.imaging.load.load_volume`), keeps the head component of
    ``HU >= skin half-max`` (not the table), extracts its iso-surface
    (:func:`scrubin.imaging.surface.extract_surface`) and returns ``(vertices_mm, outward unit
    normals, provenance)`` in LPS mm.
    """
    from scrubin.imaging.load import load_volume
    from scrubin.imaging.mesh import vertex_normals
    from scrubin.imaging.regions import component_at
    from scrubin.imaging.surface import extract_surface
    from scrubin.samples.model import phantom_model

    vol = load_volume(folder)
    level = phantom_model(truth).half_max("skin")
    centre = np.linalg.solve(vol.affine, [0.0, 0.0, 0.0, 1.0])[:3].round().astype(int)
    head = component_at(vol.array >= level, (int(centre[2]), int(centre[1]), int(centre[0])))
    mesh = extract_surface(vol, head, level=level, mask_mode="region", name="skin")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    return v, vertex_normals(v, np.asarray(mesh.faces)), dict(mesh.provenance)
