"""Voice in the replayed MP4: a real ``ToneTrack`` voice recorded 0.2 s after the first video
frame (on the station clock) comes out of the MP4 (read by PyAV) starting 0.2 s after the
first picture, at its pitch, with silence before it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import av
import numpy as np

from scrubin.mentor.media_audio import ToneTrack
from scrubin.mentor.recording import Recorder
from scrubin.mentor.replay import replay_to_mp4

sys.path.insert(0, str(Path(__file__).parent))
from recording_stream import T0_UNIX, stream

DELAY_S = 0.2


async def _tone(hz: float, n: int) -> list:
    tr = ToneTrack(hz)
    return [await tr.recv() for _ in range(n)]


def _peak_hz(x: np.ndarray) -> float:
    n = 1 << 20
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    return float(np.fft.rfftfreq(n, 1 / 48000)[np.argmax(spec)])


def test_voices_in_the_mp4_in_sync(tmp_path: Path) -> None:
    s = stream()
    a440 = asyncio.run(_tone(440.0, 20))   # 0.4 s
    p = tmp_path / "v.mcap"
    rec = Recorder(p, True, "s", annotations_in_video=False).start()
    for meta, pk in zip(s.metas, s.packets, strict=True):
        rec.add_frame(pk, meta)
    for k, f in enumerate(a440):  # the station's voice starts 0.2 s into the video
        rec.add_audio("station", f, T0_UNIX + DELAY_S + k * 0.02)
    rec.close()
    out = tmp_path / "v.mp4"
    rep = replay_to_mp4(p, out)
    assert rep.voices == ["/audio/station"] and rep.voice_packets >= 19
    with av.open(str(out)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert aus.codec_context.name == "aac" and aus.rate == 48000
        v0 = min(float(f.pts * f.time_base) for f in c.decode(vs))
    with av.open(str(out)) as c:
        chunks = [(float(f.pts * f.time_base), f.to_ndarray()[0]) for f in
                  c.decode(c.streams.audio[0])]
    t_start = chunks[0][0]
    pcm = np.concatenate([x for _, x in chunks]).astype(np.float64)
    onset = t_start + np.argmax(np.abs(pcm) > 0.05) / 48000 - v0
    assert abs(onset - DELAY_S) < 0.010, onset  # measured 200.1 ms
    i = int((DELAY_S + 0.1 - t_start + v0) * 48000)
    assert abs(_peak_hz(pcm[i: i + 9600]) - 440.0) < 1.0
    assert np.abs(pcm[: max(0, int((DELAY_S - 0.03 - t_start + v0) * 48000))]).max(
        initial=0.0) < 0.01  # silence before the voice
