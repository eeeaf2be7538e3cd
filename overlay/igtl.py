"""OpenIGTLink server: registered model pose and tool poses for 3D Slicer / SlicerIGT.

Messages (OpenIGTLink v2 header, header version 1; http://openigtlink.org/protocols)
-----------------------------------------------------------------------------------
``TRANSFORM`` (device name = the transform's name in Slicer, ``<From>To<To>``):

* ``CTToReference``     registration ``T_REF_CT`` (CT side in RAS, see below)
* ``ReferenceToCamera`` tracking ``T_CAMERA_REF``
* ``CTToCamera``        the registered model pose ``T_CAMERA_REF @ T_REF_CT`` (CT side in RAS)
* ``<Tool>ToReference`` tool poses ``T_REF_TOOL``, when given; the overlay pipeline's pointer
  (:mod:`scrubin.overlay.pointer`) sends ``StylusToReference`` and ``StylusTipToReference``

``STRING`` ``TrackingState`` (LIVE / HELD / STALE / LOST) each frame, and ``POLYDATA`` (device
name = the model's name) with the model's triangles in CT RAS mm, once per connection.

Transforms that depend on tracking (``ReferenceToCamera``, ``CTToCamera``, tools) are sent
only while the state is LIVE or HELD (:mod:`scrubin.registration.tracking_state`): while
STALE or LOST the client keeps the last pose it received and ``TrackingState`` says why no new
one comes; ``CTToReference`` (the registration) does not depend on tracking and is always sent.

Coordinate convention at this edge (PLUS's)
-------------------------------------------
Scrub In's CT is DICOM LPS; Slicer's patient space is RAS. PLUS sends tracker transforms
(``StylusToReference``, ``ReferenceToTracker``, ...) exactly as its transform repository
holds them, element by element (``vtkPlusIgtlMessageCommon::GetIgtlMatrix`` copies the
``vtkMatrix4x4`` into the ``igtl::Matrix4x4``; PlusLib ``src/PlusOpenIGTLink``), and SlicerIGT
puts them into the scene unchanged: a tracker frame is just another frame to Slicer. Only
*image-side* data gets the LPS <-> RAS change. We do the same: ``T_REF_TOOL`` and
``T_CAMERA_REF`` are sent unchanged (mm), so a stream mixed with PLUS, or a pivot-calibrated
tip used in SlicerIGT, lines up; the CT side of a transform is expressed in RAS:
``CTToReference = T_REF_CT @ F`` with ``F = diag(-1, -1, 1, 1)`` (``p_lps = F p_ras``), i.e.
the first two columns of ``T_REF_CT`` negated; model points are sent as ``p_ras = F p_lps``.

Timestamps are Unix time (seconds since 1970-01-01 UTC, header fields seconds + 2^-32
fractions, OpenIGTLink v2 timestamp spec); a time that cannot be Unix time (before 2000) is
refused, so a capture clock is never sent as if it were one. Device names are at most 20 bytes
(the header field): too-long transform names are refused, model names are shortened to unique
names (``name~2``), never truncated into a collision.

The server (``socketserver.ThreadingTCPServer`` subclass owned here; message packing is
pyigtl's) binds 127.0.0.1 by default (``host="0.0.0.0"`` to accept other machines; OpenIGTLink
has no encryption or authentication). Several clients may be connected; messages are queued
per client only while it is connected (no backlog of stale poses for a client that connects
later), at most :data:`MAX_QUEUED` per client (the oldest are dropped for a slow client).
Bytes a client sends are read and discarded.
"""

from __future__ import annotations

import math
import select
import socket
import socketserver
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scrubin.overlay.errors import OverlayError
from scrubin.registration.frames import CAMERA, CT, REF, Transform
from scrubin.registration.tracking_state import TrackingState

#: LPS <-> RAS change of the CT side (module docstring); its own inverse.
F_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: OpenIGTLink device-name field (bytes).
DEVICE_NAME_BYTES = 20
#: Earliest timestamp accepted as Unix time (2000-01-01T00:00:00Z).
MIN_UNIX_TIME = 946_684_800.0
#: Messages queued per client at most (the oldest are dropped beyond).
MAX_QUEUED = 1024
_SHOWN = {TrackingState.LIVE.value, TrackingState.HELD.value}


class IgtlError(OverlayError):
    """OpenIGTLink server problem (port in use, bad message content)."""


def ct_side_to_ras(T: Transform) -> np.ndarray:
    """``T @ F``: a transform whose *source* is the CT, with the CT side in RAS (mm)."""
    if T.src != CT:
        raise IgtlError(f"only a transform from {CT} has an RAS side, got T_{T.dst}_{T.src}")
    return T.matrix @ F_LPS_RAS


def check_device_name(name: str) -> str:
    """``name`` if it fits the 20-byte ASCII device-name field, else :class:`IgtlError`."""
    if not isinstance(name, str) or not name or not name.isascii() \
            or len(name) > DEVICE_NAME_BYTES:
        raise IgtlError(f"OpenIGTLink device name must be 1..{DEVICE_NAME_BYTES} ASCII "
                        f"characters, got {name!r}")
    return name


