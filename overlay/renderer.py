"""Render registered CT meshes into a camera image and composite them onto the live frame.

Typical use (one camera, one frame loop; see ``overlay.hud.draw_guarded`` for the tracking gate
and HUD)::

    skull = Structure.from_mesh(load_mesh("skull.stl"), opacity=0.6)      # imaging.mesh.Mesh
    tumour = Structure("tumour", v_ct_mm, faces, colour_rgb=(1, 0.3, 0.2), mode="outline")
    renderer = OverlayRenderer(camera, [skull, tumour])   # camera: registration.CameraModel
    for frame_bgr, T_camera_ct in frames:          # T_camera_CT = T_CAMERA_REF @ T_REF_CT
        renderer.draw(frame_bgr, T_camera_ct)      # in place; or .render() -> BGRA patch

Per frame only the pose changes: vertices, normals, buffers and the lens map stay in memory.
The work is (``overlay.raster``) transform, shade and project the vertices, bin and z-buffer the
triangles with a binned edge-function rasterizer (numba, row bands in parallel), compose the
layers inside the model's bounding box (``overlay.composite``), warp the box onto the real lens
if it distorts (``overlay.distortion``, ``cv2.remap`` on fixed-point maps), and alpha-blend the
box onto the frame; for one filled layer without warp ``draw`` resolves and blends in one pass.

Frames and units: vertices in CT (DICOM LPS) mm; ``T_camera_ct`` a rigid
:class:`scrubin.registration.frames.Transform` from ``CT`` to ``CAMERA`` (OpenCV axes, mm). Pixel
coordinates follow ``cv2.projectPoints``. Near-plane clipping at ``near_mm``.

Look: Gouraud shading of a Lambert head-light (light at the camera, two-sided); opaque fills
occlude through one shared depth buffer; each transparent or outlined structure keeps its own
nearest-surface depth buffer and is blended far-to-near per pixel in front of the opaque ones.
Back faces are culled for closed, consistently wound meshes (never while the near plane cuts
the model, so a cut shows the inside). No anti-aliasing at ``scale=1`` without distortion.

Threads: a renderer is not thread-safe (it reuses its buffers); use one per thread. Numba uses
``NUMBA_NUM_THREADS`` threads (default: all cores); raster bands are handed out one at a time
(dynamic scheduling), since their work differs a lot; ``overlay.raster`` sets
``OMP_WAIT_POLICY=PASSIVE`` unless already set (see there for why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from scrubin.imaging.mesh import vertex_normals
from scrubin.overlay import composite, raster
from scrubin.overlay.distortion import RenderGeometry, output_bbox, render_geometry
from scrubin.overlay.errors import OverlayError
from scrubin.overlay.provenance import check_frame_of_reference
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import CAMERA, CT, Transform

MODES = ("fill", "outline")
_BAND_H = 8
_MAX_SEE_THROUGH = 15  # own layers (transparent / outline), plus the shared opaque layer
_WARP_GRID = 16  # render pixels; see OverlayRenderer._warp


@dataclass(frozen=True)
class Structure:
    """One mesh to overlay, in CT (LPS) mm, with its look.

    Attributes
    ----------
    name
        Label (unique within a renderer).
    vertices_ct_mm
        ``(N, 3)`` vertex positions, CT / LPS mm.
    faces
        ``(M, 3)`` vertex indices; counter-clockwise seen from outside for closed meshes.
    normals_ct
        ``(N, 3)`` unit vertex normals in CT; area-weighted face normals when not given.
    colour_rgb
        Display colour, RGB in 0..1.
    opacity
        0..1; 1 is opaque (occludes), below 1 the nearest surface is blended.
    mode
        ``"fill"`` (shaded surface) or ``"outline"`` (silhouette/contour edges only).
    frame_of_reference_uid, series_instance_uid
        Provenance of the CT the mesh came from; checked against the registration.
    """

    name: str
    vertices_ct_mm: np.ndarray
    faces: np.ndarray
    normals_ct: np.ndarray | None = None
    colour_rgb: tuple[float, float, float] = (0.93, 0.87, 0.75)
    opacity: float = 1.0
    mode: str = "fill"
    frame_of_reference_uid: str = ""
    series_instance_uid: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices_ct_mm, dtype=np.float64)
        f = np.asarray(self.faces)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
            raise OverlayError(f"structure {self.name!r}: vertices must be (N>=3, 3), got "
                               f"{v.shape}")
        if not np.all(np.isfinite(v)):
            raise OverlayError(f"structure {self.name!r}: vertices contain NaN or infinity")
        if f.ndim != 2 or f.shape[1] != 3 or len(f) < 1 or not np.issubdtype(f.dtype,
                                                                             np.integer):
            raise OverlayError(f"structure {self.name!r}: faces must be an (M>=1, 3) integer "
                               f"array, got {f.shape} {f.dtype}")
        if f.min() < 0 or f.max() >= len(v):
            raise OverlayError(f"structure {self.name!r}: face indices must lie in 0..{len(v)-1}"
                               f", got {f.min()}..{f.max()}")
        if self.normals_ct is None:
            n = vertex_normals(v, f)
        else:
            n = np.asarray(self.normals_ct, dtype=np.float64)
            if n.shape != v.shape or not np.all(np.isfinite(n)):
                raise OverlayError(f"structure {self.name!r}: normals must be finite and shaped"
                                   f" like the vertices {v.shape}, got {n.shape}")
        c = np.asarray(self.colour_rgb, dtype=np.float64)
        if c.shape != (3,) or not np.all((c >= 0) & (c <= 1)):
            raise OverlayError(f"structure {self.name!r}: colour_rgb must be 3 values in 0..1, "
                               f"got {self.colour_rgb}")
        if not 0.0 < float(self.opacity) <= 1.0:
            raise OverlayError(f"structure {self.name!r}: opacity must be in (0, 1], got "
                               f"{self.opacity}")
        if self.mode not in MODES:
            raise OverlayError(f"structure {self.name!r}: mode must be one of {MODES}, got "
                               f"{self.mode!r}")
        object.__setattr__(self, "vertices_ct_mm", v)
        object.__setattr__(self, "faces", f.astype(np.int64))
        object.__setattr__(self, "normals_ct", n.astype(np.float32))
        object.__setattr__(self, "colour_rgb", tuple(float(x) for x in c))

    @classmethod
    def from_mesh(cls, mesh: Any, **style: Any) -> Structure:
        """Adapter for ``imaging.mesh.Mesh`` (vertices LPS mm, faces, normals, name, ``color``
        RGBA 0..1 whose alpha becomes the opacity, provenance). ``style`` overrides any field
        (opacity, mode, colour_rgb, name)."""
        prov = dict(getattr(mesh, "provenance", None) or {})
        kw: dict[str, Any] = {
            "name": str(getattr(mesh, "name", "") or "structure"),
            "vertices_ct_mm": mesh.vertices,
            "faces": mesh.faces,
            "normals_ct": getattr(mesh, "normals", None),
            "frame_of_reference_uid": str(prov.get("frame_of_reference_uid", "") or ""),
            "series_instance_uid": str(prov.get("series_instance_uid", "") or ""),
        }
        colour = getattr(mesh, "color", None)
        if colour is not None:
            c = np.asarray(colour, dtype=np.float64).reshape(-1)
            if c.size not in (3, 4):
                raise OverlayError(f"mesh {kw['name']!r}: color must be RGB or RGBA, got {colour}")
            kw["colour_rgb"] = tuple(c[:3])
            if c.size == 4:
                kw["opacity"] = float(c[3])
        kw.update(style)
        return cls(**kw)


def closed_orientation(vertices: np.ndarray, faces: np.ndarray) -> int:
    """+1 / -1 if the mesh is closed and consistently wound outward / inward, else 0.

    Closed: every directed edge's reverse is also an edge (no boundary). Consistent: at most
    0.1 % of directed edges repeat (the non-manifold edges marching cubes leaves where four
    faces meet). The sign is that of the enclosed volume (divergence theorem, sum of signed
    tetrahedra). Back faces are culled only for such meshes.
    """
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(f.max()) + 1
    key = e[:, 0] * n + e[:, 1]
    rkey = e[:, 1] * n + e[:, 0]
    uniq, counts = np.unique(key, return_counts=True)
    if np.sum(counts > 1) > 1e-3 * len(key) or not np.all(np.isin(rkey, uniq)):
        return 0
    v = np.asarray(vertices, dtype=np.float64)
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0
    return 1 if vol > 0 else (-1 if vol < 0 else 0)


@dataclass
class RenderedOverlay:
    """A premultiplied BGRA patch in output pixels: ``bgra[j, i]`` is pixel ``(x0+i, y0+j)``."""

    bgra: np.ndarray
    x0: int
    y0: int
    width: int
    height: int

    @property
    def empty(self) -> bool:
        """True when nothing is drawn."""
        return self.bgra.size == 0

    def canvas(self) -> np.ndarray:
        """The full ``(height, width, 4)`` premultiplied BGRA image, transparent elsewhere."""
        out = np.zeros((self.height, self.width, 4), np.uint8)
        h, w = self.bgra.shape[:2]
        out[self.y0:self.y0 + h, self.x0:self.x0 + w] = self.bgra
        return out


class OverlayRenderer:
    """Renders structures into one camera's image (see module docstring).

    Parameters
    ----------
    camera
        Output camera (OpenCV intrinsics + distortion + size).
    structures
        Meshes and their look; names must be unique; all must share one FrameOfReferenceUID.
    near_mm, outline_px, contour_mm, ambient
        Near clipping plane (mm); outline width (output px); depth jump that counts as an
        occluding contour in outline mode (mm, 0 = silhouettes only); ambient light 0..1.
    scale
        Render resolution relative to the camera (see ``overlay.distortion``).
    frame
        Destination frame name of the pose passed to :meth:`render` (``CAMERA``, or an eye).
    """

    def __init__(
        self,
        camera: CameraModel,
        structures: Sequence[Structure],
        *,
        near_mm: float = 10.0,
        scale: float = 1.0,
        outline_px: int = 2,
        contour_mm: float = 10.0,
        ambient: float = 0.3,
        frame: str = CAMERA,
    ) -> None:
        if not isinstance(camera, CameraModel):
            raise OverlayError(f"camera must be a CameraModel, got {type(camera).__name__}")
        structs = list(structures)
        if not structs or not all(isinstance(s, Structure) for s in structs):
            raise OverlayError("need at least one Structure to render")
        names = [s.name for s in structs]
        if len(set(names)) != len(names):
            raise OverlayError(f"structure names must be unique, got {names}")
        uids = {s.frame_of_reference_uid for s in structs if s.frame_of_reference_uid}
        if len(uids) > 1:
            raise OverlayError(f"structures come from different FrameOfReferenceUIDs {sorted(uids)}"
                               "; they cannot share one registration")
        if not np.isfinite(near_mm) or near_mm <= 0:
            raise OverlayError(f"near_mm must be > 0, got {near_mm}")
        if int(outline_px) < 1 or int(outline_px) > 16:
            raise OverlayError(f"outline_px must be 1..16, got {outline_px}")
        if not 0.0 <= ambient <= 1.0 or not np.isfinite(contour_mm) or contour_mm < 0:
            raise OverlayError(f"ambient must be 0..1 and contour_mm >= 0, got {ambient}, "
                               f"{contour_mm}")
        self.camera = camera
        self.frame = frame
        self.frame_of_reference_uid = uids.pop() if uids else ""
        self.near_mm = float(near_mm)
        self.contour_mm = float(contour_mm)
        self.ambient = float(ambient)
        self.geometry: RenderGeometry = render_geometry(camera, scale)
        self._outline_r = max(1, int(round(int(outline_px) * scale)))
        self.structures = structs
        offs = np.cumsum([0] + [len(s.vertices_ct_mm) for s in structs])
        self._v = np.concatenate([s.vertices_ct_mm for s in structs])
        self._n = np.concatenate([s.normals_ct for s in structs]).astype(np.float32)
        self._f = np.concatenate([s.faces + o for s, o in zip(structs, offs[:-1], strict=True)])
        self._face_struct = np.repeat(np.arange(len(structs), dtype=np.int32),
                                      [len(s.faces) for s in structs])
        self._orient = np.array([closed_orientation(s.vertices_ct_mm, s.faces) for s in structs])
        hr = self.geometry.render_height
        self._p_cam = np.empty((len(self._v), 3))
        self._shade = np.empty(len(self._v), np.float32)
        self._uvz = np.empty((len(self._v), 3))
        self._tbox = np.empty((len(self._f), 4), np.int32)
        nb = (hr + _BAND_H - 1) // _BAND_H
        self._counts = np.zeros(nb, np.int64)
        self._starts = np.zeros(nb + 1, np.int64)
        self._bbox = np.zeros(4, np.int64)
        self._out_boxes: dict[tuple[int, ...], tuple[int, int, int, int]] = {}
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._per_face: dict[tuple[bool, bytes], tuple[np.ndarray, np.ndarray]] = {}
        self._rgba = np.zeros((hr, self.geometry.render_width, 4), np.uint8)
        self._styles = [(s.colour_rgb, float(s.opacity), s.mode) for s in structs]
        self._visible = np.ones(len(structs), bool)
        self._layers(self._styles)

    # ------------------------------------------------------------------ style
    def set_style(
        self, name: str, *, colour_rgb: Sequence[float] | None = None,
        opacity: float | None = None, mode: str | None = None, visible: bool | None = None,
    ) -> None:
        """Change one structure's colour (RGB 0..1), opacity (0..1], mode or visibility
        between frames."""
        names = [s.name for s in self.structures]
        if name not in names:
            raise OverlayError(f"no structure named {name!r}; have {names}")
        i = names.index(name)
        if visible is not None:
            self._visible[i] = bool(visible)
        colour, alpha, md = self._styles[i]
        probe = Structure(name, self.structures[i].vertices_ct_mm[:3], np.array([[0, 1, 2]]),
                          np.zeros((3, 3)), tuple(colour_rgb) if colour_rgb is not None
                          else colour, alpha if opacity is None else opacity,
                          md if mode is None else mode)
        styles = list(self._styles)
        styles[i] = (probe.colour_rgb, float(probe.opacity), probe.mode)
        self._layers(styles)
        self._styles = styles

    def _layers(self, styles: list[tuple[tuple[float, ...], float, str]], warning: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
        """Layer kind per layer and layer per structure.

        Opaque fills share layer 0 (present only when there is one); every transparent or
        outlined structure has its own layer. The warning look puts all structures in one
        outline layer (their joint silhouette).
        """
        if warning:
            return (np.array([composite.KIND_OUTLINE], np.int8),
                    np.zeros(len(styles), np.int8))
        opaque = [md == "fill" and alpha >= 1.0 for _, alpha, md in styles]
        if len(opaque) - sum(opaque) > _MAX_SEE_THROUGH:
            raise OverlayError(
                f"at most {_MAX_SEE_THROUGH} transparent or outlined structures, got "
                f"{len(opaque) - sum(opaque)}; make some opaque or merge meshes sharing a look")
        kinds = [composite.KIND_OPAQUE] if any(opaque) else []
        struct_layer = np.zeros(len(styles), np.int8)
        for i, (_, _, md) in enumerate(styles):
            if opaque[i]:
                continue
            struct_layer[i] = len(kinds)
            kinds.append(composite.KIND_OUTLINE if md == "outline" else composite.KIND_FILL)
        return np.array(kinds, np.int8), struct_layer

    def _buffers_for(self, n_layers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if n_layers not in self._buffers:
            h, w = self.geometry.render_height, self.geometry.render_width
            self._buffers[n_layers] = (np.zeros((n_layers, h, w), np.float32),
                                       np.full((n_layers, h, w), -1, np.int32),
                                       np.zeros((n_layers, h, w, 2), np.float32))
        return self._buffers[n_layers]

    # ------------------------------------------------------------------ render
    def warm_up(self) -> None:
        """Load (or compile) the numba kernels now, not on the first live frame (~1-20 s)."""
        for z in (0.0, 1000.0):
            T = Transform.from_rt(np.eye(3), [0.0, 0.0, z], CT, self.frame)
            self.render(T)
            self.render(T, warning=True)

    def check_pose(self, T_camera_ct: Transform) -> None:
        """Refuse a pose of the wrong frames or of another FrameOfReferenceUID."""
        if not isinstance(T_camera_ct, Transform):
            raise OverlayError(f"pose must be a registration.frames.Transform, got "
                               f"{type(T_camera_ct).__name__}")
        if T_camera_ct.src != CT or T_camera_ct.dst != self.frame:
            raise OverlayError(f"pose must map {CT} to {self.frame}, got T_{T_camera_ct.dst}_"
                               f"{T_camera_ct.src}")
        check_frame_of_reference(T_camera_ct.source.get("frame_of_reference_uid", ""),
                                 self.frame_of_reference_uid)

    def render(self, T_camera_ct: Transform, *, warning: bool = False) -> RenderedOverlay:
        """Render all structures at pose ``T_camera_ct`` into a premultiplied BGRA patch.

        ``warning=True`` draws every structure as a red outline (the "not current" look used by
        ``overlay.hud`` when tracking is stale and the policy is to warn instead of hide).
        """
        cam = self.camera
        box = self._render_image(T_camera_ct, warning)
        if box is None:
            return RenderedOverlay(np.zeros((0, 0, 4), np.uint8), 0, 0, cam.width, cam.height)
        out, ox, oy = self._warp(box)
        out = out.copy()
        self._clear(box)
        return RenderedOverlay(out, ox, oy, cam.width, cam.height)

    def _warp(self, box: tuple[int, int, int, int]) -> tuple[np.ndarray, int, int]:
        """``overlay.distortion.warp_to_output`` (``cv2.remap`` on the fixed-point maps) over
        the output box of the render box grown to multiples of ``_WARP_GRID`` pixels (the image
        is transparent around the box): nearby frames share one output box, looked up instead
        of traced through the lens again (~0.25 ms)."""
        geom = self.geometry
        if geom.identity:
            return self._rgba[box[0]:box[1] + 1, box[2]:box[3] + 1], box[2], box[0]
        g = _WARP_GRID
        key = (box[0] // g, box[1] // g, box[2] // g, box[3] // g)
        grown = (key[0] * g, min(key[1] * g + g - 1, geom.render_height - 1), key[2] * g,
                 min(key[3] * g + g - 1, geom.render_width - 1))
        ob = self._out_boxes.pop(key, None)
        if ob is None:
            ob = output_bbox(geom, grown)
        self._out_boxes[key] = ob  # most recent last
        if len(self._out_boxes) > 64:
            del self._out_boxes[next(iter(self._out_boxes))]
        oy0, oy1, ox0, ox1 = ob
        if oy1 < oy0 or ox1 < ox0:
            return np.zeros((0, 0, 4), np.uint8), 0, 0
        out = cv2.remap(self._rgba, geom.map1[oy0:oy1 + 1, ox0:ox1 + 1],
                        geom.map2[oy0:oy1 + 1, ox0:ox1 + 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out, ox0, oy0

    def _clear(self, box: tuple[int, int, int, int]) -> None:
        self._rgba[box[0]:box[1] + 1, box[2]:box[3] + 1] = 0

    def _render_image(self, T_camera_ct: Transform, warning: bool,
                      frame: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
        """Render into ``self._rgba`` (premultiplied BGRA, render size); returns the box
        ``(y0, y1, x0, x1)`` written (also in ``self._bbox``), None when nothing is visible.
        The caller clears the box (``_clear``) once done, so the image is transparent outside
        the current box. With ``frame`` given, the common case of one filled layer without lens
        warp is resolved and blended straight onto it (returns None, nothing to clear)."""
        self.check_pose(T_camera_ct)
        geom = self.geometry
        m = T_camera_ct.matrix
        if warning:
            styles = [((1.0, 0.0, 0.0), 1.0, "outline") for _ in self._styles]
        else:
            styles = self._styles
        kinds, struct_layer = self._layers(styles, warning)
        zmin = raster.transform_project(self._v, self._n, np.ascontiguousarray(m[:3, :3]),
                                        np.ascontiguousarray(m[:3, 3]), geom.k_render,
                                        self.near_mm, self.ambient, self._p_cam, self._shade,
                                        self._uvz)
        faces, uvz, shade, face_struct = self._f, self._uvz, self._shade, self._face_struct
        clipped = zmin <= self.near_mm
        if clipped:
            faces, uvz, shade, face_struct = self._clip(geom)
        # cull back faces only for closed, consistently wound meshes not cut by the near plane
        # (screen area sign flips: image y points down)
        key = (bool(clipped), struct_layer.tobytes() + self._visible.tobytes())
        if clipped or key not in self._per_face:
            cull = np.where(clipped, 0, -self._orient).astype(np.float64)
            cull[~self._visible] = raster.HIDDEN
            per_face = (cull[face_struct], struct_layer[face_struct])
            if not clipped:
                self._per_face[key] = per_face
        else:
            per_face = self._per_face[key]
        face_cull, face_layer = per_face
        hr, wr = geom.render_height, geom.render_width
        tbox = self._tbox if len(faces) == len(self._tbox) else np.empty((len(faces), 4),
                                                                          np.int32)
        raster.setup_triangles(uvz, faces, face_cull, wr, hr, tbox)
        lst = raster.bin_triangles(tbox, _BAND_H, self._counts, self._starts, self._bbox)
        y0, y1, x0, x1 = (int(x) for x in self._bbox)
        if y0 > y1:
            return None
        depth, tid, bary = self._buffers_for(len(kinds))
        colours = np.array([s[0][::-1] for s in styles], np.float64)
        alphas = np.array([s[1] for s in styles], np.float64)
        raster.rasterize(uvz, faces, face_layer, tbox, self._starts, lst, _BAND_H, self._bbox,
                         depth, tid, bary)
        if frame is not None and geom.identity and len(kinds) == 1 and (
                kinds[0] != composite.KIND_OUTLINE):
            if kinds[0] == composite.KIND_OPAQUE:
                alphas = np.ones_like(alphas)
            composite.resolve_blend_single(tid, bary, faces, shade, face_struct, colours, alphas,
                                           self._bbox, frame)
            return None
        composite.resolve_layers(depth, tid, bary, faces, shade, face_struct, kinds, colours,
                                 alphas, self._bbox, self._outline_r, self.contour_mm,
                                 self._rgba[y0:y1 + 1, x0:x1 + 1])
        return (y0, y1, x0, x1)

    def _clip(self, geom: RenderGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray]:
        """Append the near-plane-clipped pieces of the triangles that cross the plane."""
        nv = len(self._v)
        verts, shade, new_faces, parent = raster.clip_near(self._p_cam, self._shade, self._f,
                                                           self.near_mm, nv)
        kr = geom.k_render
        uvz_new = np.empty((len(verts), 3))
        iz = 1.0 / verts[:, 2]
        uvz_new[:, 0] = kr[0, 0] * verts[:, 0] * iz + kr[0, 1] * verts[:, 1] * iz + kr[0, 2]
        uvz_new[:, 1] = kr[1, 1] * verts[:, 1] * iz + kr[1, 2]
        uvz_new[:, 2] = iz
        return (np.concatenate([self._f, new_faces]), np.concatenate([self._uvz, uvz_new]),
                np.concatenate([self._shade, shade]),
                np.concatenate([self._face_struct, self._face_struct[parent]]))

    def draw(
        self, frame_bgr: np.ndarray, T_camera_ct: Transform, *, warning: bool = False
    ) -> np.ndarray:
        """Render at ``T_camera_ct`` and alpha-blend onto ``frame_bgr`` (in place, returned)."""
        if frame_bgr.shape[:2] != (self.camera.height, self.camera.width):
            raise OverlayError(
                f"frame is {frame_bgr.shape[1]}x{frame_bgr.shape[0]} but the camera model is "
                f"{self.camera.width}x{self.camera.height}; use CameraModel.scaled()"
            )
        if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise OverlayError(f"frame must be an (H, W, 3) uint8 BGR image, got "
                               f"{frame_bgr.shape} {frame_bgr.dtype}")
        if not frame_bgr.flags.writeable:
            raise OverlayError("frame is read-only; pass a writable copy")
        box = self._render_image(T_camera_ct, warning, frame_bgr)
        if box is None:
            return frame_bgr
        patch, ox, oy = self._warp(box)
        if patch.size:
            composite.blend_premultiplied(frame_bgr, patch, ox, oy)
        self._clear(box)
        return frame_bgr
