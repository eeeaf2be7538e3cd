"""The head phantom's anatomy: structure solids, fiducials and target in LPS mm.

Supine patient, head first; LPS: +x patient left, +y posterior, +z superior. The head centre
is the origin. Structures are listed in paint order (later overwrite earlier); their
``hu_outside`` is what surrounds each solid over (most of) its boundary, so the iso-level
of a boundary in the blurred image is ``half_max_hu = (hu_inside + hu_outside) / 2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scrubin.samples.model import HeadPhantom, part_bbox

SKIN_HU = 40.0
BRAIN_HU = 35.0
BONE_HU = 1200.0
FIDUCIAL_HU = 3000.0
FIDUCIAL_DIAMETER_MM = 4.0
#: Fiducial centres sit this far outside the skin, along the skin normal (mm).
FIDUCIAL_OFFSET_MM = 0.5

HEAD_CENTER = (0.0, 0.0, 0.0)
HEAD_SEMI_AXES = (75.0, 95.0, 100.0)  # 150 x 190 x 200 mm head
SKULL_OUTER_SEMI_AXES = (69.0, 89.0, 94.0)  # 6 mm scalp
SKULL_INNER_SEMI_AXES = (62.0, 82.0, 87.0)  # 7 mm bone
SKULL_BASE_Z = -35.0  # outer skull floor (plane z = -35)
BRAIN_FLOOR_Z = -28.0  # inner skull floor

#: Directions (LPS, from the head centre) of the fiducials before projection onto the skin.
_FIDUCIAL_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "F1_forehead_right": (-0.35, -0.85, 0.45),
    "F2_forehead_left": (0.40, -0.80, 0.50),
    "F3_temple_left": (1.00, -0.20, 0.15),
    "F4_parietal_right": (-1.00, 0.10, 0.55),
    "F5_vertex_left": (0.20, 0.30, 1.00),
    "F6_occiput_right": (-0.30, 0.90, 0.35),
    "F7_occiput_left_low": (0.70, 0.60, -0.10),
    "F8_cheek_right": (-0.80, -0.50, -0.45),
}

TARGET_LPS = (20.0, 25.0, 40.0)


def _ellipsoid(center: tuple[float, ...], semi: tuple[float, ...]) -> dict[str, Any]:
    return {"type": "ellipsoid", "center": list(center), "semi_axes": list(semi)}


def _capsule(p0: np.ndarray, p1: np.ndarray, radius: float) -> dict[str, Any]:
    return {
        "type": "capsule",
        "p0": [float(v) for v in p0],
        "p1": [float(v) for v in p1],
        "radius": float(radius),
    }


def _halfspace_z_above(z: float) -> dict[str, Any]:
    """Inside where z >= ``z`` (normal -z, offset -z)."""
    return {"type": "halfspace", "normal": [0.0, 0.0, -1.0], "offset": -float(z)}


def _tube(points: np.ndarray, radius: float) -> list[list[dict[str, Any]]]:
    """Union of capsules along a polyline (one part per segment)."""
    return [[_capsule(a, b, radius)] for a, b in zip(points[:-1], points[1:], strict=True)]


def _vessel_curve(n_segments: int = 40) -> np.ndarray:
    """A smooth arc through the brain (a contrast-filled artery), LPS mm."""
    t = np.linspace(0.0, 1.0, n_segments + 1)
    x = -35.0 + 70.0 * t
    y = -20.0 + 40.0 * t * t
    z = 10.0 + 25.0 * np.sin(np.pi * t)
    return np.stack([x, y, z], axis=1)


def _mandible_curve(n_segments: int = 32) -> np.ndarray:
    """Right ramus -> U-shaped body -> left ramus, LPS mm (smooth, finely sampled)."""
    # body: parabola in a near-axial plane; rami: straight up to the jaw joints
    s = np.linspace(-1.0, 1.0, n_segments // 2 + 1)
    body = np.stack([36.0 * s, -42.0 + 34.0 * s**2, -78.0 + 4.0 * s**2], axis=1)
    t = np.linspace(0.0, 1.0, n_segments // 4 + 1)[1:, None]
    right = body[0] + t * (np.array([-40.0, 2.0, -47.0]) - body[0])
    left = body[-1] + t * (np.array([40.0, 2.0, -47.0]) - body[-1])
    return np.concatenate([right[::-1], body, left])


def _airway_curve(n_segments: int = 16) -> np.ndarray:
    """Naso-pharynx to trachea: a quadratic Bezier going inferiorly through the neck, LPS mm."""
    p0 = np.array([0.0, -18.0, -47.0])
    p1 = np.array([0.0, 0.0, -70.0])
    p2 = np.array([0.0, 0.0, -110.0])
    t = np.linspace(0.0, 1.0, n_segments + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2


def structures() -> dict[str, dict[str, Any]]:
    """The phantom's solids in paint order, JSON-ready (LPS mm)."""
    s: dict[str, dict[str, Any]] = {}

    def add(name: str, shape: str, parts: list, hu_in: float, hu_out: float, note: str) -> None:
        boxes = np.array([part_bbox(part) for part in parts])
        s[name] = {
            "paint_order": len(s),
            "shape": shape,
            "bbox_lps": [boxes[:, 0].min(axis=0).tolist(), boxes[:, 1].max(axis=0).tolist()],
            "parts": parts,
            "hu_inside": hu_in,
            "hu_outside": hu_out,
            "half_max_hu": 0.5 * (hu_in + hu_out),
            "note": note,
        }

    add(
        "table", "box",
        [[{"type": "box", "min": [-130.0, 108.0, -400.0], "max": [130.0, 123.0, 400.0]}]],
        200.0, -1000.0, "patient table slab, 13 mm air gap below (posterior to) the head",
    )
    add(
        "skin", "union(ellipsoid head, capsule neck)",
        [
            [_ellipsoid(HEAD_CENTER, HEAD_SEMI_AXES)],
            [_capsule(np.array([0.0, 10.0, -50.0]), np.array([0.0, 10.0, -80.0]), 45.0)],
            [_ellipsoid((0.0, -92.0, -25.0), (11.0, 14.0, 22.0))],  # nose
            [_ellipsoid((74.0, 5.0, -5.0), (6.0, 14.0, 22.0))],  # left ear
            [_ellipsoid((-74.0, 5.0, -5.0), (6.0, 14.0, 22.0))],  # right ear
        ],
        SKIN_HU, -1000.0,
        "outer surface of head, nose, ears and neck (closed, inside the FOV; the nose, ears "
        "and neck make it free of rotational symmetry for surface registration)",
    )
    add(
        "skull", "intersection(ellipsoid, halfspace z >= -35)",
        [[_ellipsoid(HEAD_CENTER, SKULL_OUTER_SEMI_AXES), _halfspace_z_above(SKULL_BASE_Z)]],
        BONE_HU, SKIN_HU, "outer table of the skull; the bone is skull minus brain (7 mm)",
    )
    add(
        "brain", "intersection(ellipsoid, halfspace z >= -28)",
        [[_ellipsoid(HEAD_CENTER, SKULL_INNER_SEMI_AXES), _halfspace_z_above(BRAIN_FLOOR_Z)]],
        BRAIN_HU, BONE_HU, "intracranial space = inner surface of the skull",
    )
    add(
        "mandible", "tube(polyline, radius 6)", _tube(_mandible_curve(), 6.0),
        BONE_HU, SKIN_HU, "lower jaw: U-shaped body and two rami",
    )
    vertebrae = []
    for z_top in (-48.0, -60.0, -72.0, -84.0, -96.0):  # 9 mm bodies, 3 mm discs
        vertebrae.append(
            [
                _capsule(np.array([0.0, 30.0, z_top + 20.0]),
                         np.array([0.0, 30.0, z_top - 30.0]), 10.0),
                _halfspace_z_above(z_top - 9.0),
                {"type": "halfspace", "normal": [0.0, 0.0, 1.0], "offset": z_top},
            ]
        )
    add(
        "spine", "union(5 cylinders)", vertebrae, 700.0, SKIN_HU,
        "cervical vertebral bodies C1-C5 (stylised cylinders r 10 mm, 9 mm tall, 3 mm discs)",
    )
    add(
        "sinus_wall", "union(2 ellipsoids)",
        [
            [_ellipsoid((22.0, -44.0, -55.0), (13.0, 16.0, 14.0))],
            [_ellipsoid((-22.0, -44.0, -55.0), (13.0, 16.0, 14.0))],
        ],
        900.0, SKIN_HU, "thin (2 mm) bony wall around the maxillary sinuses",
    )
    add(
        "sinus", "union(2 ellipsoids)",
        [
            [_ellipsoid((22.0, -44.0, -55.0), (11.0, 14.0, 12.0))],
            [_ellipsoid((-22.0, -44.0, -55.0), (11.0, 14.0, 12.0))],
        ],
        -1000.0, 900.0, "left and right maxillary sinus air cavities",
    )
    add(
        "airway", "tube(polyline, radius 8)", _tube(_airway_curve(), 8.0),
        -1000.0, SKIN_HU, "pharynx and trachea, air, closed ends inside the neck",
    )
    add(
        "vessel", "tube(polyline, radius 2)", _tube(_vessel_curve(), 2.0),
        300.0, BRAIN_HU, "contrast-filled artery, 4 mm diameter, inside the brain",
    )
    fid_parts = [
        [_capsule(np.asarray(f["center_lps"]), np.asarray(f["center_lps"]),
                  0.5 * FIDUCIAL_DIAMETER_MM)]
        for f in fiducials()
    ]
    add(
        "fiducials", "union(8 spheres)", fid_parts, FIDUCIAL_HU, -1000.0,
        "fiducial spheres on the skin; inner halves border skin (40 HU), not air",
    )
    return s


