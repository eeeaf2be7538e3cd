"""Fuzz targets: one entry per parser that reads untrusted bytes.

Each target takes the raw bytes of one input, feeds them through the public loading function a
user or a peer reaches (a file written with the right suffix, a message decoded the way the
server decodes it) and lets only the stage's documented error classes escape
(:class:`~scrubin.imaging.errors.ImagingError`, :class:`~scrubin.registration.errors.
RegistrationError`, :class:`~scrubin.overlay.errors.OverlayError`,
:class:`~scrubin.mentor.errors.MentorError`). Anything else leaving a target is a crash; an
input that runs past the time or memory bound is a hang / out-of-memory (see
:mod:`fuzz.runner`).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``run(data, workdir)`` and the exceptions it may raise."""

    name: str
    run: Callable[[bytes, Path], None]
    allowed: Callable[[], tuple[type[BaseException], ...]]
    text: bool = False  # seeds are text: the mutator also applies token-level mutations


def _imaging_errors() -> tuple[type[BaseException], ...]:
    from scrubin.imaging.errors import ImagingError

    return (ImagingError,)


def _registration_errors() -> tuple[type[BaseException], ...]:
    from scrubin.registration.errors import RegistrationError

    return (RegistrationError,)


def _overlay_errors() -> tuple[type[BaseException], ...]:
    from scrubin.overlay.errors import OverlayError

    return (OverlayError,)


def _mentor_errors() -> tuple[type[BaseException], ...]:
    from google.protobuf.message import DecodeError

    from scrubin.mentor.errors import MentorError

    # DecodeError: grpc's deserializer refuses the bytes before the servicer sees a message.
    return (MentorError, DecodeError)


def _write(workdir: Path, name: str, data: bytes) -> Path:
    path = workdir / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- imaging
def _dicom_file(data: bytes, workdir: Path) -> None:
    """One DICOM file: header scan, then the volume (pixels decoded, HU, affine)."""
    from scrubin.imaging.load import load_volume

    path = _write(workdir, "in.dcm", data)
    vol = load_volume(path)
    vol.array.sum()  # touch every voxel


def _dicom_folder(data: bytes, workdir: Path) -> None:
    """A folder holding the input and a stray file (recursive scan, grouping, load)."""
    from scrubin.imaging.load import load_volume, scan

    folder = workdir / "series"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    _write(folder, "IM0001", data)
    _write(folder, "README", data[:64])  # a stray file next to it (skipped)
    catalog = scan(folder)
    if len(catalog.series) == 1:
        load_volume(folder)


def _dicomdir(data: bytes, workdir: Path) -> None:
    """A DICOMDIR (PS3.10 §8): the referenced file IDs, checked to stay inside the folder."""
    from scrubin.imaging.dicom_guard import dicomdir_files

    path = _write(workdir, "DICOMDIR", data)
    dicomdir_files(path)


def _image_file(suffix: str) -> Callable[[bytes, Path], None]:
    def run(data: bytes, workdir: Path) -> None:
        from scrubin.imaging.load import load_volume

        path = _write(workdir, "in" + suffix, data)
        vol = load_volume(path)
        vol.array.sum()

    return run


def _mesh(suffix: str) -> Callable[[bytes, Path], None]:
    def run(data: bytes, workdir: Path) -> None:
        from scrubin.imaging.mesh_io import load_meshes

        path = _write(workdir, "in" + suffix, data)
        for mesh in load_meshes(path):
            if mesh.vertices.size and not np.all(np.isfinite(mesh.vertices)):
                raise AssertionError("mesh loaded with NaN/inf vertices")
            if mesh.faces.size and (mesh.faces.min() < 0
                                        or mesh.faces.max() >= len(mesh.vertices)):
                raise AssertionError("mesh loaded with triangle indices outside its vertices")

    return run


# ---------------------------------------------------------------- registration
def _finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{name} loaded with NaN/inf values")


def _points_csv(data: bytes, workdir: Path) -> None:
    from scrubin.registration.pointsets import read_points_csv

    _finite("points", read_points_csv(_write(workdir, "points.csv", data)))


def _pose(suffix: str) -> Callable[[bytes, Path], None]:
    def run(data: bytes, workdir: Path) -> None:
        from scrubin.registration.posefile import read_pose_file

        series = read_pose_file(_write(workdir, "poses" + suffix, data))
        _finite("poses", series.matrices)

    return run


