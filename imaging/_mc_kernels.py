"""Numba kernels of :mod:`~imaging.surface`: bit-packed, two-pass (count, then fill) marching cubes.

Design (in the spirit of flying edges, Schroeder, Maynard & Geveci 2015, IEEE LDAV, but on bits):

1. ``pack_*``: one pass over the volume writes the classification ``value >= level`` of every
   voxel as one bit, into rows of 64-bit words ``bits[r, q, w]`` over a *virtually padded* grid
   (padded index ``p = i + 1``, ``q = j + 1``, ``r = k + 1``; the pad is negative). The pad
   closes the surface where the object touches the volume border (watertight).
2. ``count_rows``: per row of cells ``(q, r)`` the active cells (corners not all equal) follow
   from word operations on the four voxel rows around it; the kernel counts triangles (case
   table) and the crossing edges the row owns (x: ``A ^ (A >> 1)``, y: ``A ^ A[q + 1]``,
   z: ``A ^ A[r + 1]``), plus per-word prefix counts so a vertex index is a popcount away.
3. prefix sums over rows give every row's first vertex and triangle (numpy).
4. ``fill_rows``: each row writes its vertices (linear interpolation, Lorensen & Cline 1987
   eq. 1, mapped through the voxel-to-LPS affine) and its triangles (vertex indices looked up
   from the owning row's prefix counts). Rows are independent: ``prange`` over slabs.

Cost is one read of the volume plus work proportional to the rows the surface crosses.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from scrubin.imaging._mc_table import EDGE_AXIS, EDGE_ORIGIN, NTRI, TRI_EDGES

if "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:  # skip the too-old TBB (and its warning)
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]


def tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(triangles per case, edges per case, edge origin, edge axis, edge row id dq + 2 dr)."""
    erow = EDGE_ORIGIN[:, 1] + 2 * EDGE_ORIGIN[:, 2]
    return (NTRI.astype(np.int64), TRI_EDGES.astype(np.int64), EDGE_ORIGIN.astype(np.int64),
            EDGE_AXIS.astype(np.int64), erow.astype(np.int64))

_ONE = np.uint64(1)
_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)


@intrinsic
def _popcount(typingctx, x):  # noqa: ANN001
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # noqa: ANN001
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _cttz(typingctx, x):  # noqa: ANN001
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # noqa: ANN001
        fn = builder.module.declare_intrinsic("llvm.cttz", [ir.IntType(64), ir.IntType(1)])
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return sig, codegen


@njit(cache=True, inline="always")
def _next(words: np.ndarray, w: int, nw: int) -> np.uint64:
    """Word ``w`` of the row shifted so that bit ``p`` holds bit ``p + 1``."""
    x = words[w] >> _ONE
    if w + 1 < nw:
        x |= words[w + 1] << np.uint64(63)
    return x


@njit(cache=True, inline="always")
def _pack_row(
    row: np.ndarray, thr: float, below: bool, tmp: np.ndarray, out: np.ndarray
) -> None:
    """Bits of ``row >= thr`` (``<=`` if below; bit i in ``tmp``), shifted by one into ``out``."""
    ni = row.shape[0]
    nfull = ni // 64
    for w in range(nfull):
        base = w * 64
        acc = np.uint64(0)
        if below:
            for b in range(64):
                acc |= np.uint64(row[base + b] <= thr) << np.uint64(b)
        else:
            for b in range(64):
                acc |= np.uint64(row[base + b] >= thr) << np.uint64(b)
        tmp[w] = acc
    if nfull * 64 < ni:
        acc = np.uint64(0)
        for b in range(ni - nfull * 64):
            x = row[nfull * 64 + b]
            acc |= np.uint64(x <= thr if below else x >= thr) << np.uint64(b)
        tmp[nfull] = acc
        nfull += 1
    carry = np.uint64(0)
    for w in range(nfull):
        out[w] = (tmp[w] << _ONE) | carry
        carry = tmp[w] >> np.uint64(63)
    if nfull < out.shape[0]:
        out[nfull] = carry


@njit(cache=True, parallel=True)
def pack_level(
    vol: np.ndarray, thr: float, below: bool, rowmask: np.ndarray, bits: np.ndarray
) -> None:
    """``bits[k+1, j+1]`` <- bits ``(vol[k, j, i] >= thr)`` (``<=`` if below) at ``i + 1``.

    ``thr`` should have the array's dtype (exact comparison, vectorised). Rows whose
    ``rowmask[k+1, j+1]`` is False are left zero. ``bits`` must be zero on entry.
    """
    nk, nj, ni = vol.shape
    nw = bits.shape[2]
    for k in prange(nk):
        tmp = np.zeros(nw, dtype=np.uint64)
        for j in range(nj):
            if rowmask[k + 1, j + 1]:
                _pack_row(vol[k, j], thr, below, tmp, bits[k + 1, j + 1])


