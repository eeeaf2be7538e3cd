"""``scrubin replay FILE --out video.mp4``: render a recorded mentoring session to MP4."""

from __future__ import annotations

import argparse
from pathlib import Path

from scrubin.commands._common import require_output_folders


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``replay`` command."""
    p = sub.add_parser(
        "replay", help="render a recorded mentoring session (MCAP) to an MP4 video",
        description="Decode the H.264 video of a session recording made by the surgeon "
        "station (MCAP, opens in Foxglove Studio too), crop the frame-id strip and draw the "
        "annotations as they were on each frame: anchored strokes re-projected with that "
        "frame's recorded pose, hidden while tracking was stale or lost. Timestamps are the "
        "recorded capture times.")
    p.add_argument("recording", type=Path, metavar="FILE", help="the .mcap recording")
    p.add_argument("--out", type=Path, required=True, metavar="VIDEO.mp4",
                   help="the MP4 file to write (replaced when complete)")
    p.add_argument("--annotations", choices=("auto", "draw", "none"), default="auto",
                   help="auto: draw them unless the station drew them into the video "
                   "(default); draw: always; none: the video as recorded")
    p.add_argument("--no-voice", dest="voices", action="store_false",
                   help="leave the recorded voices out (default: mixed into one AAC track)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the replay report here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay ``args.recording`` into ``args.out``; print a one-line summary."""
    require_output_folders(("--out", args.out), ("--json", args.json))
    from scrubin.workflows.replay import run_replay

    rep = run_replay(args.recording, args.out, args.annotations, args.json, args.voices)
    states = ", ".join(f"{k} {v}" for k, v in sorted(rep["tracking"].items()))
    how = "drawn" if rep["drew_annotations"] else "as recorded"
    print(f"{rep['out']}: {rep['frames']} frames, {rep['duration_s']:.2f} s, "
          f"{rep['events']} annotation events ({how}), {len(rep['voices'])} voices, "
          f"tracking {states}")
    return 0
