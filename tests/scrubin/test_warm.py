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


def test_bytecode_is_written_checked_against_the_source(tmp_path):
    import importlib.util
    import struct
    import tomllib

    from scrubin.warm import compile_bytecode, package_folders

    # the folders are those of pyproject's package-dir mapping
    root = Path(__file__).parents[2]
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    assert sorted(package_folders()) == sorted((root / d).resolve() for d in mapping.values())

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "cache").mkdir()
    (pkg / "a.py").write_text("X = 1\n")
    (pkg / "sub" / "b.py").write_text("Y = 2\n")
    (pkg / "cache" / "c.py").write_text("Z = 3\n")
    (pkg / "broken.py").write_text("def (\n")
    modules, failed = compile_bytecode([pkg])
    assert modules == 2 and failed == [pkg / "broken.py"]
    assert not (pkg / "cache" / "__pycache__").exists()
    for src in (pkg / "a.py", pkg / "sub" / "b.py"):
        data = Path(importlib.util.cache_from_source(str(src))).read_bytes()
        # PEP 552 header: magic, flags (0: timestamp-based), source mtime, source size
        magic, flags, mtime, size = data[:4], *struct.unpack("<3I", data[4:16])
        st = src.stat()
        assert magic == importlib.util.MAGIC_NUMBER and flags == 0
        assert (mtime, size) == (int(st.st_mtime) & 0xFFFFFFFF, st.st_size)
