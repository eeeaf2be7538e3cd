"""Display composites between camera frames (mentor/station_display.py) on the station's sink.

A stroke applied between two camera frames reaches the surgeon's display as a re-composite of
the last camera frame (same frame id), before the next camera frame is written, and nothing
extra is encoded. Checked by frame ids, encoder frame counts and pixels, not by timing.
"""

from __future__ import annotations

import asyncio
import queue
import time

import numpy as np

from scrubin.mentor.annotations_draw import AnnotationBoard, DrawReport
from scrubin.mentor.media import StreamEncoder, VideoFanout
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_display import Composite, DisplayCompositor
from scrubin.mentor.station_meta import FrameMeta
from scrubin.mentor.station_sink import StationSink
from scrubin.overlay.pipeline import Registration
from scrubin.overlay.sinks import SinkItem
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import CT, REF, Transform

W, H = 320, 180
GREEN = "#00ff00"


def _stroke(aid: str, op: str, points: list[list[float]]) -> dict[str, object]:
    return {"op": op, "annotation_id": aid, "kind": "freehand", "color": GREEN,
            "author": "mentor:X", "frame_id": 1, "points": points}


def _green_rows(img: np.ndarray) -> np.ndarray:
    """Rows holding the green stroke (G high, R low: the grey background has G == R)."""
    g, r = img[:, :, 1].astype(int), img[:, :, 2].astype(int)
    return np.flatnonzero(((g - r) > 100).any(axis=1))


def test_stroke_between_frames_is_shown_before_the_next_frame() -> None:
    cam = CameraModel(np.array([[300.0, 0, 159.5], [0, 300.0, 89.5], [0, 0, 1]]),
                      np.zeros(5), W, H)
    reg = Registration(Transform(np.eye(4), CT, REF), fre_mm=0.4, tre_mm=0.9)

    async def go() -> None:
        station = SurgeonStation(VideoFanout(StreamEncoder(W, H + 16)))
        station.loop = asyncio.get_running_loop()
        board = AnnotationBoard()
        sent = []
        sink = StationSink(station, board, cam, reg, sent.append)
        shown: queue.Queue[tuple[Composite, np.ndarray]] = queue.Queue()
        sink.display.displays.append(lambda c: shown.put((c, c.image_bgr.copy())))
        try:
            grey = np.full((H, W, 3), 90, np.uint8)
            frame_a = grey.copy()
            sink.write(SinkItem(1, 0.0, frame_a, "LOST", None))
            assert len(_green_rows(frame_a)) == 0            # nothing to draw yet
            fa, _ = shown.get_nowait()   # the frame's composite went to the display at once
            assert fa.kind == "frame" and fa.meta.frame_id == sent[0].frame_id
            # the mentor's stroke arrives between frame A and frame B
            board.apply(1, _stroke("s", "create", [[0.2, 0.5], [0.8, 0.5]]))
            c, img = shown.get(timeout=10)
            assert c.kind == "display" and c.meta.frame_id == sent[0].frame_id
            assert c.report.points == {"s": 2} and c.report.version == board.version
            rows = _green_rows(img)
            assert len(rows) and abs(rows.mean() - (0.5 * H - 0.5)) < 2   # y = 0.5 -> row 89.5
            # shown, not sent: no new encode, no new frame id, no new metadata
            assert station.fanout.encoder.frames == 1 and station.sent_frames == 1
            assert len(station.history) == 1
            # frame B shows the stroke in its own composite; no display composite is due
            frame_b = grey.copy()
            sink.write(SinkItem(2, 1 / 30, frame_b, "LOST", None))
            assert len(_green_rows(frame_b)) and sent[1].frame_id > sent[0].frame_id
            fb, _ = shown.get_nowait()
            assert fb.kind == "frame" and fb.meta.frame_id == sent[1].frame_id
            # deleting it between frames: the re-composite is of frame B's view *before* its
            # annotations (no stroke left over from B's composite), and it is the next one
            board.apply(2, {"op": "delete", "annotation_id": "s"})
            c2, img2 = shown.get(timeout=10)
            assert c2.kind == "display" and c2.meta.frame_id == sent[1].frame_id
            assert c2.report.points == {}
            assert len(_green_rows(img2)) == 0
            assert sink.display.composites == 2 and shown.empty()
            assert station.fanout.encoder.frames == 2
        finally:
            sink.close()
            await station.close()
    asyncio.run(go())


def test_no_display_no_recomposite() -> None:
    """Without a display callback the sink keeps no copy of the view and starts no thread."""
    cam = CameraModel(np.array([[300.0, 0, 159.5], [0, 300.0, 89.5], [0, 0, 1]]),
                      np.zeros(5), W, H)
    reg = Registration(Transform(np.eye(4), CT, REF))

    async def go() -> None:
        station = SurgeonStation(VideoFanout(StreamEncoder(W, H + 16)))
        station.loop = asyncio.get_running_loop()
        board = AnnotationBoard()
        sink = StationSink(station, board, cam, reg)
        img = np.full((H, W, 3), 90, np.uint8)
        sink.write(SinkItem(1, 0.0, img, "LOST", None))
        board.apply(1, _stroke("s", "create", [[0.2, 0.5], [0.8, 0.5]]))
        assert sink.display._thread is None and sink.display._base is None
        sink.write(SinkItem(2, 1 / 30, img.copy(), "LOST", None))
        assert sink.display.composites == 0 and sink.annotated == 1
        sink.close()
        assert sink.display._board_changed not in board.listeners
        await station.close()
    asyncio.run(go())


