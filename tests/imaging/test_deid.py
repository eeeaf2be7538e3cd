"""De-identification (PS3.15 Annex E): the table, planted markers, UIDs, dates, burned-in text.

Truth comes from outside the code under test: the standard's table (every listed attribute
must come out changed under the Basic Profile, whose actions never keep a value), pydicom's
code dictionary for CID 7050, markers planted in real files (pydicom, pydicom-data, our
phantom) that must not occur in any output byte, dciodvfy's errors before and after, and the
phantom's geometry and a DICOM SEG read back against the de-identified series.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from scrubin.imaging.deid import (
    Deidentifier,
    DeidError,
    DeidOptions,
    burned_in_reason,
    parse_safe_private,
)
from scrubin.imaging.deid_table import TABLE_PATH, load_table
from scrubin.imaging.load import load_volume
from scrubin.imaging.seg_dicom import read_seg, write_seg
from scrubin.imaging.segment import segment
from scrubin.workflows.deid import deidentify_tree

sys.path.insert(0, str(Path(__file__).parent))
from deid_markers import Planter, all_bytes, found

#: The fast set: CT, MR, enhanced multi-frame MR, a SEG, nested private sequences, an SR with
#: deep content, an RT plan (plus the phantom series and a SEG of it, below).
FAST = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "liver_1frame.dcm",
        "nested_priv_SQ.dcm", "test-SR.dcm", "rtplan.dcm"]
#: The parametrised pass: a fixed list of real files of many kinds and encodings.
NAMED = FAST + [
    "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm",
    "eCT_Supplemental.dcm", "liver.dcm", "rtdose.dcm", "reportsi.dcm", "waveform_ecg.dcm",
    "priv_SQ.dcm", "examples_overlay.dcm", "explicit_VR-UN.dcm", "SC_rgb.dcm",
    "US1_J2KR.dcm", "JPEG-lossy.dcm", "emri_small_jpeg_2k_lossless.dcm",
    "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "badVR.dcm", "UN_sequence.dcm",
]


def _read(path: Path | str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)  # some real files lack the file meta


def _save(ds: Dataset, path: Path) -> None:
    """Write ``ds`` in the form it came in (a file without file meta stays without)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        has_meta = "TransferSyntaxUID" in getattr(ds, "file_meta", {})
        ds.save_as(path, enforce_file_format="SOPClassUID" in ds and has_meta)


def _dciodvfy_errors(path: Path) -> set[str]:
    """dciodvfy's error lines with UIDs masked (they change by design)."""
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (res.stdout + res.stderr).splitlines()
    return {re.sub(r"\d+(\.\d+){2,}", "<UID>", " ".join(line.split()))
            for line in lines if line.startswith("Error")}


# ---------------------------------------------------------------------- the table
def test_table_names_its_edition_and_source():
    doc = json.loads(TABLE_PATH.read_text())
    assert re.fullmatch(r"DICOM PS3\.15 20\d\d[a-e]", doc["standard"])
    assert re.fullmatch(r"[0-9a-f]{40}", doc["source"]["commit"])
    assert len(doc["attributes"]) > 600
    legend = {"D", "Z", "X", "K", "C", "U", "U*"}
    for row in doc["attributes"]:
        assert row["basic"] and set(row["basic"].split("/")) <= legend, row
        assert set(row["options"].values()) <= legend, row
    # the option codes are CID 7050's, as pydicom's code dictionary has them
    pyd = {c.value: c.meaning for c in (getattr(codes.DCM, k) for k in codes.DCM.dir())
           if c.value.startswith("1131")}
    for opt in doc["options"].values():
        assert pyd[opt["code"]] == opt["name"]


