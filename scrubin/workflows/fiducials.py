"""Workflow of ``scrubin fiducials``: load a CT series, detect markers, write JSON (and CSV)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.load import load_volume
from scrubin.imaging.volume import Volume
from scrubin.registration.fiducials import (
    DEFAULT_DIAMETER_MM,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_MIN_HU,
    FiducialError,
    default_seed_hu,
    find_fiducials,
)
from scrubin.registration.frames import CT
from scrubin.registration.pointsets import write_points_csv, write_text_atomic

#: Rejected candidates listed in the JSON (the rest are only counted).
MAX_REJECTED_LISTED = 50


def parse_diameter_range(text: str) -> tuple[float, float]:
    """Parse ``MIN:MAX`` (mm), e.g. ``2:4``; a single number means ``MIN = MAX``."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise FiducialError(
            f"--diameter {text!r}: expected MIN:MAX in mm, e.g. 2:4"
        ) from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(np.isfinite(values)) or not 0 < values[0] <= values[1]:
        raise FiducialError(f"--diameter {text!r}: expected MIN:MAX in mm with 0 < MIN <= MAX")
    return values[0], values[1]


def fiducials_report(
    volume: Volume,
    diameter_mm: tuple[float, float] = DEFAULT_DIAMETER_MM,
    min_hu: float = DEFAULT_MIN_HU,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> dict[str, Any]:
    """Detect the markers of ``volume`` and build the JSON document (centres in LPS mm)."""
    every = find_fiducials(volume, diameter_mm, min_hu, min_confidence, include_rejected=True)
    found = [c for c in every if c.accepted]
    rejected = [c for c in every if not c.accepted]
    return {
        "frame": CT,
        "coordinates": "LPS",
        "unit": "mm",
        "source": {
            **volume.provenance(),
            "modality": volume.modality,
            "description": volume.description,
        },
        "parameters": {
            "diameter_mm": list(diameter_mm),
            "min_hu": min_hu,
            "seed_hu": round(default_seed_hu(volume, diameter_mm[0], min_hu), 1),
            "min_confidence": min_confidence,
        },
        "count": len(found),
        "fiducials": [{"index": i, **c.to_json()} for i, c in enumerate(found)],
        "rejected_count": len(rejected),
        "rejected": [c.to_json() for c in rejected[:MAX_REJECTED_LISTED]],
    }


def run_fiducials(
    path: str | Path,
    out_json: str | Path,
    out_csv: str | Path | None = None,
    diameter_mm: tuple[float, float] = DEFAULT_DIAMETER_MM,
    min_hu: float = DEFAULT_MIN_HU,
    series_uid: str | None = None,
) -> dict[str, Any]:
    """Load the series at ``path``, detect markers, write JSON (and CSV) atomically."""
    volume = load_volume(path, series_uid)
    report = fiducials_report(volume, diameter_mm, min_hu)
    report["source"]["path"] = str(path)
    if out_csv is not None:
        centres = np.array([f["center_lps"] for f in report["fiducials"]]).reshape(-1, 3)
        write_points_csv(Path(out_csv), centres, header="x_lps_mm,y_lps_mm,z_lps_mm")
    write_text_atomic(Path(out_json), json.dumps(report, indent=2) + "\n")
    return report
