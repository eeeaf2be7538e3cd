"""``scrubin fiducials``: find spherical fiducial markers in a CT series (LPS mm)."""

from __future__ import annotations

import argparse

from scrubin.commands._common import require_output_folders, warn

#: Defaults shown in --help; equal to scrubin.registration.fiducials.DEFAULT_DIAMETER_MM and
#: DEFAULT_MIN_HU (kept here so that --help does not import scipy; a test checks they agree).
DEFAULT_DIAMETER_MM = (2.0, 4.0)
DEFAULT_MIN_HU = 2000.0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fiducials``."""
    p = sub.add_parser(
        "fiducials",
        help="find spherical fiducial markers in a CT series (sub-voxel, LPS mm)",
        description="Detect spherical fiducial markers in CT: dense blobs (material HU >= "
        "--min-hu) of the given diameter, sub-voxel centres from a blurred-sphere model fit, "
        "a confidence per marker; bone, wires, too big or too small objects are rejected. "
        "Writes centres in the CT frame (DICOM LPS mm) with the series UIDs.",
    )
    p.add_argument("path", help="DICOM folder or file (or NIfTI/NRRD/MHA)")
    p.add_argument("--json", required=True, metavar="OUT", help="result JSON to write")
    p.add_argument("--csv", metavar="OUT",
                   help="also write the centres as x,y,z CSV (for 'register points')")
    p.add_argument("--diameter", default=f"{DEFAULT_DIAMETER_MM[0]:g}:{DEFAULT_DIAMETER_MM[1]:g}",
                   metavar="MIN:MAX", help="marker diameter range in mm (default 2:4)")
    p.add_argument("--min-hu", type=float, default=DEFAULT_MIN_HU, metavar="HU",
                   help=f"lowest marker material HU (default {DEFAULT_MIN_HU:g}, above bone)")
    p.add_argument("--series", metavar="UID", help="series to use when the folder holds several")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Detect and print one line per marker."""
    require_output_folders(("--json", args.json), ("--csv", args.csv))
    from scrubin.workflows.fiducials import parse_diameter_range, run_fiducials

    rep = run_fiducials(
        args.path, args.json, out_csv=args.csv, diameter_mm=parse_diameter_range(args.diameter),
        min_hu=args.min_hu, series_uid=args.series,
    )
    print(f"{rep['count']} fiducial(s) in series {rep['source']['series_instance_uid'] or '?'} "
          f"({rep['rejected_count']} candidate(s) rejected); centres in CT/LPS mm:")
    for f in rep["fiducials"]:
        x, y, z = f["center_lps"]
        print(f"  #{f['index']}: ({x:9.3f}, {y:9.3f}, {z:9.3f})  diameter {f['diameter_mm']:.2f} "
              f"mm  confidence {f['confidence']:.2f}  voxels {f['voxel_count']}")
    if rep["count"] < 3:
        warn("fewer than 3 fiducials found; point registration needs 3 or more")
    print(f"wrote {args.json}" + (f" and {args.csv}" if args.csv else ""))
    return 0
