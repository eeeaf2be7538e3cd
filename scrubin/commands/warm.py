"""``scrubin warm``: compile every numba kernel once (``make install`` runs it)."""

from __future__ import annotations

import argparse

STEPS = ("samples", "truth", "model", "overlay")  # scrubin.warm.STEPS (a test checks they agree)


def _steps(text: str) -> str:
    bad = sorted(set(filter(None, text.split(","))) - set(STEPS))
    if bad or not text.strip(","):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated subset of {','.join(STEPS)}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``warm`` command."""
    p = sub.add_parser(
        "warm",
        help="compile every numba kernel once so later commands start fast",
        description="Run the pipelines on tiny inputs so that every numba kernel is compiled "
        "and stored in numba's on-disk cache (__pycache__ beside the sources); later "
        "processes load it instead of compiling. Same as 'python -m scrubin.warm'.",
    )
    p.add_argument("--steps", default=None, metavar="LIST", type=_steps,
                   help="comma-separated subset of samples,truth,model,overlay (default: all)")
    p.add_argument("--verbose", action="store_true", help="list every kernel")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Warm and print the summary."""
    from scrubin.warm import main as warm_main

    argv = [] if args.steps is None else ["--steps", args.steps]
    return warm_main(argv + (["--verbose"] if args.verbose else []))
