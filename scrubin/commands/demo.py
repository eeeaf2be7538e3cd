"""``scrubin demo``: run the main job on the bundled sample phantom."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser("demo", help="run the whole pipeline on the sample head-CT phantom")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    p.add_argument("--sample", default="full", choices=["small", "small-oblique", "full"],
                   help="which phantom (default: full 512x512x300)")
    p.add_argument("--no-overlay", action="store_true", help="skip the AR overlay video")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from scrubin.workflows.demo import run as run_demo

    run_demo(args.out, args.sample, overlay=not args.no_overlay)
    print(f"\ndemo outputs are in {args.out.resolve()}")
    return 0
