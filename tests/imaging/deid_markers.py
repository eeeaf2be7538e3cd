"""Planting unique marker values into real DICOM files, and looking for them afterwards.

Every attribute of VR PN, LO, SH, LT, ST, UT, UC (at any depth, private ones included) gets a
unique ``MRK<6 digits>`` string, except the structural ones listed here (coded concepts,
device model, segment labels: this test's own decision of what does not name a person); every
DA, DT and TM gets a unique but valid value (pydicom writes only valid ones); every UID that
is not a registered PS3.6 UID is replaced consistently (same input UID -> same planted UID,
so references between files and the series geometry keep working) by a unique planted UID.
Each file also gets the patient/study attributes a hospital file carries, a nested sequence
and a private block with a nested private sequence, all holding markers.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC"}
#: Text that names concepts or devices, not people (this test's list, kept independent).
STRUCTURAL = {
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
    "LongCodeValue", "URNCodeValue", "CodingSchemeName", "CodingSchemeResponsibleOrganization",
    "MappingResource", "MappingResourceName", "ContextIdentifier",
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    "PositionReferenceIndicator", "ImagedNucleus", "DimensionDescriptionLabel", "StackID",
    "SequenceName", "WindowCenterWidthExplanation", "RescaleType", "ConvolutionKernel",
    "SegmentLabel", "SegmentAlgorithmName",
}
UID_ROOT = "1.2.826.0.1.3680043.10.999."
_EPOCH = dt.date(1500, 1, 1)


@dataclass
class Planter:
    """Plants markers; remembers every planted value (as bytes to search for)."""

    n: int = 0
    markers: list[bytes] = field(default_factory=list)
    uids: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)

    def _next(self, kind: str) -> int:
        self.n += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return self.n

    def text(self) -> str:
        m = f"MRK{self._next('text'):06d}"
        self.markers.append(m.encode())
        return m

    def uid(self, old: str) -> str:
        if old not in self.uids:
            self.uids[old] = f"{UID_ROOT}1{self._next('UI'):06d}"
            self.markers.append(self.uids[old].encode())
        return self.uids[old]

    def value(self, vr: str) -> str:
        if vr == "DA":
            v = (_EPOCH + dt.timedelta(days=self._next("DA"))).strftime("%Y%m%d")
        elif vr == "TM":
            v = f"235959.{self._next('TM'):06d}"
        elif vr == "DT":
            v = f"19991231235959.{self._next('DT'):06d}"
        else:
            return self.text()
        self.markers.append(v.encode())
        return v

    def plant(self, ds: Dataset, depth: int = 0) -> None:
        """Markers into every eligible attribute of ``ds`` and its items (in place)."""
        for el in list(ds):
            if el.VR == "SQ":
                for item in el.value:
                    self.plant(item, depth + 1)
            elif el.VR in TEXT_VRS and el.keyword not in STRUCTURAL:
                el.value = self.text()
            elif el.VR in ("DA", "TM", "DT"):
                el.value = self.value(el.VR)
            elif el.VR == "UI" and el.value:
                vals = el.value if isinstance(el.value, list) or hasattr(el.value, "append") \
                    else [el.value]
                new = [v if str(v) in UID_dictionary else self.uid(str(v)) for v in vals]
                el.value = new if len(new) > 1 else new[0]
        if depth == 0:
            self._add_identity(ds)

    def _add_identity(self, ds: Dataset) -> None:
        """Patient/study attributes, a nested sequence and a private block with markers."""
        for kw, vr in (("PatientName", "PN"), ("PatientID", "LO"), ("PatientBirthDate", "DA"),
                       ("AccessionNumber", "SH"), ("InstitutionName", "LO"),
                       ("ReferringPhysicianName", "PN"), ("OperatorsName", "PN"),
                       ("StudyDate", "DA"), ("StudyTime", "TM")):
            if kw not in ds or not ds[kw].value:  # else the walk planted it already
                setattr(ds, kw, self.value(vr))
        inner = Dataset()
        inner.PatientID = self.text()
        inner.IssuerOfPatientID = self.text()
        inner.TypeOfPatientID = "TEXT"
        if "OtherPatientIDsSequence" in ds:  # keep the planted items
            ds.OtherPatientIDsSequence.append(inner)
        else:
            ds.OtherPatientIDsSequence = Sequence([inner])
        block = ds.private_block(0x0099, "SCRUBIN MARKERS", create=True)
        block.add_new(0x01, "LO", self.text())
        block.add_new(0x02, "DA", self.value("DA"))
        item = Dataset()
        item.PatientName = self.text()
        item.private_block(0x0099, "SCRUBIN MARKERS", create=True).add_new(
            0x03, "LT", self.text())
        block.add_new(0x04, "SQ", Sequence([item]))


_SHAPES = re.compile(
    rb"MRK\d{6}"  # text
    + rb"|" + re.escape(UID_ROOT.encode()) + rb"1\d{6}"  # UIDs
    + rb"|(?:19991231)?235959\.\d{6}"  # DT, TM
    + rb"|(?<!\d)1[5-9]\d{6}(?!\d)"  # DA: alone, not digits inside a longer number (a UID)
)


def found(markers: list[bytes], blobs: list[bytes]) -> list[bytes]:
    """The markers that occur in any of ``blobs`` (one regex pass over all the bytes)."""
    seen: set[bytes] = set()
    for blob in blobs:
        for m in _SHAPES.finditer(blob):
            text = m.group(0)
            seen.add(text)
            if text.startswith(b"19991231"):
                seen.add(text[8:])  # a DT marker holds its TM-like tail too
    return [m for m in markers if m in seen]


def all_bytes(folder: Path) -> list[bytes]:
    """The bytes of every file under ``folder``."""
    return [p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()]
