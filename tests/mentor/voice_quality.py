"""Speech for the voice fault tests, and its objective intelligibility after the trip.

Speech: fixed English sentences synthesised by Debian's ``espeak-ng`` (installed by ``make
install``; nothing downloads) at test time, resampled to 48 kHz mono and laid out as a loop
``lead, sentence, gap, sentence, ..., tail`` whose sentence bounds are known. The speech is
synthetic (formant synthesis): STOI was validated on natural speech, so the figures are a
measure of what the link does to a speech signal, not a listening test.

Scoring: STOI (Taal, Hendriks, Heusdens & Jensen 2011, "An algorithm for intelligibility
prediction of time-frequency weighted noisy speech", IEEE TASLP 19(7):2125-2136) and ESTOI
(Jensen & Taal 2016, IEEE/ACM TASLP 24(11):2009-2022), both from ``pystoi``. Both compare
short-time (384 ms) temporal envelopes of the clean and the received speech in one-third
octave bands, so the received speech must be time-aligned with the clean one first: a
received recording of the looping speech is aligned as a whole by cross-correlation with the
loop (its phase), then each sentence, then each 160 ms block of it along the best path of
bounded steps (a jitter buffer that stretches or skips time moves the speech while it plays;
:func:`align_sentences`), and the aligned sentences are scored together. The reading of a
STOI value as a share of words understood is Taal et al.'s logistic mapping for IEEE
sentences, ``100 / (1 + exp(a d + b))`` with a = -17.4906, b = 9.6921 (their fit; also
VOICEBOX ``v_stoi2prob``): STOI 0.75 -> 97 % of words, 0.60 -> 69 %, 0.50 -> 28 %.

PESQ (ITU-T P.862 / P.862.2) is not used: its reference C code (in the PyPI ``pesq``
package) may only be used to evaluate PESQ itself (its IPR notice), not to rate a product.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FS = 48000
ESPEAK = "espeak-ng"
# Two sets, one per direction: the page's echo canceller must never see the far end's own
# sentences at its microphone (it would cancel them).
MENTOR_SENTENCES = (
    "Move the retractor two millimetres to the left.",
    "Hold the drill steady and check the depth gauge.",
    "Stop. The vessel is just below your instrument.",
)
SURGEON_SENTENCES = (
    "I see the fiducial on the left temporal bone.",
    "Suction please, the field is filling with blood.",
    "Registration error is under two millimetres now.",
)
STOI_A, STOI_B = -17.4906, 9.6921       # Taal et al. 2011, IEEE sentences mapping
STOI_INTELLIGIBLE = 0.75                 # -> 97 % of words by that mapping


def words_understood(stoi_value: float) -> float:
    """Predicted share of words understood (0..1) for a STOI value (Taal et al. 2011's
    logistic mapping for IEEE sentences; module docstring)."""
    return 1.0 / (1.0 + math.exp(STOI_A * stoi_value + STOI_B))


@dataclass
class SpeechLoop:
    """A loop of synthetic speech: ``samples`` (float64 mono, full scale 1.0, ``FS`` Hz) and
    each sentence's ``[start, end)`` sample bounds in the loop."""

    samples: np.ndarray
    bounds: list[tuple[int, int]]

    @property
    def seconds(self) -> float:
        return len(self.samples) / FS

    def write_wav(self, path: Path, repeats: int = 1) -> Path:
        """The loop (``repeats`` times in a row) as 16-bit PCM mono WAV at ``FS`` Hz."""
        from scipy.io import wavfile

        s16 = np.round(np.tile(self.samples, repeats) * 32767).astype(np.int16)
        wavfile.write(path, FS, s16)
        return path


