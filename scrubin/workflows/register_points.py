"""Workflow of ``scrubin register points``: point files in, transform and error report out.

The moving points (default frame CT, LPS mm) are registered onto the fixed points (default
frame REF, mm) in closed form; the report holds ``T_fixed_moving`` in the project's JSON form,
FRE, per-point residuals, a leave-one-out check of each fiducial and, given the FLE, the
predicted TRE (Fitzpatrick, West & Maurer 1998, eq. 46) at each target. FRE is reported but
labelled: it is not an accuracy measure (Fitzpatrick 2009).

A gross FRE - beyond the chi-square limit the FLE allows (FWM 1998 eq. 10) and not explained
by one bad fiducial, or above 10 mm whatever the FLE (:mod:`scrubin.registration.fre_check`)
- is a failed registration: :class:`~scrubin.registration.fre_check.GrossFREError` with a
one-line reason and, when the unpaired matcher finds a consistent pairing of the same
points, a hint to ``--unpaired`` with that pairing. No report is written then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.fileio import read_json
from scrubin.registration.correspondence import match_points
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import CT, REF
from scrubin.registration.fre_check import (
    ABSOLUTE_FRE_LIMIT_MM,
    GROSS_FRE_ALPHA,
    GrossFREError,
    fre_limit_mm,
    gross_fre_reason,
)
from scrubin.registration.points import register_points
from scrubin.registration.pointsets import read_points_csv, write_text_atomic
from scrubin.registration.tre import (
    LOO_ALPHA,
    expected_fre_mm,
    leave_one_out,
    predicted_tre_mm,
)

FRE_NOTE = (
    "FRE measures how well the fiducials agree after registration; it does not measure "
    "accuracy at a target (FRE and TRE are uncorrelated, Fitzpatrick 2009). Use predicted_tre."
)


def _round(a: np.ndarray | float, nd: int = 4) -> Any:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def register_point_sets(
    fixed_mm: np.ndarray,
    moving_mm: np.ndarray,
    targets_mm: np.ndarray | None = None,
    fle_mm: float | None = None,
    unpaired: bool = False,
    scale: bool = False,
    fixed_frame: str = REF,
    moving_frame: str = CT,
    source: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register points and build the JSON report (see module docstring).

    Parameters
    ----------
    fixed_mm
        ``(N, 3)`` points in ``fixed_frame`` (mm), e.g. tracked fiducials in REF.
    moving_mm
        ``(M, 3)`` points in ``moving_frame`` (mm), e.g. CT fiducials in LPS.
    targets_mm
        ``(K, 3)`` target points in ``moving_frame``; needs ``fle_mm``.
    fle_mm
        RMS 3-D fiducial localisation error (mm) for predicted TRE and the LOO test.
    unpaired
        Points are unlabelled: find the correspondence from geometry first.
    scale
        Also estimate an isotropic scale (no TRE prediction then).
    fixed_frame, moving_frame
        Frame names written into the transform (``T_fixed_moving``).
    source
        Provenance (series UIDs) for the transform.
    """
    if targets_mm is not None and fle_mm is None:
        raise RegistrationError(
            "predicted TRE at the targets needs --fle (RMS fiducial localisation error in mm)"
        )
    if targets_mm is not None and scale:
        raise RegistrationError(
            "predicted TRE (Fitzpatrick-West-Maurer eq. 46) holds for rigid registration only; "
            "drop --scale or --targets"
        )
    if fle_mm is not None and not (np.isfinite(fle_mm) and fle_mm > 0):
        raise RegistrationError(f"--fle must be a positive RMS distance in mm, got {fle_mm!r}")
    report: dict[str, Any] = {}
    fixed_idx = np.arange(len(fixed_mm))
    moving_idx = np.arange(len(moving_mm))
    if unpaired:
        corr = match_points(fixed_mm, moving_mm, fle_mm=fle_mm if fle_mm is not None else 0.5)
        fixed_idx, moving_idx = corr.fixed_index, corr.moving_index
        report["correspondence"] = {
            "pairs": [[int(m), int(f)] for m, f in zip(moving_idx, fixed_idx, strict=True)],
            "pairs_order": "[moving index, fixed index] (0-based rows of the input files)",
            "unmatched_moving": corr.unmatched_moving.tolist(),
            "unmatched_fixed": corr.unmatched_fixed.tolist(),
            "match_rms_mm": round(corr.rms_mm, 4),
        }
    fixed = np.asarray(fixed_mm)[fixed_idx]
    moving = np.asarray(moving_mm)[moving_idx]
    reg = register_points(fixed, moving, scale=scale, src=moving_frame, dst=fixed_frame,
                          source=source)
    n = len(fixed)
    reason = gross_fre_reason(fixed, moving, fle_mm, scale)
    if reason is not None:
        hint = "" if unpaired else _unpaired_hint(fixed, moving, fle_mm, scale)
        advice = "check which fiducial was touched for which point" + (
            "" if "absolute" in reason else " and that --fle is a realistic RMS 3-D error")
        raise GrossFREError(f"registration failed: {reason}; {hint or advice}")
    report["transform"] = reg.transform.to_json()
    report["scale"] = round(reg.scale, 9)
    report["n_points"] = n
    report["fre_mm"] = round(reg.fre_mm, 4)
    report["fre_note"] = FRE_NOTE
    report["fre_check"] = {
        "absolute_limit_mm": ABSOLUTE_FRE_LIMIT_MM,
        "method": "failed above the absolute limit, or (with --fle) above "
        "sqrt(chi2_{1-alpha}(3N-6) FLE^2/(3N)) unless one fiducial explains it "
        "(Fitzpatrick, West & Maurer 1998 eq. 10)",
    }
    if fle_mm is not None:
        report["fle_mm"] = float(fle_mm)
        report["expected_fre_mm"] = round(expected_fre_mm(fle_mm, n), 4)
        report["fre_check"]["limit_mm"] = round(fre_limit_mm(n, fle_mm, scale), 4)
        report["fre_check"]["alpha"] = GROSS_FRE_ALPHA

    loo = None
    loo_info: dict[str, Any]
    need = 4 if fle_mm is not None else 5
    if scale:
        loo_info = {"skipped": "leave-one-out is implemented for rigid registration only"}
    elif n < need:
        loo_info = {"skipped": f"needs at least {need} points, got {n}"}
    else:
        loo = leave_one_out(fixed, moving, fle_mm=fle_mm)
        loo_info = {
            "alpha": LOO_ALPHA,
            "fle_estimated": loo.fle_estimated,
            "flagged_points": [int(moving_idx[k]) for k in np.flatnonzero(loo.flagged)],
            "method": "error of each fiducial predicted by the other N-1, against "
            "sqrt(FLE^2 + TRE_{N-1}^2) (eq. 46); flagged above the 1-alpha quantile",
        }
    report["leave_one_out"] = loo_info

    rows = []
    for k in range(n):
        row: dict[str, Any] = {
            "moving_index": int(moving_idx[k]),
            "fixed_index": int(fixed_idx[k]),
            "residual_mm": _round(reg.residuals_mm[k]),
            "distance_mm": round(float(reg.residual_norms_mm[k]), 4),
        }
        if loo is not None:
            row["loo_error_mm"] = round(float(loo.errors_mm[k]), 4)
            row["loo_expected_mm"] = round(float(loo.expected_mm[k]), 4)
            row["loo_flag"] = bool(loo.flagged[k])
        rows.append(row)
    report["residuals"] = rows

    if targets_mm is not None and fle_mm is not None:
        tre = predicted_tre_mm(moving, targets_mm, fle_mm)
        mapped = reg.transform.apply(targets_mm)
        report["targets"] = [
            {
                "index": i,
                f"point_{moving_frame}": _round(targets_mm[i]),
                f"point_{fixed_frame}": _round(mapped[i]),
                "predicted_tre_mm": round(float(tre[i]), 4),
            }
            for i in range(len(targets_mm))
        ]
        report["tre_method"] = (
            "Fitzpatrick, West & Maurer 1998 (IEEE TMI 17(5)) eq. 46: "
            "TRE^2 = FLE^2/N (1 + 1/3 sum_k d_k^2/f_k^2), FLE = RMS 3-D localisation error"
        )
    return report


