"""Sinks: H.264 MP4 (atomic, decodable), window without a display, the stream queue."""

from __future__ import annotations

import av
import numpy as np
import pytest

from scrubin.overlay.sinks import SinkError, SinkItem, StreamSink, VideoFileSink, WindowSink


def _item(i: int, w: int = 64, h: int = 48) -> SinkItem:
    return SinkItem(i, i / 30, np.full((h, w, 3), 10 * i, np.uint8), "LIVE")


def test_video_is_written_atomically_and_decodes(tmp_path) -> None:
    out = tmp_path / "o.mp4"
    sink = VideoFileSink(out, fps=30)
    for i in range(5):
        sink.write(_item(i))
    assert not out.exists()  # only a temporary file while writing
    sink.close()
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)
    assert abs(float(frames[3].mean()) - 30) < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


def test_odd_sizes_are_padded(tmp_path) -> None:
    sink = VideoFileSink(tmp_path / "odd.mp4")
    sink.write(_item(1, 63, 47))
    sink.close()
    with av.open(str(tmp_path / "odd.mp4")) as c:
        f = next(c.decode(video=0))
    assert (f.width, f.height) == (64, 48)


def test_abort_and_failures_leave_nothing(tmp_path) -> None:
    out = tmp_path / "a.mp4"
    sink = VideoFileSink(out)
    sink.write(_item(0))
    with pytest.raises(SinkError, match="the video is 64x48"):
        sink.write(_item(1, 32, 48))
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    empty = VideoFileSink(out)
    with pytest.raises(SinkError, match="no frame"):
        empty.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkError, match="does not exist"):
        VideoFileSink(tmp_path / "no" / "x.mp4")
    with pytest.raises(SinkError, match="frame rate"):
        VideoFileSink(out, fps=0)


def test_window_without_display_is_silent(monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    w = WindowSink()
    assert not w.active
    w.write(_item(0))
    w.close()


def test_stream_drops_oldest_and_ends() -> None:
    s = StreamSink(maxsize=2)
    for i in range(5):
        s.write(_item(i))
    assert s.dropped == 3
    a, b = s.get(0.1), s.get(0.1)
    assert (a.frame_id, b.frame_id) == (3, 4)
    assert a.capture_time_s == pytest.approx(0.1) and a.state == "LIVE"
    assert s.get(0.01) is None  # timeout
    s.write(_item(7))
    s.close()
    assert s.get(0.1).frame_id == 7
    assert s.get(0.1) is None and s.get(0.1) is None
    with pytest.raises(SinkError, match="closed"):
        s.write(_item(8))
    with pytest.raises(SinkError, match="queue size"):
        StreamSink(0)
