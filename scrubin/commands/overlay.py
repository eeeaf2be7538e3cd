"""``scrubin overlay --source VIDEO|camera:N|synthetic --out overlay.mp4 ...`` (AR overlay)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scrubin.commands._common import require_output_folders


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``overlay`` command."""
    parser = sub.add_parser(
        "overlay",
        help="draw registered CT models onto live/recorded video (AR overlay) with a HUD",
        description=(
            "Run frames from a camera (camera:N), a video file or the synthetic surgical scene "
            "through marker tracking, T_CAMERA_CT = T_CAMERA_REF @ T_REF_CT, the overlay "
            "renderer (hidden while tracking is stale/lost) and the HUD, into an H.264 MP4. "
            "--source synthetic needs no other input and reports the per-frame reprojection "
            "error of ground-truth points. A tracked pointer (--tool-body, --tool-tip) is "
            "checked against planned landmarks (--landmark; the synthetic scene brings its "
            "own pointer and landmark); --scene writes models and transforms as one GLB."
        ),
    )
    parser.add_argument("--source", required=True, metavar="SOURCE",
                        help="video file, camera:N (OpenCV device N) or 'synthetic'")
    parser.add_argument("--camera", type=Path, metavar="JSON", help="camera.json (intrinsics)")
    parser.add_argument("--model", type=Path, action="append", default=[], metavar="MESH",
                        dest="models", help="model file in CT/LPS mm (GLB/STL/PLY/OBJ); "
                                            "repeat for several")
    parser.add_argument("--allow-unknown-provenance", action="store_true",
                        help="accept --model files without a declared frame or "
                             "FrameOfReferenceUID (e.g. STL); warns that the Frame-of-"
                             "Reference guard is then off for them")
    parser.add_argument("--registration", type=Path, metavar="JSON",
                        help="T_REF_CT (transform JSON or a 'scrubin register' report)")
    parser.add_argument("--out", required=True, type=Path, metavar="MP4",
                        help="output video (H.264)")
    parser.add_argument("--stereo", type=Path, metavar="JSON",
                        help="display.json: also write OUT_stereo.mp4 with both eyes")
    parser.add_argument("--igtl-port", type=int, metavar="PORT",
                        help="stream poses over OpenIGTLink on 127.0.0.1:PORT (0 = any)")
    parser.add_argument("--json", type=Path, metavar="OUT", dest="json_path",
                        help="report: per-frame stage times, tracking state, reprojection")
    parser.add_argument("--frames", type=int, metavar="N", help="stop after N frames")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--marker-size", type=float, metavar="MM",
                        help="side of the reference marker's black square (mm)")
    target.add_argument("--body", type=Path, metavar="JSON",
                        help="reference body file (registration/bodies.py format)")
    parser.add_argument("--dictionary", metavar="NAME",
                        help="ArUco dictionary (default: the body's, or DICT_4X4_50)")
    parser.add_argument("--filter", action=argparse.BooleanOptionalAction, default=True,
                        help="One-Euro pose filter on marker control points (default on: "
                             "cuts static jitter ~3.5x without lag on fast motion)")
    parser.add_argument("--supersample", type=int, default=1, choices=(1, 2, 3),
                        help="synthetic scene: rays per pixel side over the image (default 1; "
                             "the marker plate always gets at least 2)")
    parser.add_argument("--tool-body", type=Path, metavar="JSON",
                        help="tracked pointer's body file (registration/bodies.py format)")
    parser.add_argument("--tool-tip", metavar="X,Y,Z|PIVOT.json",
                        help="pointer tip offset in the tool frame (mm), or the JSON of "
                             "'scrubin calibrate pivot'")
    parser.add_argument("--landmark", action="append", default=[], metavar="NAME=X,Y,Z",
                        dest="landmarks", help="planned landmark (CT LPS mm) for the pointer "
                                               "check; repeat for several (nearest is shown)")
    parser.add_argument("--scene", type=Path, metavar="GLB",
                        help="at the end, write the scene (models in REF + last live "
                             "T_REF_CT, T_REF_CAMERA, T_REF_TOOL) as one GLB")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the overlay and print one summary line."""
    require_output_folders(("--out", args.out), ("--json", args.json_path),
                           ("--scene", args.scene))
    from scrubin.workflows.overlay import OverlayRequest, run_overlay, summary_line

    req = OverlayRequest(
        source=args.source, out=args.out, camera=args.camera, models=list(args.models),
        registration=args.registration, stereo=args.stereo, igtl_port=args.igtl_port,
        json_path=args.json_path, frames=args.frames, marker_size=args.marker_size,
        dictionary=args.dictionary, body=args.body, filter=args.filter,
        supersample=args.supersample, tool_body=args.tool_body, tool_tip=args.tool_tip,
        landmarks=list(args.landmarks), scene=args.scene,
        allow_unknown_provenance=args.allow_unknown_provenance,
    )
    report = run_overlay(req)
    print(f"{summary_line(report)} -> {args.out}")
    return 0
