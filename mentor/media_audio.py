"""Voice on the station's peer connections: the theatre microphone out, the mentor's voice in.

Outgoing: one audio source shared by every viewer (``MediaRelay.subscribe(buffered=False)``:
no unbounded queue); aiortc's sender encodes Opus (RFC 7587) per viewer, which costs ~0.1 ms
per 20 ms frame — audio is not worth a shared encoder. The source is a PyAV input
(``--audio-in pulse:default``, ``alsa:hw:0``, or a media file) or a generated tone
(``tone:440``, tests and demos). Echo cancellation is done in the browser
(``getUserMedia({audio: {echoCancellation: true}})``) on the page's side.

Incoming: each viewer's audio track (the mentor's microphone) is consumed by
:class:`AudioSink`: written to a WAV/OGG file when the station records it (aiortc
``MediaRecorder``), and always measured (frames, RMS level) so the station can show who talks.
Lip sync is the receiver's: both tracks share the connection and aiortc sends RTCP sender
reports mapping each stream's RTP clock to NTP time (RFC 3550 section 6.4.1).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from scrubin.mentor.errors import MentorError

SAMPLE_RATE = 48000
PTIME_S = 0.020


class AudioInputError(MentorError):
    """The audio input cannot be opened."""


class ToneTrack(MediaStreamTrack):
    """A sine tone (s16 mono, 48 kHz, 20 ms frames), paced in real time.

    Parameters
    ----------
    frequency_hz
        Tone frequency (20..20000 Hz).
    amplitude
        Peak amplitude as a fraction of full scale (0..1].
    """

    kind = "audio"

    def __init__(self, frequency_hz: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        if not (isinstance(frequency_hz, int | float) and 20 <= frequency_hz <= 20000):
            raise AudioInputError(f"tone frequency must be 20..20000 Hz, got {frequency_hz!r}")
        if not (isinstance(amplitude, int | float) and 0 < amplitude <= 1):
            raise AudioInputError(f"tone amplitude must be in (0, 1], got {amplitude!r}")
        self.frequency_hz, self.amplitude = float(frequency_hz), float(amplitude)
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        """The next 20 ms frame (sleeps to keep real time)."""
        import av

        if self.readyState != "live":
            raise MediaStreamError
        spf = int(SAMPLE_RATE * PTIME_S)
        if self._start is None:
            self._start = time.time()
        else:
            wait = self._start + self._n / SAMPLE_RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (self._n + np.arange(spf)) / SAMPLE_RATE
        s = np.round(self.amplitude * 32767 * np.sin(2 * math.pi * self.frequency_hz * t))
        frame = av.AudioFrame.from_ndarray(s.astype(np.int16)[None, :], format="s16",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._n
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._n += spf
        return frame


class AudioSource:
    """The station's outgoing voice: one input, one relayed track per viewer.

    ``spec``: ``tone:HZ``, ``none``, ``pulse:DEVICE`` / ``alsa:DEVICE`` (PyAV/FFmpeg input
    formats) or a media file path.
    """

    def __init__(self, spec: str = "none") -> None:
        from aiortc.contrib.media import MediaRelay

        self.spec = spec
        self._player: Any = None
        self._track: Any = None
        if spec == "none":
            return
        if spec.startswith("tone:"):
            try:
                hz = float(spec[5:])
            except ValueError:
                raise AudioInputError(f"--audio-in {spec!r}: expected tone:HZ") from None
            self._track = ToneTrack(hz)
        else:
            from aiortc.contrib.media import MediaPlayer

            fmt, _, dev = spec.partition(":")
            try:
                if fmt in ("pulse", "alsa") and dev:
                    self._player = MediaPlayer(dev, format=fmt)
                else:
                    self._player = MediaPlayer(spec)
            except Exception as exc:
                raise AudioInputError(f"--audio-in {spec!r}: cannot open ({exc})") from None
            if self._player.audio is None:
                raise AudioInputError(f"--audio-in {spec!r}: no audio stream")
            self._track = self._player.audio
        self._relay = MediaRelay()

    def track(self, buffered: bool = False) -> Any:
        """A track for one more viewer, or None without an input (``buffered``: every frame
        queued, for a consumer that must not skip any, e.g. the session recorder)."""
        if self._track is None:
            return None
        return self._relay.subscribe(self._track, buffered=buffered)

    def close(self) -> None:
        """Stop the input."""
        if self._track is not None:
            self._track.stop()


class AudioSink:
    """Consumes one received audio track: counts frames, keeps the level, records if asked."""

    def __init__(self, track: Any, record_path: str | None = None) -> None:
        self.track = track
        self.frames = 0
        self.samples: list[np.ndarray] = []
        self.keep_samples = 0
        self.rms_dbfs: float | None = None
        self.record_path = record_path
        self._recorder: Any = None
        self._task: asyncio.Task[None] | None = None
        self.on_frame: Any = None  # called with each received frame (session recorder)

    async def start(self) -> None:
        """Start consuming (and recording)."""
        if self.record_path:
            from aiortc.contrib.media import MediaRecorder, MediaRelay

            relay = MediaRelay()
            self._recorder = MediaRecorder(self.record_path)
            self._recorder.addTrack(relay.subscribe(self.track, buffered=False))
            self.track = relay.subscribe(self.track, buffered=False)
            await self._recorder.start()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                f = await self.track.recv()
                if self.on_frame is not None:
                    self.on_frame(f)
                a = f.to_ndarray().astype(np.float64).ravel()
                if f.format.name.startswith("s16"):
                    a /= 32768.0
                rms = float(np.sqrt(np.mean(a * a))) if a.size else 0.0
                self.rms_dbfs = 20 * math.log10(max(rms, 1e-9))
                self.frames += 1
                if self.keep_samples > 0:
                    self.samples.append(f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0]
                                        if f.format.is_packed else f.to_ndarray()[0])
                    self.keep_samples -= 1
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def stop(self) -> None:
        """Stop consuming; finish the recording."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._recorder is not None:
            await self._recorder.stop()