def unique_device_names(names: Sequence[str]) -> list[str]:
    """Device names for ``names``: unchanged when they fit and are unique, else shortened
    (non-ASCII replaced by ``_``) with a ``~N`` suffix that keeps them unique."""
    out: list[str] = []
    for raw in names:
        base = "".join(c if c.isascii() and c.isprintable() else "_" for c in str(raw)) or "model"
        cand, n = base, 1
        while len(cand) > DEVICE_NAME_BYTES or cand in out:
            n += 1
            suffix = f"~{n}"
            cand = base[:DEVICE_NAME_BYTES - len(suffix)] + suffix
        out.append(cand)
    return out


def check_unix_time(timestamp: float | None) -> float | None:
    """``timestamp`` (Unix seconds) or None; refuses a value that cannot be Unix time."""
    if timestamp is None:
        return None
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) \
            or not math.isfinite(timestamp) or timestamp < MIN_UNIX_TIME:
        raise IgtlError(f"OpenIGTLink timestamp must be Unix time in seconds (>= "
                        f"{MIN_UNIX_TIME:.0f}, year 2000), got {timestamp!r}; map the capture "
                        "clock to Unix time first")
    return float(timestamp)


def polydata_message(name: str, points_lps_mm: np.ndarray, triangles: np.ndarray) -> Any:
    """pyigtl ``PolyDataMessage`` of a triangle mesh: points in CT RAS mm, ``POLYGONS`` cells.

    The POLYDATA body (OpenIGTLink v2/v3 POLYDATA spec): ten uint32 counts (``NPOINTS,
    NVERTICES, SIZE_VERTICES, NLINES, SIZE_LINES, NPOLYGONS, SIZE_POLYGONS, NTRIANGLE_STRIPS,
    SIZE_TRIANGLE_STRIPS, NATTRIBUTES``), ``POINTS`` as big-endian float32 triples, then per
    polygon ``n`` and ``n`` point indices as big-endian uint32. pyigtl 0.3.4 encodes points
    and polygons exactly so (only its ``vertices`` use host-order int32; not used here).
    """
    import pyigtl

    p = np.asarray(points_lps_mm, np.float64)
    t = np.asarray(triangles)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3 or not np.all(np.isfinite(p)):
        raise IgtlError(f"POLYDATA points must be finite (N>=3, 3) mm, got {p.shape}")
    if (t.ndim != 2 or t.shape[1] != 3 or len(t) < 1 or not np.issubdtype(t.dtype, np.integer)
            or t.min() < 0 or t.max() >= len(p)):
        raise IgtlError(f"POLYDATA triangles must be (M>=1, 3) indices into {len(p)} points, "
                        f"got {t.shape}")
    ras = p @ F_LPS_RAS[:3, :3].T + 0.0  # + 0.0: no negative zeros on the wire
    cells = np.empty((len(t), 4), np.uint32)
    cells[:, 0] = 3
    cells[:, 1:] = t
    return pyigtl.PolyDataMessage(points=ras.astype(np.float32), polygons=cells.reshape(-1),
                                  device_name=check_device_name(name))


class _Client:
    """One connection's outgoing queue."""

    def __init__(self) -> None:
        self.queue: deque[bytes] = deque(maxlen=MAX_QUEUED)
        self.ready = threading.Condition()
        self.closed = False

    def put(self, data: bytes) -> None:
        with self.ready:
            self.queue.append(data)
            self.ready.notify()


class _Handler(socketserver.BaseRequestHandler):
    """Sends the client's queue; reads and discards what the client sends; ends on EOF."""

    server: _TcpServer

    def handle(self) -> None:
        owner = self.server.owner
        client = owner._attach()
        sock: socket.socket = self.request
        sock.setblocking(True)
        try:
            while not owner._stopping.is_set():
                readable, _, _ = select.select([sock], [], [], 0.0)
                if readable and not sock.recv(65536):
                    break  # the client closed the connection
                with client.ready:
                    if not client.queue:
                        client.ready.wait(0.02)
                    batch = list(client.queue)
                    client.queue.clear()
                for data in batch:
                    sock.sendall(data)
        except OSError:
            pass  # reset / broken pipe: the client is gone
        finally:
            owner._detach(client)


