"""Planted-marker sweep of ``scrubin deid`` over every locally installed real DICOM file.

For each file of pydicom's ``test_files`` and of pydicom-data that holds a SOP Class UID:
plant unique markers in every text/date/time/UID attribute, nested sequences and private
tags (``tests/imaging/deid_markers.py``), de-identify it alone (Basic Profile, burned-in
images allowed) and search every output byte and the report for the markers. Prints the
files tried, markers planted and markers found (must be 0). The test suite runs a fixed
named subset (``tests/imaging/test_deid.py``); this is the full pass (about a minute).
With ``--dciodvfy`` it also lists the dciodvfy errors an output has that its planted input
has not (UIDs masked).

    .venv/bin/python tools/deid_marker_sweep.py [--dciodvfy]
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pydicom.data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "imaging"))
from deid_markers import Planter, all_bytes, found

from scrubin.imaging.deid import DeidError, DeidOptions
from scrubin.workflows.deid import deidentify_tree


def corpus() -> list[Path]:
    """The installed pydicom / pydicom-data files (folders only: nothing is downloaded)."""
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    spec = importlib.util.find_spec("data_store")
    if spec is not None and spec.origin:
        roots.append(Path(spec.origin).parent / "data")
    return [p for r in roots if r.is_dir() for p in sorted(r.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")]


def dciodvfy_errors(path: Path) -> set[str]:
    """dciodvfy's error lines with UIDs masked."""
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {re.sub(r"\d+(\.\d+){2,}", "<UID>", " ".join(line.split()))
            for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")}


def main() -> int:
    """Run the sweep; exit status 1 if any marker is found."""
    check = "--dciodvfy" in sys.argv[1:]
    worse = 0
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="deid-sweep-"))
    tried = planted = leaked = 0
    kinds: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for i, path in enumerate(corpus()):
        try:
            ds = pydicom.dcmread(path, force=True)
            if "SOPClassUID" not in ds:
                skipped["no SOP Class UID (not an instance)"] += 1
                continue
            planter = Planter()
            planter.plant(ds)
            folder = tmp / str(i)
            folder.mkdir()
            has_meta = "TransferSyntaxUID" in getattr(ds, "file_meta", {})
            ds.save_as(folder / "f.dcm", enforce_file_format=has_meta)
        except Exception as exc:  # a file pydicom cannot rewrite: not a de-identification result
            skipped[f"cannot plant ({type(exc).__name__})"] += 1
            continue
        try:
            report = deidentify_tree(folder / "f.dcm", folder / "out", DeidOptions(),
                                     burned_in="allow")
        except DeidError as exc:
            skipped[f"refused: {exc}"[-80:]] += 1
            continue
        hits = found(planter.markers, all_bytes(folder / "out") + [json.dumps(report).encode()])
        tried += 1
        planted += len(planter.markers)
        leaked += len(hits)
        kinds.update(planter.kinds)
        if hits:
            print(f"LEAK {path.name}: {[h.decode() for h in hits[:5]]}")
        if check:
            new = dciodvfy_errors(next((folder / "out").rglob("*.dcm"))) - dciodvfy_errors(
                folder / "f.dcm")
            if new:
                worse += 1
                print(f"dciodvfy {path.name}: {sorted(new)[:2]}")
    print(f"files tried {tried}, markers planted {planted} {dict(kinds)}, markers found {leaked}")
    for why, n in sorted(skipped.items()):
        print(f"  skipped {n}: {why}")
    if check:
        print(f"files whose output has a dciodvfy error its input has not: {worse}")
    return 1 if leaked else 0


if __name__ == "__main__":
    sys.exit(main())
