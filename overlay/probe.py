"""Accuracy probe of the overlay: drawn centroids of ground-truth points vs their projection.

Tiny spheres at the ground-truth points (fiducials, target) are rendered as a separate overlay
structure, one unique colour each, by the overlay renderer with the *tracked* pose and the
registration, lens distortion on; their drawn centroids in the output pixels are compared with
``cv2.projectPoints`` of the truth with the true pose by the pipeline
(:mod:`scrubin.overlay.pipeline`): error in px, and in mm at the point's depth (``px * z / f``).
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np

from scrubin.overlay.errors import OverlayError
from scrubin.overlay.renderer import OverlayRenderer, Structure
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform


class AccuracyProbe:
    """Renders one small sphere per ground-truth point and finds their drawn centroids.

    Parameters
    ----------
    camera
        Output camera (the overlay's).
    points_ct_mm
        ``(K, 3)`` ground-truth points, CT / LPS mm (K <= 24).
    radius_mm
        Sphere radius (mm).
    """

    def __init__(self, camera: CameraModel, points_ct_mm: np.ndarray, radius_mm: float = 1.2,
                 frame_of_reference_uid: str = "") -> None:
        import open3d as o3d

        pts = np.asarray(points_ct_mm, np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or not 1 <= len(pts) <= 24 or not np.all(
                np.isfinite(pts)):
            raise OverlayError(f"probe points must be finite (K, 3) CT mm with 1 <= K <= 24, got"
                               f" {pts.shape}")
        if not math.isfinite(radius_mm) or radius_mm <= 0:
            raise OverlayError(f"probe sphere radius must be > 0 mm, got {radius_mm}")
        self.camera = camera
        self.points_ct_mm = pts
        self.radius_mm = float(radius_mm)
        sph = o3d.geometry.TriangleMesh.create_sphere(radius_mm, 10)
        sv, sf = np.asarray(sph.vertices), np.asarray(sph.triangles)
        hues = (np.arange(len(pts)) * 0.618034) % 1.0  # golden-ratio hues: well separated
        self.colours_rgb = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues])
        structs = [Structure(f"probe{k}", sv + p, sf, normals_ct=sv / radius_mm,
                             colour_rgb=tuple(c), frame_of_reference_uid=frame_of_reference_uid)
                   for k, (p, c) in enumerate(zip(pts, self.colours_rgb, strict=True))]
        self.renderer = OverlayRenderer(camera, structs, ambient=1.0, near_mm=1.0)

    def measure(self, T_camera_ct: Transform) -> tuple[np.ndarray, Any]:
        """Centroids ``(K, 2)`` (px, NaN where not measurable) and the rendered patch.

        A sphere is measured when its drawn area is at least 60 % of the area its projection
        should cover (not clipped by the image border nor hidden behind another sphere).
        """
        ov = self.renderer.render(T_camera_ct)
        k = len(self.points_ct_mm)
        out = np.full((k, 2), np.nan)
        if ov.empty:
            return out, ov
        a = ov.bgra[:, :, 3].astype(np.float64) / 255.0
        ys, xs = np.nonzero(a > 0)
        if len(ys) == 0:
            return out, ov
        w = a[ys, xs]
        bgr = ov.bgra[ys, xs, :3].astype(np.float64) / (255.0 * w[:, None])
        pal = self.colours_rgb[:, ::-1]
        lab = np.argmin(((bgr[:, None, :] - pal[None]) ** 2).sum(axis=2), axis=1)
        p_cam = T_camera_ct.apply(self.points_ct_mm)
        f = 0.5 * (self.camera.matrix[0, 0] + self.camera.matrix[1, 1])
        dist = np.sqrt(((bgr - pal[lab]) ** 2).sum(axis=1))
        for i in range(k):
            if p_cam[i, 2] <= 0:
                continue
            r_px = f * self.radius_mm / p_cam[i, 2]
            m = (lab == i) & (dist < 0.25)  # drop pixels mixing two spheres' colours
            if not m.any():
                continue
            # keep the blob around the label's median (stray mixed pixels elsewhere)
            mx, my = np.median(xs[m]), np.median(ys[m])
            m &= (xs - mx) ** 2 + (ys - my) ** 2 <= (2.0 * r_px + 2.0) ** 2
            area = w[m].sum()
            if area < 0.6 * math.pi * r_px ** 2:
                continue
            out[i, 0] = (w[m] * (xs[m] + ov.x0)).sum() / area
            out[i, 1] = (w[m] * (ys[m] + ov.y0)).sum() / area
        return out, ov
