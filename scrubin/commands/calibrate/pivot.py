"""``scrubin calibrate pivot POSES [--json OUT]``: pointer tip from pivoting poses."""

from __future__ import annotations

import argparse
from pathlib import Path

from scrubin.commands._common import require_output_folders


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``calibrate pivot``."""
    parser = sub.add_parser(
        "pivot",
        help="pointer tip offset from poses recorded while pivoting about the tip",
        description=(
            "Algebraic one-step least-squares pivot calibration (Yaniv 2015) from tracked "
            "poses T_TRACKER_TOOL (pose file formats: registration/posefile.py). Prints the "
            "tip in the TOOL frame, the pivot in the TRACKER frame and the RMS residual."
        ),
    )
    parser.add_argument("poses", type=Path, metavar="POSES", help="pose file (CSV/text/JSON)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write results")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate, print and optionally write JSON."""
    require_output_folders(("--json", args.json))
    from scrubin.imaging.fileio import write_json_atomic
    from scrubin.registration.pivot import pivot_calibration
    from scrubin.registration.posefile import read_pose_file

    series = read_pose_file(args.poses)
    res = pivot_calibration(series.matrices)
    tip, piv = res.tip_tool_mm, res.pivot_tracker_mm
    print(f"tip (TOOL) {tip[0]:.3f} {tip[1]:.3f} {tip[2]:.3f} mm; pivot (TRACKER) "
          f"{piv[0]:.3f} {piv[1]:.3f} {piv[2]:.3f} mm; RMS residual {res.rms_mm:.3f} mm "
          f"over {res.n_poses} poses")
    if args.json is not None:
        out = {"tip_tool_mm": tip.tolist(), "pivot_tracker_mm": piv.tolist(),
               "rms_mm": res.rms_mm, "n_poses": res.n_poses, "unit": "mm"}
        write_json_atomic(args.json, out)
    return 0
