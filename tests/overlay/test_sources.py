"""Frame sources: PyAV video timestamps, camera:N errors, open_source."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from scrubin.overlay.sources import (
    CameraSource,
    SourceError,
    VideoFileSource,
    open_source,
)


def _write_video(path, n: int, rate: int = 25, size: tuple[int, int] = (96, 64)) -> list:
    frames = []
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"crf": "0"}
        s.codec_context.time_base = Fraction(1, rate)
        for i in range(n):
            img = np.full((size[1], size[0], 3), 40 + 20 * i, np.uint8)
            frames.append(img)
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return frames


def test_video_frames_keep_ids_and_presentation_times(tmp_path) -> None:
    path = tmp_path / "v.mp4"
    written = _write_video(path, 6)
    with VideoFileSource(path) as src:
        frames = list(src)
    assert [f.frame_id for f in frames] == list(range(6))
    np.testing.assert_allclose([f.capture_time_s for f in frames], np.arange(6) / 25, atol=1e-6)
    for f, w in zip(frames, written, strict=True):
        assert f.image_bgr.shape == (64, 96, 3)
        assert np.abs(f.image_bgr.astype(int) - w).mean() < 8  # yuv420p round trip
        assert f.capture_ms >= 0 and f.t0 > 0 and f.truth is None
    with VideoFileSource(path, max_frames=2) as src:
        assert len(list(src)) == 2
        assert src.nominal_fps == 25.0  # the rate the file was written at


def test_video_nominal_rate_is_the_files(tmp_path) -> None:
    path = tmp_path / "v12.mp4"
    _write_video(path, 3, rate=12)
    with VideoFileSource(path) as src:
        assert src.nominal_fps == 12.0


def test_video_errors(tmp_path) -> None:
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(SourceError, match="not a readable video"):
        VideoFileSource(bad)
    with pytest.raises(SourceError, match="frame count"):
        VideoFileSource(bad, max_frames=0)


def test_camera_errors() -> None:
    with pytest.raises(SourceError, match="cannot open camera device 97"):
        open_source("camera:97")
    with pytest.raises(SourceError, match="camera:N"):
        open_source("camera:x")
    with pytest.raises(SourceError, match="integer >= 0"):
        CameraSource(-1)


def test_open_source_rejects_empty_and_routes_files(tmp_path) -> None:
    with pytest.raises(SourceError, match="source must be"):
        open_source("  ")
    with pytest.raises(SourceError, match="not found"):
        open_source(str(tmp_path / "nothing.mp4"))
    # the simulator is sample data: the theatre's source opener does not build it
    with pytest.raises(SourceError, match="samples.synthetic_source"):
        open_source("synthetic")
