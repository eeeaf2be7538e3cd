"""Recording a mentoring session at the surgeon station: one time-aligned MCAP file.

The station holds everything worth keeping: the encoded H.264 packets (encode once: the
recording costs no second encode), each frame's metadata (pose, intrinsics, tracking state,
FRE / predicted TRE, stage latencies) and the annotation events in the order it applied them.
:class:`Recorder` writes them on the channels of :mod:`scrubin.mentor.recording_schema`.

Consent: a session is recorded only when it was *created* with recording on (``scrubin session
new --record``; the server then tells every participant and audits it). The recorder refuses
otherwise (:class:`RecordingError`), so a station cannot record a session whose participants
were told it is not recorded.

The frame loop is never stalled: :meth:`Recorder.add_frame` (frame-loop thread) and
:meth:`Recorder.add_event` (event loop) only append to a bounded queue; one writer thread
serialises, compresses (zstd chunks) and writes. When the writer falls behind by
``max_queued_frames`` frames, new frames are dropped (counted, logged on ``/session/log``) and
the following inter-coded frames too until the next keyframe, so the recorded stream always
decodes (H.264 P-frames need their reference; ITU-T H.264 section 8.2.5). Events are never
dropped (a few per second at most).

The file is written under a temporary name next to the target and renamed on :meth:`close`:
no partial ``.mcap`` under the final name.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.mentor import recording_schema as rs
from scrubin.mentor.annotations_draw import LASER_FADE_S, SHOWN_STATES, AnnotationBoard
from scrubin.mentor.errors import MentorError
from scrubin.mentor.station_meta import FrameMeta

log = logging.getLogger(__name__)

#: audio frames that may wait for the writer (20 ms each)
MAX_QUEUED_AUDIO = 1000


class RecordingError(MentorError):
    """A recording cannot be made or read (consent, file, format)."""


@dataclass
class RecorderStats:
    """What a recorder wrote (counts) and dropped."""

    frames: int = 0
    keyframes: int = 0
    events: int = 0
    dropped_frames: int = 0
    skipped_to_keyframe: int = 0
    video_bytes: int = 0
    audio_packets: int = 0
    dropped_audio_frames: int = 0
    max_queue: int = 0
    queue_ms: list[float] = field(default_factory=list)


def meta_from_json(d: dict[str, Any]) -> FrameMeta:
    """A :class:`FrameMeta` from its ``meta`` JSON (matrices 16 numbers row-major, mm)."""
    def mat(v: Any) -> np.ndarray | None:
        return None if v is None else np.asarray(v, np.float64).reshape(4, 4)

    try:
        return FrameMeta(int(d["frame_id"]), float(d["capture_time"]), int(d["width"]),
                         int(d["height"]), tuple(float(v) for v in d["K"]),  # type: ignore[arg-type]
                         tuple(float(v) for v in d["dist"]), mat(d.get("T_camera_ref")),
                         mat(d.get("T_ref_ct")), str(d["tracking"]), d.get("fre_mm"),
                         d.get("tre_mm"), dict(d.get("stages_ms") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"frame metadata {str(d)[:80]}: {exc}") from None


def apply_event(board: AnnotationBoard, seq: int, event: dict[str, Any],
                arrival_unix_s: float) -> None:
    """Apply an event to a board as the station did at ``arrival_unix_s`` (laser fade clock)."""
    if board.apply(seq, event):
        a = board.items.get(str(event.get("annotation_id", "")))
        if a is not None and event.get("op") in ("create", "update"):
            a.received = arrival_unix_s


def visible_shapes(board: AnnotationBoard, meta: FrameMeta) -> list[dict[str, Any]]:
    """The annotations the station's board draws on a frame, as OpenCV pixels of the view.

    The same visibility rules as :meth:`AnnotationBoard.draw` (anchored ones re-projected with
    the frame's ``T_CAMERA_REF`` and shown only while tracking is LIVE/HELD; lasers fade over
    1.5 s of the frame's capture time); ``px`` rows are NaN where an anchor is missing.
    """
    from scrubin.mentor.anchor import normalised_to_pixels, project_anchors

    if board.hidden:
        return []
    show_anchored = meta.tracking in SHOWN_STATES and meta.T_camera_ref is not None
    out = []
    for a in list(board.items.values()):
        if not a.points:
            continue
        alpha = 1.0
        if a.kind == "laser":
            age = meta.capture_time - a.received
            if age > LASER_FADE_S:
                continue
            alpha = max(0.0, 1.0 - age / LASER_FADE_S)
        if a.anchored:
            if not show_anchored:
                continue
            px = project_anchors(meta, a.anchors_ref_mm or [])
        else:
            px = normalised_to_pixels(a.points, meta.width, meta.height)
        out.append({"px": px, "color": a.color, "alpha": alpha,
                    "label": a.author or a.role or "?"})
    return out


class Recorder:
    """Bounded-queue MCAP writer of one session (module docstring).

    Parameters
    ----------
    path
        The ``.mcap`` file to make (must not exist; its folder must).
    session_recording
        ``JoinReply.recording`` of the session: whether it was created with recording on.
    session_id, author
        For the file's ``scrubin.session`` metadata record.
    video_size
        ``(width, height)`` of the encoded picture (view + strip), px.
    annotations_in_video
        Whether the station draws the annotations into the encoded picture (it does:
        :class:`~scrubin.mentor.station_sink.StationSink`); ``scrubin replay`` then does not
        draw them again.
    max_queued_frames
        Frames the writer may fall behind before new ones are dropped.
    """

    def __init__(self, path: str | Path, session_recording: bool, session_id: str = "",
                 author: str = "", video_size: tuple[int, int] = (1280, 736),
                 annotations_in_video: bool = True, max_queued_frames: int = 120) -> None:
        from mcap.writer import CompressionType, Writer

        from scrubin.imaging.fileio import temp_path

        if session_recording is not True:
            raise RecordingError(f"session {session_id or '?'} was not created with recording "
                                 "on (scrubin session new --record): refusing to record it")
        self.path = Path(path)
        if self.path.exists():
            raise RecordingError(f"recording {self.path}: file exists (not overwritten)")
        if not self.path.parent.is_dir():
            raise RecordingError(f"recording {self.path}: folder {self.path.parent} does not "
                                 "exist")
        if not (isinstance(max_queued_frames, int) and max_queued_frames >= 1):
            raise RecordingError(f"max_queued_frames must be an integer >= 1, got "
                                 f"{max_queued_frames!r}")
        self.session_id, self.author = session_id, author
        self.video_size = (int(video_size[0]), int(video_size[1]))
        self.annotations_in_video = bool(annotations_in_video)
        self.max_queued_frames = max_queued_frames
        self.stats = RecorderStats()
        self._tmp = temp_path(self.path, ".mcap.part")
        self._fh = open(self._tmp, "wb")  # closed in close()
        self._mcap = Writer(self._fh, chunk_size=4 * 1024 * 1024,
                            compression=CompressionType.ZSTD)
        self._mcap.start(profile=rs.PROFILE, library="scrubin")
        self._channels: dict[str, int] = {}
        self._q: collections.deque[tuple[str, Any]] = collections.deque()
        self._queued_frames = 0
        self._queued_audio = 0
        self._voices: dict[str, Any] = {}
        self._cv = threading.Condition()
        self._closing = False
        self._waiting_key = True
        self._error: BaseException | None = None
        self._board = AnnotationBoard()
        self._last_seq = 0
        self._thread = threading.Thread(target=self._run, name="mcap-recorder", daemon=True)
        self._started = False
        self._header_done = False
        self.t_start = time.time()

    # ------------------------------------------------------------------ producer side
    def start(self) -> Recorder:
        """Start the writer thread (frames and events queued before are kept)."""
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def add_frame(self, packets: Iterable[Any], meta: FrameMeta | dict[str, Any]) -> bool:
        """Queue one encoded frame (``av.Packet`` s or bytes, Annex B) and its metadata.

        Never blocks on I/O; False when the frame was dropped (writer behind, or waiting for a
        keyframe after a drop).
        """
        packets = list(packets)
        data = b"".join(bytes(p) for p in packets)
        if not data:
            return False
        key = any(bool(getattr(p, "is_keyframe", False)) for p in packets) or _has_idr(data)
        if isinstance(meta, FrameMeta):
            m = meta.to_json()  # the meta channel's message, matrices at full precision
            for name in ("T_camera_ref", "T_ref_ct"):
                v = getattr(meta, name)
                m[name] = None if v is None else v.ravel().tolist()
        else:
            m = dict(meta)
        with self._cv:
            if self._closing:
                return False
            if self._queued_frames >= self.max_queued_frames:
                self.stats.dropped_frames += 1
                self._waiting_key = True
                self._q.append(("drop", (m["capture_time"], m["frame_id"])))
                self._cv.notify()
                return False
            if self._waiting_key and not key:
                self.stats.skipped_to_keyframe += 1
                return False
            self._waiting_key = False
            self._q.append(("frame", (data, key, m, time.perf_counter())))
            self._queued_frames += 1
            self.stats.max_queue = max(self.stats.max_queue, self._queued_frames)
            self._cv.notify()
        return True

    def add_event(self, seq: int, event: dict[str, Any], arrival_unix_s: float | None = None
                  ) -> None:
        """Queue an annotation event as the station applied it (``seq`` from the server)."""
        t = time.time() if arrival_unix_s is None else float(arrival_unix_s)
        with self._cv:
            if not self._closing:
                self._q.append(("event", (int(seq), dict(event), t)))
                self._cv.notify()

    def add_audio(self, name: str, frame: Any, arrival_unix_s: float | None = None) -> bool:
        """Queue one decoded ``av.AudioFrame`` of voice ``name`` (``/audio/<name>``); the
        writer encodes it to Opus (:mod:`scrubin.mentor.recording_audio`). At most
        ``MAX_QUEUED_AUDIO`` frames wait (10 s of 20-ms frames per voice pair); False when
        dropped."""
        from scrubin.mentor.recording_audio import audio_topic

        audio_topic(name)
        t = time.time() if arrival_unix_s is None else float(arrival_unix_s)
        with self._cv:
            if self._closing:
                return False
            if self._queued_audio >= MAX_QUEUED_AUDIO:
                self.stats.dropped_audio_frames += 1
                return False
            self._q.append(("audio", (name, frame, t)))
            self._queued_audio += 1
            self._cv.notify()
        return True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing

    def close(self) -> RecorderStats:
        """Write what is queued, the summary and index; publish the file under its name."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._started:
            self._thread.join()
        else:
            self._drain()
        try:
            self._header()
            self._write_log(f"recording stopped: {self.stats.frames} frames, "
                            f"{self.stats.events} events, {self.stats.dropped_frames} dropped",
                            time.time())
            self._mcap.finish()
            self._fh.close()
            if self._error is not None:
                raise RecordingError(f"recording {self.path}: {self._error}") from None
            os.replace(self._tmp, self.path)
        finally:
            if not self._fh.closed:
                self._fh.close()
            if self._tmp.exists():
                self._tmp.unlink()
        return self.stats

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._closing:
                    self._cv.wait()
                if not self._q and self._closing:
                    return
            self._drain()

    def _drain(self) -> None:
        while True:
            with self._cv:
                if not self._q:
                    return
                kind, item = self._q.popleft()
                if kind == "frame":
                    self._queued_frames -= 1
                elif kind == "audio":
                    self._queued_audio -= 1
            if self._error is not None:
                continue
            try:
                self._header()
                if kind == "frame":
                    self._write_frame(*item)
                elif kind == "event":
                    self._write_event(*item)
                elif kind == "audio":
                    self._write_audio(*item)
                else:
                    self._write_log(f"frame {item[1]} dropped: recorder behind by "
                                    f"{self.max_queued_frames} frames", item[0], "WARNING")
            except Exception as exc:  # disk full, ...: keep the frame loop alive, report
                self._error = exc
                log.error("recording %s: %s", self.path, exc)

    def _channel(self, topic: str, proto_or_schema: Any) -> int:
        ch = self._channels.get(topic)
        if ch is not None:
            return ch
        if isinstance(proto_or_schema, dict):
            sid = self._mcap.register_schema(proto_or_schema["title"], "jsonschema",
                                             json.dumps(proto_or_schema).encode())
            ch = self._mcap.register_channel(topic, "json", sid)
        else:
            from mcap_protobuf.schema import register_schema

            ch = self._mcap.register_channel(topic, "protobuf",
                                             register_schema(self._mcap, type(proto_or_schema)))
        self._channels[topic] = ch
        return ch

    def _put(self, topic: str, msg: Any, t_unix_s: float, seq: int = 0) -> None:
        if isinstance(msg, tuple):  # (json schema, payload)
            schema, payload = msg
            ch, data = self._channel(topic, schema), json.dumps(payload).encode()
        else:
            ch, data = self._channel(topic, msg), msg.SerializeToString()
        t_ns = int(round(t_unix_s * 1e9))
        self._mcap.add_message(ch, log_time=t_ns, data=data, publish_time=time.time_ns(),
                               sequence=int(seq) % (2 ** 32))

    def _header(self) -> None:
        if self._header_done:
            return
        self._header_done = True
        self._mcap.add_metadata(rs.METADATA_NAME, {
            "session_id": self.session_id, "author": self.author, "recording_consent": "true",
            "video_width": str(self.video_size[0]), "video_height": str(self.video_size[1]),
            "annotations_in_video": "true" if self.annotations_in_video else "false",
            "clock": "unix", "units": "mm (metres in foxglove.FrameTransforms)",
            "started": f"{self.t_start:.6f}"})
        self._write_log(f"recording started (session {self.session_id}, by {self.author}, "
                        "participants were told on joining)", self.t_start)

    def _write_log(self, text: str, t: float, level: str = "INFO") -> None:
        self._put(rs.TOPIC_LOG, rs.log_message(text, t, level), t)

    def _write_event(self, seq: int, event: dict[str, Any], t: float) -> None:
        apply_event(self._board, seq, event, t)
        self._last_seq = max(self._last_seq, seq)
        self._put(rs.TOPIC_EVENTS, (rs.EVENT_JSON_SCHEMA, {"seq": seq, "event": event}), t, seq)
        self.stats.events += 1

    def _write_audio(self, name: str, frame: Any, t: float) -> None:
        from scrubin.mentor.recording_audio import OpusVoice, audio_topic

        voice = self._voices.get(name)
        if voice is None:
            voice = self._voices[name] = OpusVoice()
        for data, tp in voice.encode(frame, t):
            self._put(audio_topic(name), rs.audio_message(data, tp), tp, voice.packets)
            self.stats.audio_packets += 1

    def _write_frame(self, data: bytes, key: bool, m: dict[str, Any], t_queued: float) -> None:
        t = float(m["capture_time"])
        fid = int(m["frame_id"])
        queue_ms = (time.perf_counter() - t_queued) * 1e3
        # unknown values (no pose, no FRE) are left out, not null: Foxglove Studio types a JSON
        # channel from its schema and refuses nullable fields (recording_schema)
        m = {k: v for k, v in m.items() if v is not None and k != "type"}
        m.update(annotation_seq=self._last_seq, keyframe=key, video_bytes=len(data),
                 queue_ms=round(queue_ms, 3))
        self._put(rs.TOPIC_VIDEO, rs.video_message(data, t), t, fid)
        self._put(rs.TOPIC_FRAME, (rs.FRAME_JSON_SCHEMA, m), t, fid)
        self._put(rs.TOPIC_CALIBRATION, rs.calibration_message(m, *self.video_size), t, fid)
        tf = rs.transforms_message(m)
        if tf is not None:
            self._put(rs.TOPIC_TF, tf, t, fid)
        shapes = visible_shapes(self._board, meta_from_json(m)) if self._board.items else []
        self._put(rs.TOPIC_IMAGE_ANNOTATIONS, rs.image_annotations_message(shapes, t), t, fid)
        st = self.stats
        st.frames += 1
        st.keyframes += int(key)
        st.video_bytes += len(data)
        st.queue_ms.append(queue_ms)
        if len(st.queue_ms) > 10000:
            del st.queue_ms[:5000]


def _has_idr(annexb: bytes) -> bool:
    """Whether an H.264 Annex B access unit holds an IDR slice (nal_unit_type 5; ITU-T H.264
    Table 7-1), start codes ``00 00 01`` / ``00 00 00 01`` (Annex B.1)."""
    i = annexb.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(annexb):
        if annexb[i + 3] & 0x1F == 5:
            return True
        i = annexb.find(b"\x00\x00\x01", i + 3)
    return False
