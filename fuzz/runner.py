"""Run fuzz inputs in a worker process with bounded time and memory per input.

The parent (:func:`run_inputs`) starts ``python -m fuzz.runner --worker`` and feeds it one
input at a time (target name and file path on a line). The worker runs the target, and prints
one JSON line per input: ``ok`` (accepted), ``refused`` (a documented error class) or
``crash`` (anything else, with the traceback). Bounds:

* time: :func:`faulthandler.dump_traceback_later` with ``exit=True`` ends the worker when one
  input runs longer than ``timeout_s`` (a hang; the traceback says where it was);
* memory: ``RLIMIT_AS`` set to the worker's address space after imports plus ``mem_mb``, so an
  allocation the input's declared sizes ask for fails with MemoryError (a crash: the size had
  to be refused from the header) instead of taking the machine.

A worker that dies (hang, signal, limit) is restarted and the input recorded as a crash. Each
crash is saved under ``out_dir`` as ``<target>-<sha1>.bin`` with its report in ``.txt``.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import resource
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    """The result of one input."""

    target: str
    status: str  # ok | refused | crash
    kind: str = ""  # exception type, "hang", "signal N"
    where: str = ""  # innermost project frame (file:line) or ""
    detail: str = ""  # traceback / stderr tail
    data: bytes = field(default=b"", repr=False)

    @property
    def signature(self) -> str:
        return f"{self.target}:{self.kind}:{self.where}"


@dataclass
class Stats:
    """Per-target counts of one run."""

    executions: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    crashes: list[Outcome] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.executions[o.target] = self.executions.get(o.target, 0) + 1
        if o.status == "refused":
            self.refused[o.target] = self.refused.get(o.target, 0) + 1
        if o.status == "crash":
            self.crashes.append(o)

    def unique_crashes(self) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        for c in self.crashes:
            out.setdefault(c.signature, c)
        return out


# ------------------------------------------------------------------ worker side
def _where(tb: traceback.StackSummary) -> str:
    for frame in reversed(tb):
        f = frame.filename
        if "/site-packages/" not in f and "/lib/python" not in f and "/fuzz/" not in f:
            return f"{os.path.relpath(f, REPO)}:{frame.lineno}"
    return f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""


def _address_space_bytes() -> int:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(mem_mb: int, timeout_s: float) -> None:
    """Read ``target<TAB>path`` lines on stdin, answer one JSON line each on stdout."""
    from fuzz.targets import SELFTEST, TARGETS, workdir

    warnings.simplefilter("ignore")
    scratch = workdir()
    # import every stage once before the limit is set (numba, open3d, grpc map a lot)
    import scrubin.imaging.load
    import scrubin.imaging.mesh_io
    import scrubin.mentor.events
    import scrubin.overlay.igtl
    import scrubin.registration.bodies
    import scrubin.registration.camera
    import scrubin.registration.posefile  # noqa: F401

    limit_set = False
    out = sys.stdout
    for line in sys.stdin:
        name, path = line.rstrip("\n").split("\t", 1)
        target = SELFTEST if name == SELFTEST.name else TARGETS[name]
        allowed = target.allowed()
        data = Path(path).read_bytes()
        if not limit_set and mem_mb > 0:
            # after the first input of a target has loaded its lazy imports
            limit = _address_space_bytes() + (mem_mb + 512) * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            limit_set = True
        faulthandler.dump_traceback_later(timeout_s, exit=True)
        try:
            target.run(data, scratch)
            result = {"status": "ok"}
        except allowed as exc:
            msg = str(exc)
            result = {"status": "refused", "kind": type(exc).__name__}
            if not msg.strip():
                result = {"status": "crash", "kind": f"{type(exc).__name__} (empty message)",
                          "where": "", "detail": repr(msg[:400])}
        except BaseException as exc:  # every other exception is the finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            tb = traceback.extract_tb(exc.__traceback__)
            result = {"status": "crash", "kind": type(exc).__name__, "where": _where(tb),
                      "detail": "".join(traceback.format_exception(exc))[-4000:]}
        finally:
            faulthandler.cancel_dump_traceback_later()
        out.write(json.dumps(result) + "\n")
        out.flush()
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------ parent side
class _Worker:
    def __init__(self, mem_mb: int, timeout_s: float) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONFAULTHANDLER="1")
        self.err_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"scrubin-fuzz-{os.getpid()}.err"
        self.err = open(self.err_path, "w+b")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fuzz.runner", "--worker", str(mem_mb), str(timeout_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, cwd=REPO, env=env,
            text=True, bufsize=1,
        )

    def ask(self, name: str, path: Path) -> dict[str, str] | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{name}\t{path}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def death(self) -> tuple[str, str]:
        rc = self.proc.wait()
        self.err.seek(0)
        tail = self.err.read().decode("utf-8", "replace")[-4000:]
        if "Timeout (" in tail:
            return "hang", tail
        if rc < 0:
            return f"signal {-rc}", tail
        return f"exit {rc}", tail

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        self.err_path.unlink(missing_ok=True)
        import shutil
        import tempfile

        for left in Path(tempfile.gettempdir()).glob(f"scrubin-fuzz-{self.proc.pid}-*"):
            shutil.rmtree(left, ignore_errors=True)  # a worker ended by the watchdog


def run_inputs(inputs: Iterable[tuple[str, bytes]], out_dir: Path | None = None,
               mem_mb: int = 1024, timeout_s: float = 10.0) -> Iterator[Outcome]:
    """Run ``(target, bytes)`` inputs one by one in a bounded worker; yield each outcome."""
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="scrubin-fuzz-in-"))
    path = scratch / "input.bin"
    w: _Worker | None = None
    try:
        for name, data in inputs:
            if w is None:
                w = _Worker(mem_mb, timeout_s)
            path.write_bytes(data)
            answer = w.ask(name, path)
            if answer is None:
                kind, tail = w.death()
                w.close()
                w = None
                o = Outcome(name, "crash", kind, "", tail, data)
            else:
                o = Outcome(name, answer["status"], answer.get("kind", ""),
                            answer.get("where", ""), answer.get("detail", ""), data)
            if o.status == "crash" and out_dir is not None:
                save_crash(o, out_dir)
            yield o
    finally:
        if w is not None:
            w.close()
        path.unlink(missing_ok=True)
        scratch.rmdir()


def save_crash(o: Outcome, out_dir: Path) -> Path:
    """Write the input and its report (``<target>-<sha1>.bin`` / ``.txt``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{o.target}-{hashlib.sha1(o.data).hexdigest()[:16]}"
    stem.with_suffix(".bin").write_bytes(o.data)
    stem.with_suffix(".txt").write_text(f"{o.kind} at {o.where}\n\n{o.detail}\n")
    return stem.with_suffix(".bin")


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.path.insert(0, str(REPO))
    worker(int(sys.argv[2]), float(sys.argv[3]))
