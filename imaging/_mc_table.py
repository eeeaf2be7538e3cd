"""Marching-cubes case table built from a face rule, so it is consistent by construction.

Lorensen & Cline (1987, SIGGRAPH 21(4):163-169) triangulate each of the 256 sign patterns of a
cube's corners; the original table used complement symmetry and leaves holes between cells
whose shared face is ambiguous (Dürst 1988). Here the table is *generated*: on every face the
iso-contour segments are fixed by one rule that depends only on that face's four signs -
"each maximal run of positive corners (value >= level) around the face is cut off by its own
segment", i.e. positive corners on an ambiguous face are separated. Two cells that share a face
see the same signs and so draw the same segments: the surface is closed (watertight) wherever
the object is closed. Segments are directed (entering -> leaving the positive run, walking
counter-clockwise seen from outside the cube); every crossing point then has one incoming and
one outgoing segment, the segments form directed cycles, and each cycle is fan-triangulated.
The cycle direction makes every triangle's right-hand normal point from the positive
(inside, >= level) side to the negative side: outward for an object brighter than its
surroundings.

Corner ``c`` has offset ``CORNERS[c] = (di, dj, dk)`` in voxel index space; case bit ``c`` is
set when corner ``c`` is positive. Edge ``e`` starts at offset ``EDGE_ORIGIN[e]`` and runs
along axis ``EDGE_AXIS[e]`` (0 = i, 1 = j, 2 = k).

The case table (``NTRI``, ``TRI_EDGES``) is generated once by :func:`render_cases_module` into
:mod:`scrubin.imaging._mc_cases` (``python -m scrubin.imaging._mc_table``) instead of at every
import; tests/imaging/test_mc_table.py regenerates it and compares.
"""

from __future__ import annotations

import numpy as np

CORNERS = np.array(
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]],
    dtype=np.int64,
)
# Edge e joins corners EDGES[e] = (a, b), a being the one with the smaller coordinate.
EDGES = np.array(
    [[0, 1], [1, 2], [3, 2], [0, 3], [4, 5], [5, 6], [7, 6], [4, 7], [0, 4], [1, 5], [2, 6],
     [3, 7]],
    dtype=np.int64,
)
EDGE_ORIGIN = CORNERS[EDGES[:, 0]]
EDGE_AXIS = np.argmax(CORNERS[EDGES[:, 1]] - CORNERS[EDGES[:, 0]], axis=1).astype(np.int64)

# Faces as corner cycles, counter-clockwise seen from outside the cube (outward normal).
_FACES = [
    [0, 3, 2, 1],  # k = 0, normal -k
    [4, 5, 6, 7],  # k = 1, normal +k
    [0, 1, 5, 4],  # j = 0, normal -j
    [3, 7, 6, 2],  # j = 1, normal +j
    [0, 4, 7, 3],  # i = 0, normal -i
    [1, 2, 6, 5],  # i = 1, normal +i
]


def _edge_of(a: int, b: int) -> int:
    for e, (x, y) in enumerate(EDGES):
        if {int(x), int(y)} == {a, b}:
            return e
    raise ValueError(f"corners {a}, {b} share no edge")


def _check_faces() -> None:
    """Each face cycle must run counter-clockwise about its outward normal."""
    centre = np.full(3, 0.5)
    for face in _FACES:
        p = CORNERS[face].astype(float)
        normal = np.cross(p[1] - p[0], p[2] - p[1])
        assert np.dot(normal, p.mean(axis=0) - centre) > 0, face


def _case_triangles(case: int) -> list[tuple[int, int, int]]:
    """Triangles (edge triples) of one sign pattern, by the face rule of the module docstring."""
    positive = [(case >> c) & 1 for c in range(8)]
    nxt: dict[int, int] = {}
    for face in _FACES:
        signs = [positive[c] for c in face]
        if all(signs) or not any(signs):
            continue
        for m in range(4):
            # a positive run starts at corner m when the previous corner is negative
            if signs[m] and not signs[m - 1]:
                enter = _edge_of(face[m - 1], face[m])
                n = m
                while signs[(n + 1) % 4]:
                    n = (n + 1) % 4
                leave = _edge_of(face[n], face[(n + 1) % 4])
                # directed enter -> leave: seen from outside the positive corners lie on the
                # segment's right, which gives right-hand normals pointing to the negative side
                assert enter not in nxt
                nxt[enter] = leave
    triangles: list[tuple[int, int, int]] = []
    todo = set(nxt)
    while todo:
        start = min(todo)
        cycle = [start]
        todo.discard(start)
        e = nxt[start]
        while e != start:
            cycle.append(e)
            todo.discard(e)
            e = nxt[e]
        tris = _triangulate(cycle)
        if tris is None:
            raise AssertionError(f"case {case}: no manifold triangulation of cycle {cycle}")
        triangles.extend(tris)
    return triangles


