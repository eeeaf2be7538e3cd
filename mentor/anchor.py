"""Anchoring mentor strokes on the anatomy: ray casting at the stroke's frame, re-projection.

A stroke arrives as normalised image points with the ``frame_id`` of the displayed frame it
was drawn on (mentor/DESIGN.md "Annotations"). With that frame's metadata
(:class:`~scrubin.mentor.station_meta.FrameMeta`: intrinsics ``K``, distortion, ``T_CAMERA_REF``,
``T_REF_CT``):

1. pixel ``(u, v) = (x * width - 0.5, y * height - 0.5)`` (OpenCV: pixel centres at integers);
2. undistorted normalised coordinates ``(x', y')`` = ``cv2.undistortPoints(u, v; K, dist)``
   (iterative inverse of the Brown-Conrady model OpenCV's ``projectPoints`` applies);
3. the camera ray ``d_cam = (x', y', 1) / |.|`` from the optical centre, mapped into CT by
   ``T_CT_CAMERA = (T_CAMERA_REF @ T_REF_CT)^-1``;
4. first hit on the registered models (CT, LPS mm) with ``open3d.t.geometry.RaycastingScene``
   (CPU BVH), ``t_hit`` in mm along the unit ray;
5. the hit point to the reference frame: ``p_REF = T_REF_CT @ p_CT`` (mm) — the anchor, stored
   in REF so it moves with the patient's reference marker, not with the camera.

Re-projection into any later view: ``cv2.projectPoints(T_CAMERA_REF @ p_REF; K, dist)``, the same
pixel convention as the overlay renderer. Points whose ray hits nothing stay ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scrubin.mentor.errors import MentorError
from scrubin.mentor.station_meta import FrameMeta


class AnchorError(MentorError):
    """A stroke cannot be anchored (bad points, no pose for its frame)."""


def normalised_to_pixels(points_norm: Any, width: int, height: int) -> np.ndarray:
    """``(N, 2)`` normalised view coordinates to OpenCV pixels (``x * W - 0.5``)."""
    p = np.asarray(points_norm, np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0 or not np.all(np.isfinite(p)):
        raise AnchorError(f"stroke points must be a non-empty finite (N, 2) list, got shape "
                          f"{p.shape}")
    return np.column_stack([p[:, 0] * width - 0.5, p[:, 1] * height - 0.5])


class Anchorer:
    """Ray caster over the registered models (CT / LPS mm).

    Parameters
    ----------
    meshes
        ``(vertices_ct_mm (N, 3), faces (M, 3))`` pairs, CT / LPS mm.
    max_distance_mm
        Hits farther than this from the camera are ignored (mm).
    """

    def __init__(self, meshes: Sequence[tuple[np.ndarray, np.ndarray]],
                 max_distance_mm: float = 5000.0) -> None:
        import open3d as o3d

        if not meshes:
            raise AnchorError("anchoring needs at least one model")
        self.scene = o3d.t.geometry.RaycastingScene()
        for v, f in meshes:
            v = np.asarray(v, np.float32)
            f = np.asarray(f, np.uint32)
            if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
                raise AnchorError(f"model must be (N, 3) vertices and (M, 3) faces, got "
                                  f"{v.shape} / {f.shape}")
            self.scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(f))
        self.max_distance_mm = float(max_distance_mm)

    def rays_ct(self, meta: FrameMeta, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Origins and unit directions in CT (mm) of the camera rays through ``pixels``."""
        import cv2

        if meta.T_camera_ref is None or meta.T_ref_ct is None:
            raise AnchorError(f"frame {meta.frame_id} has no camera pose (tracking "
                              f"{meta.tracking}): nothing to anchor to")
        und = cv2.undistortPoints(np.ascontiguousarray(pixels.reshape(-1, 1, 2)),
                                  meta.camera_matrix, np.asarray(meta.dist, np.float64))
        d_cam = np.column_stack([und.reshape(-1, 2), np.ones(len(pixels))])
        d_cam /= np.linalg.norm(d_cam, axis=1, keepdims=True)
        T_ct_cam = np.linalg.inv(meta.T_camera_ref @ meta.T_ref_ct)
        d_ct = d_cam @ T_ct_cam[:3, :3].T
        o_ct = np.broadcast_to(T_ct_cam[:3, 3], d_ct.shape)
        return np.ascontiguousarray(o_ct), d_ct

    def anchor(self, meta: FrameMeta, points_norm: Any) -> list[list[float] | None]:
        """Anchors in REF (mm) of a stroke drawn on frame ``meta``; None where nothing is hit."""
        import open3d as o3d

        px = normalised_to_pixels(points_norm, meta.width, meta.height)
        o, d = self.rays_ct(meta, px)
        rays = o3d.core.Tensor(np.hstack([o, d]).astype(np.float32))
        t = self.scene.cast_rays(rays)["t_hit"].numpy().astype(np.float64)
        hit = np.isfinite(t) & (t <= self.max_distance_mm)
        p_ct = o + d * np.where(hit, t, 0.0)[:, None]
        p_ref = p_ct @ meta.T_ref_ct[:3, :3].T + meta.T_ref_ct[:3, 3]
        return [[round(float(c), 4) for c in p] if h else None for p, h in zip(p_ref, hit,
                                                                             strict=True)]


def project_anchors(meta: FrameMeta, anchors_ref_mm: Sequence[Sequence[float] | None]
                    ) -> np.ndarray:
    """Pixels ``(N, 2)`` of REF anchors (mm) in frame ``meta``; NaN for None / behind camera.

    ``cv2.projectPoints`` of ``T_CAMERA_REF @ p_REF`` with the frame's ``K`` and distortion.
    """
    import cv2

    out = np.full((len(anchors_ref_mm), 2), np.nan)
    if meta.T_camera_ref is None or not len(anchors_ref_mm):
        return out
    idx = [i for i, a in enumerate(anchors_ref_mm) if a is not None]
    if not idx:
        return out
    p = np.asarray([anchors_ref_mm[i] for i in idx], np.float64)
    pc = p @ meta.T_camera_ref[:3, :3].T + meta.T_camera_ref[:3, 3]
    front = pc[:, 2] > 1e-3
    if front.any():
        uv, _ = cv2.projectPoints(np.ascontiguousarray(pc[front]), np.zeros(3), np.zeros(3),
                                  meta.camera_matrix, np.asarray(meta.dist, np.float64))
        sel = np.asarray(idx)[front]
        out[sel] = uv.reshape(-1, 2)
    return out
