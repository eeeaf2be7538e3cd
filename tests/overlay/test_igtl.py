"""OpenIGTLink: bytes checked against a hand encoding of the spec, a real pyigtl client,
PLUS's convention (tracker transforms unchanged, CT side in RAS), Unix timestamps, device
names, and no tracking-dependent transform while STALE / LOST (clients connected)."""

from __future__ import annotations

import socket
import socketserver
import struct
import time

import crcmod
import numpy as np
import pyigtl
import pytest

from scrubin.overlay.igtl import IgtlError, IgtlServer, unique_device_names
from scrubin.registration.frames import CAMERA, CT, REF, TOOL, Transform

HEADER = struct.Struct(">H12s20sIIQQ")  # OpenIGTLink v2 header: 58 bytes, big-endian
CRC64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, rev=False, initCrc=0, xorOut=0)  # ECMA-182
TS = 1_767_225_600.25  # 2026-01-01T00:00:00.25Z, Unix seconds


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


T_REF_CT = Transform.from_rt(_rot(0, 20) @ _rot(2, 35), [12.0, -40.0, 7.5], CT, REF)
T_CAM_REF = Transform.from_rt(_rot(1, -15), [30.0, 5.0, 450.0], REF, CAMERA)
T_REF_TOOL = Transform.from_rt(_rot(2, 30) @ _rot(0, -50), [5.0, -8.0, 40.0], TOOL, REF)


def _transform_body(m: np.ndarray) -> bytes:
    """TRANSFORM body per the OpenIGTLink spec: R11 R21 R31 R12 R22 R32 R13 R23 R33 TX TY TZ
    (rotation column by column, then translation), 12 big-endian float32."""
    cols = [m[0, 0], m[1, 0], m[2, 0], m[0, 1], m[1, 1], m[2, 1], m[0, 2], m[1, 2], m[2, 2]]
    return struct.pack(">12f", *cols, *m[:3, 3])


def _ct_side_in_ras(m: np.ndarray) -> np.ndarray:
    """A transform from CT with its CT side in RAS: x_lps = -x_ras, y_lps = -y_ras, so the
    first two columns change sign (written out here, not the code's helper)."""
    out = np.array(m, float)
    out[:, 0] *= -1
    out[:, 1] *= -1
    return out


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def _read_message(sock: socket.socket) -> dict:
    """One message, decoded by hand from the v2 header spec (timestamp: seconds + 2^-32)."""
    version, mtype, device, sec, frac, size, crc = HEADER.unpack(_recv_exact(sock, 58))
    body = _recv_exact(sock, size)
    assert version == 1 and crc == CRC64(body)
    return {"type": mtype.rstrip(b"\0").decode(), "device": device.rstrip(b"\0").decode(),
            "time": sec + frac / 2 ** 32, "sec": sec, "body": body}


