"""Analytic head phantom: named solids in LPS mm with exact signed distances.

The phantom is a list of *structures* painted in order onto air (-1000 HU): a later structure
overwrites an earlier one where they overlap (painter's algorithm). Each structure is a
*solid* = union of *parts*, each part = intersection of *primitives*:

``ellipsoid``  axis-aligned, ``center`` and ``semi_axes`` (LPS mm)
``halfspace``  ``normal`` (unit) and ``offset``: inside where ``dot(normal, p) <= offset``
``box``        axis-aligned, ``min`` and ``max`` corners (LPS mm)
``capsule``    segment ``p0``–``p1`` swept by a ball of ``radius`` (a sphere when p0 == p1)

The signed distance (negative inside) of a solid is ``min`` over parts of ``max`` over the
part's primitives of the primitives' exact signed distances. This is exact everywhere
inside a solid and outside it except where the nearest boundary point lies on a crease
(an edge where two primitives meet, e.g. the skull-base plane against the skull ellipsoid),
where it is a lower bound. Tube-like solids (vessel, airway) are unions of many capsules
along a finely sampled smooth curve: their distance is ``dist(p, polyline) - radius``, exact
up to ``radius * (1 / cos(bend / 2) - 1)`` (< 0.01 mm here) on the inner side of a bend.

Point-to-ellipsoid distance: D. Eberly, "Distance from a Point to an Ellipse, an Ellipsoid,
or a Hyperellipsoid" (Geometric Tools, 2013), robust bisection on the Lagrange parameter,
iterated to machine precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np

from imaging.errors import ImagingError

#: Primitive type codes shared with the voxeliser (:mod:`samples.render`).
PRIM_CODES: dict[str, int] = {"ellipsoid": 0, "halfspace": 1, "box": 2, "capsule": 3}

AIR_HU: float = -1000.0


class SampleError(ImagingError):
    """A sample phantom request cannot be met (unknown name, unwritable folder, bad query)."""


# --------------------------------------------------------------------------- ellipsoid
@numba.njit(cache=True)
def _robust_len3(a: float, b: float, c: float) -> float:
    m = max(abs(a), abs(b), abs(c))
    if m == 0.0:
        return 0.0
    return m * np.sqrt((a / m) ** 2 + (b / m) ** 2 + (c / m) ** 2)


@numba.njit(cache=True)
def _root2(r0: float, z0: float, z1: float, g: float) -> float:
    n0 = r0 * z0
    s0 = z1 - 1.0
    s1 = 0.0 if g < 0.0 else np.hypot(n0, z1) - 1.0
    s = 0.0
    for _ in range(2000):
        s = 0.5 * (s0 + s1)
        if s == s0 or s == s1:
            break
        gs = (n0 / (s + r0)) ** 2 + (z1 / (s + 1.0)) ** 2 - 1.0
        if gs > 0.0:
            s0 = s
        elif gs < 0.0:
            s1 = s
        else:
            break
    return s


@numba.njit(cache=True)
def _root3(r0: float, r1: float, z0: float, z1: float, z2: float, g: float) -> float:
    n0 = r0 * z0
    n1 = r1 * z1
    s0 = z2 - 1.0
    s1 = 0.0 if g < 0.0 else _robust_len3(n0, n1, z2) - 1.0
    s = 0.0
    for _ in range(2000):
        s = 0.5 * (s0 + s1)
        if s == s0 or s == s1:
            break
        gs = (n0 / (s + r0)) ** 2 + (n1 / (s + r1)) ** 2 + (z2 / (s + 1.0)) ** 2 - 1.0
        if gs > 0.0:
            s0 = s
        elif gs < 0.0:
            s1 = s
        else:
            break
    return s


@numba.njit(cache=True)
def _ellipse_dist(e0: float, e1: float, y0: float, y1: float) -> float:
    """Distance from (y0, y1) >= 0 to the ellipse with semi-axes e0 >= e1 (Eberly)."""
    if y1 > 0.0:
        if y0 > 0.0:
            z0 = y0 / e0
            z1 = y1 / e1
            g = z0 * z0 + z1 * z1 - 1.0
            if g != 0.0:
                r0 = (e0 / e1) ** 2
                sbar = _root2(r0, z0, z1, g)
                x0 = r0 * y0 / (sbar + r0)
                x1 = y1 / (sbar + 1.0)
                return np.hypot(x0 - y0, x1 - y1)
            return 0.0
        return abs(y1 - e1)
    numer0 = e0 * y0
    denom0 = e0 * e0 - e1 * e1
    if numer0 < denom0:
        xde0 = numer0 / denom0
        x0 = e0 * xde0
        x1 = e1 * np.sqrt(1.0 - xde0 * xde0)
        return np.hypot(x0 - y0, x1)
    return abs(y0 - e0)


@numba.njit(cache=True)
def _ellipsoid_dist(e0: float, e1: float, e2: float, y0: float, y1: float, y2: float) -> float:
    """Distance from (y0, y1, y2) >= 0 to the ellipsoid with semi-axes e0 >= e1 >= e2."""
    if y2 > 0.0:
        if y1 > 0.0:
            if y0 > 0.0:
                z0 = y0 / e0
                z1 = y1 / e1
                z2 = y2 / e2
                g = z0 * z0 + z1 * z1 + z2 * z2 - 1.0
                if g != 0.0:
                    r0 = (e0 / e2) ** 2
                    r1 = (e1 / e2) ** 2
                    sbar = _root3(r0, r1, z0, z1, z2, g)
                    x0 = r0 * y0 / (sbar + r0)
                    x1 = r1 * y1 / (sbar + r1)
                    x2 = y2 / (sbar + 1.0)
                    return np.sqrt((x0 - y0) ** 2 + (x1 - y1) ** 2 + (x2 - y2) ** 2)
                return 0.0
            return _ellipse_dist(e1, e2, y1, y2)
        if y0 > 0.0:
            return _ellipse_dist(e0, e2, y0, y2)
        return abs(y2 - e2)
    denom0 = e0 * e0 - e2 * e2
    denom1 = e1 * e1 - e2 * e2
    numer0 = e0 * y0
    numer1 = e1 * y1
    if numer0 < denom0 and numer1 < denom1:
        xde0 = numer0 / denom0
        xde1 = numer1 / denom1
        discr = 1.0 - xde0 * xde0 - xde1 * xde1
        if discr > 0.0:
            x0 = e0 * xde0
            x1 = e1 * xde1
            x2 = e2 * np.sqrt(discr)
            return np.sqrt((x0 - y0) ** 2 + (x1 - y1) ** 2 + x2 * x2)
    return _ellipse_dist(e0, e1, y0, y1)


@numba.njit(cache=True, parallel=True)
def _ellipsoid_sdf(local: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Signed distances of centred points ``local`` (N, 3) to an axis-aligned ellipsoid."""
    order = np.argsort(-semi)
    e0, e1, e2 = semi[order[0]], semi[order[1]], semi[order[2]]
    n = local.shape[0]
    out = np.empty(n)
    for m in numba.prange(n):
        y0 = abs(local[m, order[0]])
        y1 = abs(local[m, order[1]])
        y2 = abs(local[m, order[2]])
        d = _ellipsoid_dist(e0, e1, e2, y0, y1, y2)
        q = (y0 / e0) ** 2 + (y1 / e1) ** 2 + (y2 / e2) ** 2
        out[m] = -d if q < 1.0 else d
    return out


