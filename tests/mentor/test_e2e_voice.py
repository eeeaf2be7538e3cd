"""Voice with real peers: Chromium's fake microphone to the station, the station's tone back.

The page sends its microphone (Chromium ``--use-fake-device-for-media-stream``: a periodic
beep) and plays the theatre audio (the station's 440 Hz tone, Opus). Mute and push-to-talk
are checked at the receiving end: the level the station decodes from the page's Opus stream.
"""

from __future__ import annotations

import time

import numpy as np

from scrubin.mentor.media_audio import AudioSource
from scrubin.mentor.station_meta import FrameMeta
from tests.mentor.browser import new_page
from tests.mentor.live_station import LiveStation

WAIT_MS = 30000


def _source(i: int) -> tuple[np.ndarray, FrameMeta]:
    img = np.zeros((720, 1280, 3), np.uint8)
    img[:, :, 1] = np.linspace(0, 255, 1280, dtype=np.uint8)[None, :]
    img[300:420, (8 * i) % 1200:(8 * i) % 1200 + 80] = 255
    return img, FrameMeta(0, 0.0, 1280, 720, (900.0, 900.0, 640.0, 360.0), (0.0,) * 5, None,
                          None, "LOST")


def _peak_dbfs(station: LiveStation, seconds: float = 1.6) -> float:
    """Loudest decoded level of the page's voice over a window (the fake mic beeps)."""
    [peer] = station.station.peers.values()
    peak = -200.0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        if peer.audio_in is not None and peer.audio_in.rms_dbfs is not None:
            peak = max(peak, peer.audio_in.rms_dbfs)
        time.sleep(0.01)
    return peak


def test_voice_both_ways_mute_and_push_to_talk(chromium, mentor_server) -> None:
    sid, tokens = mentor_server.new_session()
    station = LiveStation(mentor_server.server.grpc_target, tokens["surgeon"],
                          str(mentor_server.server.cert_path), _source, None,
                          audio=AudioSource("tone:440")).start()
    page = new_page(chromium)
    try:
        page.goto(f"{mentor_server.url}/m/{sid}#token={tokens['mentor']}")
        page.wait_for_function("() => window.scrubin.state.frameLog.length > 10",
                               timeout=WAIT_MS)
        # theatre audio arrives and plays
        page.wait_for_function("""async () => {
            const au = document.getElementById('audio');
            let energy = 0;
            (await window.scrubin.state.pc.getStats()).forEach((r) => {
              if (r.type === 'inbound-rtp' && r.kind === 'audio') energy = r.totalAudioEnergy;
            });
            return !au.paused && au.currentTime > 0.5 && energy > 0;
        }""", timeout=WAIT_MS, polling=200)
        # the mentor's microphone reaches the station
        page.wait_for_function("() => document.getElementById('mic-state').textContent"
                               " === 'mic live'", timeout=WAIT_MS)
        live = _peak_dbfs(station)
        assert live > -40.0
        page.click("#btn-mute")
        page.wait_for_timeout(300)
        assert _peak_dbfs(station) < live - 30.0
        page.click("#btn-mute")                 # unmute
        page.wait_for_timeout(300)
        assert _peak_dbfs(station) > -40.0
        page.click("#btn-ptt")                  # push-to-talk: silent until held
        page.wait_for_timeout(300)
        assert _peak_dbfs(station) < live - 30.0
        talk = page.locator("#btn-talk").bounding_box()
        page.mouse.move(talk["x"] + 5, talk["y"] + 5)
        page.mouse.down()
        page.wait_for_timeout(300)
        assert _peak_dbfs(station) > -40.0
        page.mouse.up()
        assert station.errors == [] and station.link.errors == [] and page.errors == []
    finally:
        page.context.close()
        station.stop()