def synth_speech(sentences: tuple[str, ...], lead_s: float = 0.5, gap_s: float = 0.5,
                 peak: float = 0.5, words_per_minute: int = 150) -> SpeechLoop:
    """Speak ``sentences`` with espeak-ng (en-us) into a :class:`SpeechLoop` at ``FS`` Hz,
    each sentence normalised to ``peak`` (full scale 1.0), silence of ``lead_s`` before the
    first and ``gap_s`` after each."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    if shutil.which(ESPEAK) is None:
        raise FileNotFoundError(f"{ESPEAK}: not found; run `make install` (Debian espeak-ng)")
    parts = [np.zeros(int(lead_s * FS))]
    bounds = []
    pos = len(parts[0])
    with tempfile.TemporaryDirectory() as d:
        for i, text in enumerate(sentences):
            wav = Path(d) / f"{i}.wav"
            subprocess.run([ESPEAK, "-v", "en-us", "-s", str(words_per_minute), "-w",
                            str(wav), text], check=True, capture_output=True, timeout=30)
            rate, x = wavfile.read(wav)
            x = x.astype(np.float64) / 32768.0
            g = math.gcd(FS, rate)
            x = resample_poly(x, FS // g, rate // g)
            nz = np.flatnonzero(np.abs(x) > 1e-3 * np.abs(x).max())
            x = x[nz[0]:nz[-1] + 1]
            x *= peak / np.abs(x).max()
            parts += [x, np.zeros(int(gap_s * FS))]
            bounds.append((pos, pos + len(x)))
            pos += len(x) + int(gap_s * FS)
    return SpeechLoop(np.concatenate(parts), bounds)


def _xcorr_lag(ref: np.ndarray, seg: np.ndarray) -> int:
    """Offset o maximising sum_n ref[n] seg[n + o] for 0 <= o <= len(seg) - len(ref)."""
    from scipy.signal import correlate

    c = correlate(seg, ref, mode="valid", method="fft")
    return int(np.argmax(c))


@dataclass
class VoiceScore:
    """Intelligibility of a received recording of a :class:`SpeechLoop`."""

    stoi: float
    estoi: float
    words: float                 # words understood by Taal et al.'s mapping (0..1)
    speech_s: float              # seconds of sentences (with their margins) scored
    level_dbfs: float            # RMS of the received sentences, aligned
    shift_ms: list[float]        # each block's shift from the loop-wide alignment

    def as_dict(self) -> dict[str, float]:
        sh = np.asarray(self.shift_ms) if self.shift_ms else np.zeros(1)
        return {"stoi": self.stoi, "estoi": self.estoi, "words": self.words,
                "speech_s": self.speech_s, "level_dbfs": self.level_dbfs,
                "shift_range_ms": float(sh.max() - sh.min())}


def _ncc(block: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``block`` at every offset inside ``seg``."""
    from scipy.signal import correlate

    c = correlate(seg, block, mode="valid", method="fft")
    e = np.concatenate(([0.0], np.cumsum(seg * seg)))
    win = e[len(block):] - e[:-len(block)]
    return c / np.sqrt(np.maximum(win, 1e-12) * max(float(block @ block), 1e-12))


