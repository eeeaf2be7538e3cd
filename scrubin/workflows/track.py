"""Track a marker or body through a video file; poses per frame on presentation timestamps.

Frames are decoded with PyAV; each frame's capture time is its presentation timestamp
``frame.pts * stream.time_base`` (seconds), which drives the tracker's LIVE / HELD / STALE /
LOST states (:mod:`scrubin.registration.tracking_state`, the same machine and defaults as
``scrubin overlay``) and the One-Euro filter — never the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from scrubin.imaging.fileio import write_json_atomic
from scrubin.registration.tracker import MarkerTracker, TrackingError, TrackResult
from scrubin.registration.tracking_state import TrackingState


def video_frames(path: str | Path) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(gray uint8 (H, W), presentation time s)`` of each frame of a video file."""
    p = Path(path)
    if not p.is_file():
        raise TrackingError(f"{p}: video not found")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError) as exc:
        raise TrackingError(f"{p}: not a readable video ({exc})") from None
    with container:
        if not container.streams.video:
            raise TrackingError(f"{p}: no video stream")
        stream = container.streams.video[0]
        n = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise TrackingError(f"{p}: frame {n} has no presentation timestamp")
                t = float(frame.pts * frame.time_base)
                yield frame.to_ndarray(format="gray"), t
                n += 1
        except av.error.FFmpegError as exc:
            raise TrackingError(f"{p}: decoding failed at frame {n} ({exc})") from None
        if n == 0:
            raise TrackingError(f"{p}: the video has no frames")


def track_video(tracker: MarkerTracker, path: str | Path) -> list[TrackResult]:
    """Run ``tracker`` over every frame of the video at ``path``."""
    return [tracker.update(img, t) for img, t in video_frames(path)]


def write_track_json(
    path: str | Path, results: list[TrackResult], meta: dict[str, Any]
) -> None:
    """Write ``{"meta": ..., "frames": [...]}`` atomically (temporary name, then rename)."""
    frames = []
    for n, r in enumerate(results):
        item = {"index": n}
        item.update(r.to_json())
        frames.append(item)
    write_json_atomic(Path(path), {"meta": meta, "frames": frames}, indent=1)


def summary(results: list[TrackResult]) -> str:
    """One line: frames per state and the median reprojection RMS."""
    counts = ", ".join(f"{s.value} {sum(r.state == s.value for r in results)}"
                       for s in TrackingState)
    rms = [r.reproj_rms_px for r in results if r.reproj_rms_px is not None]
    med = f"{np.median(rms):.3f} px" if rms else "n/a"
    detected = sum(r.detected for r in results)
    return (f"{len(results)} frames, detected in {detected}: {counts}; median reprojection "
            f"RMS {med}")