def _faces_of_edge(e: int) -> set[int]:
    a, b = (int(x) for x in EDGES[e])
    return {f for f, face in enumerate(_FACES) if a in face and b in face}


def _diagonal_ok(e1: int, e2: int) -> bool:
    """A diagonal must cross the cell's interior: its end edges share no cube face.

    Otherwise the diagonal lies in a face, where the neighbouring cell may draw the same
    segment, and the edge would be shared by four triangles (non-manifold).
    """
    return not (_faces_of_edge(e1) & _faces_of_edge(e2))


def _triangulate(poly: list[int]) -> list[tuple[int, int, int]] | None:
    """A triangulation of a cycle (orientation kept) whose diagonals all pass through the
    cell's interior; None if there is none."""
    n = len(poly)
    if n == 3:
        return [(poly[0], poly[1], poly[2])]
    a, b = poly[0], poly[1]
    for k in range(2, n):
        c = poly[k]
        if k != 2 and not _diagonal_ok(b, c):
            continue
        if k != n - 1 and not _diagonal_ok(c, a):
            continue
        left = _triangulate(poly[1: k + 1]) if k > 2 else []
        right = _triangulate([a] + poly[k:]) if k < n - 1 else []
        if left is None or right is None:
            continue
        return [(a, b, c)] + left + right
    return None


def build_table() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(ntri[256], tri_edges[256, 3 * max_tri])`` (unused slots are -1)."""
    _check_faces()
    cases = [_case_triangles(c) for c in range(256)]
    max_tri = max(len(t) for t in cases)
    ntri = np.array([len(t) for t in cases], dtype=np.int64)
    table = np.full((256, 3 * max_tri), -1, dtype=np.int64)
    for c, tris in enumerate(cases):
        flat = [e for tri in tris for e in tri]
        table[c, : len(flat)] = flat
    return ntri, table


def render_cases_module() -> str:
    """Source text of :mod:`scrubin.imaging._mc_cases`: :func:`build_table`'s ``TRI_EDGES``
    written out as a literal (one row per case), so importing the table costs no generation
    (~35 ms CPU at every start-up otherwise). ``python -m scrubin.imaging._mc_table`` rewrites
    the file; tests/imaging/test_mc_table.py checks that it matches this output."""
    _, table = build_table()
    rows = []
    for c in range(256):
        cells = ", ".join(f"{int(e):2d}" for e in table[c])
        rows.append(f"        [{cells}],  # {c:3d} = 0b{c:08b}")
    return "\n".join([
        '"""Marching-cubes case table: GENERATED by ``python -m scrubin.imaging._mc_table`` from',
        "the face rule in :mod:`scrubin.imaging._mc_table` (do not edit; regenerate).",
        "",
        "``TRI_EDGES[case]`` lists the edges of the case's triangles, three per triangle, padded",
        "with -1; bit ``c`` of ``case`` (commented in binary) is set when corner ``c`` is",
        "positive (value >= level).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import numpy as np",
        "",
        "TRI_EDGES = np.array(",
        "    [",
        *rows,
        "    ],",
        "    dtype=np.int64,",
        ")",
        "#: Triangles per case.",
        "NTRI = np.count_nonzero(TRI_EDGES >= 0, axis=1).astype(np.int64) // 3",
        "",
    ])


if __name__ == "__main__":  # python -m scrubin.imaging._mc_table: regenerate _mc_cases.py
    from pathlib import Path

    from scrubin.imaging.fileio import write_atomic

    _target = Path(__file__).with_name("_mc_cases.py")
    _text = render_cases_module()
    write_atomic(_target, lambda tmp: tmp.write_text(_text, encoding="utf-8"))
    print(f"wrote {_target}")
else:  # generated once by render_cases_module, not at every import
    from scrubin.imaging._mc_cases import NTRI as NTRI
    from scrubin.imaging._mc_cases import TRI_EDGES as TRI_EDGES
