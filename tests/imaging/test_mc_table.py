"""The marching-cubes case table shipped in imaging/_mc_cases.py is the face rule's output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scrubin.imaging import _mc_cases, _mc_table


def test_shipped_table_is_the_generated_one() -> None:
    # Regenerating from the face rule gives the committed file byte for byte ...
    text = Path(_mc_cases.__file__).read_text(encoding="utf-8")
    assert text == _mc_table.render_cases_module(), (
        "imaging/_mc_cases.py is stale: run python -m scrubin.imaging._mc_table")
    # ... and the arrays the kernels import equal build_table()'s, dtype included.
    ntri, table = _mc_table.build_table()
    assert _mc_table.TRI_EDGES.dtype == table.dtype == np.int64
    assert _mc_table.NTRI.dtype == ntri.dtype == np.int64
    np.testing.assert_array_equal(_mc_table.TRI_EDGES, table)
    np.testing.assert_array_equal(_mc_table.NTRI, ntri)


def test_table_facts_known_without_the_generator() -> None:
    # Lorensen & Cline: no triangle when all corners are on one side; one corner cut off by
    # one triangle through its three edges; a face of four positive corners by two.
    assert _mc_table.NTRI[0] == _mc_table.NTRI[255] == 0
    for c in range(8):
        tri = _mc_table.TRI_EDGES[1 << c]
        assert _mc_table.NTRI[1 << c] == 1 and np.all(tri[3:] == -1)
        ends = {int(x) for e in tri[:3] for x in _mc_table.EDGES[e]}
        assert c in ends and len(ends) == 4  # the corner and its three neighbours
    assert _mc_table.NTRI[0b00001111] == 2  # the k = 0 face positive: one quad
