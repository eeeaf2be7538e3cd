"""``python -m scrubin.warm``: kernels compiled once land in numba's cache and serve later
processes (numba's cache is keyed by the source file's mtime and size and by the CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from scrubin.cli import main

SUMMARY = re.compile(r"\((\d+) signatures compiled now, (\d+) loaded from the cache\)")


def _warm(cache: Path, *args: str) -> tuple[int, int, str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))  # never touch the shared __pycache__
    run = subprocess.run([sys.executable, "-m", "scrubin.warm", *args], capture_output=True,
                         text=True, env=env, check=False, timeout=600)
    assert run.returncode == 0, run.stderr
    m = SUMMARY.search(run.stdout)
    assert m, run.stdout
    return int(m.group(1)), int(m.group(2)), run.stdout


def test_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "numba-cache"
    compiled, loaded, out = _warm(cache, "--steps", "samples", "--verbose")
    assert compiled > 0 and loaded == 0, out
    assert "scrubin.samples.render._render: 1 (compiled 1, loaded 0, on disk 1)" in out
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc"))
    compiled2, loaded2, out2 = _warm(cache, "--steps", "samples", "--verbose")
    assert compiled2 == 0 and loaded2 > 0, out2
    assert "scrubin.samples.render._render: 1 (compiled 0, loaded 1, on disk 1)" in out2


def test_make_install_warms_after_pip():
    recipe = (Path(__file__).parents[2] / "Makefile").read_text().split("$(STAMP):", 1)[1]
    lines = [ln.strip() for ln in recipe.split("\n\n", 1)[0].splitlines()]
    warm = lines.index("$(BIN)/python -m scrubin.warm")
    assert any("pip install" in ln and "-e" in ln for ln in lines[:warm])
    assert lines[warm + 1:] == ["@touch $(STAMP)"]


def test_warm_command_rejects_unknown_steps(capsys):
    try:
        main(["warm", "--steps", "samples,bogus"])
    except SystemExit as exc:
        assert exc.code == 2
    else:  # pragma: no cover
        raise AssertionError("no usage error")
    err = capsys.readouterr().err
    assert "expected a comma-separated subset of samples,truth,model,overlay" in err


def test_every_step_runs_and_reaches_its_kernels():
    # in this process (kernels usually already cached by other tests): a pipeline whose API
    # drifted would stop a step early, and make install would silently warm less
    from scrubin.warm import STEPS, warm

    report = warm(STEPS)
    assert report.failed == {}
    ready = {k.name for k in report.kernels if k.signatures or k.on_disk}
    for name in ("scrubin.samples.render._render", "scrubin.samples.model._solid_sdf",
                 "scrubin.imaging._mc_kernels.fill_rows", "scrubin.imaging.smooth._adjacency",
                 "scrubin.imaging.runops._window_rows", "scrubin.overlay.raster._rasterize",
                 "scrubin.overlay.composite.resolve_layers",
                 "scrubin.registration._edge_kernel.refine_pass",
                 "scrubin.overlay.raster.clip_near", "scrubin.imaging._mc_kernels.dilate6",
                 "scrubin.overlay.composite.resolve_blend_single"):
        assert name in ready, name