def _transform_json(data: bytes, workdir: Path) -> None:
    from scrubin.registration.frames import Transform

    _finite("transform", Transform.load(_write(workdir, "T.json", data)).matrix)


def _camera_json(data: bytes, workdir: Path) -> None:
    from scrubin.registration.camera import CameraModel

    cam = CameraModel.load(_write(workdir, "camera.json", data))
    _finite("camera matrix", cam.matrix)
    _finite("distortion", cam.dist)


def _body_json(data: bytes, workdir: Path) -> None:
    from scrubin.registration.bodies import RigidBody

    body = RigidBody.load(_write(workdir, "body.json", data))
    for corners in body.markers.values():
        _finite("corners", corners)


# ---------------------------------------------------------------- overlay
_IGTL: dict[str, object] = {}


def _igtl_server(data: bytes, workdir: Path) -> None:
    """Raw bytes sent by a client to a real OpenIGTLink server on 127.0.0.1; the server must
    keep serving (a second client still receives a TRANSFORM)."""
    from scrubin.overlay.igtl import IgtlServer
    from scrubin.registration.frames import Transform

    server = _IGTL.get("server")
    if server is None:
        server = _IGTL["server"] = IgtlServer(port=0)
    assert isinstance(server, IgtlServer)
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as hostile:
        hostile.sendall(data)
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as good:
            if not server.wait_connected(2.0):
                raise AssertionError("OpenIGTLink server stopped accepting clients")
            deadline = time.monotonic() + 2.0
            got = b""
            while len(got) < 58 and time.monotonic() < deadline:
                server.send_transform("Probe", Transform(np.eye(4), "TOOL", "REF"))
                good.settimeout(0.2)
                try:
                    got += good.recv(65536)
                except TimeoutError:
                    continue
            if len(got) < 58:  # 58-byte OpenIGTLink header
                raise AssertionError("OpenIGTLink server stopped sending after hostile input")


# ---------------------------------------------------------------- mentor
def _ws_message(data: bytes, workdir: Path) -> None:
    """A WebSocket text message as the mentor page's server handles it (mentor/web.py)."""
    from scrubin.mentor.errors import MentorError
    from scrubin.mentor.events import event_to_pb, validate_event

    text = data.decode("utf-8", "replace")
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return  # web.py answers "not JSON" to both (RecursionError: nesting too deep)
    if not isinstance(msg, dict):
        raise MentorError("expected a JSON object message")
    for role in ("mentor", "surgeon"):
        event = validate_event(msg.get("event", msg), role, "fuzz")
        event_to_pb(event).SerializeToString()
        json.dumps(event, allow_nan=False)


def _pb_annotation(data: bytes, workdir: Path) -> None:
    """An AnnotationClientMessage as the gRPC servicer handles it (mentor/grpc_service.py)."""
    from scrubin.mentor.events import event_from_pb, event_to_pb, validate_event
    from scrubin.protos import mentor_pb2 as pb

    msg = pb.AnnotationClientMessage.FromString(data)
    if msg.WhichOneof("msg") == "event":
        event = validate_event(event_from_pb(msg.event), "surgeon", "fuzz")
        event_to_pb(event).SerializeToString()
        json.dumps(event, allow_nan=False)


_MENTOR: dict[str, object] = {}


def _mentor_server(workdir: Path) -> tuple[object, tuple[tuple[str, str], ...]]:
    """A real MentorServer (gRPC over TLS, self-signed) on 127.0.0.1 in a thread of this
    worker, one session, and the surgeon's call metadata (after Join)."""
    if "channel" not in _MENTOR:
        import asyncio
        import threading

        import grpc

        from scrubin.mentor.server import MentorServer, ServerConfig
        from scrubin.protos import mentor_pb2 as pb
        from scrubin.protos import mentor_pb2_grpc as pb_grpc

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        server = MentorServer(ServerConfig(db=workdir / "mentor" / "mentor.db", host="127.0.0.1",
                                           port=0, grpc_port=0, ice_hosts=["127.0.0.1"]))
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)

        async def session() -> object:
            return await server.hub.db(server.hub.store.new_session, False, "fuzz")

        made = asyncio.run_coroutine_threadsafe(session(), loop).result(30)
        assert server.cert_path is not None
        creds = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
        channel = grpc.secure_channel(server.grpc_target, creds)
        reply = pb_grpc.MentorStub(channel).Join(
            pb.JoinRequest(), timeout=10,
            metadata=(("authorization", f"Bearer {made.tokens['surgeon']}"),))  # type: ignore[attr-defined]
        _MENTOR.update(server=server, loop=loop, channel=channel, metadata=(
            ("authorization", f"Bearer {reply.call_token}"),
            ("x-scrubin-session", reply.session_id)))
    return _MENTOR["channel"], _MENTOR["metadata"]  # type: ignore[return-value]


