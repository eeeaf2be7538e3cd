"""A small, fast reader for the few header attributes the volume loader needs.

pydicom builds a full :class:`~pydicom.dataset.Dataset` per file (~0.3 ms for a CT header);
listing and loading a 300-slice series only needs ~20 attributes and the file offset of
PixelData. This module walks the data elements of an explicit or implicit VR little-endian
file (PS3.5 section 7.1) with :func:`struct.unpack_from`, keeps the values of
:data:`WANTED` tags as raw bytes, skips everything else by its length (sequences and items of
undefined length by their delimiters, PS3.5 7.5), and stops at PixelData (7FE0,0010).

Anything it does not handle (no "DICM" preamble, big endian, deflate, malformed lengths)
raises :class:`FastHeaderUnsupportedError`; the caller then falls back to pydicom, which either
reads the file or reports it as corrupt.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

#: Tags whose values are kept: (group << 16 | element) → keyword.
WANTED: dict[int, str] = {
    0x00080005: "SpecificCharacterSet",
    0x00080008: "ImageType",
    0x00080016: "SOPClassUID",
    0x00080060: "Modality",
    0x0008103E: "SeriesDescription",
    0x00180050: "SliceThickness",
    0x00180088: "SpacingBetweenSlices",
    0x0020000E: "SeriesInstanceUID",
    0x00200032: "ImagePositionPatient",
    0x00200037: "ImageOrientationPatient",
    0x00200052: "FrameOfReferenceUID",
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280030: "PixelSpacing",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280103: "PixelRepresentation",
    0x00281052: "RescaleIntercept",
    0x00281053: "RescaleSlope",
    0x52009229: "SharedFunctionalGroupsSequence",
    0x52009230: "PerFrameFunctionalGroupsSequence",
}
#: Attributes with VR US (unsigned short), decoded as integers.
US_TAGS = {0x00280002, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280103}
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_KNOWN_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO",
              b"LT", b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ",
              b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT",
              b"UV"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR",
             b"SV", b"UV"}
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
#: Compressed (encapsulated) transfer syntaxes are explicit VR little endian too (PS3.5 A.4),
#: except those listed here, which change the encoding of the data set itself.
_NOT_LE_EXPLICIT = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_MAX_DEPTH = 32


class FastHeaderUnsupportedError(Exception):
    """This file needs the full pydicom parser (not an error for the user)."""


class _NeedMoreError(Exception):
    """The header runs past the bytes read so far."""


@dataclass
class FastHeader:
    """Raw values of :data:`WANTED` tags and where the pixel data starts."""

    transfer_syntax: str
    values: dict[str, bytes | int] = field(default_factory=dict)
    pixel_tag: int | None = None
    pixel_value_offset: int | None = None
    pixel_length: int | None = None

    def text(self, keyword: str) -> str | None:
        """A text value (UI, CS, DS, IS, LO...) with padding removed; None when absent."""
        v = self.values.get(keyword)
        if v is None or isinstance(v, int):
            return None if v is None else str(v)
        try:
            s = v.decode("utf-8")
        except UnicodeDecodeError:
            s = v.decode("latin-1")
        return s.strip(" \x00")

    def integer(self, keyword: str) -> int | None:
        """A US or IS value as int; None when absent or unreadable."""
        v = self.values.get(keyword)
        if isinstance(v, int):
            return v
        t = self.text(keyword)
        try:
            return int(t) if t else None
        except ValueError:
            return None


def _skip_undefined(buf: bytes, p: int, explicit: bool, depth: int) -> int:
    """Skip a sequence (or UN) of undefined length starting at its first item; return the
    offset after its Sequence Delimitation Item."""
    if depth > _MAX_DEPTH:
        raise FastHeaderUnsupportedError("sequences nested too deeply")
    n = len(buf)
    while True:
        if p + 8 > n:
            raise _NeedMoreError
        g, e, length = struct.unpack_from("<HHI", buf, p)
        tag = g << 16 | e
        p += 8
        if tag == _SEQ_END:
            return p
        if tag != _ITEM:
            raise FastHeaderUnsupportedError(f"unexpected tag {tag:08X} in a sequence")
        if length != _UNDEFINED:
            p += length
            continue
        p = _walk(buf, p, explicit, depth + 1, None)


def _walk(buf: bytes, p: int, explicit: bool, depth: int, out: FastHeader | None) -> int:
    """Walk data elements from ``p``. At top level (``out`` given) stop at pixel data or at
    the end of the buffer; inside an item of undefined length stop after its delimiter."""
    n = len(buf)
    unpack = struct.unpack_from
    while True:
        if p + 8 > n:
            if out is not None and p == n:
                return p
            raise _NeedMoreError
        g, e = unpack("<HH", buf, p)
        tag = g << 16 | e
        if out is None and tag == _ITEM_END:
            return p + 8
        if explicit and g != 0xFFFE:
            vr = buf[p + 4 : p + 6]
            if vr not in _KNOWN_VRS:
                raise FastHeaderUnsupportedError(f"unknown VR {vr!r} in {tag:08X}")
            if vr in _LONG_VRS:
                if p + 12 > n:
                    raise _NeedMoreError
                (length,) = unpack("<I", buf, p + 8)
                head = 12
            else:
                (length,) = unpack("<H", buf, p + 6)
                head = 8
        else:
            vr = b"UN" if g != 0xFFFE else b"  "
            (length,) = unpack("<I", buf, p + 4)
            head = 8
        if out is not None and tag in PIXEL_TAGS:
            out.pixel_tag = tag
            out.pixel_value_offset = p + head
            out.pixel_length = length
            return p
        if tag in WANTED and out is not None:
            if tag in (0x52009229, 0x52009230):
                out.values[WANTED[tag]] = 1
            elif length != _UNDEFINED:
                if p + head + length > n:
                    raise _NeedMoreError
                raw = bytes(buf[p + head : p + head + length])
                if tag in US_TAGS:
                    if length < 2:
                        raise FastHeaderUnsupportedError(f"short US value in {tag:08X}")
                    out.values[WANTED[tag]] = unpack("<H", raw, 0)[0]
                else:
                    out.values[WANTED[tag]] = raw
        if length == _UNDEFINED:
            # SQ, UN (content implicit VR LE, PS3.5 6.2.2) or anything else of undefined length
            inner_explicit = explicit and vr == b"SQ"
            p = _skip_undefined(buf, p + head, inner_explicit, depth + 1)
        else:
            p += head + length
        if p > n and out is not None:
            raise _NeedMoreError


def _parse(buf: bytes) -> FastHeader:
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise FastHeaderUnsupportedError("no DICM preamble")
    p, ts = 132, None
    while p + 8 <= len(buf):
        g, e = struct.unpack_from("<HH", buf, p)
        if g != 0x0002:
            break
        vr = buf[p + 4 : p + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", buf, p + 8)
            head = 12
        else:
            (length,) = struct.unpack_from("<H", buf, p + 6)
            head = 8
        if length == _UNDEFINED or p + head + length > len(buf):
            raise _NeedMoreError if length != _UNDEFINED else FastHeaderUnsupportedError("odd meta")
        if e == 0x0010:
            ts = bytes(buf[p + head : p + head + length]).decode("ascii", "replace").strip(" \x00")
        p += head + length
    if ts is None or ts in _NOT_LE_EXPLICIT:
        raise FastHeaderUnsupportedError(f"transfer syntax {ts} needs pydicom")
    out = FastHeader(transfer_syntax=ts)
    _walk(buf, p, ts != _IMPLICIT_LE, 0, out)
    return out


def read_fast_header(fp: object, file_size: int, first_chunk: int = 16384) -> FastHeader:
    """Parse the header of the open binary file ``fp`` (positioned at 0).

    Reads ``first_chunk`` bytes, then more (x16, then the whole file) while the header runs
    past them. ``pixel_tag`` is None when the file ends without pixel data.

    Raises
    ------
    FastHeaderUnsupportedError
        The file needs pydicom (see module docstring).
    """
    buf = fp.read(min(first_chunk, file_size))  # type: ignore[attr-defined]
    size = len(buf)
    while True:
        try:
            header = _parse(buf)
        except _NeedMoreError:
            if size >= file_size:
                raise FastHeaderUnsupportedError("header runs past the end of the file") from None
            # (read_header reports such a file as truncated when pydicom finds no pixel data)
            size = min(file_size, size * 16)
            buf += fp.read(size - len(buf))  # type: ignore[attr-defined]
            continue
        except (struct.error, IndexError, ValueError) as exc:
            raise FastHeaderUnsupportedError(str(exc)) from None
        if header.pixel_tag is None and len(buf) < file_size:
            # stopped at the end of what was read: read the rest and parse again
            size = min(file_size, size * 16)
            buf += fp.read(size - len(buf))  # type: ignore[attr-defined]
            continue
        return header