def _raw_client(server: IgtlServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    assert server.wait_connected(10)
    return sock


def _frame_messages(sock: socket.socket) -> list[dict]:
    """Messages up to and including the next TrackingState (one frame of send_poses)."""
    out = []
    while True:
        m = _read_message(sock)
        out.append(m)
        if m["device"] == "TrackingState":
            return out


def test_transform_bytes_match_a_hand_encoding_of_the_spec() -> None:
    """PLUS's convention: tracker transforms byte for byte unchanged, CT side in RAS."""
    with IgtlServer(0) as server:
        sock = _raw_client(server)
        try:
            server.send_poses(T_CAM_REF, T_REF_CT, "LIVE", timestamp=TS,
                              tools={"Pointer": T_REF_TOOL})
            msgs = {m["device"]: m for m in _frame_messages(sock)}
        finally:
            sock.close()
    assert list(msgs) == ["CTToReference", "ReferenceToCamera", "CTToCamera",
                          "PointerToReference", "TrackingState"]
    want = {
        "ReferenceToCamera": T_CAM_REF.matrix,  # unchanged (no 180 deg about z)
        "PointerToReference": T_REF_TOOL.matrix,  # unchanged: lines up with PLUS / SlicerIGT
        "CTToReference": _ct_side_in_ras(T_REF_CT.matrix),
        "CTToCamera": _ct_side_in_ras(T_CAM_REF.matrix @ T_REF_CT.matrix),
    }
    for name, m in want.items():
        msg = msgs[name]
        assert msg["type"] == "TRANSFORM" and msg["body"] == _transform_body(m), name
        assert msg["sec"] == 1_767_225_600 and msg["time"] == pytest.approx(TS, abs=1e-6)
    state = msgs["TrackingState"]
    assert state["type"] == "STRING"
    # STRING body: encoding (uint16, 3 = US-ASCII), length (uint16), bytes
    assert state["body"] == struct.pack(">HH", 3, 4) + b"LIVE"


def test_a_point_maps_like_in_slicer() -> None:
    """A CT point given in RAS through the sent CTToReference lands where T_REF_CT puts the
    LPS point: the REF frame is shared with PLUS-sent tools."""
    p_lps = np.array([10.0, -20.0, 30.0])
    p_ras = np.array([-10.0, 20.0, 30.0])
    m = _ct_side_in_ras(T_REF_CT.matrix)
    np.testing.assert_allclose(m[:3, :3] @ p_ras + m[:3, 3], T_REF_CT.apply(p_lps))


def _receive(server: IgtlServer, client: pyigtl.OpenIGTLinkClient, name: str):
    for _ in range(200):
        server.send_poses(T_CAM_REF, T_REF_CT, "LIVE", timestamp=TS,
                          tools={"Pointer": T_REF_TOOL})
        msg = client.wait_for_message(name, timeout=0.05)
        if msg is not None:
            return msg
    raise AssertionError(f"no {name} message")


def test_pyigtl_client_receives_and_reconnects() -> None:
    """The peer: pyigtl's own client decodes what we send; clients come and go."""
    with IgtlServer(0) as server:
        assert server.host == "127.0.0.1" and server.port > 0
        assert not server.connected
        assert server.send_transform("CTToReference", T_REF_CT) is False  # nobody listening
        for _ in range(2):
            client = pyigtl.OpenIGTLinkClient("127.0.0.1", server.port)
            try:
                assert server.wait_connected(10)
                msg = _receive(server, client, "ReferenceToCamera")
                np.testing.assert_allclose(msg.matrix, T_CAM_REF.matrix, atol=1e-4)
                assert msg.timestamp == pytest.approx(TS, abs=1e-6)
                tool = _receive(server, client, "PointerToReference")
                np.testing.assert_allclose(tool.matrix, T_REF_TOOL.matrix, atol=1e-4)
                assert _receive(server, client, "TrackingState").string == "LIVE"
            finally:
                client.stop()
            t0 = time.time()
            while server.connected and time.time() - t0 < 10:  # EOF is noticed by the reader
                time.sleep(0.01)
            assert not server.connected
        assert server.connections == 2


def test_stale_and_lost_send_no_tracking_transform_to_connected_clients() -> None:
    """Two clients connected; per frame only the registration and the state while STALE /
    LOST, even though a (held) T_CAMERA_REF and a tool pose are passed in."""
    states = ["LIVE", "STALE", "LOST", "HELD", "STALE"]
    with IgtlServer(0) as server:
        socks = [_raw_client(server) for _ in range(2)]
        t0 = time.time()
        while len(server._clients) < 2 and time.time() - t0 < 10:
            time.sleep(0.01)
        try:
            for k, st in enumerate(states):
                server.send_poses(T_CAM_REF, T_REF_CT, st, timestamp=TS + k,
                                  tools={"Pointer": T_REF_TOOL})
            for sock in socks:
                for k, st in enumerate(states):
                    msgs = _frame_messages(sock)
                    assert all(m["time"] == pytest.approx(TS + k, abs=1e-6) for m in msgs)
                    names = [m["device"] for m in msgs]
                    if st in ("STALE", "LOST"):
                        assert names == ["CTToReference", "TrackingState"], (st, names)
                    else:
                        assert names == ["CTToReference", "ReferenceToCamera", "CTToCamera",
                                         "PointerToReference", "TrackingState"], (st, names)
                    assert msgs[-1]["body"][4:].decode() == st
        finally:
            for sock in socks:
                sock.close()


def test_timestamps_are_unix_time() -> None:
    with IgtlServer(0) as server:
        with pytest.raises(IgtlError, match="Unix time"):
            server.send_poses(None, T_REF_CT, "LIVE", timestamp=1234.5)  # a capture clock
        with pytest.raises(IgtlError, match="Unix time"):
            server.send_transform("CTToReference", T_REF_CT, timestamp=float("nan"))
        sock = _raw_client(server)
        try:
            before = time.time()
            server.send_poses(None, T_REF_CT, "LOST")  # no timestamp: now
            m = _read_message(sock)
            assert before - 1e-6 <= m["time"] <= time.time() + 1e-6
        finally:
            sock.close()


def test_device_names_never_truncate_into_collisions() -> None:
    names = unique_device_names(["skull_segmentation_left", "skull_segmentation_left2",
                                 "skin", "skin", "Schädel"])
    assert len(set(names)) == 5 and all(len(n.encode()) <= 20 and n.isascii() for n in names)
    assert names[2] == "skin" and names[3] != "skin"
    with IgtlServer(0) as server:
        with pytest.raises(IgtlError, match="device name"):  # "LongPointerToReference": 22
            server.send_poses(None, T_REF_CT, "LIVE", tools={"LongPointer": T_REF_TOOL})
        with pytest.raises(IgtlError, match="device name"):
            server.send_transform("X" * 21, T_REF_CT)
    v = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 20.0, 0.0]])
    f = np.array([[0, 1, 2]])
    long = [("brain_ventricle_left_a", v, f), ("brain_ventricle_left_b", v, f)]
    with IgtlServer(0, models=long) as server:
        sock = _raw_client(server)
        try:
            got = [_read_message(sock)["device"] for _ in range(2)]
        finally:
            sock.close()
    assert got == server.model_names and len(set(got)) == 2