@njit(cache=True, parallel=True)
def pack_mask(mask: np.ndarray, bits: np.ndarray) -> None:
    """``bits[k+1, j+1]`` <- bits of the 0/1 (uint8) ``mask[k, j, i]`` at ``i + 1``."""
    nk, nj, ni = mask.shape
    nw = bits.shape[2]
    one = np.uint8(1)
    for k in prange(nk):
        tmp = np.zeros(nw, dtype=np.uint64)
        for j in range(nj):
            _pack_row(mask[k, j], one, False, tmp, bits[k + 1, j + 1])


@njit(cache=True, parallel=True)
def dilate6(bits: np.ndarray, out: np.ndarray) -> None:
    """One step of 6-connected binary dilation on packed rows (pad stays as computed)."""
    nr, nq, nw = bits.shape
    for r in prange(nr):
        for q in range(nq):
            for w in range(nw):
                x = bits[r, q, w]
                y = x | (x << _ONE) | (x >> _ONE)
                if w > 0:
                    y |= bits[r, q, w - 1] >> np.uint64(63)
                if w + 1 < nw:
                    y |= bits[r, q, w + 1] << np.uint64(63)
                if q > 0:
                    y |= bits[r, q - 1, w]
                if q + 1 < nq:
                    y |= bits[r, q + 1, w]
                if r > 0:
                    y |= bits[r - 1, q, w]
                if r + 1 < nr:
                    y |= bits[r + 1, q, w]
                out[r, q, w] = y


@njit(cache=True, parallel=True)
def row_any(bits: np.ndarray, out: np.ndarray) -> None:
    """``out[r, q]`` <- any bit set in row ``(q, r)``."""
    nr, nq, nw = bits.shape
    for r in prange(nr):
        for q in range(nq):
            a = np.uint64(0)
            for w in range(nw):
                a |= bits[r, q, w]
            out[r, q] = a != 0


@njit(cache=True, inline="always")
def _corner_case(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, p: int) -> int:
    """Case index of the cell at padded column p from its four voxel rows.

    a = (q, r), b = (q + 1, r), c = (q, r + 1), d = (q + 1, r + 1); corner order of _mc_table.
    """
    w0 = p >> 6
    s0 = np.uint64(p & 63)
    w1 = (p + 1) >> 6
    s1 = np.uint64((p + 1) & 63)
    case = int((a[w0] >> s0) & _ONE)
    case |= int((a[w1] >> s1) & _ONE) << 1
    case |= int((b[w1] >> s1) & _ONE) << 2
    case |= int((b[w0] >> s0) & _ONE) << 3
    case |= int((c[w0] >> s0) & _ONE) << 4
    case |= int((c[w1] >> s1) & _ONE) << 5
    case |= int((d[w1] >> s1) & _ONE) << 6
    case |= int((d[w0] >> s0) & _ONE) << 7
    return case


@njit(cache=True, inline="always")
def _active_word(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, w: int, nw: int
) -> np.uint64:
    """Bits of the active cells (corners not all equal) among cells 64w .. 64w+63.

    Bits past the padded row are zero in every row, so cells there are never active.
    """
    na = _next(a, w, nw)
    nb = _next(b, w, nw)
    nc = _next(c, w, nw)
    nd = _next(d, w, nw)
    and4 = a[w] & b[w] & c[w] & d[w] & na & nb & nc & nd
    or4 = a[w] | b[w] | c[w] | d[w] | na | nb | nc | nd
    return or4 & ~and4


@njit(cache=True, parallel=True)
def count_rows(
    bits: np.ndarray, rowany: np.ndarray, ntri_table: np.ndarray, counts: np.ndarray
) -> None:
    """Per cell row (q, r): ``counts[r, q] = (triangles, x-, y-, z-vertices it owns)``."""
    nr, nq, nw = bits.shape
    for r in prange(nr - 1):
        for q in range(nq - 1):
            if not (rowany[r, q] or rowany[r, q + 1] or rowany[r + 1, q] or rowany[r + 1, q + 1]):
                continue
            a = bits[r, q]
            b = bits[r, q + 1]
            c = bits[r + 1, q]
            d = bits[r + 1, q + 1]
            ntri = 0
            nx = 0
            ny = 0
            nz = 0
            for w in range(nw):
                aw = a[w]
                nx += int(_popcount(aw ^ _next(a, w, nw)))
                ny += int(_popcount(aw ^ b[w]))
                nz += int(_popcount(aw ^ c[w]))
                act = _active_word(a, b, c, d, w, nw)
                while act:
                    t = _cttz(act)
                    act &= act - _ONE
                    p = w * 64 + int(t)
                    ntri += ntri_table[_corner_case(a, b, c, d, p)]
            counts[r, q, 0] = ntri
            counts[r, q, 1] = nx
            counts[r, q, 2] = ny
            counts[r, q, 3] = nz


