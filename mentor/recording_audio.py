"""Voice in a session recording: decoded audio frames re-encoded as raw Opus packets.

aiortc hands the station decoded audio (the theatre microphone before its per-viewer Opus
encoders, each viewer's voice after its decoder), so the recorder encodes each voice once
more with libopus (PyAV; 48 kHz mono, 20 ms packets, 32 kb/s: speech). Each packet is one
``foxglove.CompressedAudio`` message (format ``opus``: a complete raw Opus packet, RFC 6716
section 3, no Ogg framing) on ``/audio/<name>``.

Clock: the first frame of a voice is stamped with its arrival (Unix s, the clock of the video's
capture times); every later packet with that time plus its offset on the voice's own media
clock (the frames' ``pts``, from the RTP timestamps), free of arrival jitter.
"""

from __future__ import annotations

import fractions
import re
from typing import Any

from scrubin.mentor.errors import MentorError

OPUS_RATE = 48000
OPUS_BITRATE = 32000
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class AudioRecordingError(MentorError):
    """A voice cannot be recorded (bad name, bad frame)."""


def audio_topic(name: str) -> str:
    """``/audio/<name>`` (letters, digits, ``_ . -``; at most 64)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise AudioRecordingError(f"voice name must be 1-64 of [A-Za-z0-9_.-], got {name!r}")
    return f"/audio/{name}"


class OpusVoice:
    """One voice's Opus encoder and its media clock (used on the recorder's writer thread)."""

    def __init__(self) -> None:
        import av

        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = OPUS_RATE
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = OPUS_BITRATE
        ctx.time_base = fractions.Fraction(1, OPUS_RATE)
        ctx.options = {"application": "voip", "frame_duration": "20"}
        ctx.open()
        self._ctx = ctx
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        self._unix_at_pts0: float | None = None
        self._src0: float | None = None
        self._next_pts = 0
        self.packets = 0

    def encode(self, frame: Any, arrival_unix_s: float) -> list[tuple[bytes, float]]:
        """Raw Opus packets and their start times (Unix s) for one decoded ``av.AudioFrame``.

        The frame's own ``pts`` (when set) places it on the voice's media clock, so a gap
        (lost packets) stays a gap instead of shifting everything after it.
        """
        src = (float(frame.pts * frame.time_base) if frame.pts is not None
               and frame.time_base is not None else None)
        if self._unix_at_pts0 is None:
            self._unix_at_pts0, self._src0 = float(arrival_unix_s), src
        if src is not None and self._src0 is not None:
            self._next_pts = max(self._next_pts, round((src - self._src0) * OPUS_RATE))
        out = []
        for f in self._resampler.resample(frame):
            f.pts = self._next_pts
            f.time_base = fractions.Fraction(1, OPUS_RATE)
            self._next_pts += f.samples
            for p in self._ctx.encode(f):
                out.append((bytes(p), self._unix_at_pts0 + float(p.pts) / OPUS_RATE))
        self.packets += len(out)
        return out


def voice_name(prefix: str, ident: str) -> str:
    """A topic-safe voice name ``prefix-ident`` (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{prefix}-{ident}")[:64]


def tap_track(track: Any, recorder: Any, name: str) -> Any:
    """Feed every frame of an audio track (e.g. a relay subscription of the station's
    microphone) to ``recorder.add_audio(name, ...)`` until the track or the recorder ends;
    returns the task (call on the event loop). Give it a buffered relay subscription: an
    unbuffered one (as the viewers' senders use) keeps only the newest frame and skips the
    others whenever the event loop stalls (gaps on the voice's media clock)."""
    import asyncio

    from aiortc.mediastreams import MediaStreamError

    audio_topic(name)

    async def run() -> None:
        try:
            while not recorder.closed:
                recorder.add_audio(name, await track.recv())
        except (MediaStreamError, asyncio.CancelledError):
            pass

    return asyncio.ensure_future(run())
