"""Frame sources of the overlay pipeline: camera device, video file (the theatre's sources).

Every frame carries an id and a capture timestamp from the source to the sinks
(:class:`Frame`). Clocks:

``camera:N``  (OpenCV ``VideoCapture``) capture time = ``time.perf_counter()`` right after the
              grab, i.e. the pipeline's own clock; ``t0`` is the same instant.
video file    (PyAV) capture time = presentation timestamp ``pts * time_base`` (s, the media
              timeline); ``t0`` = the moment decoding of the frame started, so the decode
              time is part of the latency.
simulated    sources (e.g. the synthetic scene, :mod:`scrubin.samples.synthetic_source`, which
              implements :class:`FrameSource` outside the theatre code) set capture time
              on their own simulated timeline and ``t0`` when the frame is handed over.

Pipeline latency of a frame = output time - capture time on the pipeline's clock, measured as
``perf_counter() at output - t0`` (module :mod:`scrubin.overlay.pipeline`).
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.overlay.errors import OverlayError
from scrubin.registration.camera import CameraModel


class SourceError(OverlayError):
    """A frame source cannot be opened or read."""


@dataclass
class Frame:
    """One video frame in the pipeline.

    Attributes
    ----------
    frame_id
        0, 1, 2 ... in source order.
    capture_time_s
        Capture time (s) on the source's clock (see module docstring).
    image_bgr
        ``(H, W, 3)`` uint8.
    t0
        ``time.perf_counter()`` at which the frame's pipeline work began (latency origin).
    capture_ms
        Time spent grabbing / decoding (ms); for a simulated source, its render time.
    truth
        Ground truth of a simulated source (e.g. ``scrubin.samples.synthetic.SceneFrame``);
        None for real sources.
    """

    frame_id: int
    capture_time_s: float
    image_bgr: np.ndarray
    t0: float
    capture_ms: float
    truth: Any = None


class FrameSource(ABC):
    """Base class: iterate to get :class:`Frame` objects; ``close()`` releases the device."""

    name: str = "source"
    camera: CameraModel | None = None
    #: Nominal frame rate (Hz) to write the output video at; None when the source has none
    #: (a live camera: the pipeline's own rate decides).
    nominal_fps: float | None = None

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield the frames in capture order."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_frame_count(max_frames: int | None) -> int | None:
    """``max_frames`` if it is None or an int >= 1 (a source's frame limit), else SourceError."""
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(
            max_frames, int) or max_frames < 1):
        raise SourceError(f"frame count must be an integer >= 1, got {max_frames!r}")
    return max_frames


class VideoFileSource(FrameSource):
    """Frames of a video file decoded with PyAV, timed by presentation timestamps."""

    def __init__(self, path: str | Path, max_frames: int | None = None) -> None:
        import av

        self.path = Path(path)
        self.name = str(self.path)
        self.max_frames = check_frame_count(max_frames)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: video file not found")
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: not a readable video ({exc})") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path}: no video stream")
        self._stream = self._container.streams.video[0]
        self.width = int(self._stream.codec_context.width)
        self.height = int(self._stream.codec_context.height)
        rate = self._stream.average_rate
        self.nominal_fps = float(rate) if rate else None

    def __iter__(self) -> Iterator[Frame]:
        import av

        n = 0
        decoder = self._container.decode(self._stream)
        while self.max_frames is None or n < self.max_frames:
            t0 = time.perf_counter()
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                raise SourceError(f"{self.path}: decoding failed at frame {n} ({exc})") from None
            if frame.pts is None:
                raise SourceError(f"{self.path}: frame {n} has no presentation timestamp")
            img = frame.to_ndarray(format="bgr24")
            yield Frame(n, float(frame.pts * frame.time_base), img, t0,
                        (time.perf_counter() - t0) * 1e3)
            n += 1
        if n == 0:
            raise SourceError(f"{self.path}: the video has no frames")

    def close(self) -> None:
        """Close the container."""
        self._container.close()


class CameraSource(FrameSource):
    """Live frames of an OpenCV camera device ``camera:N``, timed on ``perf_counter``."""

    def __init__(self, index: int, max_frames: int | None = None,
                 camera: CameraModel | None = None) -> None:
        import cv2

        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise SourceError(f"camera device index must be an integer >= 0, got {index!r}")
        self.name = f"camera:{index}"
        self.max_frames = check_frame_count(max_frames)
        self.camera = camera
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"camera:{index}: cannot open camera device {index} (no such "
                              "device, or it is busy)")
        if camera is not None:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, camera.width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, camera.height)

    def __iter__(self) -> Iterator[Frame]:
        n = 0
        while self.max_frames is None or n < self.max_frames:
            t0 = time.perf_counter()
            if not self._cap.grab():
                break
            t_cap = time.perf_counter()
            ok, img = self._cap.retrieve()
            if not ok or img is None:
                break
            yield Frame(n, t_cap, img, t_cap, (time.perf_counter() - t0) * 1e3)
            n += 1
        if n == 0:
            raise SourceError(f"{self.name}: the camera delivered no frame")

    def close(self) -> None:
        """Release the device."""
        self._cap.release()


_CAMERA_RE = re.compile(r"^camera:(\d+)$")


def open_source(spec: str, *, max_frames: int | None = None,
                camera: CameraModel | None = None) -> FrameSource:
    """Open ``"camera:N"`` or a video file path.

    The synthetic scene is sample data, not a theatre source: build it with
    ``scrubin.samples.synthetic_source.SyntheticSource``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"source must be 'camera:N' or a video file, got {spec!r}")
    spec = spec.strip()
    if spec == "synthetic":
        raise SourceError("the synthetic scene is not opened here: use "
                          "scrubin.samples.synthetic_source.SyntheticSource")
    m = _CAMERA_RE.match(spec)
    if m:
        return CameraSource(int(m.group(1)), max_frames, camera)
    if spec.startswith("camera:"):
        raise SourceError(f"camera source must be camera:N with N a device number, got {spec!r}")
    return VideoFileSource(spec, max_frames)
