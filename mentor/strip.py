"""Frame-id strip: a 32-bit frame id and its CRC-8 drawn as grey cells under the video.

The page reads the id of every displayed frame from the pixels (``requestVideoFrameCallback``
hands no reliable per-frame key but the picture itself), so metadata and annotations are keyed
by the frame id, never by the RTP timestamp. Layout (mentor/DESIGN.md, "Frame ids and the
strip"): ``STRIP_HEIGHT`` = 16 rows below the view; 40 cells of ``width // 40`` x 16 px, grey
255 = bit 1, 0 = bit 0; cells 0..31 = frame id, most significant bit first; cells 32..39 =
CRC-8 of the id's 4 bytes big-endian (polynomial x^8 + x^2 + x + 1 = 0x07, initial value 0, no
reflection, no final xor: "CRC-8/SMBUS" in the Williams/Greg Cook catalogue, check value 0xF4
for "123456789"). A reader samples the central half-width x half-height block of each cell,
thresholds the mean luma at 128 and drops ids whose CRC does not match.

Id 0 is reserved: the CRC of four zero bytes is 0, so an all-black strip (a black or blank
frame, a decoder's grey-less start) would read as id 0 with a valid CRC. Writers refuse 0 and
readers return None for it.
"""

from __future__ import annotations

import numpy as np

from scrubin.mentor.errors import MentorError

STRIP_HEIGHT = 16
N_CELLS = 40
ID_BITS = 32


class StripError(MentorError):
    """A strip cannot be drawn (bad frame id or image size)."""


def crc8(data: bytes) -> int:
    """CRC-8, polynomial 0x07, init 0, MSB first (CRC-8/SMBUS; ``crc8(b"123456789") == 0xF4``)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def strip_bits(frame_id: int) -> np.ndarray:
    """The 40 bits of the strip (0/1, cell order): 32 id bits MSB first, then 8 CRC bits."""
    if isinstance(frame_id, bool) or not isinstance(frame_id, int | np.integer) or not (
            0 < int(frame_id) < 2 ** ID_BITS):
        raise StripError(f"frame id must be an integer in 1..2^32-1 (0 is reserved: an "
                         f"all-black strip reads as 0), got {frame_id!r}")
    fid = int(frame_id)
    word = (fid << 8) | crc8(fid.to_bytes(4, "big"))
    return np.array([(word >> (N_CELLS - 1 - i)) & 1 for i in range(N_CELLS)], np.uint8)


def _cell_width(width: int) -> int:
    cw = width // N_CELLS
    if cw < 2:
        raise StripError(f"strip needs an image at least {2 * N_CELLS} px wide, got {width}")
    return cw


def draw_strip(image_bgr: np.ndarray, frame_id: int) -> None:
    """Write the strip of ``frame_id`` into the last ``STRIP_HEIGHT`` rows of ``image_bgr``.

    Columns right of ``40 * (width // 40)`` are set to 0.
    """
    if image_bgr.ndim != 3 or image_bgr.dtype != np.uint8 or image_bgr.shape[0] < STRIP_HEIGHT:
        raise StripError(f"strip target must be (H >= {STRIP_HEIGHT}, W, C) uint8, got "
                         f"{image_bgr.shape} {image_bgr.dtype}")
    cw = _cell_width(image_bgr.shape[1])
    row = np.repeat(strip_bits(frame_id) * np.uint8(255), cw)
    band = image_bgr[-STRIP_HEIGHT:]
    band[:] = 0
    band[:, : len(row)] = row[None, :, None]


def with_strip(view_bgr: np.ndarray, frame_id: int, out: np.ndarray | None = None) -> np.ndarray:
    """The view with the strip appended below: ``(H + 16, W, 3)`` uint8 (``out`` reused)."""
    h, w = view_bgr.shape[:2]
    if out is None or out.shape != (h + STRIP_HEIGHT, w, 3):
        out = np.empty((h + STRIP_HEIGHT, w, 3), np.uint8)
    out[:h] = view_bgr
    draw_strip(out, frame_id)
    return out


def read_strip(luma: np.ndarray) -> int | None:
    """Frame id from the last ``STRIP_HEIGHT`` rows of a decoded picture, or None.

    ``luma`` is ``(H, W)`` (Y plane) or ``(H, W, C)`` (channel mean used). Each cell's central
    ``cw/2 x 8`` px are averaged and thresholded at 128; None when the CRC does not match or
    the id is the reserved 0 (an all-black strip).
    """
    a = np.asarray(luma)
    if a.ndim == 3:
        a = a.mean(axis=2)
    if a.ndim != 2 or a.shape[0] < STRIP_HEIGHT:
        return None
    cw = a.shape[1] // N_CELLS
    if cw < 2:
        return None
    band = a[-STRIP_HEIGHT + STRIP_HEIGHT // 4: -STRIP_HEIGHT // 4].astype(np.float64)
    x0 = cw // 4
    cells = band[:, : N_CELLS * cw].reshape(band.shape[0], N_CELLS, cw)[:, :, x0: x0 + cw // 2]
    bits = (cells.mean(axis=(0, 2)) >= 128).astype(np.int64)
    word = 0
    for b in bits:
        word = (word << 1) | int(b)
    fid, crc = word >> 8, word & 0xFF
    return fid if fid != 0 and crc8(fid.to_bytes(4, "big")) == crc else None