def _kitware(edition: str) -> dict[str, str]:
    """{tag: Basic Profile action} of dicom-anonymizer's independent extraction of the table."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    fields = dicom_anonymization_database_selector(f"dicomfields_{edition}")
    out = {}
    for group, tags in fields.items():
        if group == "ALL_TAGS":
            continue
        action = group[:-5].replace("_STAR", "*").replace("_", "/")
        # wildcard rows come as (group, element, group mask, element mask): compared apart
        out.update({f"{t[0]:04x}{t[1]:04x}": action for t in tags if len(t) == 2})
    return out


def test_table_agrees_with_an_independent_extraction():
    """innolitics' 2024b extraction == Kitware dicom-anonymizer's 2024b, row for row."""
    table = load_table()
    peer24, peer26 = _kitware("2024b"), _kitware("2026c")
    rows = {r.key: r for r in table.rules if r.key != "private" and "x" not in r.key}
    doc = json.loads(TABLE_PATH.read_text())
    added = {r["tag"] for r in doc["attributes"] if r.get("added_in")}
    assert {k: r.basic for k, r in rows.items() if k not in added} == peer24
    assert {k: r.basic for k, r in rows.items()} == peer26
    masked = sorted(r.key for r in table.rules if "x" in r.key)
    assert masked == ["50xxxxxx", "60xx3000", "60xx4000"]


def test_every_listed_attribute_gets_its_action():
    """Basic Profile actions never keep a value: each listed tag's value must be gone."""
    table = load_table()
    deid = Deidentifier(DeidOptions())
    checked = 0
    for rule in table.rules:
        if rule.key == "private" or "x" in rule.key:
            continue
        tag = int(rule.key, 16)
        # rows newer than pydicom's dictionary are read as UN
        vr = dictionary_VR(tag).split(" or ")[0] if keyword_for_tag(tag) else "UN"
        ds = Dataset()
        ds.SOPInstanceUID = generate_uid()
        ds.PatientID = "PID-FOR-TABLE-TEST"
        value = _original(vr)
        ds.add_new(tag, vr, value)
        before = ds[tag].value
        deid.deidentify(ds)
        action = rule.action(frozenset())
        assert action in ("X", "Z", "D", "U"), (rule.name, action)
        if action == "X":
            assert tag not in ds, rule.name
            continue
        after = ds[tag].value
        if vr == "SQ":
            inner = after[0] if action != "Z" and len(after) else None
            assert inner is None or "PatientName" not in inner or \
                inner.PatientName != "ORIGINAL^NAME", rule.name
        else:
            assert after != before, (rule.name, action, after)
        checked += 1
    assert checked > 200
    # the wildcard rows: curves and overlays go
    ds = Dataset()
    ds.add_new(0x50001234, "US", 7)
    ds.add_new(0x60103000, "OW", b"\1\2")
    ds.add_new(0x60100010, "US", 4)
    deid.deidentify(ds)
    assert 0x50001234 not in ds and 0x60103000 not in ds and 0x60100010 not in ds


def _original(vr: str) -> object:
    if vr == "SQ":
        item = Dataset()
        item.PatientName = "ORIGINAL^NAME"
        return Sequence([item])
    return {
        "DA": "20200102", "TM": "101112", "DT": "20200102101112", "UI": "1.2.3.4.5.6.7",
        "PN": "ORIGINAL^NAME", "AS": "042Y", "IS": "17", "DS": "17.5", "US": 17, "SS": 17,
        "UL": 17, "SL": 17, "FL": 17.5, "FD": 17.5, "OB": b"ORIGINAL", "OW": b"ORIGINAL",
        "UN": b"ORIGINAL", "AT": 0x00100010, "CS": "ORIGINAL", "UR": "http://original/",
    }.get(vr, "ORIGINAL")


