"""Display composites between camera frames (mentor/station_display.py) on the station's sink.

A stroke applied between two camera frames reaches the surgeon's display as a re-composite of
the last camera frame (same frame id), before the next camera frame is written, and nothing
extra is encoded. Checked by frame ids, encoder frame counts and pixels, not by timing.
"""

from __future__ import annotations

import asyncio
import queue

import numpy as np

from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.media import StreamEncoder, VideoFanout
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_display import Composite
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
            # deleting it between frames: the re-composite is of frame B's view *before* its
            # annotations (no stroke left over from B's composite), and it is the next one
            board.apply(2, {"op": "delete", "annotation_id": "s"})
            c2, img2 = shown.get(timeout=10)
            assert c2.meta.frame_id == sent[1].frame_id and c2.report.points == {}
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