def _track_shifts(ncc: np.ndarray, step: int) -> np.ndarray:
    """Viterbi path through ``ncc`` (blocks x shifts): the shifts (column indices) maximising
    the summed correlation with at most ``step`` columns between neighbouring blocks."""
    n, m = ncc.shape
    score = ncc[0].copy()
    back = np.zeros((n, m), np.int64)
    cols = np.arange(m)
    for i in range(1, n):
        best, arg = np.full(m, -np.inf), cols.copy()
        for d in range(-step, step + 1):
            prev = np.full(m, -np.inf)
            if d >= 0:
                prev[d:] = score[:m - d]
            else:
                prev[:d] = score[-d:]
            better = prev > best
            best[better], arg[better] = prev[better], cols[better] - d
        score, back[i] = best + ncc[i], arg
    path = np.zeros(n, np.int64)
    path[-1] = int(np.argmax(score))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def align_sentences(loop: SpeechLoop, received: np.ndarray, margin_s: float = 0.1,
                    block_s: float = 0.16, search_s: float = 0.25, step_s: float = 0.05,
                    grid_s: float = 0.001, sentence_s: float = 0.4,
                    ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The sentences of ``loop`` found in ``received`` (a ``FS`` Hz recording of the loop
    played over and over, from any phase), time-aligned: (clean, received, block shifts in
    ms), the sentences (with ``margin_s`` of their surrounding silence) concatenated in both.

    The loop's phase comes from the cross-correlation of the whole recording with the loop,
    each sentence's own delay from its cross-correlation within +-``sentence_s`` of that
    phase. A receiver's jitter buffer stretches and shrinks time while it plays (Chromium's
    NetEq moves speech by up to ~150 ms within a sentence here, ~15 % faster or slower for a
    while, and by ~350 ms between sentences under 5 % loss and 20 ms jitter), so each
    sentence is cut into ``block_s`` blocks and every block gets its own shift from the
    sentence's delay, within +-``search_s``: the path of shifts that maximises the
    blocks' summed normalised cross-correlation (the speech blocks'; silent ones are free)
    with at most ``step_s`` between neighbouring blocks (dynamic programming on a
    ``grid_s`` grid, the block then placed at its best sample in its grid cell). The bounded
    step keeps time running through a gap (a lost frame, silence) instead of letting a block
    hop over it to better-matching speech. Raises ValueError when the recording holds no
    whole sentence.
    """
    ref, n_loop = loop.samples, len(loop.samples)
    rec = np.asarray(received, np.float64)
    if len(rec) < n_loop // 2:
        raise ValueError(f"received audio of {len(rec) / FS:.2f} s: expected at least "
                         f"{n_loop / 2 / FS:.2f} s (half the {loop.seconds:.2f} s loop)")
    # phase of the loop: the tiled loop's offset k with tiled[k + n] ~ rec[n]
    tiled = np.tile(ref, int(np.ceil((len(rec) + n_loop) / n_loop)) + 1)
    k = _xcorr_lag(rec, tiled[:len(rec) + n_loop])
    m, r, b, g = (int(margin_s * FS), int(search_s * FS), int(block_s * FS),
                  int(grid_s * FS))
    cells = (2 * r + 1 + g - 1) // g
    speech_floor = 1e-4 * float(np.max(ref * ref))       # -40 dB of the loudest sample
    clean, got, shifts = [], [], []
    for rep in range(-1, len(rec) // n_loop + 2):
        for s, e in loop.bounds:
            s0, e0 = max(0, s - m), min(n_loop, e + m)
            p = s0 + rep * n_loop - k          # where the sentence (with margin) starts in rec
            w = int(sentence_s * FS)
            if p - w - r < 0 or p + (e0 - s0) + w + r > len(rec):
                continue
            p += _xcorr_lag(ref[s0:e0], rec[p - w:p + (e0 - s0) + w]) - w
            starts = list(range(s0, e0, b))
            grid = np.zeros((len(starts), cells))
            fine = np.zeros((len(starts), cells), np.int64)
            for j, i in enumerate(starts):
                block = ref[i:min(i + b, e0)]
                q = p + (i - s0)
                c = _ncc(block, rec[q - r:q + r + len(block)])         # shifts -r..r
                pad = np.full(cells * g, -np.inf)
                pad[:len(c)] = c
                pad = pad.reshape(cells, g)
                fine[j] = np.argmax(pad, axis=1) + np.arange(cells) * g - r
                if float(np.mean(block * block)) > speech_floor:
                    grid[j] = pad.max(axis=1)
            path = _track_shifts(grid, max(1, int(step_s / grid_s)))
            for j, i in enumerate(starts):
                block = ref[i:min(i + b, e0)]
                q = p + (i - s0) + int(fine[j, path[j]])
                clean.append(block)
                got.append(rec[q:q + len(block)])
                shifts.append(float(fine[j, path[j]]) * 1e3 / FS)
    if not clean:
        raise ValueError(f"received audio of {len(rec) / FS:.2f} s holds no whole sentence "
                         f"of the {loop.seconds:.2f} s loop")
    return np.concatenate(clean), np.concatenate(got), shifts


def score(loop: SpeechLoop, received: np.ndarray) -> VoiceScore:
    """STOI and ESTOI of ``received`` (module docstring) against the clean loop."""
    from pystoi import stoi

    clean, got, shifts = align_sentences(loop, received)
    d = float(stoi(clean, got, FS))
    de = float(stoi(clean, got, FS, extended=True))
    rms = float(np.sqrt(np.mean(got * got)))
    return VoiceScore(d, de, words_understood(d), len(clean) / FS,
                      20 * math.log10(max(rms, 1e-9)), shifts)


def mute_blocks(x: np.ndarray, block_s: float = 0.2, duty: float = 0.5) -> np.ndarray:
    """``x`` with the first ``duty`` share of every ``block_s`` block silenced (an
    interrupted signal: the control that the measure falls for broken speech)."""
    y = np.array(x, np.float64)
    n = int(block_s * FS)
    idx = np.arange(len(y)) % n
    y[idx < int(duty * n)] = 0.0
    return y
