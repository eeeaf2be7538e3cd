"""Cold start of the command line: what a user waits for before any work is done.

Each figure is the median wall time of fresh processes (``subprocess``, interleaved):

- ``scrubin --help`` and ``scrubin model --help`` against the bare interpreter
  (``python -c pass``) and ``python -c "import numpy"`` (the floor a numpy tool pays);
- a bone model of the small phantom (``scrubin model DIR --preset bone --out X.stl --json
  R.json``) as a process, against the same pipeline in this process (``run_model``, imports
  and kernels already loaded); the child's own pipeline time (``timings_s.total`` of its
  report) gives the process overhead = wall - pipeline (imports, numba cache loading,
  interpreter start and exit);
- the libraries' floor: a process that only imports numpy, numba and pydicom and sets up
  numba's CPU target (what loading the first cached kernel costs in any process), beside the
  CPU overhead (process CPU minus the same pipeline's CPU in this process);
- the first such process with an empty numba cache (``NUMBA_CACHE_DIR`` set to a new folder:
  every kernel it reaches is compiled) against the next one with that cache filled (what a
  user gets after ``make install`` ran ``python -m scrubin.warm``). The shared
  ``__pycache__`` is never deleted.

Wall times on a shared machine include waiting for a core; the CPU time (user + system) of
the child processes is printed beside them and is what to compare between machines.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

RUNS = 5
#: What ``scrubin model`` imports before its pipeline runs (the modules of run_model).
IMPORTS = ("import scrubin.cli, scrubin.workflows.model, scrubin.imaging.load, "
           "scrubin.imaging.segment, scrubin.imaging.surface_grid, scrubin.imaging.smooth, "
           "scrubin.imaging.decimate, scrubin.imaging.deid")
#: The libraries' own floor under any numba + pydicom command: importing numpy, numba and
#: pydicom, and numba's one-time set-up of its CPU target before the first kernel loads from
#: the cache (``Cache.load_overload`` refreshes the target context: numba's typing and lowering
#: registries, cffi support, and scipy.linalg through numba.np.linalg's BLAS check).
FLOOR = ("import numpy, numba, pydicom.dataset\n"
         "from numba.core.registry import cpu_target\n"
         "cpu_target.target_context.refresh()")


CPU: dict[str, list[float]] = {}


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _wall(argv: list[str], env: dict[str, str] | None = None, label: str = "") -> float:
    """Wall seconds of one child process; its CPU seconds are appended to ``CPU[label]``."""
    c0 = _cpu_children()
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    CPU.setdefault(label, []).append(_cpu_children() - c0)
    return wall


def _interleaved_walls(cands: dict[str, list[str]], runs: int = RUNS) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in cands}
    for argv in cands.values():  # one unmeasured run each (file cache)
        _wall(argv)
    for _ in range(runs):
        for name, argv in cands.items():
            times[name].append(_wall(argv, label=name))
    return {k: median(v) for k, v in times.items()}


def _cpu(label: str) -> float:
    return median(CPU[label])


def _model_process(series: Path, out: Path, env: dict[str, str] | None = None,
                   label: str = "model") -> tuple[float, float]:
    """(wall s, the child's pipeline s) of one ``scrubin model`` process."""
    report = out.with_suffix(".json")
    wall = _wall([sys.executable, "-m", "scrubin", "model", str(series), "--preset", "bone",
                  "--out", str(out), "--json", str(report)], env, label)
    return wall, float(json.loads(report.read_text())["timings_s"]["total"])


def main() -> None:
    """Print the benchmark lines."""
    py = sys.executable
    walls = _interleaved_walls({
        "python": [py, "-c", "pass"],
        "numpy": [py, "-c", "import numpy"],
        "help": [py, "-m", "scrubin", "--help"],
        "model-help": [py, "-m", "scrubin", "model", "--help"],
    })
    def both(name: str) -> str:
        return f"{walls[name] * 1e3:.0f} ms (CPU {_cpu(name) * 1e3:.0f} ms)"

    print(f"scrubin --help {both('help')}, scrubin model --help {both('model-help')} vs "
          f"python -c pass {both('python')}, python -c 'import numpy' {both('numpy')} "
          f"(wall, median of {RUNS} processes; target < 300 ms)")

    from scrubin.samples.phantom import ensure_sample
    from scrubin.workflows.model import ModelRequest, run_model

    series = ensure_sample("small")
    with tempfile.TemporaryDirectory(prefix="scrubin-bench-cold-") as tmp_name:
        tmp = Path(tmp_name)

        inproc_cpu: list[float] = []

        def in_process() -> float:
            t0, c0 = time.perf_counter(), time.process_time()
            run_model(ModelRequest(input=series, out=tmp / "in.stl", preset="bone",
                                   json_path=tmp / "in.json"))
            inproc_cpu.append(time.process_time() - c0)
            return time.perf_counter() - t0

        in_process()  # imports and kernels loaded once, as in a long-running process
        inproc_cpu.clear()
        inproc, proc, child, imports, floor = [], [], [], [], []
        import_argv = [sys.executable, "-c", IMPORTS]
        floor_argv = [sys.executable, "-c", FLOOR]
        for _ in range(RUNS):
            inproc.append(in_process())
            w, c = _model_process(series, tmp / "p.stl")
            proc.append(w)
            child.append(c)
            imports.append(_wall(import_argv, label="imports"))
            floor.append(_wall(floor_argv, label="floor"))
        overhead = [w - c for w, c in zip(proc, child, strict=True)]
        cpu_overhead = _cpu("model") - median(inproc_cpu)
        print(f"bone model, small phantom: process {median(proc):.2f} s (CPU "
              f"{_cpu('model'):.2f} s) vs in-process {median(inproc):.2f} s (CPU "
              f"{median(inproc_cpu):.2f} s) -> {median(proc) / median(inproc):.2f}x; process "
              f"overhead = wall - its own pipeline time ({median(child):.2f} s) = "
              f"{median(overhead):.2f} s, in CPU = process CPU - in-process CPU = "
              f"{cpu_overhead:.2f} s (target < 0.5 s); the pipeline's first call in a "
              f"process also loads the kernels: +{median(child) - median(inproc):.2f} s")
        print(f"  of which: python + the model command's imports {median(imports):.2f} s "
              f"(CPU {_cpu('imports'):.2f} s); the libraries' floor (python, import numpy, "
              f"numba, pydicom + numba's CPU-target set-up) {median(floor):.2f} s (CPU "
              f"{_cpu('floor'):.2f} s), leaving Scrub In's own share at CPU "
              f"{cpu_overhead - _cpu('floor'):.2f} s  (median of {RUNS})")

        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba-cache"))
        cold_wall, cold_pipe = _model_process(series, tmp / "cold.stl", env, "cold")
        warm_wall, warm_pipe = _model_process(series, tmp / "warm.stl", env, "warm")
        print(f"bone model process with an empty numba cache {cold_wall:.1f} s (pipeline "
              f"{cold_pipe:.1f} s, CPU {_cpu('cold'):.1f} s) vs the next one, cache filled, "
              f"{warm_wall:.1f} s (pipeline {warm_pipe:.1f} s, CPU {_cpu('warm'):.1f} s): "
              f"compilation costs {cold_wall - warm_wall:.1f} s once (paid by 'make install' "
              "through python -m scrubin.warm)")


if __name__ == "__main__":
    main()
