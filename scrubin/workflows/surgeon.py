"""Workflow of ``scrubin surgeon``: the overlay pipeline published to a mentoring session.

The same sources, models, registration and tracking options as ``scrubin overlay`` (the
overlay workflow builds the pipeline); in addition the station:

* joins the session on ``scrubin serve``'s gRPC address with the surgeon token
  (:mod:`scrubin.mentor.station_link`), TLS trusting ``--ca-cert`` (default: the server's
  state folder ``tls-cert.pem``, as ``scrubin session`` uses);
* is the media server (:mod:`scrubin.mentor.station`): one H.264 encoder whatever the
  number of viewers, one peer connection per viewer, Opus voice both ways; when the server
  runs with ``--sfu`` the station's link also publishes that one stream into the session's
  Janus room by itself, and again after a reconnect (:mod:`scrubin.mentor.sfu_station`);
* draws the mentor's annotations into the surgeon's own view (window and ``--out`` video)
  and anchors each stroke on the registered models at the pose of the frame it was drawn on.

Threads: the frame loop (tracking, render, HUD, annotation drawing, encode) runs on the
calling thread; WebRTC and gRPC run on an asyncio loop in a second thread. The overlay's
numba kernels release the GIL (``nogil=True``), so a render does not stall the network.
Surgeon controls (mentor/surgeon_controls.py; the server accepts them from the surgeon only):
``h`` hides / shows every mentor annotation and ``c`` clears them, as keys in the station's
overlay window or + Enter on its terminal; a headless station takes the same commands as lines
on a named pipe (``control_fifo``, ``scrubin surgeon --control-fifo PATH``).
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.mentor.errors import MentorError
from scrubin.workflows.loop_thread import LoopThread
from scrubin.workflows.overlay import OverlayRequest

_TARGET = re.compile(r"^(?:grpcs://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})/?$")


@dataclass
class SurgeonRequest:
    """What ``scrubin surgeon`` was asked to do."""

    overlay: OverlayRequest
    mentor: str
    token: str
    ca_cert: Path
    name: str = "station"
    ice_hosts: list[str] = field(default_factory=list)
    ice_servers: list[str] = field(default_factory=list)
    audio_in: str = "none"
    record_audio: Path | None = None
    bitrate: int | None = None
    preset: str | None = None
    controls: bool = False
    record: Path | None = None  # session recording (MCAP), mentor/recording.py
    client_cert: Path | None = None  # mutual TLS (scrubin certs ... --client NAME)
    client_key: Path | None = None
    control_fifo: Path | None = None  # headless surgeon controls (mentor/surgeon_controls.py)


def grpc_target(spec: str) -> str:
    """``HOST:PORT`` of ``--mentor`` (``grpcs://HOST:PORT`` accepted)."""
    m = _TARGET.match(spec.strip()) if isinstance(spec, str) else None
    if m is None or not 0 < int(m.group(2)) < 65536:
        hint = (" (that is the web address; give the gRPC address 'scrubin serve' prints, "
                "e.g. 127.0.0.1:50051)" if str(spec).startswith(("http://", "https://")) else "")
        raise MentorError(f"--mentor {spec!r}: expected HOST:PORT of the server's gRPC side"
                          f"{hint}")
    return f"{m.group(1)}:{m.group(2)}"


def validate(req: SurgeonRequest) -> str:
    """Checks before any work; returns the gRPC target."""
    from scrubin.mentor.ice import restrict_host_addresses
    from scrubin.workflows.overlay import validate as validate_overlay

    target = grpc_target(req.mentor)
    if not req.token or not re.fullmatch(r"[A-Za-z0-9_-]{16,}", req.token):
        raise MentorError("--token: expected the surgeon token 'scrubin session new' printed "
                          "(URL-safe characters)")
    if not req.ca_cert.is_file():
        raise MentorError(f"--ca-cert {req.ca_cert}: server certificate not found")
    if (req.client_cert is None) != (req.client_key is None):
        raise MentorError("--client-cert and --client-key go together")
    for opt, p in (("--client-cert", req.client_cert), ("--client-key", req.client_key)):
        if p is not None and not p.is_file():
            raise MentorError(f"{opt} {p}: file not found")
    if req.record_audio is not None and not req.record_audio.is_dir():
        raise MentorError(f"--record-audio {req.record_audio}: folder does not exist")
    if req.record is not None and (req.record.suffix != ".mcap" or req.record.exists()
                                   or not req.record.parent.is_dir()):
        raise MentorError(f"--record {req.record}: expected a new .mcap file in an existing "
                          "folder")
    if req.ice_hosts:
        restrict_host_addresses(req.ice_hosts)  # checks the addresses
        restrict_host_addresses(None)
    validate_overlay(req.overlay)
    return target


def _view_size(req: OverlayRequest) -> tuple[int, int]:
    if req.source == "synthetic":
        return req.width, req.height
    from scrubin.registration.camera import CameraModel

    cam = CameraModel.load(req.camera)
    return cam.width, cam.height


def run_surgeon(req: SurgeonRequest) -> dict[str, Any]:
    """Run the overlay with the mentor link (module docstring); the overlay report + "mentor"."""
    from scrubin.mentor.anchor import Anchorer
    from scrubin.mentor.annotations_draw import AnnotationBoard
    from scrubin.mentor.client import MentorClient
    from scrubin.mentor.link_status import LinkMonitor
    from scrubin.mentor.media import DEFAULT_BITRATE, DEFAULT_PRESET, StreamEncoder, VideoFanout
    from scrubin.mentor.media_audio import AudioSource
    from scrubin.mentor.station import SurgeonStation
    from scrubin.mentor.station_link import StationLink
    from scrubin.mentor.station_sink import StationSink
    from scrubin.mentor.strip import STRIP_HEIGHT
    from scrubin.mentor.surgeon_controls import SurgeonControls, close_fifo, make_fifo
    from scrubin.workflows.overlay import run_overlay

    target = validate(req)
    if req.control_fifo is not None:
        make_fifo(req.control_fifo)   # refused before any work when not a pipe
    width, height = _view_size(req.overlay)
    if width % 2 or height % 2:
        raise MentorError(f"the camera image is {width}x{height}: the H.264 stream needs even "
                          "sizes")
    audio = AudioSource(req.audio_in)
    encoder = StreamEncoder(width, height + STRIP_HEIGHT, 30.0, req.bitrate or DEFAULT_BITRATE,
                            req.preset or DEFAULT_PRESET)
    rec_dir = req.record_audio

    def record(peer_id: str) -> str | None:
        return str(rec_dir / f"mentor-voice-{peer_id}.ogg") if rec_dir is not None else None

    station = SurgeonStation(VideoFanout(encoder), audio, req.ice_servers,
                             record_audio=record if rec_dir is not None else None)
    board = AnnotationBoard()
    loop = LoopThread()
    client = link = None
    stop = threading.Event()
    viewers_peak = 0
    controls: Any = None
    monitors: list[Any] = []

    def make_sinks(camera: Any, structures: Any, registration: Any) -> list[Any]:
        meshes = [(s.vertices_ct_mm, s.faces) for s in structures]
        link.anchorer = Anchorer(meshes) if meshes else None

        def on_frame(meta: Any) -> None:
            nonlocal viewers_peak
            viewers_peak = max(viewers_peak, len(station.peers))
            link.frame_sent(meta)

        sink = StationSink(station, board, camera, registration, on_frame,
                           pace=not req.overlay.source.startswith("camera:"))
        sink.on_key = controls.key  # keys in the surgeon's overlay window
        # the mentoring link's state drawn into every frame (server link, viewers, staleness)
        sink.status = LinkMonitor(station, client.channel, link=link)
        loop.loop.call_soon_threadsafe(sink.status.start)
        monitors.append(sink.status)
        return [sink]

    try:
        async def connect() -> tuple[Any, Any]:
            c = MentorClient(target, req.token, req.ca_cert, req.name, req.client_cert,
                             req.client_key)
            lk = StationLink(station, c, board, None)
            if req.record is not None:  # consent checked on joining, before any event
                from scrubin.mentor.recording import Recorder
                from scrubin.mentor.recording_audio import tap_track

                def on_join(j: Any) -> None:
                    station.recorder = Recorder(req.record, j.recording, j.session_id,
                                                j.author, (encoder.width, encoder.height)).start()
                    mic = audio.track(buffered=True)  # the theatre microphone, every frame
                    if mic is not None:
                        tap_track(mic, station.recorder, "station")

                lk.on_join = on_join
            try:
                await lk.start(req.ice_hosts or None)
            except BaseException:
                await c.close()
                raise
            return c, lk

        try:
            client, link = loop.call(connect(), 30)
        except TimeoutError:
            raise MentorError(f"--mentor {target}: no answer from the server within 30 s"
                              ) from None
        controls = SurgeonControls(link, loop.loop, board=board)
        if req.controls and sys.stdin.isatty():
            controls.watch_terminal(stop)
        if req.control_fifo is not None:
            controls.watch_fifo(req.control_fifo, stop)
        t0 = time.perf_counter()
        report = run_overlay(req.overlay, extra_sinks=make_sinks)
        enc = np.asarray(encoder.encode_ms[-900:] or [np.nan])
        report["mentor"] = {
            "session_id": link.session_id, "author": link.author, "recording": link.recording,
            "frames_sent": station.sent_frames, "viewers_peak": viewers_peak,
            "encoder": {"codec": "H.264", "preset": encoder.preset, "bitrate": encoder.bitrate,
                        "size": [encoder.width, encoder.height], "frames": encoder.frames,
                        "keyframes": encoder.keyframes,
                        "encode_ms_p50": round(float(np.nanmedian(enc)), 3),
                        "encode_ms_p95": round(float(np.nanpercentile(enc, 95)), 3)},
            "annotations_applied": board.applied, "anchors_sent": link.anchored,
            "anchor_failures": link.anchor_failures[-20:], "errors": link.errors[-20:],
            "wall_s": round(time.perf_counter() - t0, 3),
        }
        if link.sfu is not None:   # serve --sfu: published into Janus (mentor/sfu_station.py)
            report["mentor"]["sfu"] = {"state": link.sfu.state, "publishes": link.sfu.publishes,
                                       "keyframe_requests": link.sfu.keyframe_requests,
                                       "errors": link.sfu.errors[-20:]}
        rec, station.recorder = station.recorder, None
        if rec is not None:
            st = rec.close()
            report["mentor"]["recording_file"] = {
                "path": str(rec.path), "frames": st.frames, "events": st.events,
                "dropped_frames": st.dropped_frames}
        return report
    finally:
        stop.set()
        close_fifo(req.control_fifo)
        rec, station.recorder = station.recorder, None
        if rec is not None:  # what was recorded before the failure stays readable
            with contextlib.suppress(Exception):
                rec.close()
        if link is not None:
            with contextlib.suppress(Exception):
                loop.call(link.close(), 10)
        for mon in monitors:
            with contextlib.suppress(Exception):
                loop.call(mon.stop(), 5)
        if client is not None:
            with contextlib.suppress(Exception):
                loop.call(client.close(), 5)
        audio.close()
        loop.stop()


def summary_line(report: dict[str, Any]) -> str:
    """The overlay's summary plus the mentoring figures."""
    from scrubin.workflows.overlay import summary_line as overlay_line

    m = report.get("mentor", {})
    e = m.get("encoder", {})
    return (f"{overlay_line(report)}; mentoring session {m.get('session_id')}: "
            f"{m.get('frames_sent')} frames sent, up to {m.get('viewers_peak')} viewers, "
            f"encode p50 {e.get('encode_ms_p50')} ms, {m.get('anchors_sent')} strokes anchored")
