"""``scrubin surgeon --mentor HOST:PORT --token T [overlay options]``: the surgeon station.

Every ``scrubin overlay`` option means the same here (the options are taken from the overlay
command's parser), plus the mentoring link: the station publishes the overlay view to the
session's viewers (WebRTC, encoded once) and draws and anchors the mentor's annotations.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from scrubin.commands._common import require_output_folders


def _overlay_parser() -> argparse.ArgumentParser:
    """The ``overlay`` command's parser (its options are the surgeon's too)."""
    from scrubin.commands import overlay

    tmp = argparse.ArgumentParser(add_help=False)
    overlay.register(tmp.add_subparsers())
    return tmp._subparsers._group_actions[0].choices["overlay"]  # type: ignore[union-attr]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``surgeon`` command."""
    from scrubin.mentor.state import default_state_dir

    parser = sub.add_parser(
        "surgeon", parents=[_overlay_parser()], conflict_handler="resolve",
        help="the overlay pipeline published to a remote-mentoring session (surgeon station)",
        description=(
            "Run the AR overlay exactly as 'scrubin overlay' (same options) and publish the "
            "surgeon's view to a mentoring session: join 'scrubin serve' over gRPC/TLS with "
            "the surgeon token, answer every viewer's WebRTC offer (H.264 encoded once for "
            "all viewers, Opus voice both ways, per-frame pose and intrinsics on the 'meta' "
            "data channel keyed by the frame id in the strip under the picture), draw the "
            "mentor's annotations into the view and anchor each stroke on the registered "
            "models at the pose of the frame it was drawn on. On a terminal: 'h' + Enter "
            "hides/shows all mentor annotations, 'c' + Enter clears them."
        ),
    )
    link = parser.add_argument_group("mentoring link")
    link.add_argument("--mentor", required=True, metavar="HOST:PORT",
                      help="the server's gRPC address (as 'scrubin serve' prints it)")
    link.add_argument("--token", default=os.environ.get("SCRUBIN_TOKEN"), metavar="T",
                      help="the session's surgeon token (default: $SCRUBIN_TOKEN, which keeps "
                           "it out of the process list)")
    link.add_argument("--ca-cert", type=Path, default=default_state_dir() / "tls-cert.pem",
                      metavar="F", help="the server's certificate (default: %(default)s)")
    link.add_argument("--client-cert", type=Path, metavar="F",
                      help="client certificate for a server with mutual TLS (scrubin certs)")
    link.add_argument("--client-key", type=Path, metavar="F", help="its private key")
    link.add_argument("--name", default="station", help="display name (author 'surgeon:NAME')")
    link.add_argument("--ice-host", action="append", default=[], metavar="ADDR",
                      dest="ice_hosts", help="limit WebRTC host candidates to ADDR "
                                             "(repeatable; default: what the server advises)")
    link.add_argument("--ice-server", action="append", default=[], metavar="URL",
                      dest="ice_servers", help="STUN/TURN URL (repeatable; default: the "
                                               "server's list, none = host candidates only)")
    link.add_argument("--audio-in", default="none", metavar="SPEC",
                      help="theatre microphone: none, tone:HZ, pulse:DEVICE, alsa:DEVICE or a "
                           "media file (default none)")
    link.add_argument("--record-audio", type=Path, metavar="DIR",
                      help="record each viewer's voice to DIR/mentor-voice-PEER.ogg")
    link.add_argument("--record", type=Path, metavar="FILE.mcap",
                      help="record the session (video, poses, annotations, quality, latency) "
                           "to FILE.mcap; only if it was created with --record")
    link.add_argument("--control-fifo", type=Path, metavar="PATH",
                      help="headless surgeon controls: a named pipe (made 0600 if missing) "
                           "read line by line: hide, show, toggle, clear (e.g. echo hide > "
                           "PATH); the window keys h / c and the terminal do the same")
    link.add_argument("--bitrate", type=int, metavar="BPS",
                      help="H.264 target bit rate (default 6000000, from bench_encode: SSIM "
                           ">= 0.95)")
    link.add_argument("--preset", choices=("ultrafast", "superfast", "veryfast"),
                      help="x264 preset (default superfast, from bench_encode)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the station and print one summary line."""
    from scrubin.mentor.errors import MentorError

    require_output_folders(("--out", args.out), ("--json", args.json_path),
                           ("--scene", args.scene))
    if not args.token:
        raise MentorError("--token: give the surgeon token (or set SCRUBIN_TOKEN)")
    from scrubin.workflows.overlay import OverlayRequest
    from scrubin.workflows.surgeon import SurgeonRequest, run_surgeon, summary_line

    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(OverlayRequest)
          if hasattr(args, f.name)}
    req = SurgeonRequest(OverlayRequest(**kw), args.mentor, args.token, args.ca_cert,
                         args.name, list(args.ice_hosts), list(args.ice_servers), args.audio_in,
                         args.record_audio, args.bitrate, args.preset, controls=True,
                         record=args.record, client_cert=args.client_cert,
                         client_key=args.client_key, control_fifo=args.control_fifo)
    report = run_surgeon(req)
    if args.json_path is not None:
        from scrubin.imaging.fileio import write_json_atomic

        write_json_atomic(args.json_path, report)
    print(f"{summary_line(report)} -> {args.out}")
    return 0
