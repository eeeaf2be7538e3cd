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
or a Hyperellipsoid" (Geometric Tools, 2013): the foot point from the root of the Lagrange
equation, with all degenerate (on-axis / on-plane) cases; the root is found by monotone
Newton iteration (bisection fallback) to machine precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np

from scrubin.imaging.errors import ImagingError

#: Primitive type codes shared with the voxeliser (:mod:`scrubin.samples.render`).
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
def _root(n0: float, n1: float, n2: float, q0: float, q1: float, u_hi: float) -> float:
    """Root u > 0 of the convex, decreasing F(u) = (n0/(u+q0))^2 + (n1/(u+q1))^2 + (n2/u)^2 - 1.

    This is Eberly's equation in ``u = s + 1`` (``q_i = r_i - 1 >= 0``), which keeps full
    relative precision when the root is close to the pole (points near a symmetry plane).
    Newton's method starts at a lower bound of the root (each term alone must be <= 1 there,
    so ``u >= max(n2, n0 - q0, n1 - q1)``; F >= 0 at that point); for a convex
    decreasing function every iterate stays left of the root, so they rise monotonically to
    it. Should 100 steps not converge, bisection on [u, u_hi] finishes.
    """
    u = max(n2, max(n0 - q0, n1 - q1))
    for _ in range(100):
        a0 = n0 / (u + q0)
        a1 = n1 / (u + q1)
        a2 = n2 / u
        f = a0 * a0 + a1 * a1 + a2 * a2 - 1.0
        if f <= 0.0:
            return u
        step = f / (2.0 * (a0 * a0 / (u + q0) + a1 * a1 / (u + q1) + a2 * a2 / u))
        if step <= 1e-16 * u:
            return u
        u += step
    lo, hi = u, max(u, u_hi)
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid == lo or mid == hi:
            break
        f = (n0 / (mid + q0)) ** 2 + (n1 / (mid + q1)) ** 2 + (n2 / mid) ** 2 - 1.0
        if f > 0.0:
            lo = mid
        elif f < 0.0:
            hi = mid
        else:
            return mid
    return 0.5 * (lo + hi)


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
                n0 = r0 * z0
                u = _root(n0, 0.0, z1, r0 - 1.0, 0.0, 1.0 if g < 0.0 else np.hypot(n0, z1))
                x0 = r0 * y0 / (u + r0 - 1.0)
                x1 = y1 / u
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
                    n0 = r0 * z0
                    n1 = r1 * z1
                    u_hi = 1.0 if g < 0.0 else _robust_len3(n0, n1, z2)
                    u = _root(n0, n1, z2, r0 - 1.0, r1 - 1.0, u_hi)
                    x0 = r0 * y0 / (u + r0 - 1.0)
                    x1 = r1 * y1 / (u + r1 - 1.0)
                    x2 = y2 / u
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


# --------------------------------------------------------------- box, capsule (inlined)
@numba.njit(cache=True, inline="always")
def box_sdf(par: np.ndarray, x: float, y: float, z: float) -> float:
    """Exact signed distance to the box ``par[0:3]`` (min corner) – ``par[3:6]`` (max), mm."""
    qx = max(par[0] - x, x - par[3])
    qy = max(par[1] - y, y - par[4])
    qz = max(par[2] - z, z - par[5])
    out = np.sqrt(max(qx, 0.0) ** 2 + max(qy, 0.0) ** 2 + max(qz, 0.0) ** 2)
    return out + min(max(qx, max(qy, qz)), 0.0)


@numba.njit(cache=True, inline="always")
def capsule_sdf(par: np.ndarray, x: float, y: float, z: float) -> float:
    """Exact signed distance to the capsule ``par[0:3]``–``par[3:6]`` of radius ``par[6]``, mm."""
    ax, ay, az = par[0], par[1], par[2]
    bx, by, bz = par[3] - ax, par[4] - ay, par[5] - az
    px, py, pz = x - ax, y - ay, z - az
    L2 = bx * bx + by * by + bz * bz
    tt = 0.0
    if L2 > 0.0:
        tt = min(max((px * bx + py * by + pz * bz) / L2, 0.0), 1.0)
    dx, dy, dz = px - tt * bx, py - tt * by, pz - tt * bz
    return np.sqrt(dx * dx + dy * dy + dz * dz) - par[6]