def test_method_and_flags_are_set():
    ds = _read(get_testdata_file("CT_small.dcm"))
    Deidentifier(DeidOptions(dates="shift")).deidentify(ds)
    assert ds.PatientIdentityRemoved == "YES"
    assert "PS3.15" in ds.DeidentificationMethod[0]
    got = {(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence}
    assert got == {("113100", "DCM"), ("113107", "DCM")}
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert not any(e.tag.is_private for e in ds.iterall())
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


# ---------------------------------------------------------------------- markers
def _plant_file(planter: Planter, src: Path, dst: Path) -> None:
    ds = _read(src)
    planter.plant(ds)
    _save(ds, dst)


@pytest.fixture(scope="module")
def fast_run(small_phantom, tmp_path_factory):
    """Phantom series + its SEG + the FAST files, planted, de-identified in one run."""
    root = tmp_path_factory.mktemp("deid")
    vol = load_volume(small_phantom)
    bone = segment(vol, "bone")
    write_seg(vol, [bone], root / "seg.dcm", series_description="bone")
    planter = Planter()
    src = root / "in"
    (src / "phantom").mkdir(parents=True)
    for p in sorted(small_phantom.glob("*.dcm")):
        _plant_file(planter, p, src / "phantom" / p.name)
    _plant_file(planter, root / "seg.dcm", src / "seg.dcm")
    for name in FAST:
        _plant_file(planter, Path(get_testdata_file(name)), src / name)
    out = root / "out"
    report = deidentify_tree(src, out, DeidOptions())
    (root / "report.json").write_text(json.dumps(report))
    return {"root": root, "out": out, "planter": planter, "vol": vol, "bone": bone,
            "report": report}


def test_no_planted_marker_survives(fast_run):
    planter, out = fast_run["planter"], fast_run["out"]
    assert planter.kinds["text"] > 1000 and planter.kinds["UI"] > 100
    assert planter.kinds["DA"] > 300 and planter.kinds["TM"] > 100 and planter.kinds["DT"] >= 1
    blobs = all_bytes(out) + [(fast_run["root"] / "report.json").read_bytes()]
    assert found(planter.markers, blobs) == []
    # the planted input does hold them (the search can find what is there)
    assert len(found(planter.markers, all_bytes(fast_run["root"] / "in"))) == len(planter.markers)


def test_series_keeps_geometry_and_seg_its_source(fast_run):
    out, vol = fast_run["out"], fast_run["vol"]
    folders = sorted((p for p in out.iterdir()), key=lambda p: -len(list(p.iterdir())))
    series = folders[0]
    assert len(list(series.iterdir())) == vol.array.shape[0]
    back = load_volume(series)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.series_instance_uid != vol.series_instance_uid
    assert back.series_instance_uid.startswith("2.25.")
    seg_files = [p for p in out.rglob("*.dcm") if _read(p).get("Modality") == "SEG"
                 and _read(p).get("FrameOfReferenceUID") == back.frame_of_reference_uid]
    assert len(seg_files) == 1
    masks = read_seg(seg_files[0], back)  # references and frame of reference still match
    np.testing.assert_array_equal(masks["bone"], fast_run["bone"].mask)
    for p in series.iterdir():
        ds = _read(p)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID == _read(seg_files[0]).StudyInstanceUID
    # dciodvfy: no error added (planted input vs output), for a slice and the SEG
    planted = fast_run["root"] / "in"
    assert _dciodvfy_errors(sorted(series.iterdir())[0]) <= _dciodvfy_errors(
        sorted((planted / "phantom").iterdir())[0])
    assert _dciodvfy_errors(seg_files[0]) <= _dciodvfy_errors(planted / "seg.dcm")


def test_report_holds_counts_only(fast_run):
    report = fast_run["report"]
    assert report["files"]["written"] == fast_run["vol"].array.shape[0] + 1 + len(FAST)
    assert report["actions"]["private removed"] > 100
    text = json.dumps(report)
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", text)  # no UID
    assert "in/" not in text and ".dcm" not in text


@pytest.mark.parametrize("name", NAMED)
def test_named_file(name, tmp_path):
    """Plant, de-identify alone, search: no marker; loads; dciodvfy adds no error."""
    path = get_testdata_file(name)
    assert path is not None, f"{name} is not installed (pydicom / pydicom-data)"
    planter = Planter()
    planted = tmp_path / "in" / "file.dcm"
    planted.parent.mkdir()
    _plant_file(planter, Path(path), planted)
    out = tmp_path / "out"
    report = deidentify_tree(planted, out, DeidOptions(), burned_in="allow")
    files = list(out.rglob("*.dcm"))
    assert len(files) == 1 and report["files"]["written"] == 1
    assert found(planter.markers, all_bytes(out) + [json.dumps(report).encode()]) == []
    ds = _read(files[0])
    assert ds.PatientIdentityRemoved == "YES"
    if "PixelData" in ds:  # pixels untouched, byte for byte
        assert ds.PixelData == _read(planted).PixelData
    if "SOPClassUID" in ds:
        assert _dciodvfy_errors(files[0]) <= _dciodvfy_errors(planted)


# ---------------------------------------------------------------------- UIDs and dates
def _two_slices_and_ct(small_phantom: Path, folder: Path) -> None:
    folder.mkdir()
    for p in sorted(small_phantom.glob("*.dcm"))[:2]:
        shutil.copy(p, folder / p.name)
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")


def _by_sop(folder: Path) -> dict[str, Dataset]:
    return {str(d.SOPClassUID) + str(d.get("InstanceNumber")) + str(d.Rows): d
            for d in map(_read, sorted(folder.rglob("*.dcm")))}


def test_uids_consistent_and_dates_shifted_per_patient(small_phantom, tmp_path):
    src = tmp_path / "in"
    _two_slices_and_ct(small_phantom, src)
    before = _by_sop(src)
    deidentify_tree(src, tmp_path / "out", DeidOptions(dates="shift"))
    after = _by_sop(tmp_path / "out")
    assert before.keys() == after.keys()
    offsets: dict[str, set[int]] = {}
    for k, a in after.items():
        b = before[k]
        assert a.SOPInstanceUID != b.SOPInstanceUID and a.SOPInstanceUID.startswith("2.25.")
        assert a.SOPClassUID == b.SOPClassUID
        for kw in ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate"):
            if b.get(kw):
                d0 = dt.datetime.strptime(b.get(kw), "%Y%m%d").date()
                d1 = dt.datetime.strptime(a.get(kw), "%Y%m%d").date()
                offsets.setdefault(str(b.PatientID), set()).add((d1 - d0).days)
        assert a.get("StudyTime", "") == b.get("StudyTime", "")  # whole days: time kept
    assert len(offsets) == 2  # two patients, one offset each, 1 to 10 years back
    for days in offsets.values():
        assert len(days) == 1 and -3653 <= days.pop() <= -365
    slices = [a for a in after.values() if a.Rows == 130]
    assert len({s.StudyInstanceUID for s in slices}) == 1
    assert len({s.FrameOfReferenceUID for s in slices}) == 1
    assert len({s.SOPInstanceUID for s in slices}) == 2
    assert len({s.PatientID for s in after.values()}) == 2  # one pseudonym per patient


def test_dates_kept_or_removed(tmp_path):
    ds = _read(get_testdata_file("CT_small.dcm"))
    kept = Deidentifier(DeidOptions(dates="keep")).deidentify(copy.deepcopy(ds))
    assert kept.StudyDate == ds.StudyDate and kept.AcquisitionDate == ds.AcquisitionDate
    assert kept.LongitudinalTemporalInformationModified == "UNMODIFIED"
    removed = Deidentifier(DeidOptions()).deidentify(copy.deepcopy(ds))
    assert all(removed.get(k, "") in ("", "19000101") for k in
               ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"))


def test_same_key_same_uids_across_runs():
    uid = "1.2.840.113619.2.1.1.322987881.621.736170080.681"
    a = Deidentifier(DeidOptions(key=b"k" * 32)).map_uid(uid)
    b = Deidentifier(DeidOptions(key=b"k" * 32)).map_uid(uid)
    c = Deidentifier(DeidOptions()).map_uid(uid)
    assert a == b != c and len(a) <= 64 and pydicom.uid.UID(a).is_valid


# ---------------------------------------------------------------------- burned-in text
def test_burned_in_refused_skipped_or_allowed(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("SC_rgb.dcm"), src / "sc.dcm")
    mr = _read(get_testdata_file("MR_small.dcm"))
    mr.BurnedInAnnotation = "YES"
    _save(mr, src / "mr.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    with pytest.raises(DeidError, match="burned-in"):
        deidentify_tree(src, tmp_path / "out", DeidOptions())
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [src]  # no partial output, no temp folder left
    rep = deidentify_tree(src, tmp_path / "skip", DeidOptions(), burned_in="skip")
    assert rep["files"]["written"] == 1 and rep["files"]["burned-in text possible (skip)"] == 2
    rep = deidentify_tree(src, tmp_path / "allow", DeidOptions(), burned_in="allow")
    assert rep["files"]["written"] == 3


def test_burned_in_kinds():
    ds = Dataset()
    ds.PixelData = b"\0\0"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    assert "ultrasound" in burned_in_reason(ds)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    assert burned_in_reason(ds) is None
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert "SCREEN SAVE" in burned_in_reason(ds)


# ---------------------------------------------------------------------- private
def test_safe_private_list_keeps_only_listed(tmp_path):
    ds = _read(get_testdata_file("CT_small.dcm"))
    safe = parse_safe_private("# GE acquisition\n0019,xx1e,GEMS_ACQU_01\n", "safe.txt")
    Deidentifier(DeidOptions(safe_private=safe)).deidentify(ds)
    private = [e for e in ds if e.tag.is_private]
    assert [(e.tag.group, e.tag.element) for e in private] == [(0x19, 0x10), (0x19, 0x101E)]
    assert private[0].value == "GEMS_ACQU_01"
    assert "113111" in {c.CodeValue for c in ds.DeidentificationMethodCodeSequence}


@pytest.mark.parametrize("line", ["0018,xx10,X", "0019,1010,GEMS", "0019,xx10", "zz,xx10,A"])
def test_safe_private_list_rejects(line):
    with pytest.raises(DeidError, match="safe.txt line 1"):
        parse_safe_private(line, "safe.txt")


def test_deep_nesting_refused():
    ds = Dataset()
    inner = ds
    for _ in range(80):
        item = Dataset()
        inner.ReferencedSeriesSequence = Sequence([item])
        inner = item
    with pytest.raises(DeidError, match="nested deeper"):
        Deidentifier(DeidOptions()).deidentify(ds)


def test_file_meta_source_ae_removed():
    ds = _read(get_testdata_file("MR_small.dcm"))
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITALPACS"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    Deidentifier(DeidOptions()).deidentify(ds)
    assert "SourceApplicationEntityTitle" not in ds.file_meta


def test_retain_options_keep_what_the_table_names():
    ds = _read(get_testdata_file("CT_small.dcm"))
    ds.DeviceSerialNumber = "SN-12345"
    ds.PatientSex = "F"
    ds.PatientAge = "042Y"
    plain = Deidentifier(DeidOptions()).deidentify(copy.deepcopy(ds))
    assert plain.DeviceSerialNumber != "SN-12345" and "PatientAge" not in plain
    assert plain.InstitutionName != ds.InstitutionName
    kept = Deidentifier(DeidOptions(retain=(
        "device", "institution", "patient-characteristics", "uids"))).deidentify(copy.deepcopy(ds))
    assert kept.DeviceSerialNumber == "SN-12345" and kept.StationName == ds.StationName
    assert kept.InstitutionName == ds.InstitutionName
    assert kept.PatientSex == "F" and kept.PatientAge == "042Y"
    assert kept.SOPInstanceUID == ds.SOPInstanceUID and kept.StudyInstanceUID == ds.StudyInstanceUID
    assert {c.CodeValue for c in kept.DeidentificationMethodCodeSequence} == {
        "113100", "113108", "113109", "113110", "113112"}
    assert kept.PatientName == "" and kept.PatientID != ds.PatientID  # never retained
    with pytest.raises(DeidError, match="retain"):
        Deidentifier(DeidOptions(retain=("everything",)))


def test_unknown_attribute_removed():
    ds = Dataset()
    ds.add_new(0x00091234 & 0xFFFEFFFF, "UN", b"SECRET")  # (0008,1234): not in the dictionary
    Deidentifier(DeidOptions()).deidentify(ds)
    assert 0x00081234 not in ds


@pytest.mark.parametrize("status", ["YES", "NO"])
@pytest.mark.parametrize("suffix", [".stl", ".ply", ".obj", ".glb"])
def test_model_files_say_whether_input_was_deidentified(status, suffix, tmp_path):
    from scrubin.imaging.mesh import Mesh
    from scrubin.imaging.mesh_io import load_mesh, save_mesh

    verts = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=float)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    mesh = Mesh(verts, faces, "bone", provenance={"patient_identity_removed": status})
    save_mesh(mesh, tmp_path / f"m{suffix}")
    data = (tmp_path / f"m{suffix}").read_bytes()
    tag = {".stl": f"DEID={status}", ".glb": f'"patient_identity_removed":"{status}"'}.get(
        suffix, f"PatientIdentityRemoved {status}")
    assert tag.encode() in data
    back = load_mesh(tmp_path / f"m{suffix}")
    assert back.name == "bone" and back.frame == "CT"


def test_shift_moves_datetimes_and_handles_bad_dates():
    ds = Dataset()
    ds.PatientID = "P1"
    ds.AcquisitionDateTime = "20200102101112.5+0100"
    ds.StudyDate = "20200102"
    ds.SeriesDate = "2020"  # not a full date: cannot be shifted, so replaced
    deid = Deidentifier(DeidOptions(dates="shift"))
    deid.deidentify(ds)
    shifted = dt.date(2020, 1, 2) + dt.timedelta(days=deid.date_offset_days("P1"))
    assert ds.StudyDate == shifted.strftime("%Y%m%d")
    assert ds.AcquisitionDateTime == shifted.strftime("%Y%m%d") + "101112.5+0100"
    assert ds.SeriesDate == "19000101"
