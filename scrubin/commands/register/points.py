"""``scrubin register points``: paired or unlabelled fiducials (moving, CT) onto fixed (REF)."""

from __future__ import annotations

import argparse

from scrubin.commands._common import require_output_folders, warn


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``register points``."""
    p = sub.add_parser(
        "points",
        help="closed-form rigid registration of fiducial points (FRE, leave-one-out, "
        "predicted TRE)",
        description="Register moving points (e.g. CT fiducials, LPS mm) onto fixed points "
        "(e.g. tracked fiducials in the reference-marker frame) in closed form (Arun/Horn/"
        "Umeyama). Writes T_fixed_moving, FRE, per-point residuals, a leave-one-out check of "
        "each fiducial and, with --fle, the predicted TRE at each target (Fitzpatrick, West & "
        "Maurer 1998, eq. 46). CSV files: one 'x,y,z' line per point in mm, header optional.",
    )
    p.add_argument("--fixed", required=True, metavar="CSV", help="fixed points (e.g. REF), mm")
    p.add_argument("--moving", required=True, metavar="CSV|JSON",
                   help="moving points, mm: a CSV, or the JSON of 'scrubin fiducials' (its "
                   "series UIDs are carried into the transform)")
    p.add_argument("--targets", metavar="CSV",
                   help="target points in the moving frame for predicted TRE (needs --fle)")
    p.add_argument("--fle", type=float, metavar="MM",
                   help="RMS 3-D fiducial localisation error in mm (not a per-axis sigma)")
    p.add_argument("--unpaired", action="store_true",
                   help="points are unlabelled / in any order (one missing or extra allowed)")
    p.add_argument("--scale", action="store_true",
                   help="also estimate an isotropic scale (Umeyama); disables predicted TRE")
    p.add_argument("--fixed-frame", default="REF", help="frame of the fixed points (default REF)")
    p.add_argument("--moving-frame", default="CT",
                   help="frame of the moving points (default CT)")
    p.add_argument("--json", required=True, metavar="OUT", help="result JSON to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the registration and print a labelled summary."""
    require_output_folders(("--json", args.json))
    from scrubin.workflows.register_points import run_register_points

    rep = run_register_points(
        args.fixed, args.moving, args.json, targets_csv=args.targets, fle_mm=args.fle,
        unpaired=args.unpaired, scale=args.scale, fixed_frame=args.fixed_frame,
        moving_frame=args.moving_frame,
    )
    t = rep["transform"]
    print(f"T_{t['to']}_{t['from']} from {rep['n_points']} point pairs"
          + (f" (scale {rep['scale']:.6f})" if args.scale else ""))
    for row in t["matrix"]:
        print("  " + " ".join(f"{v:12.6f}" for v in row))
    print(f"FRE {rep['fre_mm']:.3f} mm (fiducial fit only, NOT accuracy at the target)")
    if "correspondence" in rep:
        c = rep["correspondence"]
        print(f"matched {len(c['pairs'])} unlabelled points; unmatched moving "
              f"{c['unmatched_moving']}, fixed {c['unmatched_fixed']}")
    loo = rep["leave_one_out"]
    if "skipped" in loo:
        print(f"leave-one-out: skipped ({loo['skipped']})")
    elif loo["flagged_points"]:
        warn(f"leave-one-out flags moving point(s) {loo['flagged_points']} as inconsistent "
             "with the others; check or drop them")
    else:
        print("leave-one-out: no fiducial stands out")
    for tgt in rep.get("targets", []):
        print(f"target {tgt['index']}: predicted TRE {tgt['predicted_tre_mm']:.2f} mm "
              f"(RMS, FLE {rep['fle_mm']:g} mm)")
    print(f"wrote {args.json}")
    return 0
