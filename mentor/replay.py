"""Replay of a session recording (MCAP, :mod:`scrubin.mentor.recording`) to an MP4 file.

``scrubin replay FILE --out video.mp4`` renders the session as it was: each recorded H.264
frame is decoded (PyAV), matched to its metadata by the frame id read from its strip
(:func:`scrubin.mentor.strip.read_strip`; the MCAP ``sequence`` when unreadable), cropped to
the view, and the annotations are drawn as the station's board held them for that frame: the
events with ``seq <= annotation_seq`` of the frame, anchored strokes re-projected with *that
frame's* recorded ``T_CAMERA_REF`` and intrinsics (``cv2.projectPoints``; hidden while tracking
is STALE/LOST), lasers fading on the recorded clock. When the station already drew them into
the picture (``annotations_in_video``, the default of a station recording) they are not drawn
twice unless asked (``annotations="draw"``).

Output: H.264 (libx264) in MP4 with presentation times from the recorded capture times (a
variable frame rate: gaps stay gaps), written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import statistics
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.mentor import recording_schema as rs
from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.recording import RecordingError, apply_event, meta_from_json
from scrubin.mentor.strip import read_strip

ANNOTATION_MODES = ("auto", "draw", "none")


@dataclass
class RecordedFrame:
    """One recorded frame: the Annex B bytes and its metadata (``/station/frame`` JSON)."""

    frame_id: int
    log_time_ns: int
    video: bytes
    meta: dict[str, Any]


@dataclass
class SessionRecording:
    """An opened recording: its metadata record and the annotation events in seq order."""

    path: Path
    info: dict[str, str]
    events: list[tuple[int, dict[str, Any], float]] = field(default_factory=list)

    @property
    def annotations_in_video(self) -> bool:
        """Whether the station drew the annotations into the recorded picture."""
        return self.info.get("annotations_in_video", "true") == "true"


def _reader(fh: Any) -> Any:
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    try:
        return make_reader(fh)
    except (McapError, ValueError, OSError, struct.error, EOFError) as exc:
        raise RecordingError(f"{getattr(fh, 'name', '?')}: not an MCAP file ({exc})") from None


def open_recording(path: str | Path) -> SessionRecording:
    """Read a recording's session metadata and annotation events; checks it is one of ours."""
    from mcap.exceptions import McapError

    p = Path(path)
    if not p.is_file():
        raise RecordingError(f"recording {p}: no such file")
    with open(p, "rb") as fh:
        rd = _reader(fh)
        try:
            header = rd.get_header()
            info = next((dict(m.metadata) for m in rd.iter_metadata()
                         if m.name == rs.METADATA_NAME), None)
            if header.profile != rs.PROFILE or info is None:
                raise RecordingError(f"recording {p}: not a Scrub In session recording "
                                     f"(profile {header.profile!r}, expected {rs.PROFILE!r})")
            rec = SessionRecording(p, info)
            for _, _, msg in rd.iter_messages(topics=[rs.TOPIC_EVENTS], log_time_order=True):
                d = json.loads(msg.data)
                rec.events.append((int(d["seq"]), dict(d["event"]), msg.log_time / 1e9))
        except (McapError, ValueError, KeyError, TypeError, struct.error, EOFError) as exc:
            raise RecordingError(f"recording {p}: unreadable ({exc})") from None
    rec.events.sort(key=lambda e: e[0])
    return rec


def iter_frames(path: str | Path) -> Iterator[RecordedFrame]:
    """The recorded frames in capture order (video and metadata paired by frame id)."""
    from mcap.exceptions import McapError
    from mcap_protobuf.decoder import DecoderFactory

    dec = DecoderFactory()
    video: dict[int, tuple[int, bytes]] = {}
    metas: dict[int, dict[str, Any]] = {}
    with open(path, "rb") as fh:
        rd = _reader(fh)
        try:
            for schema, channel, msg in rd.iter_messages(
                    topics=[rs.TOPIC_VIDEO, rs.TOPIC_FRAME], log_time_order=True):
                fid = int(msg.sequence)
                if channel.topic == rs.TOPIC_VIDEO:
                    decode = dec.decoder_for(channel.message_encoding, schema)
                    if decode is None:
                        raise RecordingError(f"recording {path}: {rs.TOPIC_VIDEO} is not "
                                             "protobuf foxglove.CompressedVideo")
                    cv = decode(msg.data)
                    if cv.format != "h264":
                        raise RecordingError(f"recording {path}: video format {cv.format!r}, "
                                             "expected 'h264'")
                    video[fid] = (msg.log_time, bytes(cv.data))
                else:
                    metas[fid] = json.loads(msg.data)
                if fid in video and fid in metas:
                    t, data = video.pop(fid)
                    yield RecordedFrame(fid, t, data, metas.pop(fid))
        except (McapError, ValueError, struct.error, EOFError) as exc:
            raise RecordingError(f"recording {path}: unreadable ({exc})") from None


