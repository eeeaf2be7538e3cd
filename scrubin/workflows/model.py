"""``scrubin model``: image -> segmentation -> surface -> smoothing -> decimation -> files.

Every output (mesh, optional DICOM SEG, optional JSON report) is written to a temporary name
in its folder and renamed into place only after all of them succeeded: a failure leaves no
partial or stale-looking output behind. All argument checks happen before any work.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.errors import ImagingError, MeshError
from scrubin.imaging.fileio import temp_path
from scrubin.imaging.mesh import Mesh
from scrubin.imaging.mesh_io import mesh_format, save_mesh

#: Extensions of single-file (non-DICOM) volumes: no DICOM SEG can reference them.
NON_DICOM_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Colour per preset (RGBA); others get the default bone colour.
PRESET_COLORS: dict[str, tuple[float, float, float, float]] = {
    "bone": (0.89, 0.85, 0.79, 1.0),
    "skin": (0.93, 0.75, 0.65, 0.5),
    "soft-tissue": (0.80, 0.45, 0.40, 1.0),
    "vessels": (0.80, 0.10, 0.10, 1.0),
    "air": (0.55, 0.75, 0.95, 0.6),
}


class ModelArgumentError(ImagingError):
    """A ``scrubin model`` option value is malformed or inconsistent."""


def parse_threshold(text: str) -> tuple[float | None, float | None]:
    """Parse ``LO[:HI]``: ``"300"`` -> (300, None), ``"-1000:-400"``, ``":200"`` -> (None, 200).

    Raises
    ------
    ModelArgumentError
        Not one or two numbers, both sides empty, non-finite, or LO > HI.
    """
    parts = text.strip().split(":")
    if len(parts) > 2 or not text.strip():
        raise ModelArgumentError(f"--threshold {text!r}: expected LO, LO:HI, LO: or :HI (HU)")
    values: list[float | None] = []
    for p in parts:
        if p.strip() == "":
            values.append(None)
            continue
        try:
            v = float(p)
        except ValueError:
            raise ModelArgumentError(
                f"--threshold {text!r}: {p!r} is not a number; expected LO[:HI] in HU"
            ) from None
        if not math.isfinite(v):
            raise ModelArgumentError(f"--threshold {text!r}: values must be finite")
        values.append(v)
    lo = values[0]
    hi = values[1] if len(values) == 2 else None
    if lo is None and hi is None:
        raise ModelArgumentError(f"--threshold {text!r}: give at least one of LO and HI")
    if lo is not None and hi is not None and lo > hi:
        raise ModelArgumentError(f"--threshold {text!r}: LO {lo:g} is above HI {hi:g}")
    return lo, hi


def parse_seed(text: str) -> np.ndarray:
    """Parse ``X,Y,Z`` (LPS mm) into a (3,) array; e.g. ``"-12.5,30,40"``."""
    parts = text.split(",")
    try:
        seed = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise ModelArgumentError(f"--seed-point {text!r}: expected X,Y,Z in LPS mm") from None
    if seed.shape != (3,) or not np.all(np.isfinite(seed)):
        raise ModelArgumentError(
            f"--seed-point {text!r}: expected three finite numbers X,Y,Z (LPS mm)"
        )
    return seed


@dataclass
class ModelRequest:
    """What ``scrubin model`` was asked to do (all paths as given)."""

    input: Path
    out: Path
    preset: str | None = None
    threshold: tuple[float | None, float | None] | None = None
    seed_lps: np.ndarray | None = None
    smooth: int = 10
    max_triangles: int = 100_000
    series_uid: str | None = None
    json_path: Path | None = None
    seg_path: Path | None = None
    exclude_fiducials: bool = False
    step: int = 0
    measure_error: bool = True
    progress: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def validate(req: ModelRequest) -> None:
    """Check everything that can be checked before reading the input (one-line errors)."""
    if not req.input.exists():
        raise ModelArgumentError(f"input {str(req.input)!r} does not exist")
    mesh_format(req.out)
    if req.preset is None and req.threshold is None:
        raise ModelArgumentError("give --preset NAME or --threshold LO[:HI]")
    if req.smooth < 0:
        raise ModelArgumentError(f"--smooth must be >= 0, got {req.smooth}")
    if req.max_triangles < 0 or 0 < req.max_triangles < 4:
        raise ModelArgumentError(
            f"--max-triangles must be 0 (no decimation) or >= 4, got {req.max_triangles}"
        )
    if req.step < 0:
        raise ModelArgumentError(f"--step must be >= 1 (or 0 = automatic), got {req.step}")
    if req.seg_path is not None:
        if req.input.is_file() and req.input.name.lower().endswith(NON_DICOM_SUFFIXES):
            raise ModelArgumentError(
                f"--seg needs a DICOM input to reference; {str(req.input)!r} is not DICOM "
                "(NIfTI/NRRD/MetaImage)"
            )
        if req.seg_path.suffix.lower() != ".dcm":
            raise ModelArgumentError(f"--seg {str(req.seg_path)!r}: expected a .dcm file name")
    outs = [p for p in (req.out, req.seg_path, req.json_path) if p is not None]
    if len({p.resolve() for p in outs}) != len(outs):
        raise ModelArgumentError("--out, --seg and --json must name different files")
    for p in outs:
        if not p.parent.resolve().is_dir():
            raise ModelArgumentError(f"output folder {str(p.parent)!r} does not exist")


def auto_step(shape: tuple[int, ...], spacing: np.ndarray) -> int:
    """The grid tried first in automatic mode (see :mod:`scrubin.imaging.surface_grid`, which
    keeps it only when the coarse surface passes its check against full resolution)."""
    from scrubin.imaging.surface_grid import coarse_candidate

    return coarse_candidate(shape, spacing)


class _Stages:
    """Times named stages and shows one tqdm bar over them (stderr; off when not a TTY)."""

    def __init__(self, names: list[str], show: bool) -> None:
        from tqdm import tqdm

        self.times: dict[str, float] = {}
        self.bar = tqdm(total=len(names), file=sys.stderr, disable=not show, unit="stage",
                        leave=False)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.bar.set_description(name)
        t0 = time.perf_counter()
        out = fn()
        self.times[name] = time.perf_counter() - t0
        self.bar.update(1)
        return out

    def close(self) -> None:
        self.bar.close()


def run_model(req: ModelRequest) -> dict[str, Any]:
    """Run the whole path and return the report (also written to ``req.json_path``)."""
    from scrubin.imaging.decimate import decimate, surface_distance
    from scrubin.imaging.load import load_volume
    from scrubin.imaging.segment import segment
    from scrubin.imaging.smooth import grid_iterations, taubin_smooth
    from scrubin.imaging.surface_grid import extract_surface_auto

    validate(req)
    if req.seg_path is not None:
        from scrubin.imaging import seg_dicom  # noqa: F401  (fail before any work if it is missing)
    stages = _Stages(["read", "segment", "extract", "smooth", "decimate", "write"], req.progress)
    temps: list[tuple[Path, Path]] = []
    try:
        t_start = time.perf_counter()
        volume = stages.run("read", lambda: load_volume(req.input, req.series_uid, req.progress))
        seg = stages.run("segment", lambda: segment(
            volume, preset=req.preset, threshold=req.threshold, seed_lps=req.seed_lps,
            exclude_fiducials=req.exclude_fiducials,
        ))
        color = PRESET_COLORS.get(req.preset or "", PRESET_COLORS["bone"])
        raw, grid = stages.run("extract", lambda: extract_surface_auto(
            volume, mask=seg.mask, level=seg.level, step=req.step, name=seg.name,
            inside_below=bool(getattr(seg, "inside_below", False)),
        ))
        step = grid.step
        if raw.n_faces == 0:
            raise MeshError(f"segmentation {seg.name!r} produced an empty surface")
        raw.color = color
        smoothed: Mesh = stages.run("smooth", lambda: taubin_smooth(
            raw, grid_iterations(req.smooth, step)))
        final: Mesh = stages.run("decimate", lambda: decimate(smoothed, req.max_triangles)
                                 if req.max_triangles else smoothed.copy())
        final.color = color
        from scrubin.imaging.deid import identity_status

        final.provenance["patient_identity_removed"] = identity_status(
            volume.meta.get("datasets"))

        def write() -> None:
            tmp = temp_path(req.out, req.out.suffix)
            temps.append((tmp, req.out))
            save_mesh(final, tmp)
            if req.seg_path is not None:
                from scrubin.imaging.seg_dicom import write_seg

                tmp_seg = temp_path(req.seg_path, req.seg_path.suffix)
                temps.append((tmp_seg, req.seg_path))
                write_seg(volume, [seg], tmp_seg)

        stages.run("write", write)
        total = time.perf_counter() - t_start
        error = None
        if req.measure_error and final.n_faces < smoothed.n_faces:
            t0 = time.perf_counter()
            error = surface_distance(final, smoothed, max_points=100_000)
            stages.times["quality"] = time.perf_counter() - t0
        report = _report(req, volume, seg, step, smoothed, final, error, stages.times, total)
        report["grid_check"] = grid.as_dict()
        if req.json_path is not None:
            tmp_json = temp_path(req.json_path, req.json_path.suffix)
            temps.append((tmp_json, req.json_path))
            tmp_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        for tmp, dst in temps:
            os.replace(tmp, dst)
        temps.clear()
        return report
    finally:
        stages.close()
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def _report(
    req: ModelRequest, volume: Any, seg: Any, step: int, undecimated: Mesh, final: Mesh,
    error: dict[str, float] | None, times: dict[str, float], total: float,
) -> dict[str, Any]:
    summary = final.summary()
    return {
        "input": str(req.input),
        "series_instance_uid": volume.series_instance_uid,
        "frame_of_reference_uid": volume.frame_of_reference_uid,
        "patient_identity_removed": final.provenance.get("patient_identity_removed", "UNKNOWN"),
        "preset": req.preset,
        "threshold": None if req.threshold is None else list(req.threshold),
        "seed_lps_mm": None if req.seed_lps is None else [float(x) for x in req.seed_lps],
        "exclude_fiducials": req.exclude_fiducials,
        "segment": {"name": seg.name, "level": seg.level,
                    "threshold": [None if v is None else float(v) for v in seg.threshold]},
        "step": step,
        "smooth_iterations": req.smooth,
        "max_triangles": req.max_triangles,
        "triangles": summary["triangles"],
        "vertices": summary["vertices"],
        "bounds_lps_mm": summary["bounds_lps_mm"],
        "area_mm2": summary["area_mm2"],
        "volume_mm3": summary["volume_mm3"],
        "volume_ml": summary["volume_ml"],
        "watertight": summary["watertight"],
        "undecimated_triangles": undecimated.n_faces,
        "decimation_error_mm": None if error is None else {
            k: error[k] for k in ("max", "p99", "mean")
        },
        "timings_s": {**{k: round(v, 4) for k, v in times.items()}, "total": round(total, 4)},
        "outputs": {
            "mesh": str(req.out),
            "seg": None if req.seg_path is None else str(req.seg_path),
            "json": None if req.json_path is None else str(req.json_path),
        },
    }
