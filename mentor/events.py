"""Annotation events: validation, permissions and the JSON <-> protobuf mapping.

The canonical form is the JSON object of mentor/DESIGN.md ("Annotations"); the server
stores and replays it, and converts it to :class:`scrubin.protos.mentor_pb2.AnnotationEvent`
for gRPC clients. 2-D points are normalised image coordinates of the 1280x720 view (x, y in
[0, 1], pixel = (x*width - 0.5, y*height - 0.5), OpenCV pixel-centre convention); anchors are
millimetres in the reference-marker frame (REF), ``None`` for a point that hit nothing.
"""

from __future__ import annotations

import math
import re
from typing import Any

from scrubin.mentor.errors import MentorError
from scrubin.protos import mentor_pb2 as pb

OPS = ("create", "update", "delete", "anchor", "hide_all", "show_all", "clear_all")
KINDS = ("freehand", "arrow", "circle", "text", "laser")
ANCHOR_STATES = ("pending", "anchored", "2d")
SURGEON_ONLY_OPS = frozenset({"anchor", "hide_all", "show_all", "clear_all"})
SESSION_WIDE_OPS = frozenset({"hide_all", "show_all", "clear_all"})
MAX_POINTS = 10000
MAX_ID = 128
MAX_TEXT = 2000
# Strokes may start just outside the view; anything further is a client bug.
COORD_RANGE = (-1.0, 2.0)

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")

ROLE_TO_PB = {"surgeon": pb.ROLE_SURGEON, "mentor": pb.ROLE_MENTOR, "observer": pb.ROLE_OBSERVER}
PB_TO_ROLE = {v: k for k, v in ROLE_TO_PB.items()}
_OP_TO_PB = {op: pb.Op.Value(f"OP_{op.upper()}") for op in OPS}
_PB_TO_OP = {v: k for k, v in _OP_TO_PB.items()}
_KIND_TO_PB = {k: pb.Kind.Value(f"KIND_{k.upper()}") for k in KINDS}
_PB_TO_KIND = {v: k for k, v in _KIND_TO_PB.items()}
_STATE_TO_PB = {s: pb.AnchorState.Value(f"ANCHOR_STATE_{s.upper()}") for s in ANCHOR_STATES}
_PB_TO_STATE = {v: k for k, v in _STATE_TO_PB.items()}


def _string(raw: dict[str, Any], key: str, limit: int, required: bool) -> str:
    value = raw.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise MentorError(f"annotation field {key!r}: {value!r} is not a string")
    if required and not value:
        raise MentorError(f"annotation field {key!r} is missing or empty")
    if len(value) > limit:
        raise MentorError(f"annotation field {key!r}: {len(value)} characters, at most {limit}")
    return value


def _number(raw: dict[str, Any], key: str, default: float = 0.0) -> float:
    value = raw.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MentorError(f"annotation field {key!r}: {value!r} is not a finite number")
    return float(value)


