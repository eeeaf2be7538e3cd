"""Voice both ways through the impaired media relay, recorded at each end for scoring.

Mentor -> surgeon: headless Chromium's fake microphone plays a WAV of synthetic speech
(``--use-file-for-fake-audio-capture``, looped by Chromium) into the real mentor page, which
sends it as Opus (the page's ``getUserMedia({audio: true})``: Chromium's echo canceller, noise
suppressor and gain control included) through the relay to the live station; the station's
:class:`~scrubin.mentor.media_audio.AudioSink` decodes it (aiortc, libopus) and the frames are
taken from its ``on_frame`` hook and laid on the RTP timeline by their ``pts`` (48 kHz RTP
clock): a frame that never came is silence. That is how a real-time player must play an aiortc
receiver: aiortc's audio path has no loss concealment (libopus is never told of a missing
packet) and its 16-packet jitter buffer skips a lost packet once 16 have queued behind it.

Surgeon -> mentor: the station's :class:`~scrubin.mentor.media_audio.AudioSource` plays a WAV
of other sentences (aiortc ``MediaPlayer``, real-time paced) to the page; the page's received
track is recorded in the page with WebAudio (``MediaStreamAudioSourceNode`` -> a
``ScriptProcessorNode`` at 48 kHz), i.e. after Chromium's NetEq jitter buffer and its loss
concealment, what the mentor hears, and handed back to Python as 16-bit PCM.

The relay (tests/mentor/test_faults_page.py ``RelayThread``: the page's offer and the
station's answer rewritten in signalling) is the only path; its per-direction loss is
reported with the recordings.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiortc.jitterbuffer import JitterBuffer

from scrubin.mentor.audio_jitter import _ATTR as _JB_ATTR
from scrubin.mentor.audio_jitter import use_gap_skipping_buffer
from scrubin.mentor.impair import Impairment
from scrubin.mentor.media_audio import AudioSource
from tests.mentor.browser import new_page
from tests.mentor.fault_harness import moving_source
from tests.mentor.live_station import LiveStation
from tests.mentor.test_faults_page import RelayThread, _route_signalling
from tests.mentor.voice_quality import FS

WAIT_MS = 30000
RTP_WRAP = 1 << 32

# Records the page's received audio for ``seconds`` (WebAudio at 48 kHz); 16-bit PCM, base64.
PAGE_RECORD = """async (seconds) => {
  const pc = window.scrubin.state.pc;
  const rx = pc.getReceivers().find((r) => r.track && r.track.kind === 'audio');
  const ctx = new AudioContext({ sampleRate: 48000 });
  await ctx.resume();
  const src = ctx.createMediaStreamSource(new MediaStream([rx.track]));
  const proc = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  proc.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  const silent = ctx.createGain();
  silent.gain.value = 0;
  src.connect(proc); proc.connect(silent); silent.connect(ctx.destination);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  src.disconnect(); proc.disconnect();
  await ctx.close();
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const pcm = new Int16Array(n);
  let o = 0;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i++) {
      pcm[o++] = Math.max(-32768, Math.min(32767, Math.round(c[i] * 32767)));
    }
  }
  const bytes = new Uint8Array(pcm.buffer);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return { rate: ctx.sampleRate, pcm: btoa(s) };
}"""

PAGE_AUDIO_STATS = """async () => { const out = {};
  (await window.scrubin.state.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.received = s.packetsReceived || 0; out.lost = s.packetsLost || 0;
      out.samples = s.totalSamplesReceived || 0; out.concealed = s.concealedSamples || 0;
      out.jitter = s.jitter || 0; out.jb = s.jitterBufferDelay || 0;
      out.jbTarget = s.jitterBufferTargetDelay || 0; out.emitted = s.jitterBufferEmittedCount || 0;
      out.stretched = (s.insertedSamplesForDeceleration || 0)
        + (s.removedSamplesForAcceleration || 0);
    }
    if (s.type === 'outbound-rtp' && s.kind === 'audio') out.sent = s.packetsSent || 0;
  }); return out; }"""


class PtsCapture:
    """Decoded audio frames of the station's sink, kept with their RTP timestamps (``pts``,
    48 kHz) while :attr:`recording` is set; :meth:`timeline` lays them out in time."""

    def __init__(self) -> None:
        self.recording = False
        self.frames: list[tuple[int, np.ndarray]] = []
        self.lock = threading.Lock()

    def add(self, frame: Any) -> None:
        if not self.recording or frame.pts is None:
            return
        a = frame.to_ndarray()
        chans = len(frame.layout.channels)
        mono = a.reshape(-1, chans)[:, 0] if frame.format.is_packed else a[0]
        if frame.format.name.startswith("s16"):
            mono = mono.astype(np.float64) / 32768.0
        with self.lock:
            self.frames.append((int(frame.pts), np.asarray(mono, np.float64)))

    def timeline(self) -> tuple[np.ndarray, int, int]:
        """(samples at ``FS`` Hz with silence where no frame came, frames received, 20 ms
        frame slots spanned)."""
        with self.lock:
            frames = list(self.frames)
        if not frames:
            return np.zeros(0), 0, 0
        p0 = frames[0][0]
        rel = [((p - p0 + RTP_WRAP // 2) % RTP_WRAP - RTP_WRAP // 2, x) for p, x in frames]
        start = min(r for r, _ in rel)
        end = max(r + len(x) for r, x in rel)
        out = np.zeros(end - start)
        for r, x in rel:
            out[r - start:r - start + len(x)] = x
        size = max(1, len(frames[0][1]))
        return out, len(frames), int(round((end - start) / size))


def _on_station(live: LiveStation, coro: Any, timeout: float = 10.0) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, live.loop).result(timeout)


def _hook_sink(live: LiveStation, cap: PtsCapture, aiortc_buffer: bool) -> bool:
    """Chain ``cap`` onto the station's one viewer's audio sink (``aiortc_buffer``: and put
    aiortc's own jitter buffer back in place of the station's gap-skipping one, for the
    comparison); False while there is none."""
    async def hook() -> bool:
        peers = list(live.station.peers.values())
        if len(peers) != 1 or peers[0].audio_in is None or peers[0].audio_in.frames == 0:
            return False
        for rx in peers[0].pc.getReceivers():
            if rx.track is not None and rx.track.kind == "audio":
                ours = use_gap_skipping_buffer(rx)   # what the station installed (no-op)
                if aiortc_buffer:
                    setattr(rx, _JB_ATTR, JitterBuffer(ours.capacity, ours._prefetch))
        sink = peers[0].audio_in
        prev = sink.on_frame

        def on_frame(f: Any) -> None:
            if prev is not None:
                prev(f)
            cap.add(f)
        sink.on_frame = on_frame
        return True
    return _on_station(live, hook())


def voice_run(browser: Any, server: Any, surgeon_wav: Path, seconds: float,
              loss: float = 0.0, delay_ms: float = 0.0, jitter_ms: float = 0.0,
              seed: int = 31, aiortc_buffer: bool = False) -> dict[str, Any]:
    """One mentoring session through ``loss`` and ``delay_ms`` +- ``jitter_ms`` each way;
    both voices recorded for ``seconds`` (module docstring). ``browser``: a Chromium whose
    fake microphone plays the mentor's speech; ``surgeon_wav``: the station's speech (long
    enough for the session: it is played once); ``aiortc_buffer``: the station's audio
    receiver gets aiortc's own jitter buffer back instead of the
    :class:`~scrubin.mentor.audio_jitter.GapSkippingJitterBuffer` the station installs (the
    comparison, aiortc #543)."""
    sid, tokens = server.new_session()
    live = LiveStation(server.server.grpc_target, tokens["surgeon"],
                       str(server.server.cert_path), moving_source(320, 180), None, 320, 180,
                       15.0, audio=AudioSource(str(surgeon_wav))).start()
    relay = RelayThread(Impairment(loss=loss, delay_ms=delay_ms, jitter_ms=jitter_ms,
                                   seed=seed))
    page = new_page(browser)
    cap = PtsCapture()
    try:
        _route_signalling(page, relay)
        page.goto(f"{server.url}/m/{sid}#token={tokens['mentor']}")
        page.wait_for_function("() => window.scrubin.state.frameLog.length > 5",
                               timeout=WAIT_MS)
        page.wait_for_function("() => document.getElementById('mic-state').textContent"
                               " === 'mic live'", timeout=WAIT_MS)
        t_end = time.monotonic() + WAIT_MS / 1000
        while not _hook_sink(live, cap, aiortc_buffer):
            if time.monotonic() > t_end:
                raise AssertionError(f"the station never received the page's voice: "
                                     f"{live.errors} {page.errors}")
            time.sleep(0.1)
        page.wait_for_function("async () => (await (" + PAGE_AUDIO_STATS + ")()).received"
                               " > 50", timeout=WAIT_MS, polling=200)
        page.wait_for_timeout(1000)     # jitter buffers settle
        a = page.evaluate(PAGE_AUDIO_STATS)
        cap.recording = True
        got = page.evaluate(PAGE_RECORD, seconds)
        cap.recording = False
        b = page.evaluate(PAGE_AUDIO_STATS)
        at_page = np.frombuffer(base64.b64decode(got["pcm"]), np.int16) / 32768.0
        if int(got["rate"]) != FS:
            raise AssertionError(f"page recorded at {got['rate']} Hz, expected {FS}")
        at_station, n_frames, n_slots = cap.timeline()
        up, down = relay.up.stats, relay.down.stats
        c = page.evaluate(PAGE_AUDIO_STATS)
        return {
            "to_station": at_station, "to_page": at_page,
            "station_frames": n_frames, "station_slots": n_slots,
            "page_concealed_share": (b["concealed"] - a["concealed"]) / max(
                1, b["samples"] - a["samples"]),
            "page_lost": b["lost"] - a["lost"],
            "page_jitter_ms": c["jitter"] * 1e3,     # RFC 3550 interarrival jitter
            # NetEq over the recording: mean jitter-buffer delay and target, time-stretched
            "page_jb_ms": 1e3 * (b["jb"] - a["jb"]) / max(1, b["emitted"] - a["emitted"]),
            "page_jb_target_ms": 1e3 * (b["jbTarget"] - a["jbTarget"]) / max(
                1, b["emitted"] - a["emitted"]),
            "page_stretched_share": (b["stretched"] - a["stretched"]) / max(
                1, b["samples"] - a["samples"]),
            "relay_loss_up": up.lost / max(1, up.packets_in),      # page -> station
            "relay_loss_down": down.lost / max(1, down.packets_in),  # station -> page
            "peer_connections": len(relay.relays),
            "errors": live.errors + page.errors,
        }
    finally:
        page.context.close()
        live.stop()
        relay.stop()
