"""Frame-id strip: CRC-8 against its catalogue check value, layout, H.264 round trip."""

from __future__ import annotations

import av
import numpy as np
import pytest

from scrubin.mentor.media import DEFAULT_BITRATE, StreamEncoder
from scrubin.mentor.strip import (
    STRIP_HEIGHT,
    StripError,
    crc8,
    draw_strip,
    read_strip,
    strip_bits,
    with_strip,
)


def test_crc8_check_value() -> None:
    # CRC-8/SMBUS (poly 0x07, init 0): catalogue check value of "123456789" is 0xF4
    assert crc8(b"123456789") == 0xF4
    assert crc8(b"") == 0


def test_layout_matches_design() -> None:
    img = np.full((736, 1280, 3), 77, np.uint8)
    draw_strip(img, 0x80000001)
    assert (img[:720] == 77).all()  # the view is untouched
    cells = img[720:, ::32, 0]  # one column per 32-px cell
    assert cells.shape == (STRIP_HEIGHT, 40)
    bits = (cells[0] == 255).astype(int)
    assert bits[0] == 1 and bits[31] == 1 and bits[1:31].sum() == 0
    crc = int("".join(map(str, bits[32:])), 2)
    assert crc == crc8(bytes([0x80, 0, 0, 1]))
    assert (strip_bits(0x80000001) == bits).all()


def test_corrupted_strip_rejected() -> None:
    img = with_strip(np.zeros((720, 1280, 3), np.uint8), 123456)
    assert read_strip(img) == 123456
    img[-12:-4, 5 * 32 + 8: 5 * 32 + 24] ^= 255  # flip one id bit
    assert read_strip(img) is None


def test_black_strip_is_not_id_zero() -> None:
    """Premise: CRC-8/SMBUS of four zero bytes is 0, so an all-black strip is self-consistent."""
    assert crc8(bytes(4)) == 0
    black = np.zeros((736, 1280, 3), np.uint8)      # a black frame: strip cells all 0
    assert read_strip(black) is None
    white = np.full((736, 1280, 3), 255, np.uint8)  # all ones: CRC of ff ff ff ff is not 0xFF
    assert crc8(b"\xff" * 4) != 0xFF and read_strip(white) is None


@pytest.mark.parametrize("bad", [0, -1, 2 ** 32, 1.5, True, "7"])
def test_bad_ids(bad: object) -> None:
    with pytest.raises(StripError, match="frame id"):
        strip_bits(bad)  # type: ignore[arg-type]


def test_h264_round_trip_at_chosen_bitrate() -> None:
    """Worst case for the encoder (noise everywhere) at the station's bitrate: every id reads."""
    enc = StreamEncoder(1280, 736, 30.0, DEFAULT_BITRATE)
    dec = av.CodecContext.create("h264", "r")
    rng = np.random.default_rng(1)
    ids = [int(x) for x in rng.integers(1, 2 ** 32, 30)]
    got = []
    for i, fid in enumerate(ids):
        view = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
        for p in enc.encode(with_strip(view, fid), i * 3000):
            for f in dec.decode(p):
                got.append(read_strip(f.to_ndarray(format="gray")))
    for f in dec.decode(None):
        got.append(read_strip(f.to_ndarray(format="gray")))
    assert got == ids