def test_display_never_steps_back() -> None:
    """A composite of an older view or board state than one shown is not shown (a stroke
    applied while a frame is being composited must not blink out when that frame lands)."""
    board = AnnotationBoard()
    comp = DisplayCompositor(board, lambda img, meta, rep: board.draw(img, meta, report=rep))
    got: list[tuple[str, int, int]] = []
    comp.displays.append(lambda c: got.append((c.kind, c.meta.frame_id, c.report.version)))
    meta = FrameMeta(5, 0.0, W, H, (300.0, 300.0, 159.5, 89.5), (0.0,) * 5, None, None, "LOST")
    view = np.zeros((H, W, 3), np.uint8)
    comp.base(view, meta)
    old = DrawReport(version=0)
    # the display thread waits for the frame's composite; the board moves on meanwhile
    board.apply(1, _stroke("s", "create", [[0.2, 0.5], [0.8, 0.5]]))
    assert comp._present(comp._base_serial, Composite("display", meta, view, DrawReport(1), 0.0))
    comp.frame(Composite("frame", meta, view, old, 0.0))    # frame 5 drawn at version 0: stale
    assert got == [("display", 5, 1)]
    comp.base(view, FrameMeta(6, 0.0, W, H, meta.K, meta.dist, None, None, "LOST"))
    comp.frame(Composite("frame", meta, view, DrawReport(1), 0.0))
    assert got[-1] == ("frame", 5, 1) and len(got) == 2      # a newer view: shown
    comp.close()


def test_window_shows_images_from_any_thread_on_its_own(monkeypatch) -> None:
    """The station's window: frames and between-frame composites handed over from two
    threads are shown by the window's one thread (highgui wants a single GUI thread), newest
    last; with a station sink attached, the window's own write shows nothing."""
    import threading

    import cv2

    from scrubin.overlay import sinks as sinks_mod

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(sinks_mod, "display_available", lambda: True)
    monkeypatch.setattr(cv2, "imshow", lambda title, img: calls.append(
        (threading.current_thread().name, int(img[0, 0, 0]))))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: -1)
    monkeypatch.setattr(cv2, "destroyWindow", lambda title: None)
    window = sinks_mod.WindowSink()
    window.show(np.full((2, 2, 3), 1, np.uint8))
    t = threading.Thread(target=window.show, args=(np.full((2, 2, 3), 2, np.uint8),))
    t.start()
    t.join()
    board = AnnotationBoard()
    cam = CameraModel(np.eye(3), np.zeros(5), 2, 2)
    sink = StationSink(None, board, cam, Registration(Transform(np.eye(4), CT, REF)))
    sink.attach_display(window)
    window.write(SinkItem(0, 0.0, np.full((2, 2, 3), 3, np.uint8), "LOST", None))
    deadline = time.monotonic() + 10
    while not (calls and calls[-1][1] == 2) and time.monotonic() < deadline:
        time.sleep(0.005)   # the window thread shows the newest image handed over
    window.close()
    sink.close()
    assert {name for name, _ in calls} == {"overlay-window"}
    assert calls[-1][1] == 2 and 3 not in [v for _, v in calls]


def test_overlay_workflow_feeds_the_window_from_the_station_sink(tmp_path, monkeypatch) -> None:
    """run_overlay with the station's sink and a display: the window shows the station sink's
    composites (the mentor's stroke in them), not its own copy after the encode."""
    import threading

    import cv2

    from scrubin.overlay import sinks as sinks_mod
    from scrubin.workflows.overlay import OverlayRequest, run_overlay

    shown: list[np.ndarray] = []
    monkeypatch.setattr(sinks_mod, "display_available", lambda: True)
    monkeypatch.setattr(cv2, "imshow", lambda title, img: shown.append(img.copy()))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: -1)
    monkeypatch.setattr(cv2, "destroyWindow", lambda title: None)
    board = AnnotationBoard()
    stroke = _stroke("s", "create", [[0.2, 0.5], [0.8, 0.5]])
    board.apply(1, {**stroke, "color": "#ff00ff"})   # magenta: not in the synthetic scene
    made: list[StationSink] = []
    wrote = threading.Event()

    def sinks(camera, structures, registration):
        station = SurgeonStation(VideoFanout(StreamEncoder(320, 196)))
        made.append(StationSink(station, board, camera, registration,
                                on_frame=lambda meta: wrote.set()))
        return made

    run_overlay(OverlayRequest("synthetic", tmp_path / "o.mp4", frames=3, width=320,
                               height=180), extra_sinks=sinks)
    assert wrote.is_set() and made[0].sent == 3
    assert made[0].display.displays, "the window was not attached to the station's sink"
    def magenta_on_stroke_row(img: np.ndarray) -> int:
        b, g, r = (img[85:95, 64:256, k].astype(int) for k in range(3))
        return int(((b > 200) & (r > 200) & (g < 60)).sum())

    assert shown and all(magenta_on_stroke_row(img) > 100 for img in shown)
    asyncio.run(made[0].station.close())