def _mentor_grpc(method: str) -> Callable[[bytes, Path], None]:
    def run(data: bytes, workdir: Path) -> None:
        """The raw bytes as one request message of a client stream to the real server; the
        servicer must answer with a status it chose (an unexpected exception in the servicer
        comes back as UNKNOWN), and the server must keep answering."""
        import grpc

        from scrubin.mentor.errors import MentorError

        channel, metadata = _mentor_server(workdir)
        call = channel.stream_stream(f"/scrubin.mentor.v1.Mentor/{method}")  # type: ignore[attr-defined]
        try:
            for _ in call(iter([data]), metadata=metadata, timeout=10):
                pass
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            details = str(exc.details())  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNKNOWN and "protobuf.message.DecodeError" in details:
                # grpc.aio's stream deserializer refused the bytes (the call ends, the server
                # goes on); the servicer never saw a message
                raise MentorError(f"{method}: undecodable message") from None
            if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise AssertionError(f"{method}: {code.name}: {exc.details()}") from None  # type: ignore[attr-defined]
            raise MentorError(f"{method}: {code.name}") from None
        health = channel.unary_unary("/grpc.health.v1.Health/Check")  # type: ignore[attr-defined]
        health(b"", timeout=10)  # still serving (empty HealthCheckRequest)

    return run


def _pb_telemetry(data: bytes, workdir: Path) -> None:
    """A TelemetryFrame as PublishTelemetry checks it, then its JSON form sent to pages."""
    from scrubin.mentor.telemetry import check_frame, frame_to_json
    from scrubin.protos import mentor_pb2 as pb

    frame = pb.TelemetryFrame.FromString(data)
    check_frame(frame)
    json.dumps(frame_to_json(frame), allow_nan=False)  # browsers' JSON.parse refuses NaN


def _selftest(data: bytes, workdir: Path) -> None:
    """The harness's own check: ``hang`` spins, ``alloc`` allocates 64 GiB, ``raise`` raises
    IndexError, anything else is refused (proves the bounds and the crash report work)."""
    from scrubin.imaging.errors import ImagingError

    if data == b"hang":
        while True:
            time.sleep(0.01)
    if data == b"alloc":
        np.ones(2**36, dtype=np.uint8)
    if data == b"raise":
        raise IndexError("planted")
    raise ImagingError("refused")


SELFTEST = Target("selftest", _selftest, _imaging_errors)

TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("dicom", _dicom_file, _imaging_errors),
    Target("dicom_folder", _dicom_folder, _imaging_errors),
    Target("dicomdir", _dicomdir, _imaging_errors),
    Target("nifti", _image_file(".nii"), _imaging_errors),
    Target("nrrd", _image_file(".nrrd"), _imaging_errors),
    Target("mha", _image_file(".mha"), _imaging_errors),
    Target("stl", _mesh(".stl"), _imaging_errors),
    Target("ply", _mesh(".ply"), _imaging_errors),
    Target("obj", _mesh(".obj"), _imaging_errors, text=True),
    Target("glb", _mesh(".glb"), _imaging_errors),
    Target("points_csv", _points_csv, _registration_errors, text=True),
    Target("pose_csv", _pose(".csv"), _registration_errors, text=True),
    Target("pose_json", _pose(".json"), _registration_errors, text=True),
    Target("transform_json", _transform_json, _registration_errors, text=True),
    Target("camera_json", _camera_json, _registration_errors, text=True),
    Target("body_json", _body_json, _registration_errors, text=True),
    Target("igtl", _igtl_server, _overlay_errors),
    Target("mentor_ws", _ws_message, _mentor_errors, text=True),
    Target("mentor_pb", _pb_annotation, _mentor_errors),
    Target("telemetry_pb", _pb_telemetry, _mentor_errors),
    Target("mentor_grpc", _mentor_grpc("Annotations"), _mentor_errors),
    Target("telemetry_grpc", _mentor_grpc("PublishTelemetry"), _mentor_errors),
]}


def workdir() -> Path:
    """A private scratch folder for one worker process."""
    return Path(tempfile.mkdtemp(prefix=f"scrubin-fuzz-{os.getpid()}-"))
