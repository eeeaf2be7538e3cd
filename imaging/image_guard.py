"""Pre-checks on NRRD and MetaImage headers before SimpleITK reads the data.

ITK's readers trust the header: a MetaImage whose compressed stream is corrupt can make ITK's
inflate loop spin for ever (found by ``fuzz/``: a valid zlib header followed by text), an
``ElementDataFile`` / ``data file`` may name any path (``/dev/zero``, ``/dev/stdin``,
``../../etc/passwd``), and ``DimSize`` / ``sizes`` may declare gigabytes in a tiny file. This
module reads the text header itself and refuses, before any allocation:

* a data file that is not a plain file name next to the header (MetaIO ``ElementDataFile``:
  ``LOCAL`` or a file name; NRRD ``data file``: a file name, NRRD0004 §"Detached headers");
  file lists and patterns (``LIST``, ``%d``) are not supported;
* a declared size (product of ``DimSize`` / ``sizes`` × bytes per element × channels) above
  :data:`~scrubin.imaging.dicom_guard.MAX_IMAGE_BYTES`, or above the bytes present for raw data;
* compressed data (MetaIO ``CompressedData = True``: zlib; NRRD ``encoding: gzip``/``bzip2``)
  that does not inflate to exactly the declared size (inflated here with a bounded output).
"""

from __future__ import annotations

import bz2
import math
import re
import zlib
from pathlib import Path

from scrubin.imaging.dicom_guard import MAX_IMAGE_BYTES

#: MetaIO element types (MetaImageTypes.h) and NRRD types (NRRD0004 "type") → bytes.
MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
             "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8,
             "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
NRRD_BYTES = {**dict.fromkeys(["signed char", "int8", "int8_t", "uchar", "unsigned char",
                               "uint8", "uint8_t"], 1),
              **dict.fromkeys(["short", "short int", "signed short", "signed short int",
                               "int16", "int16_t", "ushort", "unsigned short",
                               "unsigned short int", "uint16", "uint16_t"], 2),
              **dict.fromkeys(["int", "signed int", "int32", "int32_t", "uint",
                               "unsigned int", "uint32", "uint32_t", "float"], 4),
              **dict.fromkeys(["longlong", "long long", "long long int", "signed long long",
                               "signed long long int", "int64", "int64_t", "ulonglong",
                               "unsigned long long", "unsigned long long int", "uint64",
                               "uint64_t", "double"], 8)}
_PLAIN_NAME = re.compile(r"^[^/\\\x00]+$")
_HEADER_LIMIT = 65536


def _error(path: Path, message: str) -> Exception:
    from scrubin.imaging.image_files import ImageFileError  # (image_files imports this module)

    return ImageFileError(f"{path}: {message}")


def _ints(path: Path, field: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split()]
    except ValueError:
        raise _error(path, f"{field} {text[:60]!r}: expected integers") from None
    if not values or any(v < 1 for v in values):
        raise _error(path, f"{field} {text[:60]!r}: expected positive integers")
    return values


def _data_file(path: Path, field: str, name: str) -> Path:
    if name in (".", "..") or not _PLAIN_NAME.match(name) or "%" in name:
        raise _error(path, f"{field} {name[:80]!r}: expected a plain file name next to the "
                           "header (no folders, '..', absolute paths, lists or patterns)")
    data = path.parent / name
    if not data.is_file() or data.resolve().parent != path.parent.resolve():
        raise _error(path, f"{field} {name[:80]!r}: no such regular file next to the header")
    return data


def _check_payload(path: Path, payload: bytes, need: int, codec: str) -> None:
    if codec == "raw":
        if len(payload) < need:
            raise _error(path, f"header declares {need} bytes of voxel data, the file holds "
                               f"{len(payload)} (truncated, or sizes corrupt)")
        return
    try:
        if codec == "zlib":  # zlib or gzip stream (MetaIO writes zlib; NRRD gzip)
            d = zlib.decompressobj(wbits=47)
            out = d.decompress(payload, need + 1)
        else:
            b = bz2.BZ2Decompressor()
            out = b.decompress(payload, need + 1)
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        raise _error(path, f"compressed voxel data is corrupt ({exc})") from None
    if len(out) != need:
        raise _error(path, f"compressed voxel data inflates to {len(out)}"
                           f"{'+' if len(out) > need else ''} bytes, the header declares {need}")


