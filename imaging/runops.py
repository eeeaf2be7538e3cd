"""Operations on binary regions beyond labelling: hole filling, set algebra, morphology.

Works with the run representation of :mod:`scrubin.imaging.regions` (and dense boolean masks indexed
``[k, j, i]``):

* hole filling (3-D or per slice) on masks or directly on runs;
* union / intersection / difference of run sets by a weighted coverage sweep per row;
* box erosion and dilation, dense (separable running counts) and on runs (intervals shrink
  or grow along ``i``; across rows a voxel survives erosion when set in every row of the
  window, dilation takes any row). Both treat voxels outside the grid as absent from the
  window (clipped), so an object cut by the field of view is not eroded from that border.
  The dense kernels are separable sliding windows with running counts, so their cost does
  not depend on the radius (the idea of van Herk 1992 / Gil & Werman 1993); radii come from
  millimetres and the voxel spacing (:func:`radius_voxels`), so anisotropic voxels are
  handled.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from scrubin.imaging.errors import SegmentationError
from scrubin.imaging.regions import (
    _PARALLEL,
    Runs,
    _check_mask,
    label_runs,
    mask_runs,
    paint_runs,
    select_runs,
)


# --------------------------------------------------------------------------- hole filling
def holes_runs(mask: np.ndarray, connectivity: int = 26, planar: bool = False) -> Runs:
    """Runs of the holes of ``mask``: background not connected to the grid border.

    The background is labelled with the connectivity complementary to the foreground's
    (26 <-> 6, 18 -> 6), the standard pairing that keeps the digital topology consistent
    (Kong & Rosenfeld 1989). ``planar`` fills per slice (2-D holes of each ``k`` slice).
    """
    return _holes_of_background(mask_runs(mask, value=False), connectivity, planar)


def _holes_of_background(background: Runs, connectivity: int, planar: bool) -> Runs:
    bg_conn = 6 if connectivity in (18, 26) else 26
    lab = label_runs(background, bg_conn, planar=planar)
    outside = lab.touching_border(planar=planar)
    return select_runs(lab.runs, ~outside[lab.labels])


@nb.njit(cache=True)
def _complement(row_ptr, start, stop, NI, count_only, out_ptr, out_start, out_stop):  # noqa: ANN001
    rows = row_ptr.size - 1
    p = 0
    for r in range(rows):
        if not count_only:
            out_ptr[r] = p
        cur = 0
        for a in range(row_ptr[r], row_ptr[r + 1]):
            if start[a] > cur:
                if not count_only:
                    out_start[p] = cur
                    out_stop[p] = start[a]
                p += 1
            cur = stop[a]
        if cur < NI:
            if not count_only:
                out_start[p] = cur
                out_stop[p] = NI
            p += 1
    if not count_only:
        out_ptr[rows] = p
    return p


def complement_runs(runs: Runs) -> Runs:
    """The background of ``runs`` on the same grid, as runs (no voxel scan)."""
    NI = runs.shape[2]
    dummy64 = np.zeros(1, dtype=np.int64)
    dummy32 = np.zeros(1, dtype=np.int32)
    n = _complement(runs.row_ptr, runs.start, runs.stop, NI, True, dummy64, dummy32, dummy32)
    row_ptr = np.empty_like(runs.row_ptr)
    start = np.empty(n, dtype=np.int32)
    stop = np.empty(n, dtype=np.int32)
    _complement(runs.row_ptr, runs.start, runs.stop, NI, False, row_ptr, start, stop)
    return Runs(runs.shape, row_ptr, start, stop)


def crop_runs(runs: Runs, box: tuple[slice, slice, slice]) -> Runs:
    """The runs inside ``box`` (``(k, j, i)`` slices with explicit starts/stops), re-based.

    Runs are clipped to the box's ``i`` range; rows outside the box are dropped.
    """
    K, J, _ = runs.shape
    ks, js, is_ = box
    Kc, Jc, Ic = ks.stop - ks.start, js.stop - js.start, is_.stop - is_.start
    rr = np.repeat(np.arange(K * J), np.diff(runs.row_ptr))
    k, j = rr // J, rr % J
    st = np.maximum(runs.start, is_.start) - is_.start
    sp = np.minimum(runs.stop, is_.stop) - is_.start
    keep = (k >= ks.start) & (k < ks.stop) & (j >= js.start) & (j < js.stop) & (sp > st)
    new_rows = (k[keep] - ks.start) * Jc + (j[keep] - js.start)
    counts = np.bincount(new_rows, minlength=Kc * Jc)
    row_ptr = np.zeros(Kc * Jc + 1, dtype=np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    return Runs((Kc, Jc, Ic), row_ptr, st[keep].astype(np.int32), sp[keep].astype(np.int32))


def fill_holes_runs(runs: Runs, connectivity: int = 26, planar: bool = False
                    ) -> tuple[Runs, Runs, tuple[int, int, int]]:
    """Holes of a run set, computed in its bounding box without touching voxels.

    Returns ``(object, holes, offset)``: the object's and the holes' runs on the bounding-box
    grid and the box's ``(k0, j0, i0)`` in the original grid (paint both with that offset).
    Same definition of a hole as :func:`fill_holes` (``planar``: per ``k`` slice).
    """
    box = runs.bbox()
    if box is None:
        return runs, runs, (0, 0, 0)
    obj = crop_runs(runs, box)
    holes = _holes_of_background(complement_runs(obj), connectivity, planar)
    return obj, holes, (box[0].start, box[1].start, box[2].start)


def fill_holes(
    mask: np.ndarray, connectivity: int = 26, planar: bool = False, axis: int = 0
) -> np.ndarray:
    """Fill the holes of a boolean mask (3-D, or per slice along ``axis`` with ``planar``).

    A hole is a background component that does not reach the border of the mask's bounding
    box; the work is done in that box, so its cost follows the object, not the volume.
    Per-slice filling (``planar=True``) fills every background region enclosed within its own
    slice perpendicular to ``axis``; it contains every 3-D hole (a background path to the
    border inside one slice is also a 3-D path), and also closes tubes such as an airway that
    open at the volume border.
    """
    _check_mask(mask)
    if axis not in (0, 1, 2):
        raise SegmentationError(f"axis must be 0, 1 or 2, got {axis!r}")
    box = mask_runs(mask).bbox()
    out = mask.copy()
    if box is None:
        return out
    crop = mask[box]
    if planar and axis != 0:
        crop = np.ascontiguousarray(np.moveaxis(crop, axis, 0))
    holes = holes_runs(crop, connectivity, planar=planar)
    if planar and axis != 0:
        filled = paint_runs(holes)
        out[box] |= np.moveaxis(filled, 0, axis)
    else:
        paint_runs(holes, out=out, offset=tuple(s.start for s in box))  # type: ignore[arg-type]
    return out



# --------------------------------------------------------------------------- morphology
@nb.njit(cache=True, parallel=_PARALLEL)
def _box_i(src, dst, r, erode):  # noqa: ANN001
    K, J, NI = src.shape
    for k in nb.prange(K):
        cnt = np.zeros(NI + 1, dtype=np.int32)
        for j in range(J):
            for i in range(NI):
                cnt[i + 1] = cnt[i] + src[k, j, i]
            for i in range(NI):
                lo = max(i - r, 0)
                hi = min(i + r + 1, NI)
                c = cnt[hi] - cnt[lo]
                dst[k, j, i] = (c == hi - lo) if erode else (c > 0)


@nb.njit(cache=True, parallel=_PARALLEL)
def _box_j(src, dst, r, erode):  # noqa: ANN001
    K, J, NI = src.shape
    for k in nb.prange(K):
        cnt = np.zeros(NI, dtype=np.int32)
        for j in range(min(r, J)):
            for i in range(NI):
                cnt[i] += src[k, j, i]
        for j in range(J):
            if j + r < J:
                for i in range(NI):
                    cnt[i] += src[k, j + r, i]
            if j - r - 1 >= 0:
                for i in range(NI):
                    cnt[i] -= src[k, j - r - 1, i]
            n = min(j + r + 1, J) - max(j - r, 0)
            for i in range(NI):
                dst[k, j, i] = (cnt[i] == n) if erode else (cnt[i] > 0)


@nb.njit(cache=True, parallel=_PARALLEL)
def _box_k(src, dst, r, erode):  # noqa: ANN001
    K, J, NI = src.shape
    for j in nb.prange(J):
        cnt = np.zeros(NI, dtype=np.int32)
        for k in range(min(r, K)):
            for i in range(NI):
                cnt[i] += src[k, j, i]
        for k in range(K):
            if k + r < K:
                for i in range(NI):
                    cnt[i] += src[k + r, j, i]
            if k - r - 1 >= 0:
                for i in range(NI):
                    cnt[i] -= src[k - r - 1, j, i]
            n = min(k + r + 1, K) - max(k - r, 0)
            for i in range(NI):
                dst[k, j, i] = (cnt[i] == n) if erode else (cnt[i] > 0)


def _radii(radius: int | tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        r = (radius,) * 3 if np.ndim(radius) == 0 else tuple(radius)  # type: ignore[arg-type]
    except TypeError:
        r = ()
    if len(r) != 3 or any(int(x) != x or x < 0 for x in r):
        raise SegmentationError(
            f"morphology radius must be a non-negative int or 3 of them (k, j, i), got {radius!r}"
        )
    return tuple(int(x) for x in r)  # type: ignore[return-value]


def _box(mask: np.ndarray, radius: int | tuple[int, int, int], erode: bool) -> np.ndarray:
    _check_mask(mask)
    rk, rj, ri = _radii(radius)
    a = np.ascontiguousarray(mask).view(np.uint8)
    b = np.empty_like(a)
    cur, nxt = a, b
    first = True
    for r, fn in ((ri, _box_i), (rj, _box_j), (rk, _box_k)):
        if r == 0:
            continue
        fn(cur, nxt, r, erode)
        if first:
            cur, nxt = nxt, np.empty_like(a)
            first = False
        else:
            cur, nxt = nxt, cur
    out = cur if not first else a.copy()
    return out.view(np.bool_)


def erode(mask: np.ndarray, radius: int | tuple[int, int, int]) -> np.ndarray:
    """Binary erosion by a box of half-widths ``radius`` voxels (per axis ``(k, j, i)``).

    Voxels outside the array are ignored (not treated as background).
    """
    return _box(mask, radius, erode=True)


def dilate(mask: np.ndarray, radius: int | tuple[int, int, int]) -> np.ndarray:
    """Binary dilation by a box of half-widths ``radius`` voxels (per axis ``(k, j, i)``)."""
    return _box(mask, radius, erode=False)


def opening(mask: np.ndarray, radius: int | tuple[int, int, int]) -> np.ndarray:
    """Erosion then dilation (removes structures thinner than ``2 * radius + 1`` voxels)."""
    return dilate(erode(mask, radius), radius)


def closing(mask: np.ndarray, radius: int | tuple[int, int, int]) -> np.ndarray:
    """Dilation then erosion (closes gaps narrower than ``2 * radius + 1`` voxels)."""
    return erode(dilate(mask, radius), radius)


def radius_voxels(radius_mm: float, spacing_kji: np.ndarray) -> tuple[int, int, int]:
    """Box half-widths in voxels ``(k, j, i)`` approximating ``radius_mm`` on each axis."""
    if not np.isfinite(radius_mm) or radius_mm < 0:
        raise SegmentationError(
            f"morphology radius must be a finite mm value >= 0, got {radius_mm}"
        )
    sp = np.asarray(spacing_kji, dtype=np.float64)
    return tuple(int(max(round(radius_mm / s), 0)) for s in sp)  # type: ignore[return-value]


# --------------------------------------------------------------------------- run set algebra
_UNION, _INTERSECT, _SUBTRACT = 0, 1, 2


@nb.njit(cache=True)
def _merge2(as_, ae, a0, a1, bs, be, b0, b1, op, os_, oe, p):  # noqa: ANN001
    """Two sorted, disjoint interval lists -> union / intersection / a minus b, appended at
    ``p`` of ``os_, oe`` (a two-pointer merge, no sorting). Returns the new end."""
    i, j = a0, b0
    if op == _INTERSECT:
        while i < a1 and j < b1:
            lo = max(as_[i], bs[j])
            hi = min(ae[i], be[j])
            if lo < hi:
                os_[p] = lo
                oe[p] = hi
                p += 1
            if ae[i] < be[j]:
                i += 1
            else:
                j += 1
    elif op == _UNION:
        start = p
        while i < a1 or j < b1:
            if j >= b1 or (i < a1 and as_[i] <= bs[j]):
                s0, e0 = as_[i], ae[i]
                i += 1
            else:
                s0, e0 = bs[j], be[j]
                j += 1
            if p > start and s0 <= oe[p - 1]:
                if e0 > oe[p - 1]:
                    oe[p - 1] = e0
            else:
                os_[p] = s0
                oe[p] = e0
                p += 1
    else:
        for i in range(a0, a1):
            s0, e0 = as_[i], ae[i]
            while j < b1 and be[j] <= s0:
                j += 1
            cur = s0
            jj = j
            while jj < b1 and bs[jj] < e0:
                if bs[jj] > cur:
                    os_[p] = cur
                    oe[p] = bs[jj]
                    p += 1
                cur = max(cur, be[jj])
                jj += 1
            if cur < e0:
                os_[p] = cur
                oe[p] = e0
                p += 1
    return p


@nb.njit(cache=True)
def _combine(pa, sa, ea, pb, sb, eb, op, out_ptr, out_s, out_e):  # noqa: ANN001
    p = 0
    for r in range(pa.size - 1):
        out_ptr[r] = p
        p = _merge2(sa, ea, pa[r], pa[r + 1], sb, eb, pb[r], pb[r + 1], op, out_s, out_e, p)
    out_ptr[pa.size - 1] = p
    return p


def _combine_runs(a: Runs, b: Runs, op: int) -> Runs:
    if a.shape != b.shape:
        raise SegmentationError(f"run sets on different grids: {a.shape} vs {b.shape}")
    cap = a.count + b.count + 1
    row_ptr = np.empty_like(a.row_ptr)
    s = np.empty(cap, dtype=np.int32)
    e = np.empty(cap, dtype=np.int32)
    n = _combine(a.row_ptr, a.start, a.stop, b.row_ptr, b.start, b.stop, op, row_ptr, s, e)
    return Runs(a.shape, row_ptr, s[:n].copy(), e[:n].copy())


def union_runs(a: Runs, b: Runs) -> Runs:
    """Voxels in ``a`` or ``b`` (same grid)."""
    return _combine_runs(a, b, _UNION)


def intersect_runs(a: Runs, b: Runs) -> Runs:
    """Voxels in ``a`` and ``b`` (same grid)."""
    return _combine_runs(a, b, _INTERSECT)


def subtract_runs(a: Runs, b: Runs) -> Runs:
    """Voxels in ``a`` but not in ``b`` (same grid)."""
    return _combine_runs(a, b, _SUBTRACT)


# --------------------------------------------------------------------------- run morphology
@nb.njit(cache=True)
def _window_rows(row_ptr, s, e, K, J, axis, r, erode, out_ptr, out_s, out_e):  # noqa: ANN001
    """Box erosion/dilation across rows (``axis`` 0: along k, 1: along j), half-width ``r``.

    A voxel of row (k, j) survives erosion when it is set in every row of the window that
    lies inside the grid (rows outside are ignored, like the dense kernels), and is set by
    dilation when it is set in any row of the window. Rows are combined pairwise by
    two-pointer merges.
    """
    width = 0
    for q in range(K * J):
        width = max(width, row_ptr[q + 1] - row_ptr[q])
    width = width * (2 * r + 1) + 1
    bs = np.empty(width, dtype=np.int32)
    be = np.empty(width, dtype=np.int32)
    cs = np.empty(width, dtype=np.int32)
    ce = np.empty(width, dtype=np.int32)
    op = _INTERSECT if erode else _UNION
    n_max = K if axis == 0 else J
    p = 0
    for k in range(K):
        for j in range(J):
            row = k * J + j
            out_ptr[row] = p
            c = k if axis == 0 else j
            lo = max(c - r, 0)
            hi = min(c + r, n_max - 1)
            if erode:
                empty = False
                for d in range(lo, hi + 1):
                    q = d * J + j if axis == 0 else k * J + d
                    if row_ptr[q] == row_ptr[q + 1]:
                        empty = True
                        break
                if empty:
                    continue
            q = lo * J + j if axis == 0 else k * J + lo
            n = 0
            for a in range(row_ptr[q], row_ptr[q + 1]):
                bs[n] = s[a]
                be[n] = e[a]
                n += 1
            for d in range(lo + 1, hi + 1):
                q = d * J + j if axis == 0 else k * J + d
                n = _merge2(bs, be, 0, n, s, e, row_ptr[q], row_ptr[q + 1], op, cs, ce, 0)
                bs, cs = cs, bs
                be, ce = ce, be
                if n == 0 and erode:
                    break
            for a in range(n):
                out_s[p] = bs[a]
                out_e[p] = be[a]
                p += 1
    out_ptr[K * J] = p
    return p


@nb.njit(cache=True)
def _shift_i(row_ptr, s, e, NI, r, erode, out_ptr, out_s, out_e):  # noqa: ANN001
    """Box erosion/dilation along i (runs shrink or grow by ``r``; the array ends are kept)."""
    p = 0
    for row in range(row_ptr.size - 1):
        out_ptr[row] = p
        for a in range(row_ptr[row], row_ptr[row + 1]):
            if erode:
                a0 = s[a] + r if s[a] > 0 else 0
                a1 = e[a] - r if e[a] < NI else NI
                if a0 < a1:
                    out_s[p] = a0
                    out_e[p] = a1
                    p += 1
            else:
                a0 = max(s[a] - r, 0)
                a1 = min(e[a] + r, NI)
                if p > out_ptr[row] and a0 <= out_e[p - 1]:
                    out_e[p - 1] = max(out_e[p - 1], a1)
                else:
                    out_s[p] = a0
                    out_e[p] = a1
                    p += 1
    out_ptr[row_ptr.size - 1] = p
    return p


def _runs_box(runs: Runs, radius: int | tuple[int, int, int], erode: bool) -> Runs:
    rk, rj, ri = _radii(radius)
    K, J, NI = runs.shape
    cur = runs
    if ri:
        row_ptr = np.empty_like(cur.row_ptr)
        s = np.empty(cur.count, dtype=np.int32)
        e = np.empty(cur.count, dtype=np.int32)
        n = _shift_i(cur.row_ptr, cur.start, cur.stop, NI, ri, erode, row_ptr, s, e)
        cur = Runs(cur.shape, row_ptr, s[:n].copy(), e[:n].copy())
    for axis, r in ((1, rj), (0, rk)):
        if not r:
            continue
        cap = cur.count * (2 * r + 1) + 1
        row_ptr = np.empty_like(cur.row_ptr)
        s = np.empty(cap, dtype=np.int32)
        e = np.empty(cap, dtype=np.int32)
        n = _window_rows(cur.row_ptr, cur.start, cur.stop, K, J, axis, r, erode, row_ptr, s, e)
        cur = Runs(cur.shape, row_ptr, s[:n].copy(), e[:n].copy())
    return cur


def erode_runs(runs: Runs, radius: int | tuple[int, int, int]) -> Runs:
    """:func:`erode` on runs: no voxel pass, cost proportional to the number of runs."""
    return _runs_box(runs, radius, erode=True)


def dilate_runs(runs: Runs, radius: int | tuple[int, int, int]) -> Runs:
    """:func:`dilate` on runs (the grid bounds the result)."""
    return _runs_box(runs, radius, erode=False)