def fiducials() -> list[dict[str, Any]]:
    """Fiducial spheres: centre = skin point along a direction + 0.5 mm along the normal."""
    c = np.asarray(HEAD_CENTER)
    a = np.asarray(HEAD_SEMI_AXES)
    out = []
    for name, direction in _FIDUCIAL_DIRECTIONS.items():
        d = np.asarray(direction, dtype=np.float64)
        d /= np.linalg.norm(d)
        t = 1.0 / np.sqrt(np.sum((d / a) ** 2))  # ray from the centre meets the ellipsoid
        surface = c + t * d
        normal = (surface - c) / a**2
        normal /= np.linalg.norm(normal)
        centre = surface + FIDUCIAL_OFFSET_MM * normal
        out.append(
            {
                "name": name,
                "center_lps": [round(float(v), 6) for v in centre],
                "diameter_mm": FIDUCIAL_DIAMETER_MM,
                "hu": FIDUCIAL_HU,
            }
        )
    return out


def content_bbox_lps() -> np.ndarray:
    """(2, 3) LPS mm box the image must cover: head, neck, fiducials and the table top."""
    lo = np.array([-84.0, -110.0, -130.0])
    hi = np.array([84.0, 118.0, 106.0])
    return np.stack([lo, hi])


def default_model() -> HeadPhantom:
    """The analytic model of the default anatomy."""
    return HeadPhantom(structures())
