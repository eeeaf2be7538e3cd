"""A live surgeon station for the end-to-end tests and the latency bench.

The station's real parts: :class:`~scrubin.mentor.station.SurgeonStation` (shared H.264
encoder, one peer connection per viewer), :class:`~scrubin.mentor.station_link.StationLink`
(gRPC to a real MentorServer: Join, Signal answers, Annotations into the board, anchoring of
settled strokes at the pose of the frame they were drawn on, telemetry) and the pipeline's
:class:`~scrubin.mentor.station_sink.StationSink` (annotations drawn into every frame, the
between-frames display composites of :mod:`scrubin.mentor.station_display`, publish), as
``scrubin surgeon`` runs them. Only the frame source is the harness's own: it plays a caller's
frames with their *true* poses (so the checks compare with ground truth, not with a tracker's
estimate; :class:`TruthSink` takes each frame's metadata from the source instead of the
tracker) and numbers them ``first_frame_id + i``. Frames come from a caller's
``source(i) -> (view_bgr, FrameMeta without id)``, paced at ``fps`` on their own thread; every
sent frame's metadata and (optionally) composited picture are kept for the checks, and every
composite the surgeon's display got (camera frames and display composites) is noted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from scrubin.mentor.anchor import Anchorer
from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.client import MentorClient
from scrubin.mentor.media import StreamEncoder, VideoFanout
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_display import Composite
from scrubin.mentor.station_link import StationLink
from scrubin.mentor.station_meta import FrameMeta
from scrubin.mentor.station_sink import StationSink
from scrubin.mentor.strip import STRIP_HEIGHT
from scrubin.overlay.sinks import SinkItem


@dataclass
class StrokeRecord:
    """What the station knew when a mentor's annotation event arrived."""

    annotation_id: str
    frame_id: int                 # the frame the mentor drew on (from the event)
    arrival_frame_id: int         # the newest frame the station had sent on arrival
    arrival_time: float
    points: list[list[float]]
    anchors_ref_mm: list[Any] | None = None
    anchored_after_frame_id: int | None = None   # newest frame sent when the anchor arrived


class RecordingBoard(AnnotationBoard):
    """The station's board, noting what the station had sent when each stroke arrived."""

    def __init__(self, owner: LiveStation) -> None:
        super().__init__()
        self.owner = owner

    def apply(self, seq: int, event: dict[str, Any]) -> bool:
        o = self.owner
        o.events.append((seq, event))
        if event.get("op") in ("create", "update") and event.get("role") != "surgeon":
            aid = str(event.get("annotation_id", ""))
            if aid not in o.strokes:
                latest = next(reversed(o.frames)) if o.frames else 0
                o.strokes[aid] = StrokeRecord(aid, int(event.get("frame_id", 0)), latest,
                                              time.time(), [])
            o.strokes[aid].points = event.get("points") or []
            if len(o.strokes[aid].points) > 1 and aid not in o.first_move_arrival:
                o.first_move_arrival[aid] = (time.time(), str(event.get("event_id", "")),
                                             float(event.get("client_time") or 0.0))
        elif event.get("op") == "anchor" and event.get("annotation_id") in o.strokes:
            rec = o.strokes[event["annotation_id"]]
            rec.anchors_ref_mm = event.get("anchors_ref_mm")
            rec.anchored_after_frame_id = next(reversed(o.frames)) if o.frames else 0
        with o.board_lock:
            o.board_version += 1
        return super().apply(seq, event)


class TruthSink(StationSink):
    """The station's sink with each frame's metadata taken from the source (true pose,
    tracking state, id) rather than built from the tracker's pose: ``item.extra["meta"]``."""

    def __init__(self, station: SurgeonStation, board: AnnotationBoard, width: int,
                 height: int, on_frame: Callable[[FrameMeta], Any]) -> None:
        camera = SimpleNamespace(matrix=np.eye(3), dist=np.zeros(5), width=width,
                                 height=height)
        registration = SimpleNamespace(T_ref_ct=SimpleNamespace(matrix=np.eye(4)),
                                       fre_mm=None, tre_mm=None)
        super().__init__(station, board, camera, registration, on_frame)

    def meta_of(self, item: SinkItem) -> FrameMeta:
        return item.extra["meta"]


@dataclass
class FrameRecord:
    meta: FrameMeta
    index: int                    # source index
    sent_time: float
    board_version: int
    annotated: dict[str, float] = field(default_factory=dict)


