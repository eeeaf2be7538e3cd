"""``scrubin calibrate hand-eye --tracker-poses A.csv --camera-poses B.csv --json X.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from scrubin.commands._common import DeprecatedAlias, require_output_folders

#: scrubin.registration.handeye.METHODS (kept here so that --help does not import scipy; a
#: test checks they agree).
METHODS = ("park", "tsai", "daniilidis", "horaud", "andreff")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``calibrate hand-eye``."""
    parser = sub.add_parser(
        "hand-eye",
        help="camera-to-tool transform of a camera mounted on a tracked body (AX = XB)",
        description=(
            "Solve AX = XB for X = T_TOOL_CAMERA from tracker poses T_TRACKER_TOOL and camera "
            "poses T_CAMERA_TARGET of a static target taken at the same instants (pose file "
            "formats: registration/posefile.py; rows pair by order, or by timestamp when "
            "both files have one)."
        ),
    )
    parser.add_argument("--tracker-poses", required=True, type=Path, metavar="A",
                        help="T_TRACKER_TOOL per view (CSV/text or JSON)")
    parser.add_argument("--camera-poses", required=True, type=Path, metavar="B",
                        help="T_CAMERA_TARGET per view (CSV/text, JSON or scrubin track output)")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--json", type=Path, metavar="FILE",
                     help="output: transform T_TOOL_CAMERA and residuals")
    out.add_argument("--out", dest="json", type=Path, metavar="FILE", action=DeprecatedAlias,
                     new="--json", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, default="park",
                        help="park (default), tsai or daniilidis (ours); horaud or andreff "
                        "(OpenCV's cv2.calibrateHandEye)")
    parser.add_argument("--max-dt", type=float, default=0.005, metavar="S",
                        help="timestamp pairing tolerance in seconds (default 0.005)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate and write the JSON."""
    require_output_folders(("--json", args.json))
    from scrubin.imaging.fileio import write_json_atomic
    from scrubin.registration.handeye import calibrate_hand_eye
    from scrubin.registration.posefile import pair_poses, read_pose_file

    a = read_pose_file(args.tracker_poses)
    b = read_pose_file(args.camera_poses)
    ta, cb = pair_poses(a, b, args.max_dt)
    res = calibrate_hand_eye(ta, cb, method=args.method)
    out = {"transform": res.transform.to_json(), "target_in_tracker":
           res.target_in_tracker.to_json(), "residual_mm": res.residual_mm,
           "residual_deg": res.residual_deg, "n_views": int(len(ta)), "n_pairs": res.n_pairs,
           "method": res.method}
    write_json_atomic(args.json, out)
    t = res.transform.translation
    print(f"T_TOOL_CAMERA translation {t[0]:.2f} {t[1]:.2f} {t[2]:.2f} mm; consistency "
          f"{res.residual_mm:.2f} mm / {res.residual_deg:.3f} deg RMS over {len(ta)} views "
          f"({res.method}) -> {args.json}")
    return 0