def _budget(path: Path, sizes: list[int], nbytes: int) -> int:
    need = math.prod(sizes) * nbytes
    if need > MAX_IMAGE_BYTES:
        raise _error(path, f"declared image {'x'.join(map(str, sizes))} is "
                           f"{need / 2**30:.1f} GiB, more than the {MAX_IMAGE_BYTES / 2**30:.1f} "
                           "GiB limit (SCRUBIN_MAX_IMAGE_BYTES)")
    return need


def check_metaimage(path: Path) -> None:
    """Check a MetaImage (``.mha``/``.mhd``) header and its data before ITK reads them.

    Raises
    ------
    ImageFileError
    """
    raw = path.read_bytes() if path.suffix.lower() == ".mha" else path.read_bytes()[:_HEADER_LIMIT]
    fields: dict[str, str] = {}
    p = 0
    while True:
        end = raw.find(b"\n", p)
        if end < 0 or end - p > 4096:
            raise _error(path, "MetaImage header without 'ElementDataFile = ...' line")
        line = raw[p:end].decode("latin-1").strip()
        p = end + 1
        if "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        fields[key.lower()] = value
        if key.lower() == "elementdatafile":
            break
    ndims = _ints(path, "NDims", fields.get("ndims", ""))[0]
    sizes = _ints(path, "DimSize", fields.get("dimsize", ""))
    if len(sizes) != ndims:
        raise _error(path, f"DimSize has {len(sizes)} values, NDims is {ndims}")
    etype = fields.get("elementtype", "")
    if etype not in MET_BYTES:
        raise _error(path, f"ElementType {etype[:40]!r}: expected one of {', '.join(MET_BYTES)}")
    channels = _ints(path, "ElementNumberOfChannels",
                     fields.get("elementnumberofchannels", "1"))[0]
    need = _budget(path, sizes, MET_BYTES[etype] * channels)
    if fields.get("binarydata", "True").lower() != "true":
        return  # ASCII voxels: ITK parses numbers, bounded by the size checked above
    name = fields["elementdatafile"]
    if name.upper() == "LOCAL":
        payload = raw[p:]
    else:
        payload = _data_file(path, "ElementDataFile", name).read_bytes()
    compressed = fields.get("compresseddata", "False").lower() == "true"
    _check_payload(path, payload, need, "zlib" if compressed else "raw")


def check_nrrd(path: Path) -> None:
    """Check a NRRD (``.nrrd``/``.nhdr``) header and its data before ITK reads them.

    Raises
    ------
    ImageFileError
    """
    raw = path.read_bytes()
    if not raw.startswith(b"NRRD000"):
        raise _error(path, "not a NRRD file (no 'NRRD000x' magic line)")
    fields: dict[str, str] = {}
    p = raw.find(b"\n") + 1
    while True:
        end = raw.find(b"\n", p)
        if end < 0:
            end = len(raw)
        line = raw[p:end].decode("latin-1").rstrip("\r")
        p = end + 1
        if not line.strip() or p > len(raw):
            break
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    sizes = _ints(path, "sizes", fields.get("sizes", ""))
    ntype = fields.get("type", "").lower()
    if ntype not in NRRD_BYTES:
        raise _error(path, f"type {ntype[:40]!r}: expected a NRRD scalar type")
    need = _budget(path, sizes, NRRD_BYTES[ntype])
    encoding = fields.get("encoding", "").lower()
    name = fields.get("data file", fields.get("datafile"))
    if name is not None:
        if name.split()[:1] == ["LIST"] or len(name.split()) > 1:
            raise _error(path, f"data file {name[:60]!r}: file lists and patterns are not "
                               "supported, expected one file name")
        payload = _data_file(path, "data file", name).read_bytes()
    else:
        payload = raw[p:] if p <= len(raw) else b""
    skips = fields.get("line skip", fields.get("lineskip", "0")), fields.get(
        "byte skip", fields.get("byteskip", "0"))
    if skips != ("0", "0"):
        return  # skipped lines/bytes: only the size budget above applies
    codec = {"raw": "raw", "gzip": "zlib", "gz": "zlib", "bzip2": "bz2", "bz2": "bz2"}.get(encoding)
    if codec is not None:
        _check_payload(path, payload, need, codec)
