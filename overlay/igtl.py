"""OpenIGTLink server: registered model pose and tool poses for 3D Slicer (pyigtl).

Messages (OpenIGTLink v2 header, version 1; http://openigtlink.org/protocols)
-----------------------------------------------------------------------------
``TRANSFORM`` (device name = the transform's name in Slicer, ``<From>To<To>``):

* ``CTToReference``     registration ``T_REF_CT``
* ``ReferenceToCamera`` tracking ``T_CAMERA_REF`` (only while tracking is LIVE)
* ``CTToCamera``        the registered model pose ``T_CAMERA_CT = T_CAMERA_REF @ T_REF_CT``
* ``<Tool>ToReference`` tool poses ``T_REF_TOOL``, when given; the overlay pipeline's pointer
  (:mod:`scrubin.overlay.pointer`) sends ``StylusToReference`` and ``StylusTipToReference``
  (``T_REF_TIP``: the tool's axes moved to the pivot-calibrated tip) while REF and TOOL are LIVE

``STRING`` ``TrackingState`` (LIVE / STALE / LOST) each frame, and optionally ``POLYDATA``
(device name = the model's name) with the model's triangles in CT RAS mm.

Coordinate convention at this edge: Scrub In works in DICOM LPS (CT) and OpenCV camera axes;
Slicer works in RAS. Every frame's coordinates are sent through the same fixed flip
``F = diag(-1, -1, 1, 1)`` (x and y negated, a 180 deg rotation about z, det +1): for the CT this
is exactly LPS -> RAS, for REF, CAMERA and TOOL it is the same fixed change of axes, so the
chain stays consistent in Slicer. A transform ``T_dst_src`` between two such frames is sent as
``F @ T_dst_src @ F`` (F is its own inverse); model points ``p_ras = F p_lps``. Matrices are mm.

The server binds to 127.0.0.1 by default (``host="0.0.0.0"`` to accept other machines;
OpenIGTLink has no encryption or authentication). Messages are only queued while a client is
connected (no backlog of stale poses for a client that connects later); when the client goes
away the server accepts the next one.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scrubin.overlay.errors import OverlayError
from scrubin.registration.frames import CAMERA, CT, REF, Transform

#: LPS <-> RAS (and the same axis flip for every other frame), see module docstring.
F_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
POLYDATA_HEADER = struct.Struct(">10I")


class IgtlError(OverlayError):
    """OpenIGTLink server problem (port in use, bad message content)."""


def to_ras(T: Transform) -> np.ndarray:
    """``F @ T @ F``: a transform between LPS-convention frames, expressed in RAS (mm)."""
    return F_LPS_RAS @ T.matrix @ F_LPS_RAS


def encode_polydata(points_lps_mm: np.ndarray, triangles: np.ndarray) -> bytes:
    """POLYDATA message body (OpenIGTLink v2/v3 POLYDATA specification), no attributes.

    Layout (big-endian): ``NPOINTS, NVERTICES, SIZE_VERTICES, NLINES, SIZE_LINES, NPOLYGONS,
    SIZE_POLYGONS, NTRIANGLE_STRIPS, SIZE_TRIANGLE_STRIPS, NATTRIBUTES`` (uint32 each), then
    ``POINTS`` (NPOINTS x 3 float32, here RAS mm), then ``POLYGONS``: per cell the number of
    indices ``n`` (uint32) followed by ``n`` point indices (uint32); SIZE_* are byte counts.
    """
    p = np.asarray(points_lps_mm, np.float64)
    t = np.asarray(triangles)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3 or not np.all(np.isfinite(p)):
        raise IgtlError(f"POLYDATA points must be finite (N>=3, 3) mm, got {p.shape}")
    if (t.ndim != 2 or t.shape[1] != 3 or len(t) < 1 or not np.issubdtype(t.dtype, np.integer)
            or t.min() < 0 or t.max() >= len(p)):
        raise IgtlError(f"POLYDATA triangles must be (M>=1, 3) indices into {len(p)} points, "
                        f"got {t.shape}")
    ras = p @ F_LPS_RAS[:3, :3].T
    cells = np.empty((len(t), 4), ">u4")
    cells[:, 0] = 3
    cells[:, 1:] = t
    header = POLYDATA_HEADER.pack(len(p), 0, 0, 0, 0, len(t), cells.nbytes, 0, 0, 0)
    return header + ras.astype(">f4").tobytes() + cells.tobytes()


def decode_polydata(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a POLYDATA body per the specification: ``(points (N, 3) float, polygons list)``."""
    if len(body) < POLYDATA_HEADER.size:
        raise IgtlError(f"POLYDATA body of {len(body)} bytes is shorter than its header")
    (npts, _nv, sv, _nl, sl, npoly, spoly, _ns, sstrip,
     nattr) = POLYDATA_HEADER.unpack_from(body)
    off = POLYDATA_HEADER.size
    pts = np.frombuffer(body, ">f4", npts * 3, off).reshape(npts, 3).astype(np.float64)
    off += npts * 12 + sv + sl
    if off + spoly > len(body):
        raise IgtlError(f"POLYDATA body of {len(body)} bytes does not match its declared sizes")
    words = np.frombuffer(body, ">u4", spoly // 4, off)
    polys, i = [], 0
    while i < len(words):
        n = int(words[i])
        polys.append(words[i + 1:i + 1 + n].astype(np.int64))
        i += n + 1
    if len(polys) != npoly:
        raise IgtlError(f"POLYDATA declares {npoly} polygons but holds {len(polys)}")
    if off + spoly + sstrip > len(body) or (nattr == 0 and off + spoly + sstrip != len(body)):
        raise IgtlError(f"POLYDATA body of {len(body)} bytes does not match its declared sizes")
    return pts, polys


def _handler_class() -> Any:
    import socketserver

    class Handler(socketserver.BaseRequestHandler):
        """pyigtl's request loop, quiet on a vanishing client, clearing stale queued messages."""

        def handle(self) -> None:
            srv = self.server
            with srv.lock_outgoing_messages:
                srv.outgoing_messages.clear()
            srv.connection_count = getattr(srv, "connection_count", 0) + 1
            srv._connected = True
            srv.client_present.set()
            self.request.settimeout(0.01)
            try:
                while not srv.communication_thread_stop_requested:
                    while srv._receive_message_from_socket(self.request):
                        if srv.communication_thread_stop_requested:
                            break
                    while srv._send_queued_message_from_socket(self.request):
                        pass
            except (OSError, ValueError, struct.error):
                pass  # client gone (broken pipe, reset) or garbage: wait for the next one
            finally:
                srv.client_present.clear()
                srv._communication_error_occurred()

    return Handler


def _message_base() -> Any:
    import pyigtl

    class PolyDataRaw(pyigtl.MessageBase):  # type: ignore[misc,name-defined]
        """POLYDATA with our own body encoding (pyigtl's encoder writes int32 host order)."""

        def __init__(self, body: bytes, device_name: str, timestamp: float | None = None
                     ) -> None:
            super().__init__(timestamp=timestamp, device_name=device_name)
            self._message_type = "POLYDATA"
            self._body = body
            self._valid_message = True

        def _pack_content(self) -> bytes:
            return self._body

    return PolyDataRaw


class IgtlServer:
    """Streams poses (and optionally models) to an OpenIGTLink client such as 3D Slicer.

    Parameters
    ----------
    port
        TCP port (0 = any free port; the bound port is :attr:`port`).
    host
        ``"127.0.0.1"`` (default) or ``"0.0.0.0"`` (all interfaces).
    models
        Optional ``(name, vertices LPS mm, triangles)`` to send as POLYDATA to each client that
        connects (once per connection).
    """

    def __init__(self, port: int = 18944, host: str = "127.0.0.1",
                 models: Sequence[tuple[str, np.ndarray, np.ndarray]] = ()) -> None:
        import socketserver

        import pyigtl

        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise IgtlError(f"OpenIGTLink port must be an integer 0..65535, got {port!r}")
        if host not in ("127.0.0.1", "0.0.0.0"):
            raise IgtlError(f"OpenIGTLink host must be 127.0.0.1 or 0.0.0.0, got {host!r}")
        self._poly = [(str(n)[:20], encode_polydata(v, f)) for n, v, f in models]
        self._PolyData = _message_base()
        try:
            # bind explicitly (pyigtl's constructor looks up an interface for non-local servers
            # and installs its own SIGINT/SIGTERM handlers; we want neither)
            server_cls = pyigtl.OpenIGTLinkServer
            self._server = server_cls.__new__(server_cls)
            pyigtl.comm.OpenIGTLinkBase.__init__(self._server)
            self._server.port = port
            self._server.host = host
            socketserver.TCPServer.allow_reuse_address = True
            socketserver.TCPServer.__init__(self._server, (host, port), _handler_class())
            self._server.client_present = threading.Event()
        except OSError as exc:
            raise IgtlError(f"cannot listen for OpenIGTLink on {host}:{port} ({exc})") from None
        self._server.start()
        self.host = host
        self.port = int(self._server.server_address[1])
        self._models_sent_for = 0
        self.sent = 0

    @property
    def connected(self) -> bool:
        """Whether a client is connected now."""
        return bool(self._server.is_connected())

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until a client is connected (True) or ``timeout_s`` passes (False)."""
        return bool(self._server.client_present.wait(timeout_s)) and self.connected

    def _send(self, msg: Any) -> bool:
        if not self.connected:
            return False
        conn = getattr(self._server, "connection_count", 0)
        if self._models_sent_for != conn:  # new connection: models first
            self._models_sent_for = conn
            for name, body in self._poly:
                self._server.send_message(self._PolyData(body, name), wait=False)
        self._server.send_message(msg, wait=False)
        self.sent += 1
        return True

    def send_transform(self, name: str, T: Transform, timestamp: float | None = None) -> bool:
        """Send ``T`` (converted to RAS, see module docstring) as TRANSFORM ``name``."""
        import pyigtl

        if not isinstance(T, Transform):
            raise IgtlError(f"transform {name!r} must be a Transform, got {type(T).__name__}")
        if not name or len(name.encode()) > 20:
            raise IgtlError(f"OpenIGTLink device name must be 1..20 bytes, got {name!r}")
        return self._send(pyigtl.TransformMessage(to_ras(T), timestamp=timestamp,
                                                  device_name=name))

    def send_poses(self, T_camera_ref: Transform | None, T_ref_ct: Transform, state: str,
                   timestamp: float | None = None,
                   tools: Mapping[str, Transform] | None = None) -> None:
        """One frame's messages: registration, tracking (when given), model pose, tools, state.

        ``tools`` maps a tool name to ``T_REF_TOOL``.
        """
        import pyigtl

        if T_ref_ct.src != CT or T_ref_ct.dst != REF:
            raise IgtlError(f"registration must be T_{REF}_{CT}, got T_{T_ref_ct.dst}_"
                            f"{T_ref_ct.src}")
        self.send_transform("CTToReference", T_ref_ct, timestamp)
        if T_camera_ref is not None:
            if T_camera_ref.src != REF or T_camera_ref.dst != CAMERA:
                raise IgtlError(f"tracking pose must be T_{CAMERA}_{REF}, got "
                                f"T_{T_camera_ref.dst}_{T_camera_ref.src}")
            self.send_transform("ReferenceToCamera", T_camera_ref, timestamp)
            self.send_transform("CTToCamera", T_camera_ref @ T_ref_ct, timestamp)
        for name, T in (tools or {}).items():
            if T.dst != REF:
                raise IgtlError(f"tool pose {name!r} must map into {REF}, got T_{T.dst}_{T.src}")
            self.send_transform(f"{name}ToReference"[:20], T, timestamp)
        self._send(pyigtl.StringMessage(state, timestamp=timestamp,
                                        device_name="TrackingState"))

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.stop()

    def __enter__(self) -> IgtlServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