def test_polydata_bytes_follow_the_spec_over_tcp() -> None:
    """Decode the header and body by hand, per the OpenIGTLink v2 header and POLYDATA spec."""
    v = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 30.0]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    with IgtlServer(0, models=[("skull", v, f)]) as server:
        sock = _raw_client(server)
        try:
            m = _read_message(sock)
        finally:
            sock.close()
    assert m["type"] == "POLYDATA" and m["device"] == "skull"
    assert abs(m["time"] - time.time()) < 60
    body = m["body"]
    counts = struct.unpack_from(">10I", body)
    assert counts == (4, 0, 0, 0, 0, 4, 4 * 16, 0, 0, 0)
    pts = np.frombuffer(body, ">f4", 12, 40).reshape(4, 3)
    np.testing.assert_array_equal(pts, v * [-1, -1, 1])  # LPS -> RAS
    assert not np.signbit(pts[pts == 0]).any()  # no negative zeros
    cells = np.frombuffer(body, ">u4", 16, 40 + 48).reshape(4, 4)
    assert (cells[:, 0] == 3).all()
    np.testing.assert_array_equal(cells[:, 1:], f)
    assert len(body) == 40 + 48 + 64


@pytest.mark.parametrize("v, f, msg", [
    (np.zeros((2, 3)), np.array([[0, 1, 1]]), "points"),
    (np.full((3, 3), np.nan), np.array([[0, 1, 2]]), "points"),
    (np.zeros((3, 3)), np.array([[0, 1, 3]]), "triangles"),
    (np.zeros((3, 3)), np.array([[0.0, 1.0, 2.0]]), "triangles"),
    (np.zeros((3, 3)), np.zeros((0, 3), int), "triangles"),
])
def test_polydata_rejections(v, f, msg) -> None:
    with pytest.raises(IgtlError, match=msg):
        IgtlServer(0, models=[("m", v, f)])


def test_server_rejections_and_no_process_wide_socket_options() -> None:
    with pytest.raises(IgtlError, match="port"):
        IgtlServer(70000)
    with pytest.raises(IgtlError, match="host"):
        IgtlServer(0, host="10.0.0.1")
    with IgtlServer(0) as server:
        assert socketserver.TCPServer.allow_reuse_address is False  # ours only
        with pytest.raises(IgtlError, match="cannot listen"):
            IgtlServer(server.port)
        with pytest.raises(IgtlError, match="T_REF_CT"):
            server.send_poses(None, T_REF_CT.inverse(), "LIVE")
        with pytest.raises(IgtlError, match="T_CAMERA_REF"):
            server.send_poses(T_CAM_REF.inverse(), T_REF_CT, "LIVE")
        with pytest.raises(IgtlError, match="tracking state"):
            server.send_poses(None, T_REF_CT, "live")
        with pytest.raises(IgtlError, match="must map into REF"):
            server.send_poses(None, T_REF_CT, "LIVE", tools={"P": T_CAM_REF})
        with pytest.raises(IgtlError, match="must be a Transform"):
            server.send_transform("A", np.eye(4))
        with pytest.raises(IgtlError, match="send its inverse"):
            server.send_transform("RefToCT", T_REF_CT.inverse())
    # the port is free again once closed
    IgtlServer(server.port).close()


def test_pointer_tool_and_tip_transforms() -> None:
    from scrubin.overlay.pointer import PointerResult

    tip = np.array([0.0, -104.0, 0.0])
    tools = PointerResult("LIVE", True, True, T_REF_TOOL, np.zeros(3), None, tip).igtl_tools()
    with IgtlServer(0) as server:
        sock = _raw_client(server)
        try:
            server.send_poses(T_CAM_REF, T_REF_CT, "LIVE", timestamp=TS, tools=tools)
            msgs = {m["device"]: m for m in _frame_messages(sock)}
        finally:
            sock.close()
    assert msgs["StylusToReference"]["body"] == _transform_body(T_REF_TOOL.matrix)
    t_ref_tip = T_REF_TOOL.matrix.copy()
    t_ref_tip[:3, 3] = T_REF_TOOL.rotation @ tip + T_REF_TOOL.translation
    got = np.frombuffer(msgs["StylusTipToReference"]["body"], ">f4").astype(float)
    np.testing.assert_allclose(got, np.frombuffer(_transform_body(t_ref_tip), ">f4"),
                               rtol=1e-6, atol=1e-5)
