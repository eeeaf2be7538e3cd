"""The channels of a session recording (MCAP) and the messages written on them.

One MCAP file (https://mcap.dev/spec), every message's ``log_time`` on the station's one clock
(Unix ns): a frame's messages at its capture time, an annotation event at its arrival at the
station. Foxglove's standard schemas (``foxglove-schemas-protobuf``) where they fit, so the file
opens in Foxglove Studio; our own JSON-schema channels for what they cannot hold exactly.

======================  ===============================  =====================================
topic                   schema                           content
======================  ===============================  =====================================
``/station/video``      ``foxglove.CompressedVideo``     H.264 Annex B, one frame per message,
                                                         no B-frames, view + frame-id strip
``/station/calibration`` ``foxglove.CameraCalibration``  K, ``plumb_bob`` D of that frame (px)
``/tf``                 ``foxglove.FrameTransforms``     ``camera`` -> ``ref`` -> ``ct`` (metres)
``/station/annotations`` ``foxglove.ImageAnnotations``   annotations as drawn on that frame (px)
``/station/frame``      ``scrubin.mentor.FrameMeta``     the ``meta`` channel message (mm, exact;
                        (JSON)                           unknown values absent, not null)
                                                         + ``annotation_seq``, ``keyframe``
``/mentor/events``      ``scrubin.mentor.AnnotationEvent`` ``{"seq", "event"}`` as the station
                        (JSON)                           applied it (mentor/DESIGN.md)
``/session/log``        ``foxglove.Log``                 start/stop, dropped frames
``/audio/<name>``       ``foxglove.CompressedAudio``     a voice as raw Opus packets (20 ms;
                                                         :mod:`~scrubin.mentor.recording_audio`)
======================  ===============================  =====================================

Messages of one frame carry the frame id as the MCAP ``sequence`` (uint32, as the frame ids).
Foxglove's ``FrameTransform`` is the child frame's pose in the parent frame
(``p_parent = R p_child + t``): ``T_CAMERA_REF`` is written as parent ``camera``, child ``ref``,
translated from mm to metres (Foxglove's unit); the exact mm matrices are in ``/station/frame``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TOPIC_VIDEO = "/station/video"
TOPIC_CALIBRATION = "/station/calibration"
TOPIC_TF = "/tf"
TOPIC_IMAGE_ANNOTATIONS = "/station/annotations"
TOPIC_FRAME = "/station/frame"
TOPIC_EVENTS = "/mentor/events"
TOPIC_LOG = "/session/log"

FRAME_SCHEMA_NAME = "scrubin.mentor.FrameMeta"
EVENT_SCHEMA_NAME = "scrubin.mentor.AnnotationEvent"
PROFILE = "scrubin.mentor.recording.v1"
METADATA_NAME = "scrubin.session"

#: Foxglove Studio reads a ``jsonschema`` channel's schema to type its messages (its
#: ``parseJsonSchema``, @foxglove/studio-base 1.48 and Lichtblick alike) and drops the channel
#: with an error when a property under ``properties`` has no single ``type`` of boolean,
#: string, number, integer, object (with ``properties``) or array (of those; not of arrays), so
#: these schemas keep to that subset: a value that may be unknown is left out of the message
#: instead of being ``null``, maps have empty ``properties`` plus ``additionalProperties``, and
#: arrays of arrays are constrained under ``patternProperties`` (which Studio ignores).
#: tests/mentor/test_recording_foxglove.py opens a recording with Studio's own reader.

#: JSON schema (draft 2020-12) of ``/station/frame``: the DESIGN.md ``meta`` message plus the
#: recorder's fields; ``T_camera_ref`` (no pose), ``T_ref_ct``, ``fre_mm``, ``tre_mm`` are
#: absent when unknown.
FRAME_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": FRAME_SCHEMA_NAME,
    "description": "Per-frame metadata of the surgeon station (mentor/DESIGN.md); LPS/REF mm, "
                   "Unix seconds, 4x4 row-major matrices T_dst_src; a field that is unknown on "
                   "a frame (no pose, no registration) is absent",
    "type": "object",
    "properties": {
        "frame_id": {"type": "integer"}, "capture_time": {"type": "number"},
        "width": {"type": "integer"}, "height": {"type": "integer"},
        "K": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
              "description": "fx, fy, cx, cy (px)"},
        "dist": {"type": "array", "items": {"type": "number"},
                 "description": "OpenCV distortion coefficients k1 k2 p1 p2 [k3 ...]"},
        "T_camera_ref": {"type": "array", "items": {"type": "number"}, "minItems": 16,
                         "maxItems": 16, "description": "T_CAMERA_REF, row-major, mm; absent "
                         "without a pose"},
        "T_ref_ct": {"type": "array", "items": {"type": "number"}, "minItems": 16,
                     "maxItems": 16, "description": "T_REF_CT, row-major, mm; absent before "
                     "registration"},
        "tracking": {"type": "string", "enum": ["LIVE", "HELD", "STALE", "LOST"]},
        "fre_mm": {"type": "number"}, "tre_mm": {"type": "number",
                                                 "description": "predicted TRE at the target"},
        "stages_ms": {"type": "object", "properties": {},
                      "additionalProperties": {"type": "number"},
                      "description": "stage name -> latency (ms)"},
        "annotation_seq": {"type": "integer",
                           "description": "last annotation event seq applied before drawing"},
        "keyframe": {"type": "boolean"},
        "video_bytes": {"type": "integer"},
        "queue_ms": {"type": "number",
                     "description": "time the frame waited in the recorder's queue"},
    },
    "required": ["frame_id", "capture_time", "width", "height", "K", "dist", "tracking"],
}

#: JSON schema of ``/mentor/events`` (the canonical event of mentor/events.py).
EVENT_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": EVENT_SCHEMA_NAME,
    "description": "An annotation event as broadcast by the server (mentor/DESIGN.md "
                   "'Annotations'): points normalised [[x, y], ...], anchors_ref_mm "
                   "[[x, y, z] | null, ...] in REF mm",
    "type": "object",
    "properties": {
        "seq": {"type": "integer"},
        "event": {
            "type": "object",
            "properties": {
                **{k: {"type": "string"} for k in ("event_id", "op", "annotation_id", "author",
                                                   "role", "kind", "color", "text",
                                                   "anchor_state")},
                "frame_id": {"type": "integer"}, "capture_time": {"type": "number"},
                "client_time": {"type": "number"},
            },
            "patternProperties": {
                "^points$": {"type": "array", "items": {
                    "type": "array", "items": {"type": "number"}, "minItems": 2,
                    "maxItems": 2}},
                "^anchors_ref_mm$": {"type": "array", "items": {
                    "type": ["array", "null"], "items": {"type": "number"}, "minItems": 3,
                    "maxItems": 3}},
            },
            "required": ["event_id", "op"],
        },
    },
    "required": ["seq", "event"],
}


def timestamp(msg_field: Any, t_unix_s: float) -> None:
    """Set a ``google.protobuf.Timestamp`` field from Unix seconds."""
    ns = int(round(t_unix_s * 1e9))
    msg_field.seconds, msg_field.nanos = divmod(ns, 1_000_000_000)


def video_message(data: bytes, t_unix_s: float) -> Any:
    """``foxglove.CompressedVideo`` of one H.264 Annex B frame (coordinate frame ``camera``)."""
    from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo

    m = CompressedVideo(frame_id="camera", data=data, format="h264")
    timestamp(m.timestamp, t_unix_s)
    return m


def calibration_message(meta: dict[str, Any], video_w: int, video_h: int) -> Any:
    """``foxglove.CameraCalibration``: ``K`` 3x3, ``plumb_bob`` (OpenCV k1 k2 p1 p2 k3), and the
    pinhole ``P = [K | 0]`` of the video picture (the strip lies below the view: same pixels)."""
    from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration

    fx, fy, cx, cy = (float(v) for v in meta["K"])
    k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    m = CameraCalibration(frame_id="camera", width=int(video_w), height=int(video_h),
                          distortion_model="plumb_bob", D=[float(v) for v in meta["dist"]],
                          K=k, R=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                          P=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    timestamp(m.timestamp, float(meta["capture_time"]))
    return m


def quaternion_xyzw(r: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion ``(x, y, z, w)`` of a 3x3 rotation matrix (Shepperd 1978, J. Guidance
    Control 1(3): the largest of ``w, x, y, z`` from the trace / diagonal, the others from the
    off-diagonal sums; ``w >= 0``)."""
    m = np.asarray(r, np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    k = int(np.argmax([tr, m[0, 0], m[1, 1], m[2, 2]]))
    if k == 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    elif k == 1:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif k == 2:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    v = np.asarray(q) / np.linalg.norm(q)
    if v[3] < 0:
        v = -v
    return float(v[0]), float(v[1]), float(v[2]), float(v[3])


def transforms_message(meta: dict[str, Any]) -> Any | None:
    """``foxglove.FrameTransforms``: ``camera``->``ref`` (``T_CAMERA_REF``) and ``ref``->``ct``
    (``T_REF_CT``), translations in metres; None when neither is known."""
    from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms

    out = FrameTransforms()
    for key, parent, child in (("T_camera_ref", "camera", "ref"), ("T_ref_ct", "ref", "ct")):
        vals = meta.get(key)
        if vals is None:
            continue
        m = np.asarray(vals, np.float64).reshape(4, 4)
        tr = out.transforms.add(parent_frame_id=parent, child_frame_id=child)
        timestamp(tr.timestamp, float(meta["capture_time"]))
        tr.translation.x, tr.translation.y, tr.translation.z = (m[:3, 3] * 1e-3).tolist()
        x, y, z, w = quaternion_xyzw(m[:3, :3])
        tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = x, y, z, w
    return out if len(out.transforms) else None


def _rgba(color: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    try:
        r, g, b = (int(color[i: i + 2], 16) / 255.0 for i in (1, 3, 5))
    except (ValueError, TypeError, IndexError):
        r, g, b = 1.0, 0.0, 0.0
    return r, g, b, alpha


def image_annotations_message(shapes: list[dict[str, Any]], t_unix_s: float) -> Any:
    """``foxglove.ImageAnnotations`` from drawn shapes ``{"px": (N, 2) OpenCV pixels, "color",
    "label", "alpha"}``: a ``LINE_STRIP`` (``POINTS`` for one point) and the author's label."""
    from foxglove_schemas_protobuf.ImageAnnotations_pb2 import ImageAnnotations
    from foxglove_schemas_protobuf.PointsAnnotation_pb2 import PointsAnnotation

    m = ImageAnnotations()
    timestamp(m.timestamp, t_unix_s)
    for s in shapes:
        px = np.asarray(s["px"], np.float64)
        px = px[np.isfinite(px).all(axis=1)]
        if not len(px):
            continue
        pa = m.points.add(type=PointsAnnotation.POINTS if len(px) == 1
                          else PointsAnnotation.LINE_STRIP, thickness=3.0)
        timestamp(pa.timestamp, t_unix_s)
        r, g, b, a = _rgba(s["color"], s.get("alpha", 1.0))
        for c in (pa.outline_color, pa.fill_color):
            c.r, c.g, c.b, c.a = r, g, b, a
        for x, y in px:
            pa.points.add(x=float(x), y=float(y))
        ta = m.texts.add(text=str(s.get("label", ""))[:40], font_size=14.0)
        timestamp(ta.timestamp, t_unix_s)
        ta.position.x, ta.position.y = float(px[0, 0]) + 8.0, float(px[0, 1]) - 8.0
        ta.text_color.r, ta.text_color.g, ta.text_color.b, ta.text_color.a = 1.0, 1.0, 1.0, 1.0
        ta.background_color.a = 0.6
    return m


def audio_message(packet: bytes, t_unix_s: float) -> Any:
    """``foxglove.CompressedAudio``: one complete raw Opus packet (RFC 6716 section 3)."""
    from foxglove_schemas_protobuf.CompressedAudio_pb2 import CompressedAudio

    m = CompressedAudio(data=packet, format="opus")
    timestamp(m.timestamp, t_unix_s)
    return m


def log_message(text: str, t_unix_s: float, level: str = "INFO") -> Any:
    """``foxglove.Log`` line from the station's recorder."""
    from foxglove_schemas_protobuf.Log_pb2 import Log

    m = Log(level=getattr(Log, level), message=text, name="scrubin.mentor.recording")
    timestamp(m.timestamp, t_unix_s)
    return m
