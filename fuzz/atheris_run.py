"""Coverage-guided fuzzing of one target with atheris (libFuzzer), when atheris is installed.

Usage::

    python -m fuzz.atheris_run TARGET [libFuzzer flags, e.g. -max_total_time=600]

The project's modules are instrumented for coverage (``atheris.instrument_imports``); the
committed corpus of the target is copied into ``fuzz/out/atheris/TARGET`` (libFuzzer adds
the inputs that reach new code there). Bounds are libFuzzer's: ``-timeout`` (s per input,
default 10 here) and ``-rss_limit_mb`` (default 3072 here). libFuzzer stops at the first
crash and writes it as ``crash-<sha1>`` in the working folder; the built-in mutator
(``python -m fuzz``) goes on past crashes and counts them, so it is what ``make fuzz`` runs.
atheris is optional (pip install atheris; wheels exist for CPython 3.11 on x86-64 Linux).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main() -> None:
    try:
        import atheris
    except ImportError:
        sys.exit("fuzz.atheris_run: atheris is not installed (pip install atheris)")
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    name = sys.argv[1]
    with atheris.instrument_imports(include=["scrubin"]):
        import scrubin.imaging.load
        import scrubin.imaging.mesh_io
        import scrubin.mentor.events
        import scrubin.mentor.telemetry
        import scrubin.registration.bodies
        import scrubin.registration.camera
        import scrubin.registration.posefile  # noqa: F401
    from fuzz.targets import TARGETS

    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    target = TARGETS[name]
    allowed = target.allowed()
    corpus = Path(__file__).parent / "out" / "atheris" / name
    corpus.mkdir(parents=True, exist_ok=True)
    scratch = corpus.parent / f"{name}-scratch"  # libFuzzer exits without cleaning up
    scratch.mkdir(exist_ok=True)
    for seed in (Path(__file__).parent / "corpus" / name).glob("*"):
        shutil.copy(seed, corpus / seed.name)

    def test_one_input(data: bytes) -> None:
        try:
            target.run(data, scratch)
        except allowed:
            pass

    flags = sys.argv[2:]
    if not any(f.startswith("-timeout=") for f in flags):
        flags.append("-timeout=10")
    if not any(f.startswith("-rss_limit_mb=") for f in flags):
        flags.append("-rss_limit_mb=3072")
    atheris.Setup([sys.argv[0], *flags, str(corpus)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