class LiveStation:
    """See the module docstring. ``keep_composites``: how many composited frames to keep."""

    def __init__(self, grpc_target: str, token: str, cert_path: str,
                 source: Callable[[int], tuple[np.ndarray, FrameMeta]],
                 anchorer: Anchorer | None, width: int = 1280, height: int = 720,
                 fps: float = 30.0, keep_composites: int = 0,
                 on_composite: Callable[[int, np.ndarray], None] | None = None,
                 audio: Any = None) -> None:
        self.target, self.token, self.cert = grpc_target, token, cert_path
        self.source, self.anchorer, self.fps = source, anchorer, fps
        self.width, self.height = width, height
        self.encoder = StreamEncoder(width, height + STRIP_HEIGHT, fps)
        self.fanout = VideoFanout(self.encoder)
        self.station = SurgeonStation(self.fanout, audio)
        self.board = RecordingBoard(self)
        self.board_lock = threading.Lock()
        self.board_version = 0
        self.frames: OrderedDict[int, FrameRecord] = OrderedDict()
        self.composites: OrderedDict[int, np.ndarray] = OrderedDict()
        self.keep_composites = keep_composites
        self.on_composite = on_composite
        self.strokes: dict[str, StrokeRecord] = {}
        self.events: list[tuple[int, dict[str, Any]]] = []
        # annotation id -> (frame id, time.time(), kind) of the first composite the surgeon's
        # display got showing it with more than one point (the mentor's first pointermove has
        # arrived and is drawn); kind "frame" (camera frame) or "display" (a re-composite of
        # the latest frame between camera frames, scrubin.mentor.station_display)
        self.first_moved: dict[str, tuple[int, float, str]] = {}
        self.display_composites: list[tuple[int, float, int]] = []  # (frame id, done, version)
        # annotation id -> (time.time() on arrival, event_id, page client_time) of its first
        # event with more than one point (the latency breakdown of the bench)
        self.first_move_arrival: dict[str, tuple[float, str, float]] = {}
        # session-unique ids (DESIGN): a 60 Hz clock since 2026-01-01, so a restarted station
        # never reuses one; the i-th sent frame has id first_frame_id + i
        self.first_frame_id = int((time.time() - 1767225600.0) * 60) % 2**32
        self.frame_id = self.first_frame_id - 1
        self.loop = asyncio.new_event_loop()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._loop_thread = threading.Thread(target=self._run_loop, daemon=True)
        self._frame_thread = threading.Thread(target=self._frame_loop, daemon=True)
        self.errors: list[str] = []
        self.link: StationLink | None = None
        self.encode_ms: list[float] = []
        self.cpu_s = 0.0
        self.sink = TruthSink(self.station, self.board, width, height,
                              lambda meta: self.link.frame_sent(meta))
        # the harness's "display": every composite, camera frames' and between-frame ones
        self.sink.display.displays.append(self._shown)

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 20.0) -> LiveStation:
        self._loop_thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"station did not connect: {self.errors}")
        self._frame_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._frame_thread.join(5)
        self.sink.close()
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(5)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._main())
        self.loop.run_forever()

    async def _main(self) -> None:
        try:
            self.client = MentorClient(self.target, self.token, self.cert, "station")
            self.link = StationLink(self.station, self.client, self.board, self.anchorer)
            await self.link.start(["127.0.0.1"])
            self._ready.set()
        except Exception as exc:  # reported by start()
            self.errors.append(repr(exc))

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            await self.link.close()
            await self.client.close()

    # ------------------------------------------------------------------ frames
    def _shown(self, c: Composite) -> None:
        """A composite reached the surgeon's display (frame loop or display thread)."""
        if c.kind == "display":
            self.display_composites.append((c.meta.frame_id, c.done, c.report.version))
        for aid, n in c.report.points.items():
            if n > 1 and aid not in self.first_moved:
                self.first_moved[aid] = (c.meta.frame_id, c.done, c.kind)
        if c.kind != "frame":
            return
        if self.on_composite is not None:
            self.on_composite(c.meta.frame_id, c.image_bgr)
        if self.keep_composites:
            self.composites[c.meta.frame_id] = c.image_bgr
            while len(self.composites) > self.keep_composites:
                self.composites.popitem(last=False)

    def _frame_loop(self) -> None:
        period = 1.0 / self.fps
        t_next = time.perf_counter()
        i = 0
        cpu0 = time.thread_time()
        while not self._stop.is_set():
            view, meta = self.source(i)
            self.frame_id += 1
            meta.frame_id = self.frame_id
            meta.capture_time = time.time()
            with self.board_lock:
                version = self.board_version
            rec = FrameRecord(meta, i, 0.0, version)
            sent0 = self.station.sent_frames
            self.sink.write(SinkItem(i, meta.capture_time, view.copy(), meta.tracking, None,
                                     {"meta": meta}))
            if self.station.sent_frames > sent0:
                self.encode_ms.append(meta.stages_ms.get("encode", float("nan")))
            rec.sent_time = time.time()
            self.frames[meta.frame_id] = rec
            while len(self.frames) > 600:
                self.frames.popitem(last=False)
            i += 1
            t_next += period
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                t_next = time.perf_counter()
        self.cpu_s = time.thread_time() - cpu0
