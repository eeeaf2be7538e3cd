"""Sinks of the overlay pipeline: H.264 video file, on-screen window, frame/pose stream queue.

A sink gets every output frame with its record (:class:`SinkItem`): ``write(item)``; at the end
``close()`` (success: the file is committed) or ``abort()`` (failure: nothing is left behind).

* :class:`VideoFileSink` encodes H.264 (libx264, yuv420p) into MP4 with PyAV; it writes a
  temporary file in the target folder and renames it into place on ``close()`` only, so a
  failed run leaves no partial video.
* :class:`WindowSink` shows frames with ``cv2.imshow`` (on its own thread, which also takes
  extra images between frames) when a display exists; without ``DISPLAY`` /
  ``WAYLAND_DISPLAY`` (or with a head-less OpenCV build) it does nothing, silently.
* :class:`StreamSink` is a bounded queue of :class:`StreamItem` (frame, id, capture time,
  pose, tracking state) for a publisher thread (remote mentoring); when full it drops the oldest
  item, never blocking the frame loop.
"""

from __future__ import annotations

import os
import queue
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.fileio import temp_path
from scrubin.overlay.errors import OverlayError


class SinkError(OverlayError):
    """A sink cannot be opened or written."""


@dataclass
class SinkItem:
    """What a sink receives per frame: the composited image and its record.

    ``T_camera_ct`` is the pose the overlay was drawn with (JSON form, mm) or None;
    ``state`` the gate's tracking state (``LIVE`` / ``STALE`` / ``LOST``).
    """

    frame_id: int
    capture_time_s: float
    image_bgr: np.ndarray
    state: str
    T_camera_ct: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Sink(ABC):
    """Base class of the sinks."""

    name = "sink"

    @abstractmethod
    def write(self, item: SinkItem) -> None:
        """Consume one output frame."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Finish successfully."""

    def abort(self) -> None:
        """Finish after a failure (remove partial output)."""
        self.close()


class VideoFileSink(Sink):
    """H.264 MP4 writer (PyAV); frames are encoded at a constant ``fps``.

    Parameters
    ----------
    path
        Output ``.mp4`` (its folder must exist).
    fps
        Frame rate written into the stream (the source's nominal rate).
    crf, preset
        libx264 quality (lower crf = better) and speed preset.
    """

    name = "video"

    def __init__(self, path: str | Path, fps: float = 30.0, crf: int = 20,
                 preset: str = "veryfast") -> None:
        import av

        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise SinkError(f"{self.path}: output folder {self.path.parent} does not exist")
        if not np.isfinite(fps) or fps <= 0:
            raise SinkError(f"video frame rate must be > 0, got {fps}")
        self.fps = Fraction(fps).limit_denominator(1001)
        self._tmp = temp_path(self.path, ".mp4")
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
        except (av.error.FFmpegError, OSError) as exc:
            self._tmp.unlink(missing_ok=True)
            raise SinkError(f"{self.path}: cannot write video ({exc})") from None
        self._options = {"crf": str(int(crf)), "preset": preset}
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        self._done = False

    def write(self, item: SinkItem) -> None:
        """Encode one frame (all frames must have the first frame's size)."""
        import av

        img = item.image_bgr
        h, w = img.shape[:2]
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.width = w + (w % 2)
            self._stream.height = h + (h % 2)
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = self._options
            self._size = (w, h)
        if (w, h) != self._size:
            raise SinkError(f"{self.path}: frame {item.frame_id} is {w}x{h}, the video is "
                            f"{self._size[0]}x{self._size[1]}")
        if w % 2 or h % 2:  # yuv420p needs even sizes: repeat the last row / column
            img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
        frame.pts = self.frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush, close and rename into place (no file when no frame was written)."""
        if self._done:
            return
        self._done = True
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        except Exception:
            self._tmp.unlink(missing_ok=True)
            raise
        if self.frames == 0:
            self._tmp.unlink(missing_ok=True)
            raise SinkError(f"{self.path}: no frame to write")
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Close and delete the temporary file."""
        if self._done:
            return
        self._done = True
        try:
            self._container.close()
        except Exception:  # best effort on the failure path
            pass
        self._tmp.unlink(missing_ok=True)


