"""Raw-byte DICOM writing for hostile-input tests (as pydicom's own tests do: the bytes are
spelled out, so a malformed file is exactly what the test says, not what a writer allows).

Explicit VR little endian (PS3.5 §7.1.2): tag group/element uint16 LE, two-letter VR, then a
uint16 length, or for OB/OW/SQ/UN/UT two reserved bytes and a uint32 length; undefined
length 0xFFFFFFFF with Item (FFFE,E000), Item Delimitation (FFFE,E00D) and Sequence
Delimitation (FFFE,E0DD) items (PS3.5 §7.5).
"""

from __future__ import annotations

import struct

EXPLICIT_LE = b"1.2.840.10008.1.2.1\x00"
CT_STORAGE = b"1.2.840.10008.5.1.4.1.1.2\x00"
UNDEFINED = 0xFFFFFFFF
_LONG = {b"OB", b"OW", b"SQ", b"UN", b"UT"}


def element(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit-VR LE data element; ``length`` overrides the true value length."""
    n = len(value) if length is None else length
    if vr in _LONG:
        return struct.pack("<HH2sHI", group, elem, vr, 0, n) + value
    return struct.pack("<HH2sH", group, elem, vr, n) + value


def item(content: bytes, defined: bool = True) -> bytes:
    if defined:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content
    return (struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + content
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0))


def sequence(group: int, elem: int, items: list[bytes]) -> bytes:
    """A sequence of undefined length holding ``items`` (already encoded)."""
    return (struct.pack("<HH2sHI", group, elem, b"SQ", 0, UNDEFINED) + b"".join(items)
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


def nested_sequence(depth: int) -> bytes:
    """A private sequence (0009,1010) nested ``depth`` levels deep, undefined lengths."""
    inner = element(0x0009, 0x1011, b"LO", b"deep")
    for _ in range(depth):
        inner = sequence(0x0009, 0x1010, [item(inner, defined=False)])
    return inner


def file_meta() -> bytes:
    body = (element(0x0002, 0x0001, b"OB", b"\x00\x01")
            + element(0x0002, 0x0002, b"UI", CT_STORAGE)
            + element(0x0002, 0x0003, b"UI", b"1.2.826.0.1.3680043.8.498.1\x00")
            + element(0x0002, 0x0010, b"UI", EXPLICIT_LE))
    return element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body))) + body


def ct_image(rows: int = 4, cols: int = 4, pixels: bytes | None = None,
             middle: bytes = b"", preamble: bytes = b"\x00" * 128,
             pixel_length: int | None = None) -> bytes:
    """A minimal CT image file (one 16-bit slice, geometry present); ``middle`` is inserted
    between the patient/series attributes and the image attributes (tags in order)."""
    pixels = bytes(rows * cols * 2) if pixels is None else pixels
    ds = (element(0x0008, 0x0016, b"UI", CT_STORAGE)
          + element(0x0008, 0x0018, b"UI", b"1.2.826.0.1.3680043.8.498.1\x00")
          + element(0x0008, 0x0060, b"CS", b"CT")
          + middle
          + element(0x0018, 0x0050, b"DS", b"1.0 ")
          + element(0x0020, 0x000D, b"UI", b"1.2.826.0.1.3680043.8.498.2\x00")
          + element(0x0020, 0x000E, b"UI", b"1.2.826.0.1.3680043.8.498.3\x00")
          + element(0x0020, 0x0032, b"DS", b"0\\0\\0 ")
          + element(0x0020, 0x0037, b"DS", b"1\\0\\0\\0\\1\\0 ")
          + element(0x0020, 0x0052, b"UI", b"1.2.826.0.1.3680043.8.498.4\x00")
          + element(0x0028, 0x0002, b"US", struct.pack("<H", 1))
          + element(0x0028, 0x0004, b"CS", b"MONOCHROME2 ")
          + element(0x0028, 0x0010, b"US", struct.pack("<H", rows))
          + element(0x0028, 0x0011, b"US", struct.pack("<H", cols))
          + element(0x0028, 0x0030, b"DS", b"1\\1 ")
          + element(0x0028, 0x0100, b"US", struct.pack("<H", 16))
          + element(0x0028, 0x0101, b"US", struct.pack("<H", 16))
          + element(0x0028, 0x0102, b"US", struct.pack("<H", 15))
          + element(0x0028, 0x0103, b"US", struct.pack("<H", 1))
          + element(0x7FE0, 0x0010, b"OW", pixels, pixel_length))
    return preamble + b"DICM" + file_meta() + ds
