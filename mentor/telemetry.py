"""Telemetry frames: the protobuf :class:`TelemetryFrame` <-> the JSON of the "meta" channel.

The JSON form is the one of mentor/DESIGN.md ("meta" data channel): ``K`` = [fx, fy, cx, cy]
(pixels), ``dist`` = OpenCV (k1, k2, p1, p2, k3), ``T_camera_ref`` / ``T_ref_ct`` 16 numbers
row-major in millimetres (``p_camera = T_camera_ref [p_ref; 1]``) or null, ``tracking`` one
of LIVE/HELD/STALE/LOST, ``fre_mm`` / ``tre_mm`` or null, ``stages_ms`` per stage in ms.
"""

from __future__ import annotations

import math
from typing import Any

from scrubin.mentor.errors import MentorError
from scrubin.protos import mentor_pb2 as pb

TRACKING = ("LIVE", "HELD", "STALE", "LOST")


def check_frame(frame: pb.TelemetryFrame) -> None:
    """Refuse a frame whose transforms are not 16 numbers or whose intrinsics are malformed."""
    for name in ("T_camera_ref", "T_ref_ct"):
        if frame.HasField(name) and len(getattr(frame, name).m) != 16:
            raise MentorError(
                f"telemetry frame {frame.frame_id}: {name} has {len(getattr(frame, name).m)} "
                "numbers, expected 16 (4x4 row-major, mm)"
            )
    if frame.HasField("intrinsics") and len(frame.intrinsics.dist) not in (0, 4, 5, 8, 12, 14):
        raise MentorError(
            f"telemetry frame {frame.frame_id}: intrinsics.dist has "
            f"{len(frame.intrinsics.dist)} numbers, expected 0, 4, 5, 8, 12 or 14 (OpenCV)"
        )
    if frame.tracking not in pb.TrackingState.values():
        raise MentorError(f"telemetry frame {frame.frame_id}: tracking state {frame.tracking} is "
                          f"not one of {', '.join(pb.TrackingState.keys())}")
    k = frame.intrinsics
    numbers = {"capture_time": [frame.capture_time], "latency_ms": [frame.latency_ms],
               "fre_mm": [frame.fre_mm], "tre_mm": [frame.tre_mm],
               "T_camera_ref": frame.T_camera_ref.m, "T_ref_ct": frame.T_ref_ct.m,
               "intrinsics": [k.fx, k.fy, k.cx, k.cy, *k.dist],
               "stages_ms": list(frame.stages_ms.values())}
    for name, values in numbers.items():  # pages parse the JSON form: NaN/inf are not JSON
        if not all(math.isfinite(v) for v in values):
            raise MentorError(f"telemetry frame {frame.frame_id}: {name} holds NaN or infinity, "
                              "expected finite numbers")


def frame_to_json(frame: pb.TelemetryFrame) -> dict[str, Any]:
    """The "meta"-style JSON object of a telemetry frame (what the WebSocket sends)."""
    k = frame.intrinsics
    state = pb.TrackingState.Name(frame.tracking).removeprefix("TRACKING_")
    return {
        "frame_id": frame.frame_id,
        "capture_time": frame.capture_time,
        "width": frame.width,
        "height": frame.height,
        "K": [k.fx, k.fy, k.cx, k.cy] if frame.HasField("intrinsics") else None,
        "dist": list(k.dist),
        "T_camera_ref": list(frame.T_camera_ref.m) if frame.HasField("T_camera_ref") else None,
        "T_ref_ct": list(frame.T_ref_ct.m) if frame.HasField("T_ref_ct") else None,
        "tracking": None if state == "UNSPECIFIED" else state,
        "fre_mm": frame.fre_mm if frame.HasField("fre_mm") else None,
        "tre_mm": frame.tre_mm if frame.HasField("tre_mm") else None,
        "stages_ms": dict(frame.stages_ms),
        "latency_ms": frame.latency_ms,
    }


def frame_from_json(meta: dict[str, Any]) -> pb.TelemetryFrame:
    """A telemetry frame from the "meta" JSON (the station uses it to publish)."""
    frame = pb.TelemetryFrame(
        frame_id=int(meta["frame_id"]), capture_time=float(meta.get("capture_time", 0.0)),
        width=int(meta.get("width", 0)), height=int(meta.get("height", 0)),
        latency_ms=float(meta.get("latency_ms", 0.0) or 0.0),
    )
    if meta.get("K") is not None:
        fx, fy, cx, cy = (float(v) for v in meta["K"])
        frame.intrinsics.CopyFrom(pb.Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy,
                                                dist=[float(v) for v in meta.get("dist") or []]))
    for name in ("T_camera_ref", "T_ref_ct"):
        if meta.get(name) is not None:
            getattr(frame, name).m.extend(float(v) for v in meta[name])
    tracking = meta.get("tracking")
    if tracking is not None:
        if tracking not in TRACKING:
            raise MentorError(f"telemetry field 'tracking': {tracking!r} is not one of "
                              f"{', '.join(TRACKING)}")
        frame.tracking = pb.TrackingState.Value(f"TRACKING_{tracking}")
    for name in ("fre_mm", "tre_mm"):
        if meta.get(name) is not None:
            setattr(frame, name, float(meta[name]))
    for stage, ms in (meta.get("stages_ms") or {}).items():
        frame.stages_ms[str(stage)] = float(ms)
    check_frame(frame)
    return frame
