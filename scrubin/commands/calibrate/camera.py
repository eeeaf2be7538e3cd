"""``scrubin calibrate camera IMAGES... --board SPEC [--legacy] --json camera.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from scrubin.commands._common import DeprecatedAlias, require_output_folders, warn


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``calibrate camera``."""
    parser = sub.add_parser(
        "camera",
        help="camera intrinsics and distortion from chessboard or ChArUco images",
        description=(
            "Calibrate a camera (OpenCV model) from images of a board. --board "
            "chessboard:COLSxROWS:SQUARE_MM counts INNER corners; "
            "charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT counts SQUARES. Views with too few "
            "corners or an outlying reprojection error are rejected and reported."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGES")
    parser.add_argument("--board", required=True, metavar="SPEC",
                        help="chessboard:9x6:25 or charuco:7x5:30:22:DICT_4X4_50")
    parser.add_argument("--legacy", action="store_true",
                        help="ChArUco board printed with OpenCV < 4.6 (legacy pattern)")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--json", type=Path, metavar="FILE", help="camera.json to write")
    out.add_argument("--out", dest="json", type=Path, metavar="FILE", action=DeprecatedAlias,
                     new="--json", help=argparse.SUPPRESS)
    parser.add_argument("--fix-k3", action="store_true", help="keep k3 = 0")
    parser.add_argument("--min-views", type=int, default=4, metavar="N",
                        help="fewest views to keep (default 4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate and write camera.json."""
    require_output_folders(("--json", args.json))
    from scrubin.registration.calibration import calibrate_images, parse_board_spec, read_gray

    spec = parse_board_spec(args.board, legacy=args.legacy)
    images = [read_gray(p) for p in args.images]
    result = calibrate_images(images, spec, fix_k3=args.fix_k3, min_views=args.min_views)
    for n, reason in sorted(result.rejected.items()):
        warn(f"rejected {args.images[n]}: {reason}")
    result.camera.save(args.json)
    k = result.camera.matrix
    print(f"fx {k[0, 0]:.2f} fy {k[1, 1]:.2f} cx {k[0, 2]:.2f} cy {k[1, 2]:.2f} px, "
          f"RMS {result.rms_px:.3f} px over {len(result.used)} views -> {args.json}")
    return 0
