"""Pre-checks on hostile DICOM input, applied before a parser or an allocation trusts it.

* :func:`check_preamble` — PS3.10 §7.1: the File Preamble is "a fixed 128 byte field
  available for Application Profile or implementation specified use. If not used ... all
  bytes shall be set to 00H", and readers "shall not rely on the content of this Preamble".
  §7.5 (the preamble used for other purposes, e.g. dual TIFF/DICOM files) and CVE-2019-11687
  note that the same space can hold a Windows PE or ELF header, making the file a valid
  executable as well ("dual-personality" files). A preamble that starts with an executable
  header (PE ``MZ``, ELF, Mach-O, a ``#!`` script) is refused; zeros and the TIFF header
  (``II*\0`` / ``MM\0*``), the other use §7.5 describes, are accepted.
* :func:`check_image_size` — Rows × Columns × NumberOfFrames × SamplesPerPixel ×
  BitsAllocated/8 is checked against :data:`MAX_IMAGE_BYTES` and, for native (uncompressed)
  pixel data, against the size of the whole file (PS3.5 §8.1.1: native pixel data is that
  long), so a 65535 × 65535 × 65535 image declared in a tiny file is refused from the header,
  before any array is allocated. (A file a few bytes short is left to the pixel reader, which
  names it as truncated.)
* :func:`dicomdir_files` — the Referenced File IDs of a DICOMDIR (PS3.3 F.5, PS3.10 §8.2,
  §8.5: components of at most 8 characters from ``A-Z 0-9 _``), each resolved inside the
  DICOMDIR's folder; ``..``, absolute paths and links leaving the folder are refused.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from scrubin.imaging.errors import DicomError

#: Largest decoded image (one file) accepted, bytes; ``SCRUBIN_MAX_IMAGE_BYTES`` overrides.
MAX_IMAGE_BYTES = int(os.environ.get("SCRUBIN_MAX_IMAGE_BYTES", str(4 * 2**30)))

#: Executable headers refused in the preamble: (magic, what it is).
EXECUTABLE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows PE/DOS executable (MZ)"),
    (b"\x7fELF", "an ELF executable"),
    (b"\xfe\xed\xfa\xce", "a Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O universal executable"),
    (b"#!", "a script (#!)"),
)

_FILE_ID_COMPONENT = re.compile(r"^[A-Z0-9_]{1,8}$")


class DualPersonalityError(DicomError):
    """The File Preamble holds an executable header (PS3.10 §7.5 security note)."""


class ImageTooLargeError(DicomError):
    """Declared image size beyond the limit or beyond the bytes in the file."""


class DicomdirError(DicomError):
    """A DICOMDIR cannot be read or references a file outside its folder."""


def check_preamble(preamble: bytes, path: Path | str) -> None:
    """Refuse a file whose 128-byte preamble starts with an executable header.

    Parameters
    ----------
    preamble
        The first 128 bytes of a file that has ``DICM`` at offset 128 (PS3.10 §7.1).
    path
        Named in the message.

    Raises
    ------
    DualPersonalityError
    """
    for magic, what in EXECUTABLE_MAGIC:
        if preamble.startswith(magic):
            raise DualPersonalityError(
                f"{path}: the 128-byte DICOM preamble starts with {what}: a dual-personality "
                "file (PS3.10 §7.5), refused; expected zeros or a TIFF header"
            )


def expected_pixel_bytes(rows: int, cols: int, frames: int, samples: int, bits: int) -> int:
    """Bytes of native pixel data: rows·cols·frames·samples·bits/8 rounded up (PS3.5 §8.1.1)."""
    return (rows * cols * frames * samples * bits + 7) // 8


def check_image_size(path: Path | str, rows: int, cols: int, frames: int, samples: int,
                     bits: int, native_file_size: int | None) -> None:
    """Refuse an image whose declared size cannot be honest, before allocating it.

    Parameters
    ----------
    rows, cols, frames, samples, bits
        Rows, Columns, NumberOfFrames, SamplesPerPixel, BitsAllocated as declared.
    native_file_size
        For native (uncompressed) pixel data, the size of the file in bytes; None for
        encapsulated data, whose decoded size is checked against :data:`MAX_IMAGE_BYTES` only.

    Raises
    ------
    ImageTooLargeError
    """
    if not (bits == 1 or (bits % 8 == 0 and 8 <= bits <= 64)) or samples not in (1, 3, 4):
        raise ImageTooLargeError(f"{path}: BitsAllocated={bits}, SamplesPerPixel={samples}: "
                                 "expected 1 or a multiple of 8 up to 64 bits (PS3.5 §8.1.1) "
                                 "and 1, 3 or 4 samples")
    need = expected_pixel_bytes(rows, cols, frames, samples, bits)
    if need > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(
            f"{path}: declared image {cols}x{rows}x{frames} ({samples} sample(s), {bits} bits) "
            f"is {need / 2**30:.1f} GiB, more than the {MAX_IMAGE_BYTES / 2**30:.1f} GiB limit "
            "(SCRUBIN_MAX_IMAGE_BYTES)")
    if native_file_size is not None and need > native_file_size:
        raise ImageTooLargeError(
            f"{path}: declared image {cols}x{rows}x{frames} needs {need} bytes of pixel data, "
            f"the whole file is {native_file_size} bytes (corrupt Rows/Columns/NumberOfFrames "
            "or truncated file)")


def _file_id(value: object, dicomdir: Path, n: int) -> Path:
    parts = [str(p) for p in value] if isinstance(value, list | tuple) or (
        hasattr(value, "__iter__") and not isinstance(value, str | bytes)) else \
        str(value).split("\\")
    if not parts or len(parts) > 8:
        raise DicomdirError(f"{dicomdir}: record {n}: ReferencedFileID {parts!r}: expected 1 to "
                            "8 components (PS3.10 §8.5)")
    for part in parts:
        if not _FILE_ID_COMPONENT.match(part):
            raise DicomdirError(
                f"{dicomdir}: record {n}: ReferencedFileID component {part[:40]!r}: expected 1 to"
                " 8 characters A-Z 0-9 _ (PS3.10 §8.5; '..', '/' and absolute paths refused)")
    root = dicomdir.parent.resolve()
    target = root.joinpath(*parts)
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise DicomdirError(f"{dicomdir}: record {n}: ReferencedFileID {'/'.join(parts)} "
                            f"resolves to {resolved}, outside {root} (link)")
    return target


def dicomdir_files(path: Path | str) -> list[Path]:
    """The files a DICOMDIR references, each checked to stay inside the DICOMDIR's folder.

    Raises
    ------
    DicomdirError
        Unreadable DICOMDIR, or a Referenced File ID that is not a PS3.10 §8.5 file ID or
        leaves the folder.
    DualPersonalityError
        Executable header in the preamble.
    """
    import pydicom

    path = Path(path)
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
            if len(head) == 132 and head[128:] == b"DICM":
                check_preamble(head[:128], path)
            fp.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(fp)
                records = list(ds.get("DirectoryRecordSequence") or [])
    except DicomError:
        raise
    except OSError as exc:
        raise DicomdirError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise DicomdirError(
            f"{path}: not a readable DICOMDIR ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    out: list[Path] = []
    for n, record in enumerate(records):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = record.get("ReferencedFileID")
        except Exception as exc:  # lazily converted value
            raise DicomdirError(f"{path}: record {n}: unreadable ReferencedFileID "
                                f"({type(exc).__name__})") from None
        if value is None or value == "":
            continue
        out.append(_file_id(value, path, n))
    return out
