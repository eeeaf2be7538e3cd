"""Deterministic mutation of seed inputs (byte-level, plus token-level for text formats).

A small libFuzzer-style mutator (bit flips, "interesting" integers written over 1/2/4 bytes,
the DICOM undefined length 0xFFFFFFFF, deletion, duplication, insertion, truncation, splicing
of two seeds), plus for text seeds numbers replaced by NaN/inf/huge values and brackets nested
hundreds deep. Driven by :class:`random.Random` with a fixed seed, so a run is reproducible:
input ``n`` of target ``t`` is the same bytes on every machine.
"""

from __future__ import annotations

import random
import re
import struct

INTERESTING_8 = [0, 1, 0x7F, 0x80, 0xFF]
INTERESTING_16 = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x0100, 0x1000]
INTERESTING_32 = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0x10000, 0x00100000]
TEXT_NUMBERS = [b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e309", b"-1e308", b"0",
                b"-0", b"1e-320", b"99999999999999999999999", b"-1", b"65535", b"4294967296",
                b"", b"\"\"", b"null", b"true", b"[]", b"{}"]
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _flip(rng: random.Random, b: bytearray) -> None:
    i = rng.randrange(len(b))
    b[i] ^= 1 << rng.randrange(8)


def _interesting(rng: random.Random, b: bytearray) -> None:
    width = rng.choice((1, 2, 4))
    if len(b) < width:
        return
    i = rng.randrange(len(b) - width + 1)
    if width == 1:
        b[i] = rng.choice(INTERESTING_8)
    elif width == 2:
        struct.pack_into(rng.choice("<>") + "H", b, i, rng.choice(INTERESTING_16))
    else:
        struct.pack_into(rng.choice("<>") + "I", b, i, rng.choice(INTERESTING_32))


def _random_bytes(rng: random.Random, b: bytearray) -> None:
    i = rng.randrange(len(b))
    n = min(len(b) - i, rng.randint(1, 16))
    b[i:i + n] = bytes(rng.randrange(256) for _ in range(n))


def _delete(rng: random.Random, b: bytearray) -> None:
    i = rng.randrange(len(b))
    del b[i:i + rng.randint(1, max(1, min(256, len(b) - i)))]


def _duplicate(rng: random.Random, b: bytearray) -> None:
    i = rng.randrange(len(b))
    chunk = b[i:i + rng.randint(1, 512)]
    j = rng.randrange(len(b) + 1)
    b[j:j] = chunk * rng.choice((1, 1, 2, 8))


def _insert(rng: random.Random, b: bytearray) -> None:
    j = rng.randrange(len(b) + 1)
    b[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))


def _truncate(rng: random.Random, b: bytearray) -> None:
    del b[rng.randrange(len(b)):]


BYTE_OPS = [_flip, _interesting, _interesting, _random_bytes, _delete, _duplicate, _insert,
            _truncate]


def _text_number(rng: random.Random, b: bytearray) -> None:
    spans = [m.span() for m in _NUMBER.finditer(b)]
    if not spans:
        return
    i, j = rng.choice(spans)
    b[i:j] = rng.choice(TEXT_NUMBERS)


def _text_nest(rng: random.Random, b: bytearray) -> None:
    j = rng.randrange(len(b) + 1)
    depth = rng.choice((50, 500, 5000, 100000))
    opener = rng.choice((b"[", b"{\"a\":"))
    closer = b"]" if opener == b"[" else b"}"
    b[j:j] = opener * depth + b"1" + closer * rng.choice((0, depth))


def _text_line(rng: random.Random, b: bytearray) -> None:
    lines = bytes(b).split(b"\n")
    i = rng.randrange(len(lines))
    op = rng.randrange(3)
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[rng.randrange(len(lines))])
    else:
        lines[i] = lines[i] * rng.randint(2, 4)
    b[:] = b"\n".join(lines)


TEXT_OPS = [_text_number, _text_number, _text_number, _text_nest, _text_line]


def mutate(rng: random.Random, seed: bytes, others: list[bytes], text: bool) -> bytes:
    """One mutant of ``seed``: 1-6 stacked operations (sometimes spliced with another seed)."""
    b = bytearray(seed)
    if others and rng.random() < 0.05:
        other = rng.choice(others)
        if b and other:
            cut = rng.randrange(len(b))
            b = b[:cut] + other[rng.randrange(len(other)):]
    ops = BYTE_OPS + TEXT_OPS * 2 if text else BYTE_OPS
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6))):
        if not b:
            b = bytearray(rng.randbytes(rng.randint(0, 8)))
            if not b:
                break
        rng.choice(ops)(rng, b)
    return bytes(b)
