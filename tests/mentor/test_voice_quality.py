"""The voice scoring of the fault tests (tests/mentor/voice_quality.py) on known distortions.

No network: one espeak-ng sentence loop, "received" signals built from it with a known
distortion, scored against it. Truths: an undistorted copy is 1.0 (STOI's definition:
correlation of identical envelopes); a copy whose time is stretched in places (what a
jitter buffer does) is still scored near 1.0 once aligned; broken and unrelated signals fall
far below the 0.75 threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.mentor.voice_quality import (
    FS,
    STOI_INTELLIGIBLE,
    mute_blocks,
    score,
    synth_speech,
    words_understood,
)


@pytest.fixture(scope="module")
def loop():
    return synth_speech(("Move the retractor two millimetres to the left.",
                         "Stop. The vessel is just below your instrument."))


def _recording(x: np.ndarray, phase_s: float, seconds: float) -> np.ndarray:
    """``seconds`` of the looping ``x`` from ``phase_s`` (as a receiver records it)."""
    tiled = np.tile(x, int(np.ceil((phase_s + seconds) * FS / len(x))) + 1)
    return tiled[int(phase_s * FS):int((phase_s + seconds) * FS)]


def test_identical_copy_from_any_phase_scores_one(loop):
    got = score(loop, 0.4 * _recording(loop.samples, 1.37, 2.2 * loop.seconds))
    assert got.stoi > 0.999 and got.estoi > 0.999
    assert got.speech_s > 0.9 * (sum(e - s for s, e in loop.bounds) / FS)
    assert abs(got.level_dbfs - (20 * np.log10(0.4) + 20 * np.log10(
        np.sqrt(np.mean(np.concatenate([loop.samples[s:e] for s, e in loop.bounds]) ** 2))))) < 3


def test_time_stretched_copy_is_realigned(loop):
    """Silence inserted (60 ms, then 90 ms) and removed (40 ms) mid-sentence, as NetEq's
    expand and accelerate do: the block alignment follows it."""
    x = loop.samples.copy()
    (s0, e0), (s1, e1) = loop.bounds
    cut1, cut2, cut3 = (s0 + e0) // 2, (s1 + e1) // 3, 2 * (s1 + e1) // 3
    y = np.concatenate([x[:cut1], np.zeros(int(0.06 * FS)), x[cut1:cut2],
                        np.zeros(int(0.09 * FS)), x[cut2:cut3], x[cut3 + int(0.04 * FS):]])
    got = score(loop, _recording(y, 0.5, 2.2 * loop.seconds))
    assert got.stoi > 0.95, got.as_dict()


def test_broken_and_unrelated_signals_fall(loop):
    rec = _recording(loop.samples, 0.8, 2.2 * loop.seconds)
    muted = score(loop, mute_blocks(rec, 0.5))                 # every other 250 ms silenced
    noise = score(loop, np.random.default_rng(1).normal(0, 0.05, len(rec)))
    assert muted.stoi < STOI_INTELLIGIBLE - 0.1, muted.as_dict()
    assert noise.stoi < 0.5 and noise.estoi < 0.1, noise.as_dict()


def test_mapping_and_rejection(loop):
    # Taal et al. 2011's logistic mapping for IEEE sentences at three points
    assert words_understood(0.75) == pytest.approx(0.9685, abs=1e-3)
    assert words_understood(0.60) == pytest.approx(0.6905, abs=1e-3)
    assert words_understood(0.50) == pytest.approx(0.2795, abs=1e-3)
    with pytest.raises(ValueError, match="expected at least"):
        score(loop, loop.samples[:FS])
