"""Compile every numba kernel once, so that no command pays for compilation.

``python -m scrubin.warm`` (also ``scrubin warm``; run by ``make install`` after pip) runs the
real pipelines on tiny inputs, with the argument types the commands use:

``samples``  a 6 mm custom head phantom written as a DICOM series (phantom kernels);
``truth``    the phantom's analytic signed distances (used by tests and benchmarks);
``model``    ``scrubin model`` on it: bone with ``--exclude-fiducials`` and a DICOM SEG, skin,
             a seeded threshold, vessels, and a 2x-coarser extraction snapped back (``step
             2``, what large fine volumes such as the full phantom use); run-length morphology
             on a tiny mask; a region-mode surface and the coarse-surface residual check;
``overlay``  three frames of the synthetic surgical scene through tracking, the overlay
             renderer, the lens model and the compositor (creates the small phantom and its
             models in the sample cache when absent); a tiny undistorted renderer with
             triangles through the near plane.

Before the steps, every module of the project's packages is byte-compiled into
``__pycache__`` (:func:`compile_bytecode`): an editable install leaves the sources in the
repository and pip compiles none of them, so where the interpreter cannot write ``.pyc``
files itself (``PYTHONDONTWRITEBYTECODE``, a read-only tree) every process would compile the
~45 modules ``scrubin model`` imports from source again (~0.13 s CPU).

Every kernel is declared ``cache=True``: numba stores the machine code in ``__pycache__``
beside the source (or under ``$NUMBA_CACHE_DIR``), indexed by the source file's modification
time and size and by the CPU, so later processes load it instead of compiling (numba
documentation, "Cache Sharing" / "Cache Invalidation"). Warming after an install therefore
serves every later process on this machine until the sources change. Afterwards each kernel
of the loaded ``scrubin`` modules is listed with how its signatures were obtained
(compiled now, or loaded from the cache); kernels declared ``inline="always"`` are compiled
into their callers and have no code of their own.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Modules that define numba kernels (imported by :func:`kernel_table` so none is missed).
KERNEL_MODULES = (
    "scrubin.imaging.regions",
    "scrubin.imaging.runops",
    "scrubin.imaging._grid_kernels",
    "scrubin.imaging._mc_kernels",
    "scrubin.imaging.mesh",
    "scrubin.imaging.smooth",
    "scrubin.registration._edge_kernel",
    "scrubin.overlay.raster",
    "scrubin.samples.synthetic_raycast",
    "scrubin.overlay.distortion",
    "scrubin.overlay.composite",
    "scrubin.samples.model",
    "scrubin.samples.render",
)
#: A coarse custom phantom (6 mm voxels): every phantom/imaging kernel, in seconds.
WARM_SAMPLE = "custom:6,6,6"
STEPS = ("samples", "truth", "model", "overlay")
#: Packages whose modules :func:`compile_bytecode` compiles (pyproject ``package-dir``).
PACKAGES = ("scrubin", "scrubin.imaging", "scrubin.registration", "scrubin.overlay",
            "scrubin.mentor", "scrubin.protos", "scrubin.samples")
#: Sub-folders of a package folder that hold no modules (generated samples, caches).
NOT_MODULE_FOLDERS = frozenset({"cache", "__pycache__"})


@dataclass(frozen=True)
class KernelState:
    """One numba kernel after warming.

    ``signatures`` in this process, of which ``compiled`` were compiled and ``from_cache``
    loaded; ``on_disk``: signatures in its valid on-disk cache index (a kernel called only
    from other kernels is linked into their cached code and has none of its own in a warm
    process, but was cached when first compiled).
    """

    name: str
    signatures: int
    compiled: int
    from_cache: int
    on_disk: int
    inline: bool


@dataclass
class WarmReport:
    """Seconds per step, the state of every kernel, and the steps that stopped early."""

    seconds: dict[str, float] = field(default_factory=dict)
    kernels: list[KernelState] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def unwarmed(self) -> list[str]:
        """Kernels (not inlined) with neither code in this process nor a valid cache entry."""
        return [k.name for k in self.kernels
                if not k.inline and k.signatures == 0 and k.on_disk == 0]


def kernel_table() -> list[KernelState]:
    """Every numba dispatcher defined in :data:`KERNEL_MODULES`, with its cache statistics."""
    from numba.core.dispatcher import Dispatcher

    out: list[KernelState] = []
    for modname in KERNEL_MODULES:
        mod = importlib.import_module(modname)
        for attr, obj in sorted(vars(mod).items()):
            if not isinstance(obj, Dispatcher) or obj.py_func.__module__ != modname:
                continue
            stats = obj.stats
            out.append(KernelState(
                name=f"{modname}.{attr}",
                signatures=len(obj.signatures),
                compiled=sum(stats.cache_misses.values()),
                from_cache=sum(stats.cache_hits.values()),
                on_disk=_cached_signatures(obj),
                inline=obj.targetoptions.get("inline") == "always",
            ))
    return out


def _cached_signatures(dispatcher: object) -> int:
    """Signatures in the dispatcher's on-disk index, 0 when absent or stale (source changed).

    Reads numba's ``IndexDataCacheFile._load_index``, which returns ``{}`` for an index whose
    source stamp (mtime, size) no longer matches.
    """
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:
        return 0
    try:
        return len(cache_file._load_index())
    except Exception:  # an unreadable index is as good as none
        return 0


def package_folders(packages: Sequence[str] = PACKAGES) -> list[Path]:
    """The source folders of ``packages`` (``scrubin.imaging`` -> ``imaging/`` here)."""
    import importlib.util

    folders: list[Path] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            raise ValueError(f"package {name!r} not found")
        folders.extend(Path(p) for p in spec.submodule_search_locations)
    return folders


def compile_bytecode(folders: Sequence[Path]) -> tuple[int, list[Path]]:
    """Byte-compile every ``*.py`` under ``folders`` into its ``__pycache__``.

    Writes the timestamp-checked ``.pyc`` that ``import`` reads (PEP 3147 location; PEP 552
    header: magic, flags 0, source mtime, source size), so an edited source is never served
    stale: its ``.pyc`` no longer matches and is recompiled (or rewritten) on import. Files
    already up to date are left alone; sub-folders in :data:`NOT_MODULE_FOLDERS` are skipped.

    Returns
    -------
    (modules, failed)
        How many modules are compiled now, and the files that could not be (a syntax error
        in a file being edited, an unwritable folder): warming is best effort.
    """
    import compileall

    ok, failed = 0, []
    for folder in folders:
        for src in sorted(folder.rglob("*.py")):
            if NOT_MODULE_FOLDERS & set(src.relative_to(folder).parts[:-1]):
                continue
            if compileall.compile_file(src, quiet=2):
                ok += 1
            else:
                failed.append(src)
    return ok, failed


def _warm_samples(tmp: Path) -> Path:
    from scrubin.samples.phantom import generate_sample

    folder = tmp / "ct"
    folder.mkdir()
    return generate_sample(WARM_SAMPLE, folder)


def _warm_truth() -> None:
    """Analytic signed distances of the phantom truth (tests, benchmarks, surface simulator)."""
    import numpy as np

    from scrubin.samples.model import phantom_model
    from scrubin.samples.phantom import truth_dict

    model = phantom_model(truth_dict(WARM_SAMPLE))
    points_lps_mm = np.zeros((4, 3))
    for name in model.structure_names:
        model.signed_distance(name, points_lps_mm)


def _warm_run_ops() -> None:
    """Run-length morphology and labelling on a tiny mask (kernels the model jobs may skip,
    e.g. table separation, which runs only when the body reaches the volume border)."""
    import numpy as np

    from scrubin.imaging import regions as rg
    from scrubin.imaging import runops as ro

    mask = np.zeros((6, 7, 8), dtype=bool)
    mask[1:5, 2:6, 1:7] = True
    mask[3, 3, 3] = False
    runs = rg.mask_runs(mask)
    eroded = ro.erode_runs(runs, (1, 1, 1))
    grown = ro.dilate_runs(eroded, (1, 1, 1))
    ro.subtract_runs(runs, ro.intersect_runs(grown, ro.union_runs(runs, eroded)))
    ro.erode(mask, 1)
    ro.dilate(mask, 1)
    rg.label(mask)
    ro.fill_holes_runs(runs)


def _warm_surfaces(series: Path) -> None:
    """Surface paths ``scrubin model`` reaches only on some data: level set within a dilated
    region (the surface simulator's skin) and the full-resolution residual check of a
    coarse surface (searches along normals)."""
    from scrubin.imaging.load import load_volume
    from scrubin.imaging.segment import segment
    from scrubin.imaging.surface import extract_surface
    from scrubin.imaging.surface_grid import grid_residual

    volume = load_volume(series)
    seg = segment(volume, preset="bone")
    mesh = extract_surface(volume, mask=seg.mask, level=seg.level, mask_mode="region")
    grid_residual(mesh, volume, seg.mask, seg.level, points=64)


def _warm_model(tmp: Path, series: Path) -> None:
    import numpy as np

    from scrubin.workflows.model import ModelRequest, run_model

    jobs = [
        dict(preset="bone", exclude_fiducials=True, seg_path=tmp / "bone-seg.dcm",
             json_path=tmp / "bone.json"),
        dict(preset="skin", max_triangles=2000),
        dict(threshold=(0.0, 80.0), seed_lps=np.zeros(3), max_triangles=0),  # brain
        dict(preset="bone", step=2, smooth=2),
        dict(preset="vessels", max_triangles=0, smooth=0),
    ]
    _warm_run_ops()
    _warm_surfaces(series)
    for k, job in enumerate(jobs):
        try:
            run_model(ModelRequest(input=series, out=tmp / f"m{k}.glb", **job))
        except Exception as exc:  # a refused job still compiled what it reached
            print(f"warm: model job {k} stopped early ({type(exc).__name__}: {exc})",
                  file=sys.stderr)


def _warm_renderer() -> None:
    """The renderer paths the synthetic scene skips: a lens without distortion (one opaque
    layer blended straight onto the frame) and triangles crossing the near plane."""
    import numpy as np

    from scrubin.overlay.renderer import OverlayRenderer, Structure
    from scrubin.registration.camera import CameraModel
    from scrubin.registration.frames import CAMERA, CT, Transform

    camera = CameraModel(np.array([[80.0, 0, 32], [0, 80.0, 24], [0, 0, 1]]), np.zeros(5), 64, 48)
    # a closed tetrahedron, CT / LPS mm, faces counter-clockwise from outside
    vertices_ct_mm = np.array([[0, 0, 0], [40, 0, 0], [0, 40, 0], [0, 0, 40]], np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    renderer = OverlayRenderer(camera, [Structure("warm", vertices_ct_mm, faces)])
    frame_bgr = np.zeros((48, 64, 3), np.uint8)
    for z_mm in (200.0, 0.0):  # in front of the camera, then through the near plane
        pose = Transform.from_rt(np.eye(3), [-10.0, -10.0, z_mm], CT, CAMERA)
        renderer.draw(frame_bgr, pose)
        renderer.render(pose)


def _warm_overlay(tmp: Path) -> None:
    from scrubin.workflows.overlay import OverlayRequest, run_overlay

    run_overlay(OverlayRequest("synthetic", tmp / "overlay.mp4", json_path=tmp / "o.json",
                               frames=3))
    _warm_renderer()


def warm(steps: Sequence[str] = STEPS, log: Callable[[str], None] | None = None) -> WarmReport:
    """Run the warm-up ``steps`` (see the module docstring) and return the report."""
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown warm-up step(s) {unknown}; expected some of {STEPS}")
    report = WarmReport()
    with tempfile.TemporaryDirectory(prefix="scrubin-warm-") as tmp_name:
        tmp = Path(tmp_name)
        series: Path | None = None
        for step in STEPS:
            if step not in steps and not (step == "samples" and "model" in steps):
                continue
            t0 = time.perf_counter()
            try:
                if step == "samples":
                    series = _warm_samples(tmp)
                elif step == "truth":
                    _warm_truth()
                elif step == "model" and series is not None:
                    _warm_model(tmp, series)
                elif step == "overlay":
                    _warm_overlay(tmp)
            except Exception as exc:  # warming is best effort (see stderr)
                report.failed[step] = f"{type(exc).__name__}: {exc}"
                print(f"warm: {step} stopped early ({report.failed[step]})", file=sys.stderr)
            report.seconds[step] = time.perf_counter() - t0
            if log is not None:
                log(f"warm: {step} {report.seconds[step]:.1f} s")
    report.kernels = kernel_table()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m scrubin.warm [--steps samples,model,overlay]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m scrubin.warm", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)} (default: all)")
    parser.add_argument("--verbose", action="store_true", help="list every kernel")
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    if set(steps) - set(STEPS):
        parser.error(f"--steps {args.steps!r}: expected a subset of {','.join(STEPS)}")
    t0 = time.perf_counter()
    modules, failed = compile_bytecode(package_folders())
    print(f"warm: bytecode of {modules} modules up to date in {time.perf_counter() - t0:.1f} s")
    for src in failed:
        print(f"warm: could not byte-compile {src}", file=sys.stderr)
    report = warm(steps, log=print)
    own = [k for k in report.kernels if not k.inline]
    compiled = sum(k.compiled for k in own)
    cached = sum(k.from_cache for k in own)
    print(f"warm: {len(own) - len(report.unwarmed)}/{len(own)} kernels ready "
          f"({compiled} signatures compiled now, {cached} loaded from the cache) in "
          f"{sum(report.seconds.values()):.1f} s")
    if args.verbose:
        for k in report.kernels:
            print(f"  {k.name}: {'inline' if k.inline else k.signatures} "
                  f"(compiled {k.compiled}, loaded {k.from_cache}, on disk {k.on_disk})")
    if report.unwarmed:
        print(f"warm: not reached by these steps (compiled on first use): "
              f"{', '.join(report.unwarmed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
