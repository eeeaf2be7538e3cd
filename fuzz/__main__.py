"""``python -m fuzz`` — mutation fuzzing of every parser of untrusted input (``make fuzz``).

Usage::

    python -m fuzz [--time SECONDS] [--targets a,b,...] [--seed N] [--out DIR]
                   [--timeout S] [--mem-mb MB] [--replay]

Replays the committed corpus (``fuzz/corpus/<target>/``: seeds and the reproducers of crashes
found and fixed), then runs mutants of the seeds round-robin over the targets until
``--time`` runs out. Crashes (an exception other than the stage's error class, a hang past
``--timeout`` s, an allocation past ``--mem-mb``) are saved to ``--out`` (default
``fuzz/out``) and summarised per target; exit status 1 when any input crashed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fuzz.mutate import mutate
from fuzz.runner import Stats, run_inputs
from fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parent / "corpus"


def corpus(name: str) -> list[tuple[str, bytes]]:
    """The committed inputs of a target (seeds first), as ``(file name, bytes)``."""
    folder = CORPUS / name
    files = sorted(folder.glob("*"), key=lambda p: (not p.name.startswith("seed-"), p.name))
    return [(p.name, p.read_bytes()) for p in files if p.is_file()]


def mutants(names: list[str], seed: int, deadline: float | None = None,
            per_target: int | None = None) -> Iterator[tuple[str, bytes]]:
    """Mutants of each target's seeds, round-robin, until ``deadline`` or ``per_target`` each."""
    rng = random.Random(seed)
    seeds = {n: [d for f, d in corpus(n) if f.startswith("seed-")] for n in names}
    i = 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return
        if per_target is not None and i >= per_target:
            return
        for n in names:
            if seeds[n]:
                yield n, mutate(rng, rng.choice(seeds[n]), seeds[n], TARGETS[n].text)
        i += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--time", type=float, default=60.0, help="seconds of mutation (default 60)")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    p.add_argument("--seed", type=int, default=0, help="random seed of the mutator")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per input (hang)")
    p.add_argument("--mem-mb", type=int, default=1024, help="memory per input, MiB")
    p.add_argument("--replay", action="store_true", help="replay the corpus only")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")

    def inputs() -> Iterator[tuple[str, bytes]]:
        for n in names:
            for _, data in corpus(n):
                yield n, data
        if not args.replay:
            yield from mutants(names, args.seed, time.monotonic() + args.time)

    stats = Stats()
    start = time.monotonic()
    for o in run_inputs(inputs(), args.out, args.mem_mb, args.timeout):
        stats.add(o)
        if o.status == "crash" and sum(c.signature == o.signature for c in stats.crashes) == 1:
            print(f"CRASH {o.signature}", flush=True)
    wall = time.monotonic() - start
    unique = stats.unique_crashes()
    print(f"\n{'target':<16}{'execs':>8}{'refused':>9}{'crashes':>9}{'unique':>8}")
    for n in names:
        crashes = [c for c in stats.crashes if c.target == n]
        uniq = {c.signature for c in crashes}
        print(f"{n:<16}{stats.executions.get(n, 0):>8}{stats.refused.get(n, 0):>9}"
              f"{len(crashes):>9}{len(uniq):>8}")
    total = sum(stats.executions.values())
    print(f"{'total':<16}{total:>8}{sum(stats.refused.values()):>9}{len(stats.crashes):>9}"
          f"{len(unique):>8}   ({wall:.0f} s, {total / max(wall, 1e-9):.0f} exec/s)")
    for sig, c in unique.items():
        print(f"\n--- {sig}\n{c.detail[-1500:]}")
    if unique:
        print(f"\ncrash inputs saved in {args.out}")
    return 1 if unique else 0


if __name__ == "__main__":
    sys.exit(main())
