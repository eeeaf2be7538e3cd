"""``scrubin register surface``: model surface (moving, CT) onto a measured cloud (fixed, REF)."""

from __future__ import annotations

import argparse

from scrubin.commands._common import require_output_folders, warn


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``register surface``."""
    p = sub.add_parser(
        "surface",
        help="register a skin/bone surface mesh to a measured point cloud (depth camera, "
        "pointer sweep)",
        description="Register the model surface (moving, CT LPS mm) to a measured point cloud "
        "(fixed, REF frame): FPFH+RANSAC global initialisation (unless --init), then "
        "multi-scale robust point-to-plane ICP. Writes T_REF_CT, RMS residual, inlier "
        "fraction and ambiguity warnings.",
    )
    p.add_argument("--fixed", required=True, help="measured cloud: PLY, PCD, CSV, TXT or XYZ")
    p.add_argument("--moving", required=True, help="model surface mesh: STL, PLY, OBJ or GLB")
    p.add_argument("--init", help="start transform JSON (moving to fixed, e.g. from "
                   "'register points'); skips global initialisation")
    p.add_argument("--cloud-unit", choices=("mm", "m"), default="mm",
                   help="unit of the cloud's coordinates (default mm)")
    p.add_argument("--max-distance", type=float, default=10.0, metavar="MM",
                   help="ICP correspondence gate in mm (default 10)")
    p.add_argument("--fixed-frame", default="REF", help="frame of the cloud (default REF)")
    p.add_argument("--seed", type=int, default=0, help="RANSAC seed (default 0)")
    p.add_argument("--json", required=True, metavar="OUT", help="result JSON to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the registration and print a summary."""
    require_output_folders(("--json", args.json))
    from scrubin.workflows.register_surface import run_register_surface

    res, _ = run_register_surface(
        args.fixed, args.moving, args.json, init=args.init, cloud_unit=args.cloud_unit,
        max_distance_mm=args.max_distance, fixed_frame=args.fixed_frame, seed=args.seed,
    )
    t = res.transform
    print(f"T_{t.dst}_{t.src} ({res.method} init, {res.iterations} ICP iterations, "
          f"{res.timing_s['total'] * 1e3:.0f} ms)")
    for row in t.matrix:
        print("  " + " ".join(f"{v:12.6f}" for v in row))
    print(f"RMS residual {res.rms_mm:.3f} mm, inliers {res.inlier_fraction:.1%} "
          "(fit only: not an accuracy measure)")
    for w in res.warnings:
        warn(w)
    print(f"wrote {args.json}")
    return 0