@numba.njit(cache=True)
def _prim_sdf(t: int, par: np.ndarray, x: float, y: float, z: float) -> float:
    """Exact signed distance of one encoded primitive (see :func:`encode_primitive`)."""
    if t == 0:
        o0 = int(par[6])
        o1 = int(par[7])
        o2 = 3 - o0 - o1
        loc = (x - par[0], y - par[1], z - par[2])
        e0, e1, e2 = par[3 + o0], par[3 + o1], par[3 + o2]
        # coordinates within 1e-12 * e0 of a symmetry plane are snapped onto it (distance is
        # 1-Lipschitz: changes it by < 1e-10 mm; avoids roots at denormal scales)
        tiny = 1e-12 * e0
        y0 = abs(loc[o0])
        y1 = abs(loc[o1])
        y2 = abs(loc[o2])
        y0 = 0.0 if y0 < tiny else y0
        y1 = 0.0 if y1 < tiny else y1
        y2 = 0.0 if y2 < tiny else y2
        d = _ellipsoid_dist(e0, e1, e2, y0, y1, y2)
        q = (y0 / e0) ** 2 + (y1 / e1) ** 2 + (y2 / e2) ** 2
        return -d if q < 1.0 else d
    if t == 1:
        return par[0] * x + par[1] * y + par[2] * z - par[3]
    if t == 2:
        return box_sdf(par, x, y, z)
    return capsule_sdf(par, x, y, z)


@numba.njit(cache=True, parallel=True)
def _solid_sdf(
    pts: np.ndarray, ptype: np.ndarray, ppar: np.ndarray, pstart: np.ndarray, pend: np.ndarray
) -> np.ndarray:
    """min over parts of max over the part's primitives of their signed distances."""
    n = pts.shape[0]
    out = np.empty(n)
    for m in numba.prange(n):
        x, y, z = pts[m, 0], pts[m, 1], pts[m, 2]
        best = np.inf
        for q in range(pstart.shape[0]):
            d = -np.inf
            for k in range(pstart[q], pend[q]):
                d = max(d, _prim_sdf(ptype[k], ppar[k], x, y, z))
            best = min(best, d)
        out[m] = best
    return out


# --------------------------------------------------------------------------- primitives
def encode_primitive(prim: Mapping[str, Any]) -> tuple[int, np.ndarray]:
    """(type code, 8 float parameters) of a primitive dict, as the numba kernels read it.

    ellipsoid: centre, semi-axes, indices of the largest and middle semi-axis;
    halfspace: normal, offset; box: min, max; capsule: p0, p1, radius.
    """
    kind = prim.get("type") if isinstance(prim, Mapping) else None
    if kind not in PRIM_CODES:
        raise SampleError(f"unknown primitive type {kind!r}; expected one of {sorted(PRIM_CODES)}")
    par = np.zeros(8)
    try:
        if kind == "ellipsoid":
            par[0:3] = prim["center"]
            par[3:6] = prim["semi_axes"]
            if not np.all(par[3:6] > 0):
                raise SampleError(f"ellipsoid semi_axes must be positive, got {par[3:6]}")
            order = np.argsort(-par[3:6], kind="stable")
            par[6:8] = order[:2]
        elif kind == "halfspace":
            par[0:3] = prim["normal"]
            par[3] = prim["offset"]
        elif kind == "box":
            par[0:3] = prim["min"]
            par[3:6] = prim["max"]
        else:
            par[0:3] = prim["p0"]
            par[3:6] = prim["p1"]
            par[6] = prim["radius"]
    except (KeyError, ValueError, TypeError) as exc:
        raise SampleError(f"malformed {kind} primitive {dict(prim)!r}: {exc}") from None
    return PRIM_CODES[kind], par


def encode_parts(
    parts: Sequence[Sequence[Mapping[str, Any]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ptype, ppar, pstart, pend) arrays of a union of intersections of primitives."""
    ptype, ppar, pstart, pend = [], [], [], []
    for part in parts:
        pstart.append(len(ptype))
        for prim in part:
            code, par = encode_primitive(prim)
            ptype.append(code)
            ppar.append(par)
        pend.append(len(ptype))
    return (
        np.asarray(ptype, np.int64),
        np.asarray(ppar, np.float64).reshape(-1, 8),
        np.asarray(pstart, np.int64),
        np.asarray(pend, np.int64),
    )


def primitive_sdf(prim: Mapping[str, Any], points_lps_mm: np.ndarray) -> np.ndarray:
    """Exact signed distance (mm, negative inside) of LPS mm points (N, 3) to one primitive."""
    pts = np.ascontiguousarray(points_lps_mm, dtype=np.float64)
    return _solid_sdf(pts, *encode_parts([[prim]]))


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
    """The analytic phantom described by ``truth["structures"]`` (see :mod:`~samples.phantom`).

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
        self._encoded: dict[str, tuple[np.ndarray, ...]] = {}

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
        if name not in self._encoded:
            self._encoded[name] = encode_parts(self._get(name)["parts"])
        return _solid_sdf(np.ascontiguousarray(pts), *self._encoded[name])

    def boundary_distance(self, names: Sequence[str], points_lps_mm: np.ndarray) -> np.ndarray:
        """Unsigned distance (mm) from LPS mm points (N, 3) to the nearest surface of the named
        solids: ``min_s |signed_distance(s, p)|``. For a surface extracted from the image this
        is its error against the analytic truth (a lower bound where a solid's surface runs
        inside another solid)."""
        if not names:
            raise SampleError("boundary_distance needs at least one structure name")
        return np.min([np.abs(self.signed_distance(n, points_lps_mm)) for n in names], axis=0)

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