class _TcpServer(socketserver.ThreadingTCPServer):
    """The listening socket: address reuse for this server only, one thread per client."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: IgtlServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class IgtlServer:
    """Streams poses (and optionally models) to OpenIGTLink clients such as 3D Slicer.

    Parameters
    ----------
    port
        TCP port (0 = any free port; the bound port is :attr:`port`).
    host
        ``"127.0.0.1"`` (default) or ``"0.0.0.0"`` (all interfaces).
    models
        Optional ``(name, vertices LPS mm, triangles)`` sent as POLYDATA to each client when it
        connects; their device names are :attr:`model_names`.
    """

    def __init__(self, port: int = 18944, host: str = "127.0.0.1",
                 models: Sequence[tuple[str, np.ndarray, np.ndarray]] = ()) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise IgtlError(f"OpenIGTLink port must be an integer 0..65535, got {port!r}")
        if host not in ("127.0.0.1", "0.0.0.0"):
            raise IgtlError(f"OpenIGTLink host must be 127.0.0.1 or 0.0.0.0, got {host!r}")
        models = list(models)
        self.model_names = unique_device_names([n for n, _, _ in models])
        self._models = [polydata_message(name, v, f)
                        for name, (_, v, f) in zip(self.model_names, models, strict=True)]
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._present = threading.Event()
        self.connections = 0
        self.sent = 0
        try:
            self._server = _TcpServer((host, port), self)
        except OSError as exc:
            raise IgtlError(f"cannot listen for OpenIGTLink on {host}:{port} ({exc})") from None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"igtl-{self.port}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ connections
    def _attach(self) -> _Client:
        client = _Client()
        for msg in self._models:  # models first, stamped at connection time
            msg.timestamp = None
            client.put(self._pack(msg))
        with self._lock:
            self._clients.append(client)
            self.connections += 1
            self._present.set()
        return client

    def _detach(self, client: _Client) -> None:
        with self._lock:
            client.closed = True
            if client in self._clients:
                self._clients.remove(client)
            if not self._clients:
                self._present.clear()

    @property
    def connected(self) -> bool:
        """Whether at least one client is connected now."""
        with self._lock:
            return bool(self._clients)

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until a client is connected (True) or ``timeout_s`` passes (False)."""
        return self._present.wait(timeout_s) and self.connected

    # ------------------------------------------------------------------ messages
    @staticmethod
    def _pack(msg: Any) -> bytes:
        import time

        if msg.timestamp is None:
            msg.timestamp = time.time()
        return bytes(msg.pack())

    def _broadcast(self, msg: Any) -> bool:
        with self._lock:
            clients = list(self._clients)
        if not clients:
            return False
        data = self._pack(msg)
        for c in clients:
            c.put(data)
        self.sent += 1
        return True

    def send_matrix(self, name: str, matrix: np.ndarray, timestamp: float | None = None) -> bool:
        """Send a 4x4 ``matrix`` (mm) as TRANSFORM ``name``, as is; False without a client."""
        import pyigtl

        m = np.asarray(matrix, np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise IgtlError(f"transform {name!r} must be a finite 4x4 matrix, got {m.shape}")
        msg = pyigtl.TransformMessage(m, timestamp=check_unix_time(timestamp),
                                      device_name=check_device_name(name))
        return self._broadcast(msg)

    def send_transform(self, name: str, T: Transform, timestamp: float | None = None) -> bool:
        """Send ``T`` per the module's convention: unchanged, or with its CT side in RAS."""
        if not isinstance(T, Transform):
            raise IgtlError(f"transform {name!r} must be a Transform, got {type(T).__name__}")
        if T.dst == CT:
            raise IgtlError(f"transform {name!r} maps into {CT}; send its inverse")
        return self.send_matrix(name, ct_side_to_ras(T) if T.src == CT else T.matrix, timestamp)

    def send_poses(self, T_camera_ref: Transform | None, T_ref_ct: Transform, state: str,
                   timestamp: float | None = None,
                   tools: Mapping[str, Transform] | None = None) -> None:
        """One frame's messages: registration, tracking and tools (LIVE / HELD only), state.

        ``timestamp``: Unix time of the frame's capture (None: now). ``tools`` maps a tool
        name to ``T_REF_TOOL``; ``<name>ToReference`` must fit 20 bytes.
        """
        import pyigtl

        if T_ref_ct.src != CT or T_ref_ct.dst != REF:
            raise IgtlError(f"registration must be T_{REF}_{CT}, got T_{T_ref_ct.dst}_"
                            f"{T_ref_ct.src}")
        if state not in {s.value for s in TrackingState}:
            raise IgtlError(f"tracking state must be one of {[s.value for s in TrackingState]}, "
                            f"got {state!r}")
        if T_camera_ref is not None and (T_camera_ref.src != REF or T_camera_ref.dst != CAMERA):
            raise IgtlError(f"tracking pose must be T_{CAMERA}_{REF}, got "
                            f"T_{T_camera_ref.dst}_{T_camera_ref.src}")
        tool_items = list((tools or {}).items())
        for name, T in tool_items:
            if T.dst != REF:
                raise IgtlError(f"tool pose {name!r} must map into {REF}, got T_{T.dst}_{T.src}")
            check_device_name(f"{name}ToReference")
        ts = check_unix_time(timestamp)
        self.send_transform("CTToReference", T_ref_ct, ts)
        if state in _SHOWN:  # the rest depends on tracking: not while STALE / LOST
            if T_camera_ref is not None:
                self.send_transform("ReferenceToCamera", T_camera_ref, ts)
                self.send_transform("CTToCamera", T_camera_ref @ T_ref_ct, ts)
            for name, T in tool_items:
                self.send_transform(f"{name}ToReference", T, ts)
        self._broadcast(pyigtl.StringMessage(state, timestamp=ts, device_name="TrackingState"))

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Stop serving, drop the clients and release the port."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> IgtlServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
