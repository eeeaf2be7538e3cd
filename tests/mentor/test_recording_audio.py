"""Voices in the recording: the station's tone source (a real ``ToneTrack``, paced in real
time) recorded as raw Opus packets, decoded back by FFmpeg's own Opus decoder (not libopus,
which encoded them) as the peer: pitch, packet clock, alignment with the arrival clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory

from scrubin.mentor.media_audio import ToneTrack
from scrubin.mentor.recording import Recorder
from scrubin.mentor.recording_audio import AudioRecordingError

N_FRAMES = 25  # 0.5 s of 20-ms frames


async def _tones() -> list[tuple[str, object, float]]:
    out = []
    a, b = ToneTrack(440.0), ToneTrack(660.0, 0.2)
    for _ in range(N_FRAMES):
        fa, fb = await a.recv(), await b.recv()
        t = time.time()
        out += [("station", fa, t), ("mentor-peer1", fb, t)]
    return out


def _pitch(x: np.ndarray, rate: int) -> float:
    n = 1 << 20  # zero-padded: 0.05 Hz bins
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    return float(np.fft.rfftfreq(n, 1 / rate)[np.argmax(spec)])


def test_voices_recorded_as_opus_on_the_session_clock(tmp_path: Path) -> None:
    frames = asyncio.run(_tones())
    p = tmp_path / "v.mcap"
    rec = Recorder(p, True, "s").start()
    for name, f, t in frames:
        assert rec.add_audio(name, f, t)
    with pytest.raises(AudioRecordingError, match="voice name"):
        rec.add_audio("../x", frames[0][1])
    stats = rec.close()
    got: dict[str, list] = {}
    with open(p, "rb") as fh:
        rd = make_reader(fh, decoder_factories=[DecoderFactory()])
        for schema, ch, msg, dec in rd.iter_decoded_messages(
                topics=["/audio/station", "/audio/mentor-peer1"], log_time_order=True):
            assert schema.name == "foxglove.CompressedAudio" and dec.format == "opus"
            assert dec.timestamp.ToNanoseconds() == msg.log_time
            got.setdefault(ch.topic, []).append((msg.log_time, bytes(dec.data)))
    assert stats.audio_packets == sum(len(v) for v in got.values())
    first_arrival = frames[0][2]
    for topic, hz in (("/audio/station", 440.0), ("/audio/mentor-peer1", 660.0)):
        pk = got[topic]
        assert len(pk) >= N_FRAMES - 2  # the encoder's look-ahead may hold the last one
        dt = np.diff([t for t, _ in pk]) / 1e6
        np.testing.assert_allclose(dt, 20.0, atol=0.01)  # 20-ms packets on the media clock
        assert abs(pk[0][0] / 1e9 - first_arrival) < 0.010
        dec = av.CodecContext.create("opus", "r")  # FFmpeg's native decoder
        pcm = np.concatenate([f.to_ndarray()[0].astype(np.float64)  # first channel
                              for _, d in pk for f in dec.decode(av.Packet(d))])
        assert len(pcm) >= 0.4 * 48000
        assert _pitch(pcm[4800:], 48000) == pytest.approx(hz, abs=1.0)
