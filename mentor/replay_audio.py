"""The recorded voices in a replay: one mixed AAC track in the MP4, in sync with the video.

Every ``/audio/<name>`` channel of a recording (raw Opus packets, ``foxglove.CompressedAudio``,
:mod:`scrubin.mentor.recording_audio`) is decoded with FFmpeg's Opus decoder and added into
one 48 kHz mono timeline whose sample 0 is the video's first capture time: a packet stamped
``t`` (Unix s) starts at sample ``round((t - t0) * 48000)``, so voice and picture keep the
relation they had on the station's clock. The mix (sum, clipped to [-1, 1]) is streamed: the
packets come in log-time order, so samples more than one second behind the newest packet are
final and are encoded (AAC-LC, FFmpeg's encoder) at once — memory stays bounded.
"""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import numpy as np

RATE = 48000
LAG_S = 1.0


def voice_topics(path: str | Path) -> list[str]:
    """The ``/audio/...`` topics of a recording (from its summary)."""
    from mcap.reader import make_reader

    with open(path, "rb") as fh:
        summary = make_reader(fh).get_summary()
    if summary is None:
        return []
    return sorted(c.topic for c in summary.channels.values() if c.topic.startswith("/audio/"))


class VoiceMix:
    """A streamed mono mix written as one AAC stream of an open PyAV output container."""

    def __init__(self, container: Any, t0_unix_s: float) -> None:
        self.stream = container.add_stream("aac", rate=RATE)
        self.stream.layout = "mono"
        self.stream.bit_rate = 96000
        self.container, self.t0 = container, float(t0_unix_s)
        self._buf = np.zeros(0, np.float32)
        self._base = 0  # sample index of _buf[0]
        self.samples = 0

    def add(self, pcm: np.ndarray, start_unix_s: float) -> None:
        """Add mono float samples starting at ``start_unix_s``; encode what is final."""
        i0 = round((start_unix_s - self.t0) * RATE)
        x = np.asarray(pcm, np.float32)
        if i0 < self._base:  # before the video's start, or already encoded
            x, i0 = x[self._base - i0:], self._base
        if len(x):
            end = i0 - self._base + len(x)
            if end > len(self._buf):
                self._buf = np.concatenate([self._buf, np.zeros(end - len(self._buf),
                                                                np.float32)])
            self._buf[i0 - self._base: end] += x
        self._flush(i0 - round(LAG_S * RATE))

    def _flush(self, upto: int) -> None:
        import av

        n = min(upto - self._base, len(self._buf))
        if n <= 0:
            return
        chunk = np.clip(self._buf[:n], -1.0, 1.0)
        f = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        f.sample_rate, f.pts = RATE, self._base
        f.time_base = fractions.Fraction(1, RATE)
        for p in self.stream.encode(f):
            self.container.mux(p)
        self._buf = self._buf[n:]
        self._base += n
        self.samples += n

    def close(self, end_unix_s: float | None = None) -> None:
        """Encode the rest (up to ``end_unix_s`` when given) and flush the encoder."""
        upto = self._base + len(self._buf)
        if end_unix_s is not None:
            upto = min(upto, round((end_unix_s - self.t0) * RATE))
        self._flush(upto)
        for p in self.stream.encode(None):
            self.container.mux(p)


def mix_voices(path: str | Path, mix: VoiceMix, topics: list[str]) -> int:
    """Decode every voice packet of ``topics`` into ``mix`` (log-time order); packets used."""
    import av
    from mcap.reader import make_reader
    from mcap_protobuf.decoder import DecoderFactory

    decoders: dict[str, Any] = {}
    n = 0
    with open(path, "rb") as fh:
        rd = make_reader(fh, decoder_factories=[DecoderFactory()])
        for _, ch, _, msg in rd.iter_decoded_messages(topics=topics, log_time_order=True):
            if msg.format != "opus":
                continue
            dec = decoders.get(ch.topic)
            if dec is None:
                dec = decoders[ch.topic] = av.CodecContext.create("opus", "r")
            t = msg.timestamp.ToNanoseconds() / 1e9
            try:
                frames = dec.decode(av.Packet(bytes(msg.data)))
            except av.error.FFmpegError:
                continue
            for f in frames:
                a = f.to_ndarray().astype(np.float32)
                mono = a.mean(axis=0) if f.format.is_planar else a.reshape(
                    -1, len(f.layout.channels)).mean(axis=1)
                if f.format.name.startswith("s16"):
                    mono /= 32768.0
                mix.add(mono, t)
                t += f.samples / f.sample_rate
            n += 1
    return n
