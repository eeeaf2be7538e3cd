"""Sharp-kernel accuracy and speed: section 4 of :mod:`benchmarks.bench_imaging` on its own."""

from __future__ import annotations

from benchmarks.bench_imaging import sharp_main


def main() -> None:
    """Print the sharp-phantom lines (ours automatic / --step 1 / SimpleITK + VTK)."""
    sharp_main()


if __name__ == "__main__":
    main()