def _choice(raw: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = raw.get(key) or default
    if value not in choices:
        raise MentorError(f"annotation field {key!r}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _points(raw: dict[str, Any], key: str, dim: int, nullable: bool) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise MentorError(f"annotation field {key!r}: expected a list of {dim}-number lists")
    if len(value) > MAX_POINTS:
        raise MentorError(f"annotation field {key!r}: {len(value)} points, at most {MAX_POINTS}")
    out: list[Any] = []
    for i, p in enumerate(value):
        if p is None and nullable:
            out.append(None)
            continue
        if (not isinstance(p, list | tuple) or len(p) != dim
                or not all(isinstance(c, int | float) and not isinstance(c, bool)
                           and math.isfinite(c) for c in p)):
            raise MentorError(f"annotation field {key!r}[{i}]: {p!r} is not {dim} finite numbers")
        if dim == 2 and not all(COORD_RANGE[0] <= c <= COORD_RANGE[1] for c in p):
            raise MentorError(
                f"annotation field {key!r}[{i}]: {p!r} is outside the normalised image "
                f"range (expected x, y in [0, 1])"
            )
        out.append([float(c) for c in p])
    return out


def validate_event(raw: Any, role: str, author: str) -> dict[str, Any]:
    """Check a client's event and return its canonical form with ``author``/``role`` set.

    Raises
    ------
    MentorError
        A malformed field (named, with the value and what was expected) or a role that may
        not make this operation (observers never annotate; ``anchor`` and
        ``hide_all``/``show_all``/``clear_all`` are the surgeon's).
    """
    if not isinstance(raw, dict):
        raise MentorError(f"annotation event: expected a JSON object, got {type(raw).__name__}")
    if role == "observer":
        raise MentorError("observers cannot annotate")
    op = _choice(raw, "op", OPS, "")
    if op in SURGEON_ONLY_OPS and role != "surgeon":
        raise MentorError(f"annotation op {op!r} is the surgeon's only (role {role!r})")
    event = {
        "event_id": _string(raw, "event_id", MAX_ID, True),
        "op": op,
        "annotation_id": _string(raw, "annotation_id", MAX_ID, op not in SESSION_WIDE_OPS),
        "author": author,
        "role": role,
        "kind": _choice(raw, "kind", KINDS, "freehand"),
        "color": _string(raw, "color", 7, False) or "#ff0000",
        "text": _string(raw, "text", MAX_TEXT, False),
        "frame_id": int(_number(raw, "frame_id")),
        "capture_time": _number(raw, "capture_time"),
        "points": _points(raw, "points", 2, False),
        "anchors_ref_mm": _points(raw, "anchors_ref_mm", 3, True),
        "anchor_state": _choice(raw, "anchor_state", ANCHOR_STATES, "pending"),
        "client_time": _number(raw, "client_time"),
    }
    if not _COLOR.match(event["color"]):
        raise MentorError(f"annotation field 'color': {event['color']!r} is not '#rrggbb'")
    if not 0 <= event["frame_id"] < 2**32:
        raise MentorError(f"annotation field 'frame_id': {event['frame_id']} is not a uint32")
    if op == "create" and not event["points"]:
        raise MentorError("annotation op 'create' needs at least one point")
    return event


def event_to_pb(event: dict[str, Any]) -> pb.AnnotationEvent:
    """The protobuf message of a canonical (validated) event."""
    msg = pb.AnnotationEvent(
        event_id=event["event_id"], op=_OP_TO_PB[event["op"]],
        annotation_id=event.get("annotation_id", ""), author=event.get("author", ""),
        role=ROLE_TO_PB.get(event.get("role", ""), pb.ROLE_UNSPECIFIED),
        kind=_KIND_TO_PB[event.get("kind", "freehand")], color=event.get("color", ""),
        text=event.get("text", ""), frame_id=int(event.get("frame_id", 0)),
        capture_time=float(event.get("capture_time", 0.0)),
        anchor_state=_STATE_TO_PB[event.get("anchor_state", "pending")],
        client_time=float(event.get("client_time", 0.0)),
    )
    msg.points.extend(pb.Point2(x=x, y=y) for x, y in event.get("points", []))
    for a in event.get("anchors_ref_mm", []):
        msg.anchors_ref_mm.append(
            pb.AnchorPoint(hit=False) if a is None
            else pb.AnchorPoint(hit=True, x_mm=a[0], y_mm=a[1], z_mm=a[2])
        )
    return msg


def event_from_pb(msg: pb.AnnotationEvent) -> dict[str, Any]:
    """The JSON form of a protobuf event (not yet validated; unknown enums become '')."""
    return {
        "event_id": msg.event_id,
        "op": _PB_TO_OP.get(msg.op, ""),
        "annotation_id": msg.annotation_id,
        "author": msg.author,
        "role": PB_TO_ROLE.get(msg.role, ""),
        "kind": _PB_TO_KIND.get(msg.kind, "freehand"),
        "color": msg.color,
        "text": msg.text,
        "frame_id": msg.frame_id,
        "capture_time": msg.capture_time,
        "points": [[p.x, p.y] for p in msg.points],
        "anchors_ref_mm": [[a.x_mm, a.y_mm, a.z_mm] if a.hit else None
                           for a in msg.anchors_ref_mm],
        "anchor_state": _PB_TO_STATE.get(msg.anchor_state, "pending"),
        "client_time": msg.client_time,
    }
