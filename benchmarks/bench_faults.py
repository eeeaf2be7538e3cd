"""Mentoring under network faults (issue 10): figures for `make bench`.

Real MentorServer (in-process, TLS gRPC), a live surgeon station (640x360 at 30 fps, shared
H.264 encoder) and a native aiortc viewer + the mentor's annotation stream behind the seeded
userspace relays (mentor/impair*.py; the relay is the only path, candidates rewritten in
signalling). Scenarios, each printed as one line of figures:

* 5 % loss with 80 +- 20 ms one-way delay each way (gRPC: 80 ms, loss as one 200 ms RTO),
  30 s: decoded fps, W3C freeze share of raw arrivals, frames shown by a 400 ms playout
  buffer, capture -> decode latency p50/p95, NACK/PLI counts at the relay, keyframes the
  encoder made on request, relay bytes vs the peers' DTLS transport bytes, stroke events
  exactly once;
* the same link to the mentor page in headless Chromium, 30 s: Chromium's decoded fps,
  totalFreezesDuration share, NACK/PLI counts and jitter-buffer delay;
* blackouts of the mentor's whole network, 3 s (gRPC connections reset) and 30 s (gRPC
  held): detection time on each side, resume time after the link's return, new peer
  connections, stroke events exactly once.
* voice both ways (tests/mentor/voice_faults.py): synthetic speech (espeak-ng) from
  Chromium's fake microphone to the station, and from the station's audio input to the page
  (recorded after Chromium's NetEq), 15 s each at 0 %, 5 % and 30 % loss (+ 80 +- 20 ms)
  with the station's own receiver buffer (mentor/audio_jitter.py), and 5 % again with
  aiortc's own jitter buffer put back (aiortc #543, the comparison): STOI / ESTOI
  against the clean speech (tests/mentor/voice_quality.py), the drop from the unimpaired
  session, frames missing at the station, Chromium's concealed share and jitter.

The tests (tests/mentor/test_faults_*.py) run the same scenarios short (8 s, 3 s).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from tests.mentor.fault_scenarios import blackout_run, lossy_run


def _once_in_order(stroke: tuple) -> str:
    ids, seqs, saw = stroke
    mine = [(s, e) for s, e in saw if e in set(ids)]
    ok = [e for _, e in mine] == ids and [s for s, _ in mine] == seqs == sorted(seqs)
    return f"{len(ids)} stroke events {'exactly once in order' if ok else 'NOT exactly once'}"


def _page_loss() -> None:
    """The same link for the mentor page in headless Chromium (its own inbound-rtp figures)."""
    from playwright.sync_api import sync_playwright

    from tests.mentor.browser import ServerThread, launch_chromium
    from tests.mentor.test_faults_page import page_under_loss

    with tempfile.TemporaryDirectory() as d, sync_playwright() as pw:
        server = ServerThread(Path(d))
        browser = launch_chromium(pw)
        try:
            out = page_under_loss(browser, server, 30.0)
        finally:
            browser.close()
            server.stop()
    print(f"faults loss, Chromium page, 30 s: decoded {out['fps']:.1f} fps, frozen "
          f"{out['frozen_share'] * 100:.1f} % of the time ({out['freezes']} freezes), NACK "
          f"{out['nack']}, PLI {out['pli']}, jitter buffer {out['jitter_buffer_ms']:.0f} ms "
          f"(loss guard target {out['guard_ms']} ms), capture -> display p50 "
          f"{out['latency_p50_ms']:.0f} / p95 {out['latency_p95_ms']:.0f} ms, relay loss "
          f"{out['relay_loss'] * 100:.2f} %, peer connections {out['peer_connections']}; "
          f"station voice (tone) {out['audio_dbfs']:.1f} dBFS, Chromium concealed "
          f"{out['audio_concealed_share'] * 100:.1f} % of its samples")


def _voice() -> None:
    """Speech intelligibility both ways at 0 %, 5 % and 30 % loss (+ 80 +- 20 ms)."""
    from playwright.sync_api import sync_playwright

    from tests.mentor.browser import ServerThread, launch_chromium
    from tests.mentor.voice_faults import voice_run
    from tests.mentor.voice_quality import (
        MENTOR_SENTENCES,
        SURGEON_SENTENCES,
        score,
        synth_speech,
    )

    mentor, surgeon = synth_speech(MENTOR_SENTENCES), synth_speech(SURGEON_SENTENCES)
    with tempfile.TemporaryDirectory() as d, sync_playwright() as pw:
        mic = mentor.write_wav(Path(d) / "mentor.wav")
        theatre = surgeon.write_wav(Path(d) / "surgeon.wav", int(60 / surgeon.seconds) + 1)
        server = ServerThread(Path(d))
        browser = launch_chromium(pw, (f"--use-file-for-fake-audio-capture={mic}",))
        base: dict[str, float] = {}
        try:
            for loss, delay, jitter, fix in ((0.0, 0.0, 0.0, True), (0.05, 80.0, 20.0, False),
                                             (0.05, 80.0, 20.0, True),
                                             (0.30, 80.0, 20.0, True)):
                out = voice_run(browser, server, theatre, 15.0, loss, delay, jitter,
                                aiortc_buffer=not fix)
                st, pg = score(mentor, out["to_station"]), score(surgeon, out["to_page"])
                base = base or {"st": st.stoi, "pg": pg.stoi}
                missing = 1 - out["station_frames"] / max(1, out["station_slots"])
                buf = ("station buffer: mentor/audio_jitter.py (the station's)" if fix else
                       "station buffer: aiortc's own (put back for comparison)")
                print(f"faults voice {loss * 100:.0f}% + {delay:.0f}+-{jitter:.0f} ms, 15 s, "
                      f"{buf}: "
                      f"mentor -> surgeon STOI {st.stoi:.3f} (drop {base['st'] - st.stoi:.3f}), "
                      f"ESTOI {st.estoi:.3f}, {missing * 100:.1f} % of 20 ms frames missing at "
                      f"the station (relay loss {out['relay_loss_up'] * 100:.1f} %); surgeon -> "
                      f"mentor STOI {pg.stoi:.3f} (drop {base['pg'] - pg.stoi:.3f}), ESTOI "
                      f"{pg.estoi:.3f}, Chromium concealed "
                      f"{out['page_concealed_share'] * 100:.1f} %, jitter "
                      f"{out['page_jitter_ms']:.0f} ms (relay loss "
                      f"{out['relay_loss_down'] * 100:.1f} %); scored {st.speech_s:.1f} / "
                      f"{pg.speech_s:.1f} s of speech")
        finally:
            browser.close()
            server.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        out = asyncio.run(lossy_run(Path(d), seconds=30.0))
    rb, vs = out["relay_bytes"], out["viewer_stats"]
    print(f"faults loss 5% + 80+-20 ms, 30 s: decoded {out['fps']:.1f} fps, "
          f"{out['decoded']}/{out['sent']} station frames decoded, W3C freezes "
          f"{out['freezes']} ({out['frozen_share'] * 100:.1f} % of the time on raw arrival), "
          f"late for a {out['playout_ms']:.0f} ms playout {out['frozen_share_playout'] * 100:.1f} %"
          f", latency p50 {out['latency_p50_ms']:.0f} / p95 {out['latency_p95_ms']:.0f} ms")
    print(f"faults loss: NACK {out['nacks']}, PLI {out['plis_at_relay']} at the relay, "
          f"keyframe requests at the encoder {out['plis_at_encoder']} (PLI + viewer queue "
          f"drops); media down {out['down'].packets_in} pkts, lost {out['down'].lost} "
          f"({out['down'].lost / max(1, out['down'].packets_in) * 100:.2f} %); relay -> viewer "
          f"{rb['to_a']} B vs viewer bytesReceived {vs['bytesReceived']} B; "
          f"{_once_in_order(out['stroke'])}; peer connections in the run {out['attempts']}")
    _page_loss()
    _voice()
    def s(v: float | None) -> str:
        return "never" if v is None else f"{v:.2f} s"
    for seconds, mode in ((3.0, "reset"), (30.0, "stall")):
        with tempfile.TemporaryDirectory() as d:
            out = asyncio.run(blackout_run(Path(d), seconds, mode))
        held = "held" if mode == "stall" else "reset"
        print(f"faults blackout {seconds:.0f} s (media cut, gRPC {held}): viewer noticed after "
              f"{s(out['viewer_lost_after_s'])}, station after "
              f"{s(out['station_lost_after_s'])} ({''.join(out['station_by'])}), video resumed "
              f"{s(out['resumed_after_return_s'])} after the link's return, "
              f"{out['new_peer_connections']} new peer connection(s); "
              f"{_once_in_order(out['stroke'])}")


if __name__ == "__main__":
    main()
