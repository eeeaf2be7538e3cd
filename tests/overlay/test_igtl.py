"""OpenIGTLink: RAS transforms to a real pyigtl client, reconnection, POLYDATA bytes per spec."""

from __future__ import annotations

import socket
import struct
import time

import crcmod
import numpy as np
import pyigtl
import pytest

from scrubin.overlay.igtl import IgtlError, IgtlServer, decode_polydata, encode_polydata, to_ras
from scrubin.registration.frames import CAMERA, CT, REF, TOOL, Transform

F = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


T_REF_CT = Transform.from_rt(_rot(0, 20) @ _rot(2, 35), [12.0, -40.0, 7.5], CT, REF)
T_CAM_REF = Transform.from_rt(_rot(1, -15), [30.0, 5.0, 450.0], REF, CAMERA)


def test_ras_known_answer() -> None:
    """A point given in LPS maps like its RAS twin: to_ras(T) (F p) == F (T p)."""
    p = np.array([10.0, -20.0, 30.0, 1.0])
    np.testing.assert_allclose(to_ras(T_REF_CT) @ (F @ p), F @ (T_REF_CT.matrix @ p))
    t = Transform.from_rt(np.eye(3), [1, 2, 3], CT, REF)
    np.testing.assert_allclose(to_ras(t)[:3, 3], [-1, -2, 3])
    r = to_ras(T_REF_CT)[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def _connect(server: IgtlServer) -> pyigtl.OpenIGTLinkClient:
    client = pyigtl.OpenIGTLinkClient("127.0.0.1", server.port)
    assert server.wait_connected(10)
    return client


def _receive(server: IgtlServer, client: pyigtl.OpenIGTLinkClient, name: str):
    for _ in range(200):
        server.send_poses(T_CAM_REF, T_REF_CT, "LIVE", timestamp=1234.5,
                          tools={"Pointer": Transform.from_rt(np.eye(3), [1, 2, 3], TOOL, REF)})
        msg = client.wait_for_message(name, timeout=0.05)
        if msg is not None:
            return msg
    raise AssertionError(f"no {name} message")


def test_client_receives_ras_transforms_and_reconnects() -> None:
    with IgtlServer(0) as server:
        assert server.host == "127.0.0.1" and server.port > 0
        assert not server.connected
        assert server.send_transform("CTToReference", T_REF_CT) is False  # nobody listening
        for _ in range(2):  # the client goes away and comes back
            client = _connect(server)
            try:
                msg = _receive(server, client, "CTToCamera")
                expect = F @ (T_CAM_REF @ T_REF_CT).matrix @ F
                np.testing.assert_allclose(msg.matrix, expect, atol=1e-3)
                assert msg.timestamp == pytest.approx(1234.5, abs=1e-6)
                reg = _receive(server, client, "CTToReference")
                np.testing.assert_allclose(reg.matrix, F @ T_REF_CT.matrix @ F, atol=1e-3)
                tool = _receive(server, client, "PointerToReference")
                np.testing.assert_allclose(tool.matrix[:3, 3], [-1, -2, 3], atol=1e-5)
                state = _receive(server, client, "TrackingState")
                assert state.string == "LIVE"
            finally:
                client.stop()
            t0 = time.time()
            # TCP reveals a vanished peer only when a send fails: keep sending (bounded, 10 s)
            while server.connected and time.time() - t0 < 10:
                server.send_poses(None, T_REF_CT, "LOST")
                time.sleep(0.02)
            assert not server.connected


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def test_polydata_bytes_follow_the_spec_over_tcp() -> None:
    """Decode the header and body by hand, per the OpenIGTLink v2 header and POLYDATA spec."""
    v = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 30.0]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    with IgtlServer(0, models=[("skull", v, f)]) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            assert server.wait_connected(10)
            server.send_poses(None, T_REF_CT, "LIVE")
            header = _recv_exact(sock, 58)
            version, mtype, device, _ts, size, crc = struct.unpack(">H12s20sQQQ", header)
            assert version == 1
            assert mtype.rstrip(b"\0") == b"POLYDATA" and device.rstrip(b"\0") == b"skull"
            body = _recv_exact(sock, size)
            ecma = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, rev=False, initCrc=0, xorOut=0)
            assert crc == ecma(body)
        finally:
            sock.close()
    counts = struct.unpack_from(">10I", body)
    assert counts == (4, 0, 0, 0, 0, 4, 4 * 16, 0, 0, 0)
    pts = np.frombuffer(body, ">f4", 12, 40).reshape(4, 3)
    np.testing.assert_allclose(pts, v * [-1, -1, 1])  # LPS -> RAS
    cells = np.frombuffer(body, ">u4", 16, 40 + 48).reshape(4, 4)
    assert (cells[:, 0] == 3).all()
    np.testing.assert_array_equal(cells[:, 1:], f)
    assert len(body) == 40 + 48 + 64
    dp, polys = decode_polydata(body)
    np.testing.assert_allclose(dp, pts)
    assert [list(p) for p in polys] == f.tolist()


