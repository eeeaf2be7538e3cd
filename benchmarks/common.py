"""Helpers shared by the benchmark modules: interleaved timing and ratio reporting."""

from __future__ import annotations

import time
from collections.abc import Callable
from statistics import median


def interleaved(
    candidates: dict[str, Callable[[], object]], runs: int = 5, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each candidate ``runs`` times, interleaved (A B A B ...), after ``warmup`` calls.

    Returns seconds per run for each name. Interleaving spreads machine noise (other
    processes, thermal state, file cache) evenly over the candidates.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio_line(label: str, ours: list[float], peer: list[float], peer_name: str) -> str:
    """One report line: medians in ms and the speed-up ``peer / ours`` (> 1 means faster)."""
    mo, mp = median(ours), median(peer)
    return (
        f"{label}: scrubin {mo * 1e3:.1f} ms vs {peer_name} {mp * 1e3:.1f} ms "
        f"(median of {len(ours)}) -> {mp / mo:.2f}x"
    )
