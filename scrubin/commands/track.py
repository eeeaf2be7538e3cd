"""``scrubin track VIDEO --camera camera.json (--marker-size MM | --body body.json) --json OUT``."""

from __future__ import annotations

import argparse
from pathlib import Path

from scrubin.commands._common import require_output_folders
from scrubin.registration.tracking_state import DEFAULT_LIMITS  # light: no cv2/numpy


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``track`` command."""
    parser = sub.add_parser(
        "track",
        help="track an ArUco marker or a multi-marker body through a video",
        description=(
            "Track one ArUco marker (--marker-size, optional --marker-id; default: the lowest "
            "id seen first) or a rigid body (--body JSON, see registration/bodies.py) in every "
            "frame of VIDEO. Writes T_CAMERA_<target> per frame (mm, 4x4 row-major), with "
            "state LIVE/HELD/STALE/LOST on the video's presentation timestamps, reprojection "
            "RMS "
            "and the number of markers/corners used."
        ),
    )
    parser.add_argument("video", type=Path, metavar="VIDEO", help="video file (PyAV/FFmpeg)")
    parser.add_argument("--camera", required=True, type=Path, help="camera.json (intrinsics)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--marker-size", type=float, metavar="MM",
                        help="side of the marker's black square in mm")
    target.add_argument("--body", type=Path, metavar="JSON", help="rigid body file")
    parser.add_argument("--dictionary", default=None, metavar="NAME",
                        help="ArUco dictionary, e.g. DICT_4X4_50 (default: the body's, or "
                             "DICT_4X4_50)")
    parser.add_argument("--marker-id", type=int, default=None, metavar="ID",
                        help="marker id to track (single-marker mode)")
    parser.add_argument("--json", required=True, type=Path, metavar="OUT", help="output JSON")
    parser.add_argument("--stale-after", type=float, default=DEFAULT_LIMITS.stale_after_s,
                        metavar="S", help="seconds without the target before it is stale "
                        "(default %(default)s, as scrubin overlay)")
    parser.add_argument("--lost-after", type=float, default=DEFAULT_LIMITS.lost_after_s,
                        metavar="S", help="seconds without the target before it is lost "
                        "(default %(default)s, as scrubin overlay)")
    parser.add_argument("--filter", action=argparse.BooleanOptionalAction, default=True,
                        help="One-Euro filtering of the poses (default on)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Track and write the JSON."""
    require_output_folders(("--json", args.json))
    from scrubin.registration.bodies import RigidBody
    from scrubin.registration.camera import CameraModel
    from scrubin.registration.tracker import MarkerTracker
    from scrubin.workflows.track import summary, track_video, write_track_json

    camera = CameraModel.load(args.camera)
    body = RigidBody.load(args.body) if args.body is not None else None
    dictionary = args.dictionary or (body.dictionary if body is not None else None)
    tracker = MarkerTracker(
        camera,
        dictionary or "DICT_4X4_50",
        marker_size_mm=args.marker_size,
        marker_id=args.marker_id,
        body=body,
        stale_after_s=args.stale_after,
        lost_after_s=max(args.lost_after, args.stale_after),
        filter=args.filter,
    )
    results = track_video(tracker, args.video)
    meta = {"video": str(args.video), "camera": str(args.camera), "target": tracker.name,
            "dictionary": dictionary or "DICT_4X4_50", "stale_after_s": args.stale_after,
            "lost_after_s": max(args.lost_after, args.stale_after), "filter": args.filter,
            "unit": "mm", "pose": f"T_CAMERA_{tracker.name}"}
    write_track_json(args.json, results, meta)
    print(f"{summary(results)} -> {args.json}")
    return 0