# --------------------------------------------------------------------------- primitives
def primitive_sdf(prim: Mapping[str, Any], points_lps_mm: np.ndarray) -> np.ndarray:
    """Exact signed distance (mm, negative inside) of LPS mm points (N, 3) to one primitive."""
    p = points_lps_mm
    kind = prim["type"]
    if kind == "ellipsoid":
        c = np.asarray(prim["center"], dtype=np.float64)
        a = np.asarray(prim["semi_axes"], dtype=np.float64)
        return _ellipsoid_sdf(np.ascontiguousarray(p - c), a)
    if kind == "halfspace":
        n = np.asarray(prim["normal"], dtype=np.float64)
        return p @ n - float(prim["offset"])
    if kind == "box":
        lo = np.asarray(prim["min"], dtype=np.float64)
        hi = np.asarray(prim["max"], dtype=np.float64)
        q = np.maximum(lo - p, p - hi)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        return outside + inside
    if kind == "capsule":
        a = np.asarray(prim["p0"], dtype=np.float64)
        b = np.asarray(prim["p1"], dtype=np.float64)
        ab = b - a
        L2 = float(ab @ ab)
        t = np.zeros(len(p)) if L2 == 0.0 else np.clip((p - a) @ ab / L2, 0.0, 1.0)
        closest = a + t[:, None] * ab
        return np.linalg.norm(p - closest, axis=1) - float(prim["radius"])
    raise SampleError(f"unknown primitive type {kind!r}; expected one of {sorted(PRIM_CODES)}")