@pytest.mark.parametrize("v, f, msg", [
    (np.zeros((2, 3)), np.array([[0, 1, 1]]), "points"),
    (np.full((3, 3), np.nan), np.array([[0, 1, 2]]), "points"),
    (np.zeros((3, 3)), np.array([[0, 1, 3]]), "triangles"),
    (np.zeros((3, 3)), np.array([[0.0, 1.0, 2.0]]), "triangles"),
    (np.zeros((3, 3)), np.zeros((0, 3), int), "triangles"),
])
def test_polydata_rejections(v, f, msg) -> None:
    with pytest.raises(IgtlError, match=msg):
        encode_polydata(v, f)


def test_decode_rejects_truncated() -> None:
    body = encode_polydata(np.eye(3), np.array([[0, 1, 2]]))
    with pytest.raises(IgtlError, match="declared sizes|shorter"):
        decode_polydata(body[:-4])
    with pytest.raises(IgtlError, match="shorter than its header"):
        decode_polydata(body[:10])


def test_server_rejections() -> None:
    with pytest.raises(IgtlError, match="port"):
        IgtlServer(70000)
    with pytest.raises(IgtlError, match="host"):
        IgtlServer(0, host="10.0.0.1")
    with IgtlServer(0) as server:
        with pytest.raises(IgtlError, match="cannot listen"):
            IgtlServer(server.port)
        with pytest.raises(IgtlError, match="T_REF_CT"):
            server.send_poses(None, T_REF_CT.inverse(), "LIVE")
        with pytest.raises(IgtlError, match="T_CAMERA_REF"):
            server.send_poses(T_CAM_REF.inverse(), T_REF_CT, "LIVE")
        with pytest.raises(IgtlError, match="device name"):
            server.send_transform("X" * 21, T_REF_CT)
        with pytest.raises(IgtlError, match="must be a Transform"):
            server.send_transform("A", np.eye(4))


def test_pointer_tool_and_tip_transforms() -> None:
    from scrubin.overlay.pointer import PointerResult

    t_ref_tool = Transform.from_rt(_rot(2, 30), [5.0, -8.0, 40.0], TOOL, REF)
    tip = np.array([0.0, -104.0, 0.0])
    tools = PointerResult("LIVE", True, True, t_ref_tool, np.zeros(3), None, tip).igtl_tools()
    with IgtlServer(0) as server:
        client = _connect(server)
        try:
            got = {}
            for _ in range(200):
                server.send_poses(T_CAM_REF, T_REF_CT, "LIVE", tools=tools)
                for name in ("StylusToReference", "StylusTipToReference"):
                    msg = client.wait_for_message(name, timeout=0.02)
                    if msg is not None:
                        got[name] = msg
                if len(got) == 2:
                    break
        finally:
            client.stop()
    np.testing.assert_allclose(got["StylusToReference"].matrix, F @ t_ref_tool.matrix @ F,
                               atol=1e-3)
    tip_ras = got["StylusTipToReference"].matrix
    np.testing.assert_allclose(tip_ras[:3, 3], F[:3, :3] @ t_ref_tool.apply(tip), atol=1e-3)
    np.testing.assert_allclose(tip_ras[:3, :3], (F @ t_ref_tool.matrix @ F)[:3, :3], atol=1e-5)
