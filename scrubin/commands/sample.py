"""``scrubin sample NAME --out DIR``: write a sample head-CT phantom series."""

from __future__ import annotations

import argparse
from pathlib import Path

from scrubin.commands._common import require_output_folders

#: scrubin.samples.presets.PRESETS names and CUSTOM_SYNTAX, repeated so that --help does not
#: import numpy (a test checks they agree).
PRESETS = ("small", "small-oblique", "full", "sharp")
CUSTOM_SYNTAX = ("custom:ROW,COL,SLICE[:TILT_X,TILT_Y][:sharp] (mm; degrees about x then y; "
                 "sharp reconstruction kernel)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sample`` command."""
    parser = sub.add_parser(
        "sample",
        help="write a sample head-CT phantom (CT DICOM series + truth.json)",
        description=(
            "Write a deterministic head-CT phantom as one CT DICOM file per slice plus "
            "truth.json (fiducials, target and structures in LPS mm). "
            f"NAME is one of: {', '.join(PRESETS)}, or {CUSTOM_SYNTAX} for any spacing and "
            "orientation."
        ),
    )
    parser.add_argument("name", metavar="NAME",
                        help=f"preset: {', '.join(PRESETS)} or {CUSTOM_SYNTAX}")
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR",
        help="output folder (must not exist or be empty)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate (or copy from the cache) the series into ``args.out``."""
    require_output_folders(("--out", args.out))
    from scrubin.samples.phantom import (
        export_sample,  # heavy (numba, scipy, pydicom): only when run
    )

    out = export_sample(args.name, args.out)
    n = len(list(out.glob("*.dcm")))
    print(f"wrote {n} CT slices and truth.json ({args.name}) to {out}")
    return 0