@njit(cache=True, inline="always")
def _interp(
    vol: np.ndarray, level: float, sign: float, i0: int, j0: int, k0: int, axis: int, pos0: bool
) -> float:
    """Crossing parameter t in (0, 1) from voxel (i0, j0, k0) to its +axis neighbour.

    Lorensen & Cline 1987, eq. 1 (linear interpolation). ``pos0`` tells which end is positive.
    A pad voxel (outside the volume) or a voxel whose value disagrees with its class (masked
    out although >= level) puts the crossing midway. t is kept 1e-3 away from the ends so that
    no two vertices coincide.
    """
    nk, nj, ni = vol.shape
    i1 = i0 + (axis == 0)
    j1 = j0 + (axis == 1)
    k1 = k0 + (axis == 2)
    if i0 < 0 or j0 < 0 or k0 < 0 or i1 >= ni or j1 >= nj or k1 >= nk:
        return 0.5
    v0 = sign * float(vol[k0, j0, i0])
    v1 = sign * float(vol[k1, j1, i1])
    level = sign * level
    if pos0:
        if v1 >= level or v0 < level:
            return 0.5
    elif v0 >= level or v1 < level:
        return 0.5
    t = (level - v0) / (v1 - v0)
    if t < 1e-3:
        t = 1e-3
    elif t > 1.0 - 1e-3:
        t = 1.0 - 1e-3
    return t


@njit(cache=True, inline="always")
def _row_tables(
    bits: np.ndarray, counts: np.ndarray, vstart: np.ndarray, r: int, q: int,
    xm: np.ndarray, base: np.ndarray,
) -> None:
    """Crossing masks and first-vertex offsets per word of the four rows a cell row touches.

    Row id ``dq + 2 dr`` is row ``(q + dq, r + dr)``; ``xm[id, axis, w]`` are its crossing
    edges along ``axis`` in word ``w``; ``base[id, axis, w]`` the index of the first of them.
    """
    nr, nq, nw = bits.shape
    for rid in range(4):
        rr = r + (rid >> 1)
        qq = q + (rid & 1)
        a = bits[rr, qq]
        off = vstart[rr, qq]
        for axis in range(3):
            for w in range(nw):
                if axis == 0:
                    m = a[w] ^ _next(a, w, nw)
                elif axis == 1:
                    m = a[w] ^ bits[rr, qq + 1, w] if qq + 1 < nq else a[w]
                else:
                    m = a[w] ^ bits[rr + 1, qq, w] if rr + 1 < nr else a[w]
                xm[rid, axis, w] = m
                base[rid, axis, w] = off
                off += int(_popcount(m))


@njit(cache=True, parallel=True)
def fill_rows(
    vol: np.ndarray,
    level: float,
    sign: float,
    bits: np.ndarray,
    counts: np.ndarray,
    vstart: np.ndarray,
    tstart: np.ndarray,
    affine: np.ndarray,
    flip: bool,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    verts: np.ndarray,
    faces: np.ndarray,
) -> None:
    """Write each cell row's vertices (LPS mm) and triangles at its precomputed offsets.

    ``tables`` = (ntri, tri_edges, edge_origin, edge_axis, edge_row) from :func:`tables` -
    passed as arguments so numba's on-disk cache never holds a stale case table.
    """
    ntri_t, tri_t, eo_t, ea_t, erow_t = tables
    nr, nq, nw = bits.shape
    for r in prange(nr - 1):
        xm = np.zeros((4, 3, nw), dtype=np.uint64)
        base = np.zeros((4, 3, nw), dtype=np.int64)
        for q in range(nq - 1):
            if counts[r, q, 0] == 0:
                continue
            _row_tables(bits, counts, vstart, r, q, xm, base)
            a = bits[r, q]
            b = bits[r, q + 1]
            c = bits[r + 1, q]
            d = bits[r + 1, q + 1]
            # ---- vertices owned by this row (row id 0): x edges, then y, then z
            for axis in range(3):
                for w in range(nw):
                    m = xm[0, axis, w]
                    v = base[0, axis, w]
                    while m:
                        t0 = _cttz(m)
                        m &= m - _ONE
                        p = w * 64 + int(t0)
                        pos0 = ((a[w] >> t0) & _ONE) != 0
                        i0 = p - 1
                        j0 = q - 1
                        k0 = r - 1
                        t = _interp(vol, level, sign, i0, j0, k0, axis, pos0)
                        fi = i0 + (t if axis == 0 else 0.0)
                        fj = j0 + (t if axis == 1 else 0.0)
                        fk = k0 + (t if axis == 2 else 0.0)
                        for x in range(3):
                            verts[v, x] = (
                                affine[x, 0] * fi + affine[x, 1] * fj + affine[x, 2] * fk
                                + affine[x, 3]
                            )
                        v += 1
            # ---- triangles of the active cells
            f = tstart[r, q]
            for w in range(nw):
                act = _active_word(a, b, c, d, w, nw)
                while act:
                    t1 = _cttz(act)
                    act &= act - _ONE
                    p = w * 64 + int(t1)
                    case = _corner_case(a, b, c, d, p)
                    for s in range(ntri_t[case]):
                        for x in range(3):
                            e = tri_t[case, 3 * s + x]
                            rid = erow_t[e]
                            ax = ea_t[e]
                            pp = p + eo_t[e, 0]
                            ww = pp >> 6
                            below = xm[rid, ax, ww] & ((_ONE << np.uint64(pp & 63)) - _ONE)
                            idx = base[rid, ax, ww] + int(_popcount(below))
                            if flip:
                                faces[f, 2 - x] = idx
                            else:
                                faces[f, x] = idx
                        f += 1
