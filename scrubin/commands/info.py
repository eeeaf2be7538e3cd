"""``scrubin info DIR|FILE [--json FILE]``: list the volumes found (DICOM, multi-frame, NIfTI)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scrubin.commands._common import require_output_folders

if TYPE_CHECKING:  # the loader pulls in pydicom: imported in run() only
    from scrubin.imaging.load import Catalog, SeriesInfo


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``info`` command."""
    parser = sub.add_parser(
        "info",
        help="list the volumes in a DICOM folder or image file",
        description="List the volumes found under DIR (searched recursively) or in FILE "
        "(DICOM, NIfTI, NRRD, MHA): key (SeriesInstanceUID), modality, description, size "
        "(columns x rows x slices), spacing (mm) and slice count, plus the number of files "
        "skipped as non-DICOM or unusable.",
    )
    parser.add_argument("path", metavar="DIR|FILE", help="DICOM folder or image file")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write the listing as JSON to FILE ('-': print JSON to "
                        "stdout instead of the table)")
    parser.add_argument(
        "--skipped", action="store_true", help="also list each skipped file and why"
    )
    parser.set_defaults(func=run)


def _spacing_text(s: SeriesInfo) -> str:
    return " x ".join("?" if math.isnan(v) else f"{v:.4g}" for v in s.spacing)


def as_dict(catalog: Catalog) -> dict[str, object]:
    """JSON-ready description of a catalog (NaN spacing becomes null)."""
    return {
        "volumes": [
            {
                "key": s.key,
                "series_instance_uid": s.series_instance_uid,
                "modality": s.modality,
                "description": s.description,
                "size": list(s.size),
                "spacing_mm": [None if math.isnan(v) else v for v in s.spacing],
                "slice_count": s.slice_count,
                "kind": s.kind,
                "frame_of_reference_uid": s.frame_of_reference_uid,
                "orientation": list(s.orientation),
                "files": len(s.files),
                "problem": s.problem or None,
                "gantry_tilt_deg": s.tilt_deg,
            }
            for s in catalog.series
        ],
        "skipped": [{"file": str(p), "reason": why} for p, why in catalog.skipped],
    }


def format_table(catalog: Catalog) -> str:
    """A plain-text table of the volumes and the skipped-file count."""
    header = ("SeriesInstanceUID", "Mod", "Description", "Size (c x r x s)", "Spacing (mm)",
              "Slices")
    rows = [
        (s.key or "-", s.modality or "-", s.description or "-",
         " x ".join(str(n) for n in s.size), _spacing_text(s), str(s.slice_count))
        for s in catalog.series
    ]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for s in catalog.series:
        if s.problem:
            lines.append(f"note: {s.key}: cannot be loaded: {s.problem}")
        elif s.tilt_deg:
            lines.append(f"note: {s.key}: gantry tilt {s.tilt_deg:.2f} deg "
                         "(kept exactly as a sheared affine)")
    lines.append(f"{len(catalog.series)} volume(s); {len(catalog.skipped)} file(s) skipped "
                 "(non-DICOM or unusable)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the table for ``args.path``; with ``--json FILE`` also write it as JSON."""
    to_stdout = args.json is not None and str(args.json) == "-"
    require_output_folders(("--json", None if to_stdout else args.json))
    from scrubin.imaging.errors import ImagingError
    from scrubin.imaging.fileio import write_json_atomic
    from scrubin.imaging.load import scan

    catalog = scan(args.path)
    if to_stdout:
        json.dump(as_dict(catalog), sys.stdout, indent=2)
        print()
        return 0
    print(format_table(catalog))
    if args.skipped:
        for path, why in catalog.skipped:
            print(f"skipped {path}: {why}")
    if args.json is not None:
        write_json_atomic(args.json, as_dict(catalog), error=ImagingError)
        print(f"wrote {args.json}")
    return 0