def _unpaired_hint(fixed: np.ndarray, moving: np.ndarray, fle_mm: float | None,
                   scale: bool) -> str:
    """``--unpaired`` hint when the matcher pairs all points consistently in another order."""
    try:
        corr = match_points(fixed, moving, fle_mm=fle_mm if fle_mm is not None else 0.5,
                            max_unmatched=0)
    except RegistrationError:
        return ""
    mi, fi = corr.moving_index, corr.fixed_index
    if len(mi) != len(moving) or np.array_equal(mi, fi):
        return ""
    if gross_fre_reason(fixed[fi], moving[mi], fle_mm, scale) is not None:
        return ""
    fre = register_points(fixed[fi], moving[mi], scale=scale).fre_mm
    pairs = ", ".join(f"{m}->{f}" for m, f in sorted(zip(mi.tolist(), fi.tolist(),
                                                         strict=True)))
    return (f"the points look paired in the wrong order: --unpaired finds a consistent pairing "
            f"(FRE {fre:.2f} mm; moving->fixed rows {pairs})")


def read_moving_points(path: str | Path) -> tuple[np.ndarray, dict[str, str]]:
    """Moving points from a CSV file, or from a ``scrubin fiducials`` JSON (with its UIDs).

    Returns ``(points_mm, source)``; ``source`` holds the series/frame-of-reference UIDs of a
    fiducials JSON (empty for CSV).
    """
    p = Path(path)
    if p.suffix.lower() != ".json":
        return read_points_csv(p, min_points=3), {}
    doc = read_json(p, RegistrationError)
    try:
        pts = np.array([f["center_lps"] for f in doc["fiducials"]], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise RegistrationError(
            f"{p}: expected a 'scrubin fiducials' JSON with fiducials[].center_lps"
        ) from None
    if pts.ndim != 2 or pts.shape[1:] != (3,) or len(pts) < 3:
        raise RegistrationError(f"{p}: needs at least 3 fiducials with 3 coordinates each")
    src = doc.get("source") or {}
    source = {k: str(src[k]) for k in ("series_instance_uid", "frame_of_reference_uid")
              if src.get(k)}
    return pts, source


def run_register_points(
    fixed_csv: str | Path,
    moving_csv: str | Path,
    out_json: str | Path | None,
    targets_csv: str | Path | None = None,
    fle_mm: float | None = None,
    unpaired: bool = False,
    scale: bool = False,
    fixed_frame: str = REF,
    moving_frame: str = CT,
    source: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Read the inputs, register, write ``out_json`` atomically; return the report.

    ``moving_csv`` may also be the JSON written by ``scrubin fiducials``; its series UIDs then
    become the transform's provenance (unless ``source`` is given).
    """
    fixed = read_points_csv(fixed_csv, min_points=3)
    moving, moving_source = read_moving_points(moving_csv)
    targets = read_points_csv(targets_csv) if targets_csv is not None else None
    report = register_point_sets(
        fixed, moving, targets, fle_mm=fle_mm, unpaired=unpaired, scale=scale,
        fixed_frame=fixed_frame, moving_frame=moving_frame,
        source=source if source is not None else moving_source,
    )
    report["inputs"] = {
        "fixed": str(fixed_csv),
        "moving": str(moving_csv),
        **({"targets": str(targets_csv)} if targets_csv is not None else {}),
    }
    if out_json is not None:
        write_text_atomic(Path(out_json), json.dumps(report, indent=2) + "\n")
    return report