@dataclass
class ReplayReport:
    """What a replay rendered."""

    frames: int = 0
    undecodable: int = 0
    strip_mismatch: int = 0
    annotated: int = 0
    events: int = 0
    duration_s: float = 0.0
    width: int = 0
    height: int = 0
    tracking: dict[str, int] = field(default_factory=dict)
    fre_mm: float | None = None
    tre_mm_median: float | None = None
    stages_ms_median: dict[str, float] = field(default_factory=dict)
    drew_annotations: bool = False
    voices: list[str] = field(default_factory=list)
    voice_packets: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain dict (for ``--json``)."""
        return dict(self.__dict__)


class _Mp4:
    """libx264 in MP4, presentation times in 1/90000 s from the capture clock."""

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        import av

        self.c = av.open(str(path), "w", format="mp4")
        s = self.c.add_stream("libx264", rate=Fraction(round(fps * 1000), 1000))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.time_base = Fraction(1, 90000)
        s.options = {"preset": "veryfast", "crf": "18", "bf": "0"}
        self.s, self.last = s, -1

    def write(self, view_bgr: np.ndarray, t_rel_s: float) -> None:
        import av

        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(view_bgr), format="bgr24")
        self.last = max(self.last + 1, round(t_rel_s * 90000))
        f.pts, f.time_base = self.last, Fraction(1, 90000)
        for p in self.s.encode(f):
            self.c.mux(p)

    def close(self) -> None:
        for p in self.s.encode(None):
            self.c.mux(p)
        self.c.close()


def replay_to_mp4(path: str | Path, out: str | Path, annotations: str = "auto",
                  fps: float = 30.0, voices: bool = True) -> ReplayReport:
    """Render a recording into ``out`` (MP4, view size, annotations per ``annotations``).

    ``annotations``: ``auto`` draws them unless the station drew them into the picture,
    ``draw`` always, ``none`` never. ``fps`` is the nominal rate written in the header (the
    timestamps are the recorded ones). ``voices``: the recorded voices mixed into one AAC
    track on the same clock (:mod:`scrubin.mentor.replay_audio`).
    """
    import av

    from scrubin.imaging.fileio import temp_path

    if annotations not in ANNOTATION_MODES:
        raise RecordingError(f"annotations must be one of {'/'.join(ANNOTATION_MODES)}, got "
                             f"{annotations!r}")
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise RecordingError(f"--out {out}: expected a .mp4 file name")
    if not out.parent.is_dir():
        raise RecordingError(f"--out {out}: folder {out.parent} does not exist")
    rec = open_recording(path)
    draw = annotations == "draw" or (annotations == "auto" and not rec.annotations_in_video)
    rep = ReplayReport(events=len(rec.events), drew_annotations=draw)
    if voices:
        from scrubin.mentor.replay_audio import VoiceMix, mix_voices, voice_topics

        rep.voices = voice_topics(path)
    mix = None
    board = AnnotationBoard()
    ev_i = 0
    ctx = av.CodecContext.create("h264", "r")
    ctx.thread_count = 1  # one picture out per packet (no B-frames): no frame-thread delay
    pending: dict[int, RecordedFrame] = {}
    tmp = temp_path(out, ".mp4")
    mp4: _Mp4 | None = None
    t0: float | None = None
    fres, tres = [], []
    stages: dict[str, list[float]] = {}
    try:
        for rf in iter_frames(path):
            pending[rf.frame_id] = rf
            try:
                pictures = ctx.decode(av.Packet(rf.video))
            except av.error.FFmpegError:
                rep.undecodable += 1
                pending.pop(rf.frame_id, None)
                continue
            for pic in pictures:
                img = pic.to_ndarray(format="bgr24")
                fid = read_strip(pic.to_ndarray(format="gray"))
                got = pending.pop(fid, None) if fid is not None else None
                if got is None:
                    rep.strip_mismatch += 1
                    got = pending.pop(min(pending)) if pending else None
                if got is None:
                    continue
                pending = {k: v for k, v in pending.items() if k > got.frame_id}
                meta = meta_from_json(got.meta)
                view = np.ascontiguousarray(img[: meta.height, : meta.width])
                while ev_i < len(rec.events) and rec.events[ev_i][0] <= int(
                        got.meta.get("annotation_seq", 0)):
                    apply_event(board, *rec.events[ev_i])
                    ev_i += 1
                if draw and board.draw(view, meta, now=meta.capture_time):
                    rep.annotated += 1
                if mp4 is None:
                    mp4 = _Mp4(tmp, meta.width, meta.height, fps)
                    t0 = meta.capture_time
                    if rep.voices:  # every stream is added before the first packet
                        mix = VoiceMix(mp4.c, t0)
                    rep.width, rep.height = meta.width, meta.height
                assert t0 is not None
                mp4.write(view, meta.capture_time - t0)
                rep.frames += 1
                rep.duration_s = meta.capture_time - t0
                rep.tracking[meta.tracking] = rep.tracking.get(meta.tracking, 0) + 1
                if meta.fre_mm is not None:
                    fres.append(float(meta.fre_mm))
                if meta.tre_mm is not None:
                    tres.append(float(meta.tre_mm))
                for k, v in meta.stages_ms.items():
                    stages.setdefault(k, []).append(float(v))
        if mp4 is None:
            raise RecordingError(f"recording {path}: no decodable video frame")
        if mix is not None:
            assert t0 is not None
            rep.voice_packets = mix_voices(path, mix, rep.voices)
            mix.close(t0 + rep.duration_s + 1 / fps)
        mp4.close()
        mp4 = None
        tmp.replace(out)
    finally:
        if mp4 is not None:
            mp4.c.close()
        tmp.unlink(missing_ok=True)
    rep.fre_mm = fres[-1] if fres else None
    rep.tre_mm_median = statistics.median(tres) if tres else None
    rep.stages_ms_median = {k: round(statistics.median(v), 3) for k, v in stages.items()}
    return rep
