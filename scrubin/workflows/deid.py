"""``scrubin deid``: de-identify a DICOM file or folder into a new folder, with a report.

Every file under IN is read; DICOM files are de-identified by one
:class:`~scrubin.imaging.deid.Deidentifier` (one key, so one UID map and one date offset per
patient across the run) and written as ``OUT/S0001/I00001.dcm`` (series in order of first
appearance; the input names, which often hold a patient's name, are not reused). Files that
are not DICOM, and DICOMDIR files (their records repeat the patient module), are left out
and counted. The whole output is written into a hidden folder next to OUT and renamed to OUT
only when every file succeeded, so a failure leaves nothing behind.

The report holds counts and actions only: no input path, name, UID, date or offset.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from scrubin.imaging.deid import Deidentifier, DeidError, DeidOptions, burned_in_reason
from scrubin.imaging.fileio import write_json_atomic

BURNED_IN_POLICIES = ("refuse", "skip", "allow")


def _inputs(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DeidError(f"{src}: no such file or folder; expected DICOM files")
    return sorted(p for p in src.rglob("*") if p.is_file())


def _read(path: Path, header_only: bool) -> pydicom.Dataset | None:
    """The dataset of ``path``, or None when it is not DICOM (or is a DICOMDIR)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=header_only)
        except (InvalidDicomError, EOFError):
            return _read_without_meta(path, header_only)
        except Exception as exc:  # corrupt DICOM: a user error naming the file
            raise DeidError(f"{path}: not a readable DICOM file "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
                            ) from None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == \
            "1.2.840.10008.1.3.10":
        return None  # Media Storage Directory (DICOMDIR)
    return ds


def _read_without_meta(path: Path, header_only: bool) -> pydicom.Dataset | None:
    """A dataset written without preamble and file meta (PS3.10 7.1 not followed), or None.

    Accepted only when it holds a SOP Class and SOP Instance UID (any file parses as
    *something* when forced); the file meta it lacks is made from the encoding it was read
    with, so the output is a proper PS3.10 file.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            return None
        str(ds.SOPClassUID)
    except Exception:  # not DICOM at all
        return None
    implicit, little = ds.original_encoding
    meta = pydicom.dataset.FileMetaDataset()
    meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit
                              else pydicom.uid.ExplicitVRLittleEndian if little
                              else pydicom.uid.ExplicitVRBigEndian)
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    return ds


def _has_pixels(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True,  # known to be DICOM (pass 1 read it)
                             specific_tags=["PixelData", "FloatPixelData",
                                            "DoubleFloatPixelData"])
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def deidentify_tree(src: str | Path, dst: str | Path, options: DeidOptions,
                    burned_in: str = "refuse") -> dict[str, object]:
    """De-identify every DICOM file under ``src`` into the new folder ``dst``; the report.

    Parameters
    ----------
    src
        A DICOM file or a folder searched recursively.
    dst
        Output folder: must not exist or be empty; created only on success.
    options
        What the run keeps (dates, retain options, safe private list, key).
    burned_in
        Files that may carry burned-in text (:func:`~scrubin.imaging.deid.burned_in_reason`):
        ``"refuse"`` (the default: error, nothing written), ``"skip"`` (left out, counted) or
        ``"allow"`` (de-identified anyway, counted; the pixels are not cleaned).

    Raises
    ------
    DeidError
        Bad input or output path, a burned-in file refused, a file that cannot be written.
    """
    if burned_in not in BURNED_IN_POLICIES:
        raise DeidError(f"burned_in must be one of {BURNED_IN_POLICIES}, got {burned_in!r}")
    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DeidError(f"{dst}: output folder exists and is not empty")
    if not dst.parent.is_dir():
        raise DeidError(f"{dst}: parent folder {dst.parent} does not exist")
    files = _inputs(src)
    counts: Counter[str] = Counter()
    todo: list[Path] = []
    for p in files:  # pass 1: headers only; refuse before writing anything
        ds = _read(p, header_only=True)
        if ds is None:
            counts["not DICOM (left out)"] += 1
            continue
        reason = burned_in_reason(ds, has_pixels=_has_pixels(p))
        if reason is not None:
            if burned_in == "refuse":
                raise DeidError(f"{p}: {reason}; nothing written (check the pixels, then pass "
                                "--burned-in allow, or --burned-in skip to leave such files out)")
            counts[f"burned-in text possible ({burned_in})"] += 1
            if burned_in == "skip":
                continue
        todo.append(p)
    if not todo:
        raise DeidError(f"{src}: no DICOM file to de-identify")
    deid = Deidentifier(options)
    tmp = dst.with_name(f".{dst.name}.{os.urandom(6).hex()}.tmp")
    tmp.mkdir()
    series: dict[str, str] = {}
    try:
        with warnings.catch_warnings():  # pydicom's warnings quote values: not in our logs
            warnings.simplefilter("ignore")
            _write_all(todo, deid, tmp, series, counts)
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _report(deid, options, burned_in, len(files), counts, len(series))


def _write_all(todo: list[Path], deid: Deidentifier, tmp: Path, series: dict[str, str],
               counts: Counter[str]) -> None:
    """Pass 2: de-identify each file and write it as ``tmp/Snnnn/Innnnn.dcm``."""
    per_series: Counter[str] = Counter()
    for p in todo:
        ds = _read(p, header_only=False)
        if ds is None:
            raise DeidError(f"{p}: changed while being de-identified")
        deid.deidentify(ds)
        key = str(ds.get("SeriesInstanceUID", "")) or "none"
        folder = series.setdefault(key, f"S{len(series) + 1:04d}")
        per_series[key] += 1
        (tmp / folder).mkdir(exist_ok=True)
        out = tmp / folder / f"I{per_series[key]:05d}.dcm"
        try:
            # a dataset without SOP Class (not a storable instance) keeps its own form
            ds.save_as(out, enforce_file_format="SOPClassUID" in ds)
        except (ValueError, AttributeError, TypeError, OverflowError) as exc:
            raise DeidError(f"{p}: the de-identified dataset cannot be written "
                            f"({type(exc).__name__})") from None
        counts["written"] += 1


def _report(deid: Deidentifier, options: DeidOptions, burned_in: str, n_files: int,
            counts: Counter[str], n_series: int) -> dict[str, object]:
    """Counts and actions only: no path, name, UID, date or offset."""
    return {
        "standard": deid.table.standard,
        "table": "Table E.1-1",
        "table_rows": len(deid.table.rules),
        "options": sorted(deid.table.option_names[c]["name"] for c in deid.columns),
        "dates": {"remove": "removed (dummy 19000101)",
                  "shift": "shifted by one whole-day offset per patient (offsets not recorded)",
                  "keep": "kept"}[options.dates],
        "burned_in_policy": burned_in,
        "files": {"input": n_files, **dict(sorted(counts.items()))},
        "patients": len(deid.patients),
        "series": n_series,
        "uids_remapped": len(deid.uids_mapped),
        "actions": dict(sorted(deid.counts.items())),
    }


def write_report(path: str | Path, report: dict[str, object]) -> None:
    """Write the report atomically (JSON)."""
    write_json_atomic(path, report, error=DeidError)