def primitive_bbox(prim: Mapping[str, Any]) -> np.ndarray | None:
    """(2, 3) LPS mm bounding box of a primitive, or None when unbounded (halfspace)."""
    kind = prim["type"]
    if kind == "ellipsoid":
        c = np.asarray(prim["center"], dtype=np.float64)
        a = np.asarray(prim["semi_axes"], dtype=np.float64)
        return np.stack([c - a, c + a])
    if kind == "box":
        return np.stack([np.asarray(prim["min"], float), np.asarray(prim["max"], float)])
    if kind == "capsule":
        a = np.asarray(prim["p0"], dtype=np.float64)
        b = np.asarray(prim["p1"], dtype=np.float64)
        r = float(prim["radius"])
        return np.stack([np.minimum(a, b) - r, np.maximum(a, b) + r])
    return None


def part_bbox(part: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Bounding box (2, 3) of an intersection of primitives (at least one must be bounded).

    Exact for single primitives and axis-aligned cuts; otherwise it may be loose.
    """
    boxes = [b for b in (primitive_bbox(p) for p in part) if b is not None]
    if not boxes:
        raise SampleError("a structure part needs at least one bounded primitive")
    lo = np.max([b[0] for b in boxes], axis=0)
    hi = np.min([b[1] for b in boxes], axis=0)
    for prim in part:  # axis-aligned halfspaces clip the box
        if prim["type"] != "halfspace":
            continue
        n = np.asarray(prim["normal"], dtype=np.float64)
        axis = int(np.argmax(np.abs(n)))
        if np.count_nonzero(n) == 1 and abs(n[axis]) == 1.0:
            if n[axis] > 0:
                hi[axis] = min(hi[axis], float(prim["offset"]))
            else:
                lo[axis] = max(lo[axis], -float(prim["offset"]))
    return np.stack([lo, hi])


# --------------------------------------------------------------------------- model
class HeadPhantom:
    """The analytic phantom described by ``truth["structures"]`` (see :mod:`samples.phantom`).

    Parameters
    ----------
    structures
        Mapping name -> structure dict with ``parts`` (list of lists of primitive dicts),
        ``hu_inside``, ``hu_outside`` and ``paint_order``.
    """

    def __init__(self, structures: Mapping[str, Mapping[str, Any]]) -> None:
        if not structures:
            raise SampleError("phantom has no structures")
        self.structures: dict[str, Mapping[str, Any]] = dict(
            sorted(structures.items(), key=lambda kv: int(kv[1]["paint_order"]))
        )

    @property
    def structure_names(self) -> list[str]:
        """Structure names in paint order (later ones overwrite earlier ones)."""
        return list(self.structures)

    def _get(self, name: str) -> Mapping[str, Any]:
        try:
            return self.structures[name]
        except KeyError:
            raise SampleError(
                f"unknown structure {name!r}; expected one of {self.structure_names}"
            ) from None

    def hu_inside(self, name: str) -> float:
        """HU inside the named solid (where no later structure overwrites it)."""
        return float(self._get(name)["hu_inside"])

    def hu_outside(self, name: str) -> float:
        """HU of what surrounds the named solid across (most of) its boundary."""
        return float(self._get(name)["hu_outside"])

    def half_max(self, name: str) -> float:
        """Iso-level at the boundary of a blurred step: (hu_inside + hu_outside) / 2."""
        return 0.5 * (self.hu_inside(name) + self.hu_outside(name))

    def signed_distance(self, name: str, points_lps_mm: np.ndarray) -> np.ndarray:
        """Signed distance (mm, negative inside) from LPS mm points (N, 3) to a solid's surface.

        Exact inside the solid, and outside except near creases (see module docstring).
        """
        pts = np.asarray(points_lps_mm, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise SampleError(f"points_lps_mm must have shape (N, 3), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise SampleError("points_lps_mm contains NaN or infinite values")
        pts = np.ascontiguousarray(pts)
        out = np.full(len(pts), np.inf)
        for part in self._get(name)["parts"]:
            d = np.full(len(pts), -np.inf)
            for prim in part:
                d = np.maximum(d, primitive_sdf(prim, pts))
            out = np.minimum(out, d)
        return out

    def hu_at(self, points_lps_mm: np.ndarray) -> np.ndarray:
        """Noise-free, unblurred HU at LPS mm points (N, 3) by painting the structures."""
        pts = np.asarray(points_lps_mm, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise SampleError(f"points_lps_mm must have shape (N, 3), got {pts.shape}")
        hu = np.full(len(pts), AIR_HU)
        for name in self.structures:
            hu[self.signed_distance(name, pts) < 0.0] = self.hu_inside(name)
        return hu


def phantom_model(truth: Mapping[str, Any]) -> HeadPhantom:
    """The analytic model of a generated sample from its ``truth.json`` dictionary."""
    try:
        structures = truth["structures"]
    except (KeyError, TypeError):
        raise SampleError("truth has no 'structures' field; expected a truth.json dict") from None
    return HeadPhantom(structures)
