"""``scrubin deid IN OUT``: DICOM PS3.15 Annex E de-identification of a file or folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scrubin.commands._common import require_output_folders, warn

USAGE = ("scrubin deid IN OUT [--keep-dates|--shift-dates] [--keep-private SAFE-LIST] "
         "[--retain NAME[,NAME]] [--burned-in refuse|skip|allow] [--key FILE] "
         "[--json REPORT.json]")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``deid`` command."""
    p = sub.add_parser(
        "deid",
        help="de-identify DICOM files (PS3.15 Annex E Basic Profile) into a new folder",
        description="Apply DICOM PS3.15 Annex E Table E.1-1 (Basic Application Level "
        "Confidentiality Profile) to every DICOM file under IN, recursively in sequences; "
        "remove private attributes; remap UIDs consistently across the run; remove dates "
        "(or shift them by one offset per patient, or keep them); set PatientIdentityRemoved "
        "and the De-identification Method. Output: OUT/S0001/I00001.dcm ...; OUT must not "
        "exist or be empty and is written only if every file succeeds. Images that may "
        "carry burned-in text (BurnedInAnnotation YES, secondary capture, ultrasound, screen "
        "captures) are refused unless --burned-in says otherwise.",
    )
    p.add_argument("input", type=Path, metavar="IN", help="DICOM file or folder")
    p.add_argument("output", type=Path, metavar="OUT", help="new output folder")
    dates = p.add_mutually_exclusive_group()
    dates.add_argument("--keep-dates", dest="dates", action="store_const", const="keep",
                       help="Retain Longitudinal Temporal Information with Full Dates")
    dates.add_argument("--shift-dates", dest="dates", action="store_const", const="shift",
                       help="Retain Longitudinal Temporal Information with Modified Dates: "
                       "one whole-day offset per patient (1-10 years back)")
    p.set_defaults(dates="remove")
    p.add_argument("--keep-private", type=Path, metavar="SAFE-LIST",
                   help="Retain Safe Private: keep the private attributes listed in this file, "
                   "one 'GGGG,xxEE,CREATOR' a line (default: remove all)")
    p.add_argument("--retain", metavar="NAME[,NAME]", default="",
                   help="also retain: uids, device, institution, patient-characteristics "
                   "(the PS3.15 E.3 options of those names)")
    p.add_argument("--burned-in", choices=("refuse", "skip", "allow"), default="refuse",
                   help="images that may carry burned-in text: refuse (default), skip them, or "
                   "allow them (their pixels are NOT cleaned)")
    p.add_argument("--key", type=Path, metavar="FILE",
                   help="secret key file (>= 16 bytes) so that later runs map UIDs, dates and "
                   "patients the same way (default: a random key per run)")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="write the report (counts and actions only) here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """De-identify ``args.input`` into ``args.output``; print the summary."""
    require_output_folders(("OUT", args.output), ("--json", args.json))
    from scrubin.imaging.deid import RETAIN_OPTIONS, DeidError, DeidOptions, parse_safe_private
    from scrubin.workflows.deid import deidentify_tree, write_report

    retain = tuple(r.strip() for r in args.retain.split(",") if r.strip())
    bad = [r for r in retain if r not in RETAIN_OPTIONS]
    if bad:
        raise DeidError(f"--retain {','.join(bad)}: expected names from "
                        f"{', '.join(RETAIN_OPTIONS)}")
    safe = frozenset()
    if args.keep_private is not None:
        try:
            text = args.keep_private.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise DeidError(f"--keep-private {args.keep_private}: cannot read the safe list "
                            f"({getattr(exc, 'strerror', None) or exc})") from None
        safe = parse_safe_private(text, str(args.keep_private))
    options = DeidOptions(dates=args.dates, retain=retain, safe_private=safe)
    if args.key is not None:
        try:
            key = args.key.read_bytes()
        except OSError as exc:
            raise DeidError(f"--key {args.key}: cannot read ({exc.strerror or exc})") from None
        if len(key) < 16:
            raise DeidError(f"--key {args.key}: {len(key)} bytes; expected at least 16")
        options.key = key
    report = deidentify_tree(args.input, args.output, options, burned_in=args.burned_in)
    files = report["files"]
    assert isinstance(files, dict)
    for what, n in files.items():
        if what.startswith("burned-in") and n:
            warn(f"{n} file(s) may carry burned-in text ({what}); pixels are not cleaned")
    if args.json is not None:
        if str(args.json) == "-":
            json.dump(report, sys.stdout, indent=2)
            print()
        else:
            write_report(args.json, report)
    print(f"wrote {files.get('written', 0)} de-identified file(s) in {report['series']} "
          f"series to {args.output} ({report['standard']} Table E.1-1)")
    return 0