def display_available() -> bool:
    """Whether a graphical display is configured (X11 or Wayland)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class WindowSink(Sink):
    """``cv2.imshow`` window; silently inactive without a display or GUI support.

    The window has its own thread (every highgui call is made there): :meth:`write` (the frame
    loop) and :meth:`show` (any thread: e.g. the surgeon station's display composite between
    camera frames, ``scrubin.mentor.station_display``) hand it the newest image, which it
    shows at once; it polls keys every 10 ms between images.
    """

    name = "window"

    def __init__(self, title: str = "scrubin overlay") -> None:
        self.title = title
        self.active = display_available()
        #: called with each key pressed in the window (``cv2.waitKey`` code; the surgeon
        #: station's hide / clear controls, mentor/surgeon_controls.py), on the window thread
        self.key_handlers: list[Any] = []
        self.shown = 0  # images shown
        #: False when another sink feeds the window through :meth:`show` (the surgeon
        #: station's sink: every frame as soon as it is composited, and composites between
        #: frames); :meth:`write` then shows nothing
        self.frames_from_write = True
        self._cond = threading.Condition()
        self._next: np.ndarray | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def write(self, item: SinkItem) -> None:
        """Show the frame (no-op when inactive or fed by another sink)."""
        if self.frames_from_write:
            self.show(item.image_bgr)

    def show(self, image_bgr: np.ndarray) -> None:
        """Show ``image_bgr`` next (any thread; not copied: the caller no longer draws into it;
        an image not yet shown is replaced by a newer one)."""
        if not self.active:
            return
        with self._cond:
            if self._closing:
                return
            self._next = image_bgr
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="overlay-window",
                                                 daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        import cv2

        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._next is not None or self._closing, 0.01)
                img, self._next = self._next, None
                closing = self._closing
            try:
                if closing:
                    cv2.destroyWindow(self.title)
                    return
                if img is not None:
                    cv2.imshow(self.title, img)
                    self.shown += 1
                key = cv2.waitKey(1)
            except cv2.error:
                self.active = False  # head-less OpenCV build
                return
            if key >= 0:
                for handler in self.key_handlers:
                    handler(key)

    def close(self) -> None:
        """Close the window (after the thread's last image)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            t = self._thread
        if t is not None:
            t.join(2.0)
        self.active = False


@dataclass(frozen=True)
class StreamItem:
    """One published frame: image, id, capture time (s), pose (JSON form) and tracking state.

    From the overlay pipeline also (else None): ``session_frame_id`` (monotonic over every
    source the pipeline ran), ``capture_time_unix`` (the capture time on the Unix clock, s),
    ``intrinsics`` (``{"width", "height", "K": [fx, fy, cx, cy], "dist": [...]}``, px),
    ``T_camera_ref`` (JSON form, only while the pose is drawn as current) and ``T_ref_ct``.
    """

    frame_id: int
    capture_time_s: float
    image_bgr: np.ndarray
    state: str
    T_camera_ct: dict[str, Any] | None
    session_frame_id: int | None = None
    capture_time_unix: float | None = None
    intrinsics: dict[str, Any] | None = None
    T_camera_ref: dict[str, Any] | None = None
    T_ref_ct: dict[str, Any] | None = None


class StreamSink(Sink):
    """Bounded frame/pose queue for a publisher; drops the oldest item when full.

    ``get(timeout)`` returns the next :class:`StreamItem` (None after ``close()`` once drained,
    or on timeout). ``dropped`` counts discarded items.
    """

    name = "stream"
    _END = object()

    def __init__(self, maxsize: int = 8) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise SinkError(f"stream queue size must be an integer >= 1, got {maxsize!r}")
        self._q: queue.Queue[Any] = queue.Queue(maxsize + 1)  # +1 for the end marker
        self.maxsize = maxsize
        self.dropped = 0
        self.closed = False

    def write(self, item: SinkItem) -> None:
        """Queue the frame (copy of the image), dropping the oldest when full."""
        if self.closed:
            raise SinkError("stream sink is closed")
        meta = {k: item.extra.get(k) for k in ("session_frame_id", "capture_time_unix",
                                                "intrinsics", "T_camera_ref", "T_ref_ct")}
        si = StreamItem(item.frame_id, item.capture_time_s, item.image_bgr.copy(), item.state,
                        item.T_camera_ct, **meta)
        while self._q.qsize() >= self.maxsize:
            try:
                self._q.get_nowait()
                self.dropped += 1
            except queue.Empty:
                break
        self._q.put_nowait(si)

    def get(self, timeout: float | None = None) -> StreamItem | None:
        """Next item, or None at the end of the stream or on timeout."""
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is self._END:
            self._q.put_nowait(self._END)
            return None
        return item

    def close(self) -> None:
        """Mark the end of the stream."""
        if not self.closed:
            self.closed = True
            self._q.put_nowait(self._END)
