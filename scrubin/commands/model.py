"""``scrubin model``: DICOM folder or image file -> segmented, smoothed, decimated surface."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scrubin.commands._common import DeprecatedAlias, require_output_folders

USAGE = (
    "scrubin model DIR|IMAGE_FILE (--preset NAME | --threshold LO[:HI]) --out FILE.glb|.stl|.ply"
    "|.obj [--seg SEG.dcm] [--seed-point X,Y,Z] [--smooth N] [--max-triangles N] [--series UID] "
    "[--json REPORT.json] [--exclude-fiducials] [--step N]"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``model`` command."""
    p = sub.add_parser(
        "model",
        help="segment a CT and write a surface model (GLB/STL/PLY/OBJ)",
        description="Segment a volume (preset and/or HU threshold, optional seed), extract its "
        "surface, smooth (Taubin), decimate to a triangle budget and write it. GLB is glTF 2.0 "
        "in metres, +Y up; STL/PLY/OBJ are DICOM LPS mm.",
    )
    p.add_argument("input", type=Path, metavar="DIR|IMAGE_FILE",
                   help="DICOM folder or file, or NIfTI/NRRD/MHA file")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="output mesh (.glb .stl .ply .obj)")
    p.add_argument("--preset", metavar="NAME", help="bone, skin, soft-tissue, vessels or air")
    p.add_argument("--threshold", metavar="LO[:HI]",
                   help="HU range LO[:HI], e.g. 300, -1000:-400, :200")
    p.add_argument("--seed-point", metavar="X,Y,Z",
                   help="keep the region holding this LPS mm point: X,Y,Z")
    p.add_argument("--seed", dest="seed_point", metavar="X,Y,Z", action=DeprecatedAlias,
                   new="--seed-point", help=argparse.SUPPRESS)
    p.add_argument("--smooth", type=int, default=10, metavar="N",
                   help="Taubin iterations (default 10)")
    p.add_argument("--max-triangles", type=int, default=100_000, metavar="N",
                   help="triangle budget (default 100000; 0 = no decimation)")
    p.add_argument("--series", metavar="UID",
                   help="SeriesInstanceUID when the folder holds several")
    p.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report here")
    p.add_argument("--seg", type=Path, metavar="FILE",
                   help="also write the segmentation as DICOM SEG (.dcm)")
    p.add_argument("--exclude-fiducials", action="store_true",
                   help="remove small dense skin markers from the segmentation")
    p.add_argument("--step", type=int, default=0, metavar="N",
                   help="extract on a grid N times coarser (default 0 = automatic)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``scrubin model``; prints a one-line summary."""
    require_output_folders(("--out", args.out), ("--seg", args.seg), ("--json", args.json))
    from scrubin.workflows.model import ModelRequest, parse_seed, parse_threshold, run_model

    req = ModelRequest(
        input=args.input,
        out=args.out,
        preset=args.preset,
        threshold=None if args.threshold is None else parse_threshold(args.threshold),
        seed_lps=None if args.seed_point is None else parse_seed(args.seed_point),
        smooth=args.smooth,
        max_triangles=args.max_triangles,
        series_uid=args.series,
        json_path=args.json,
        seg_path=args.seg,
        exclude_fiducials=args.exclude_fiducials,
        step=args.step,
        measure_error=args.json is not None,
        progress=sys.stderr.isatty(),
    )
    report = run_model(req)
    err = report["decimation_error_mm"]
    err_text = "" if err is None else f", decimation error p99 {err['p99']:.2f} mm"
    print(
        f"wrote {args.out}: {report['triangles']} triangles, "
        f"{'watertight' if report['watertight'] else 'open'}, "
        f"{report['timings_s']['total']:.2f} s{err_text}"
    )
    return 0
