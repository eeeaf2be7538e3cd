"""De-identification of one DICOM dataset: PS3.15 Annex E, Basic Application Level
Confidentiality Profile, with the options of PS3.15 E.3 that Table E.1-1 names.

Every attribute is looked up in Table E.1-1 (:mod:`scrubin.imaging.deid_table`, generated
from the standard) and given its action (PS3.15 E.1.1), recursively in sequence items.
Beyond the table, so that nothing typed by a person survives:

- private attributes are removed (Table E.1-1 row ``(gggg,eeee) where gggg is odd``), except
  those on a safe list under the Retain Safe Private Option (E.3.10);
- attributes the table does not list are kept, except free text (PN, LO, SH, LT, ST, UT, UC,
  AE) not on :data:`STRUCTURAL_TEXT` (coded concepts, device model, segment labels ...),
  which gets a dummy, dates and times, which follow the date policy, UIDs that are not
  registered in PS3.6 Annex A, which are remapped like the listed ones, and attributes of
  VR UN (unknown to the data dictionary), which are removed;
- group-length elements are dropped (their values would be wrong), overlay groups whose
  Overlay Data is removed go entirely, the 128-byte preamble is zeroed, the file meta's
  Media Storage SOP Instance UID follows the new SOP Instance UID.

UIDs map as ``2.25.<UUID integer>`` from an HMAC-SHA256 of the input UID under the run's key
(PS3.5 B.2), so every file of a run (and of later runs with the same key) maps the same UID to
the same new UID: series, SEG -> source and frame-of-reference references stay intact. Dates
are either removed (dummy ``19000101``), shifted back by one per-patient number of whole days
derived from the key and the Patient ID (Retain Longitudinal Temporal Information with
Modified Dates, E.3.6), or kept (Full Dates option). Patient ID becomes one pseudonym per
patient under the same key; Patient's Name is emptied (Z).

Combined actions resolve without looking up the object's IOD (:meth:`Rule.action`): the
alternative that keeps any IOD conformant (``D``, else ``Z``; ``X/Z`` on a non-empty sequence
keeps its items, de-identified). The Clean options (Descriptors, Structured Content,
Graphics) are not implemented: their ``C`` falls back to a dummy and their codes are never
claimed; pixel data is never cleaned (see :func:`burned_in_reason`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from scrubin.imaging.deid_table import (
    FULL_DATES,
    MODIFIED_DATES,
    SAFE_PRIVATE,
    ProfileTable,
    load_table,
)
from scrubin.imaging.errors import ImagingError

#: Sequence nesting refused beyond this depth (malformed input, RecursionError trap).
MAX_DEPTH = 64
#: Free-text VRs replaced by a dummy when the table does not list the attribute.
TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC", "AE"})
DATE_VRS = frozenset({"DA", "DT", "TM"})
#: Unlisted text attributes that name concepts, devices or structures, not people: kept.
STRUCTURAL_TEXT = frozenset({
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
    "LongCodeValue", "URNCodeValue", "CodingSchemeName", "CodingSchemeResponsibleOrganization",
    "MappingResource", "MappingResourceName", "ContextIdentifier",
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "ImplementationVersionName",
    "PositionReferenceIndicator", "ImagedNucleus", "DimensionDescriptionLabel", "StackID",
    "SequenceName", "WindowCenterWidthExplanation", "RescaleType", "ConvolutionKernel",
    "SegmentLabel", "SegmentAlgorithmName",
})
#: Options of the command line -> Table E.1-1 option column (PS3.15 E.3).
RETAIN_OPTIONS = {
    "uids": "rtnUIDsOpt",
    "device": "rtnDevIdOpt",
    "institution": "rtnInstIdOpt",
    "patient-characteristics": "rtnPatCharsOpt",
}
_DUMMY = {
    "DA": "19000101", "TM": "000000.00", "DT": "19000101000000.000000", "AS": "000Y",
    "IS": "0", "DS": "0", "PN": "ANONYMIZED", "CS": "ANONYMIZED",
}
_NUMERIC = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
_DA = re.compile(r"^\d{8}$")
PROFILE_CODE = "113100"


class DeidError(ImagingError):
    """A file cannot be de-identified as asked (burned-in text, nesting, bad safe list)."""


@dataclass
class DeidOptions:
    """What a run keeps.

    Attributes
    ----------
    dates
        ``"remove"`` (Basic Profile), ``"shift"`` (Modified Dates option) or ``"keep"``
        (Full Dates option).
    retain
        Names from :data:`RETAIN_OPTIONS` (Retain UIDs / Device Identity / Institution
        Identity / Patient Characteristics options).
    safe_private
        ``(group, private creator, element byte)`` of private attributes to keep (Retain
        Safe Private Option); empty removes every private attribute.
    key
        Secret of the run (UID map, date offsets, pseudonyms); random unless given.
    """

    dates: str = "remove"
    retain: tuple[str, ...] = ()
    safe_private: frozenset[tuple[int, str, int]] = frozenset()
    key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)

    def columns(self) -> frozenset[str]:
        """The Table E.1-1 option columns these options enable."""
        cols = {RETAIN_OPTIONS[r] for r in self.retain}
        if self.dates == "keep":
            cols.add(FULL_DATES)
        elif self.dates == "shift":
            cols.add(MODIFIED_DATES)
        if self.safe_private:
            cols.add(SAFE_PRIVATE)
        return frozenset(cols)


def parse_safe_private(text: str, source: str) -> frozenset[tuple[int, str, int]]:
    """Parse a safe private list: one ``GGGG,xxEE,CREATOR`` a line, ``#`` comments.

    ``GGGG`` is the odd group, ``xxEE`` the element with the block byte left as ``xx``
    (PS3.5 7.8.1), ``CREATOR`` the Private Creator value, e.g. ``0019,xx10,GEMS_ACQU_01``.
    """
    out: set[tuple[int, str, int]] = set()
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",", 2)]
        ok = len(parts) == 3 and re.fullmatch(r"[0-9A-Fa-f]{4}", parts[0]) is not None and \
            re.fullmatch(r"[xX]{2}[0-9A-Fa-f]{2}", parts[1]) is not None and parts[2] != ""
        if not ok or int(parts[0], 16) % 2 == 0:
            raise DeidError(f"{source} line {n}: {line!r} is not 'GGGG,xxEE,CREATOR' with an "
                            "odd group (e.g. 0019,xx10,GEMS_ACQU_01)")
        out.add((int(parts[0], 16), parts[2], int(parts[1][2:], 16)))
    return frozenset(out)


def burned_in_reason(ds: Dataset, has_pixels: bool | None = None) -> str | None:
    """Why ``ds`` may carry text burned into its pixels, or None.

    Flagged ``BurnedInAnnotation`` YES (PS3.3 C.7.6.1.1.6), or an image of a kind that usually
    carries it: secondary capture (screenshots, scanned documents), ultrasound, or a workstation
    capture (``ConversionType`` WSD/SD, ``ImageType`` SCREEN SAVE). ``has_pixels`` says whether
    the file has pixel data when ``ds`` was read without it (None: look in ``ds``).
    """
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "BurnedInAnnotation is YES"
    if has_pixels is None:
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not has_pixels:
        return None
    sop = str(ds.get("SOPClassUID", ""))
    if sop.startswith("1.2.840.10008.5.1.4.1.1.7"):
        return "a Secondary Capture image (screenshots and scans usually carry burned-in text)"
    if sop.startswith(("1.2.840.10008.5.1.4.1.1.6.", "1.2.840.10008.5.1.4.1.1.3.1")):
        return "an ultrasound image (usually carries burned-in text)"
    if str(ds.get("ConversionType", "")).strip().upper() in ("WSD", "SD"):
        return f"ConversionType {ds.ConversionType} (a workstation or screen capture)"
    if "SCREEN SAVE" in [str(v).upper() for v in ds.get("ImageType", []) or []]:
        return "ImageType SCREEN SAVE (a screen capture)"
    return None


class Deidentifier:
    """Applies Table E.1-1 to datasets; one instance per run (shared UID map and counts).

    ``counts`` tallies the actions taken (``"X"``, ``"Z"``, ``"D"``, ``"U"``, ``"C"``,
    ``"K"``, ``"private removed"``, ...) and nothing else: no value ever enters it.
    """

    def __init__(self, options: DeidOptions | None = None,
                 table: ProfileTable | None = None) -> None:
        self.options = options or DeidOptions()
        if self.options.dates not in ("remove", "shift", "keep"):
            raise DeidError(f"dates must be remove, shift or keep, got {self.options.dates!r}")
        unknown = set(self.options.retain) - set(RETAIN_OPTIONS)
        if unknown:
            raise DeidError(f"unknown retain option(s) {sorted(unknown)}; expected "
                            f"{', '.join(RETAIN_OPTIONS)}")
        self.table = table or load_table()
        self.columns = self.options.columns()
        self.counts: Counter[str] = Counter()
        self.uids_mapped: set[str] = set()
        self.patients: set[str] = set()
        self._patient = ""  # the dataset being processed: its patient key and date offset
        self._offset = 0

    # ------------------------------------------------------------------ keyed maps
    def _mac(self, label: str, value: str) -> bytes:
        return hmac.new(self.options.key, f"{label}\0{value}".encode(), hashlib.sha256).digest()

    def map_uid(self, uid: str) -> str:
        """The run's replacement of ``uid``: ``2.25.<int>`` of a UUID from HMAC(key, uid)."""
        uid = uid.strip().rstrip("\0")
        if not uid:
            return uid
        new = f"2.25.{uuid.UUID(bytes=self._mac('uid', uid)[:16], version=4).int}"
        self.uids_mapped.add(new)
        return new

    def date_offset_days(self, patient: str) -> int:
        """Whole days (negative, 1 to 10 years) by which this patient's dates move."""
        return -(365 + int.from_bytes(self._mac("date", patient)[:4], "big") % 3288)

    def pseudonym(self, patient: str) -> str:
        """A per-patient dummy Patient ID / name (no value of the input enters it)."""
        return "ANON" + self._mac("patient", patient)[:5].hex().upper()

    # ------------------------------------------------------------------ dataset
    def deidentify(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (and its file meta); returns it.

        Raises
        ------
        DeidError
            Sequences nested deeper than :data:`MAX_DEPTH`.
        """
        patient = str(ds.get("PatientID", "") or "") or str(ds.get("PatientName", "") or "")
        patient = patient or str(ds.get("StudyInstanceUID", "") or "")
        self.patients.add(self.pseudonym(patient))
        self._patient = patient
        self._offset = self.date_offset_days(patient)
        self._walk(ds, 0)
        self._mark(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                       "ReceivingApplicationEntityTitle", "PrivateInformation",
                       "PrivateInformationCreatorUID"):
                if kw in meta:
                    del meta[kw]
            if "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if hasattr(ds, "preamble") and ds.preamble is not None:
            ds.preamble = b"\0" * 128
        self.counts["datasets"] += 1
        return ds

    def _mark(self, ds: Dataset) -> None:
        """Patient Identity Removed, De-identification Method (+ codes), PS3.3 C.7.1.1."""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = [f"{self.table.standard} Table E.1-1"[:64],
                                     "scrubin deid; unlisted free text replaced"]
        codes = [PROFILE_CODE] + sorted(
            self.table.option_names[c]["code"] for c in self.columns)
        names = {PROFILE_CODE: "Basic Application Confidentiality Profile"}
        names.update({v["code"]: v["name"] for v in self.table.option_names.values()})
        items = []
        for code in codes:
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = names[code][:64]
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = {
            "remove": "REMOVED", "shift": "MODIFIED", "keep": "UNMODIFIED"}[self.options.dates]

    def _walk(self, ds: Dataset, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise DeidError(f"sequences nested deeper than {MAX_DEPTH} levels")
        kept_blocks = self._private(ds, depth)
        dropped_overlays: set[int] = set()
        for tag in list(ds.keys()):
            group, elem = tag >> 16, tag & 0xFFFF
            if group % 2 == 1:
                if (group, elem) in kept_blocks or elem >= 0x1000:
                    continue  # handled by _private
                del ds[tag]  # private creator of a removed block, or an illegal element
                continue
            if elem == 0 and group != 0x0002:
                del ds[tag]  # group length: would no longer be true
                continue
            rule = self.table.rule_for(tag)
            el = ds[tag]
            if rule is None:
                self._unlisted(ds, el, depth)
                continue
            action = rule.action(self.columns)
            if action == "Z" and rule.basic == "X/Z" and el.VR == "SQ" and el.value:
                # keep the items, each de-identified (a dummy value, which Z permits): an
                # empty sequence breaks Type 3 (1-n) ones, removal breaks Type 2 ones
                action = "D"
            if action == "X" and 0x6000 <= group <= 0x601E and elem == 0x3000:
                dropped_overlays.add(group)
            self._apply(ds, el, action, depth)
        for tag in list(ds.keys()):
            if (tag >> 16) in dropped_overlays:
                del ds[tag]  # an overlay plane without its data would not be conformant
                self.counts["X"] += 1

    # ------------------------------------------------------------------ private
    def _private(self, ds: Dataset, depth: int) -> set[tuple[int, int]]:
        """Remove private attributes not on the safe list; the creators of kept blocks."""
        creators: dict[tuple[int, int], str] = {}
        for tag in list(ds.keys()):
            g, e = tag >> 16, tag & 0xFFFF
            if g % 2 == 1 and 0x10 <= e <= 0xFF:
                creators[(g, e)] = str(ds[tag].value).strip()
        kept: set[tuple[int, int]] = set()
        for tag in list(ds.keys()):
            g, e = tag >> 16, tag & 0xFFFF
            if g % 2 == 0 or e < 0x1000:
                continue
            creator = creators.get((g, e >> 8))
            if creator is not None and (g, creator, e & 0xFF) in self.options.safe_private:
                kept.add((g, e >> 8))
                el = ds[tag]
                if el.VR == "SQ":
                    for item in el.value:
                        self._walk(item, depth + 1)
                elif el.VR == "UI":
                    self._remap(el)
                self.counts["private kept"] += 1
            else:
                del ds[tag]
                self.counts["private removed"] += 1
        return kept

    # ------------------------------------------------------------------ actions
    def _unlisted(self, ds: Dataset, el: pydicom.DataElement, depth: int) -> None:
        """An attribute Table E.1-1 does not list (see the module notes)."""
        if el.VR == "SQ":
            for item in el.value:
                self._walk(item, depth + 1)
        elif el.VR == "UN":  # unknown to the dictionary: its content cannot be judged
            self._apply(ds, el, "X", depth, counter="unlisted unknown removed")
        elif el.VR == "UI":
            if "rtnUIDsOpt" not in self.columns:
                self._remap(el)
        elif el.VR in DATE_VRS:
            action = {"keep": "K", "shift": "C", "remove": "D"}[self.options.dates]
            self._apply(ds, el, action, depth, counter="unlisted date")
        elif el.VR in TEXT_VRS and el.keyword not in STRUCTURAL_TEXT and not _empty(el):
            self._apply(ds, el, "D", depth, counter="unlisted text")

    def _apply(self, ds: Dataset, el: pydicom.DataElement, action: str, depth: int,
               counter: str | None = None) -> None:
        self.counts[counter or action] += 1
        if action == "X":
            del ds[el.tag]
        elif el.VR == "SQ":
            if action == "Z":
                el.value = Sequence([])
            else:  # K, C, D, U: the items are processed by the table (U*: their UIDs)
                for item in el.value:
                    self._walk(item, depth + 1)
        elif action == "Z":
            el.value = None if el.VR in _NUMERIC else ""
        elif action == "K":
            return
        elif el.VR == "UI":
            self._remap(el)
        elif action == "C" and el.VR in DATE_VRS:
            self._shift(el)
        else:  # D, or C of a non-date (Clean options are not implemented: a dummy)
            self._dummy(el)

    def _dummy(self, el: pydicom.DataElement) -> None:
        if el.keyword in ("PatientID", "PatientName", "OtherPatientIDs"):
            el.value = self.pseudonym(self._patient)
        elif el.VR in _NUMERIC:
            el.value = 0
        elif el.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
            el.value = b"\0\0"
        elif el.VR == "UR":
            el.value = "urn:oid:2.25"
        else:
            el.value = _DUMMY.get(el.VR, "ANONYMIZED")

    def _remap(self, el: pydicom.DataElement) -> None:
        values = el.value if isinstance(el.value, list | pydicom.multival.MultiValue) \
            else [el.value]
        new = [v if str(v) in UID_dictionary else self.map_uid(str(v)) for v in values
               if v is not None]
        el.value = new if len(new) != 1 else new[0]

    def _shift(self, el: pydicom.DataElement) -> None:
        """Move DA / DT values by the patient's offset (E.3.6); TM stays (whole days)."""
        if el.VR == "TM" or _empty(el):
            return
        values = el.value if isinstance(el.value, pydicom.multival.MultiValue) else [el.value]
        out = []
        for v in values:
            s = str(v).strip()
            head = s[:8]
            if _DA.match(head) is None:
                out.append(_DUMMY[el.VR])
                continue
            try:
                d = _dt.date(int(head[:4]), int(head[4:6]), int(head[6:8]))
                d += _dt.timedelta(days=self._offset)
            except (ValueError, OverflowError):
                out.append(_DUMMY[el.VR])
                continue
            out.append(d.strftime("%Y%m%d") + (s[8:] if el.VR == "DT" else ""))
        el.value = out if len(out) != 1 else out[0]


def _empty(el: pydicom.DataElement) -> bool:
    v = el.value
    return v is None or v == "" or (isinstance(v, list | bytes) and len(v) == 0)


def identity_status(datasets: object) -> str:
    """``"YES"`` when the source headers say Patient Identity Removed (PS3.3 C.7.1.1), ``"NO"``
    when they are DICOM without it, ``"UNKNOWN"`` without DICOM headers (NIfTI, NRRD ...).

    ``datasets`` is a volume's ``meta["datasets"]`` (a sequence of pydicom datasets) or None.
    """
    try:
        first = datasets[0]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return "UNKNOWN"
    value = str(getattr(first, "PatientIdentityRemoved", "") or "").strip().upper()
    return "YES" if value == "YES" else "NO"
