"""The HTTPS / WebSocket side of the real server on 127.0.0.1 (mentor/web.py) with a real
aiohttp client over real TLS: join -> cookie, WebSocket protocol, refusals, signalling relay
to a gRPC station, admin API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import pytest

from scrubin.mentor.client import MentorClient
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.mentor.tls import client_ssl_context
from scrubin.protos import mentor_pb2 as pb

SDP = "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@contextlib.asynccontextmanager
async def running(tmp: Path):
    server = MentorServer(ServerConfig(db=tmp / "mentor.db", port=0, grpc_port=0,
                                       ice_hosts=["127.0.0.1"]))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.2)


async def new_session(server: MentorServer, record: bool = False):
    return await server.hub.db(server.hub.store.new_session, record, "web")


def http(server: MentorServer) -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar otherwise ignores cookies of IP-address hosts (127.0.0.1)
    return aiohttp.ClientSession(
        base_url=server.url, cookie_jar=aiohttp.CookieJar(unsafe=True),
        connector=aiohttp.TCPConnector(ssl=client_ssl_context(server.cert_path)))


async def joined(server: MentorServer, token: str, name: str = "") -> aiohttp.ClientSession:
    s = http(server)
    r = await s.post("/api/join", json={"token": token, "name": name})
    assert r.status == 200, await r.text()
    return s


async def recv(ws, kind: str, timeout: float = 5.0) -> dict:
    """The next message of type ``kind`` (others are skipped)."""
    while True:
        msg = json.loads((await asyncio.wait_for(ws.receive(), timeout)).data)
        if msg["type"] == kind:
            return msg


def stroke(event_id: str, annotation_id: str = "a1") -> dict:
    return {"event_id": event_id, "op": "create", "annotation_id": annotation_id,
            "kind": "circle", "color": "#3366ff", "frame_id": 42,
            "capture_time": 1764680000.5, "points": [[0.5, 0.5], [0.6, 0.5]]}


def test_join_sets_a_strict_secure_httponly_cookie(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server, record=True)
            async with http(server) as s:
                r = await s.post("/api/join", json={"token": made.tokens["mentor"],
                                                    "name": "Dr A"})
                assert r.status == 200
                assert await r.json() == {"session_id": made.session_id, "role": "mentor",
                                          "author": "mentor:Dr A", "recording": True}
                cookie = SimpleCookie(r.headers["Set-Cookie"])["scrubin_session"]
                assert cookie["httponly"] and cookie["secure"]
                assert cookie["samesite"] == "Strict" and cookie["path"] == "/"
                assert made.tokens["mentor"] not in cookie.value
                assert r.headers["Cache-Control"] == "no-store"
                for bad in ({"token": "nope"}, {"token": 5}):
                    r = await s.post("/api/join", json=bad)
                    assert r.status in (400, 401)
                r = await s.post("/api/join", data=b"not json")
                assert r.status == 400
            log = await server.hub.db(server.hub.store.audit_log, None)
            assert [r["action"] for r in log if r["action"] in ("join", "refused")] == [
                "join", "refused"]
    asyncio.run(main())


def test_page_and_static_files_are_served_with_a_strict_policy(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with http(server) as s:
                r = await s.get(f"/m/{made.session_id}")
                assert r.status == 200 and r.content_type == "text/html"
                assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                r = await s.get("/static/index.html")
                assert r.status == 200
                r = await s.get("/static/../store.py")
                assert r.status in (403, 404)
    asyncio.run(main())


def test_token_in_a_query_string_or_plaintext_http_gets_nothing(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            async with http(server) as s:
                # no cookie: the WebSocket is refused before the upgrade, query or not
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await s.ws_connect(f"/api/ws?token={made.tokens['mentor']}")
                assert err.value.status == 401
            # plaintext HTTP to the TLS port: no HTTP response comes back
            port = server.ports.https
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /m/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1000), 5)
            writer.close()
            assert not data.startswith(b"HTTP/")
            async with aiohttp.ClientSession() as plain:
                with pytest.raises(aiohttp.ClientError):
                    await plain.get(f"http://127.0.0.1:{port}/m/x")
            # and a client that does not trust the certificate refuses the server
            async with aiohttp.ClientSession() as untrusting:
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await untrusting.get(f"{server.url}/m/x")
    asyncio.run(main())


def test_websocket_exactly_once_resume_dedupe_and_roles(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server, record=True)
            mentor = await joined(server, made.tokens["mentor"], "A")
            observer = await joined(server, made.tokens["observer"])
            try:
                ws_m = await mentor.ws_connect("/api/ws")
                await ws_m.send_json({"type": "hello", "after_seq": 0})
                welcome = await recv(ws_m, "welcome")
                assert welcome == {"type": "welcome", "session_id": made.session_id,
                                   "role": "mentor", "author": "mentor:A", "recording": True,
                                   "surgeon_online": False, "last_seq": 0,
                                   "ice_servers": [], "ice_hosts": ["127.0.0.1"]}
                for i in range(3):
                    await ws_m.send_json({"type": "annotation", "event": stroke(f"e{i}",
                                                                                f"a{i}")})
                    ack = await recv(ws_m, "ack")
                    assert (ack["event_id"], ack["seq"], ack["duplicate"]) == (f"e{i}", i + 1,
                                                                                False)
                # a resend (e.g. after a reload, from localStorage) is acked, not applied
                await ws_m.send_json({"type": "annotation", "event": stroke("e1", "a1")})
                ack = await recv(ws_m, "ack")
                assert (ack["seq"], ack["duplicate"]) == (2, True)
                await ws_m.send_json({"type": "ping", "t": 12.5})
                assert (await recv(ws_m, "pong"))["t"] == 12.5

                ws_o = await observer.ws_connect("/api/ws")
                await ws_o.send_json({"type": "hello", "after_seq": 1})
                assert (await recv(ws_o, "welcome"))["last_seq"] == 3
                got = [await recv(ws_o, "event") for _ in range(2)]
                assert [(m["seq"], m["event"]["event_id"], m["event"]["author"]) for m in got] \
                    == [(2, "e1", "mentor:A"), (3, "e2", "mentor:A")]
                await ws_o.send_json({"type": "annotation", "event": stroke("o1", "o1")})
                err = await recv(ws_o, "error")
                assert err == {"type": "error", "message": "observers cannot annotate",
                               "event_id": "o1"}
                await ws_m.send_json({"type": "annotation", "event": {**stroke("bad"),
                                                                       "color": "red"}})
                err = await recv(ws_m, "error")
                assert "'color'" in err["message"] and "'red'" in err["message"]
                # live event reaches the observer exactly once
                await ws_m.send_json({"type": "annotation", "event": stroke("e3", "a3")})
                assert (await recv(ws_o, "event"))["seq"] == 4
                await ws_o.close()
                # reconnect with the last seq seen: nothing replayed twice, new ones arrive
                await ws_m.send_json({"type": "annotation", "event": stroke("e4", "a4")})
                await recv(ws_m, "ack")
                ws_o = await observer.ws_connect("/api/ws")
                await ws_o.send_json({"type": "hello", "after_seq": 4})
                assert (await recv(ws_o, "event"))["seq"] == 5
                await ws_o.close()
                await ws_m.close()
            finally:
                await mentor.close()
                await observer.close()
            stored = await server.hub.db(server.hub.store.events_after, made.session_id, 0)
            assert [e["event_id"] for _, e in stored] == ["e0", "e1", "e2", "e3", "e4"]
    asyncio.run(main())


def test_ended_session_closes_the_door(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            s = await joined(server, made.tokens["mentor"])
            try:
                ws = await s.ws_connect("/api/ws")
                await ws.close()
                await server.hub.db(server.hub.store.end_session, made.session_id)
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await s.ws_connect("/api/ws")
                assert err.value.status == 401
                r = await s.post("/api/join", json={"token": made.tokens["mentor"]})
                assert r.status == 401
            finally:
                await s.close()
            log = await server.hub.db(server.hub.store.audit_log, made.session_id)
            refused = [r["detail"] for r in log if r["action"] == "refused"]
            assert refused == ["websocket: ended session cookie",
                               "web join: ended session token"]
    asyncio.run(main())


def test_signalling_relay_between_page_and_grpc_station(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            page = await joined(server, made.tokens["observer"], "viewer")
            async with MentorClient(server.grpc_target, made.tokens["surgeon"],
                                    server.cert_path, "station") as station_client:
                ws = await page.ws_connect("/api/ws")
                await ws.send_json({"type": "hello", "after_seq": 0})
                assert (await recv(ws, "welcome"))["surgeon_online"] is False
                await ws.send_json({"type": "signal", "sdp": SDP, "sdp_type": "offer"})
                assert "not connected" in (await recv(ws, "error"))["message"]

                station = station_client.signal()
                await station.wait_open()
                assert (await recv(ws, "presence"))["surgeon_online"] is True
                await ws.send_json({"type": "signal", "sdp": SDP, "sdp_type": "offer"})
                offer = await asyncio.wait_for(station.recv(), 5)
                assert (offer.sdp, offer.role, offer.author) == (SDP, pb.ROLE_OBSERVER,
                                                                 "observer:viewer")
                await station.send("answer", SDP.replace("7 7", "8 8"), offer.peer_id)
                answer = await recv(ws, "signal")
                assert answer == {"type": "signal", "peer_id": offer.peer_id,
                                  "sdp": SDP.replace("7 7", "8 8"), "sdp_type": "answer"}
                # telemetry from the station reaches the page as "meta"-style JSON
                pub = station_client.telemetry_publisher()
                frame = pb.TelemetryFrame(frame_id=77, capture_time=5.0, width=1280,
                                          height=720, tracking=pb.TRACKING_STALE, tre_mm=0.14)
                frame.intrinsics.CopyFrom(pb.Intrinsics(fx=1000, fy=1000, cx=640, cy=360,
                                                        dist=[0.1, 0, 0, 0, 0]))
                await pub.send(frame)
                tel = await recv(ws, "telemetry")
                assert (tel["frame_id"], tel["tracking"], tel["tre_mm"], tel["fre_mm"]) == (
                    77, "STALE", 0.14, None)
                assert tel["K"] == [1000, 1000, 640, 360] and tel["T_camera_ref"] is None
                await ws.close()
                bye = await asyncio.wait_for(station.recv(), 5)
                assert (bye.sdp_type, bye.peer_id) == ("bye", offer.peer_id)
                station.close()
            await page.close()
    asyncio.run(main())


def test_admin_api_needs_the_admin_token(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            admin = server.admin_token_path.read_text().strip()
            assert server.admin_token_path.stat().st_mode & 0o777 == 0o600
            async with http(server) as s:
                r = await s.post("/api/admin/sessions", json={"record": True})
                assert r.status == 401
                r = await s.post("/api/admin/sessions", json={},
                                 headers={"Authorization": "Bearer " + "x" * len(admin)})
                assert r.status == 401
                auth = {"Authorization": f"Bearer {admin}"}
                r = await s.post("/api/admin/sessions", json={"record": True}, headers=auth)
                made = await r.json()
                assert made["recording"] is True
                for role, link in made["links"].items():
                    assert link == (f"{server.url}/m/{made['session_id']}"
                                    f"#token={made['tokens'][role]}")
                r = await s.post(f"/api/admin/sessions/{made['session_id']}/end", headers=auth)
                assert r.status == 200
                r = await s.post(f"/api/admin/sessions/{made['session_id']}/end", headers=auth)
                assert r.status == 404
    asyncio.run(main())


def test_certificate_names_loopback_and_is_reused(tmp_path):
    import hashlib

    from cryptography import x509

    async def main():
        async with running(tmp_path) as server:
            first = server.cert_path.read_bytes()
            fp = server.fingerprint
        async with running(tmp_path) as server:
            assert server.cert_path.read_bytes() == first and server.fingerprint == fp
            assert server.key_path.stat().st_mode & 0o777 == 0o600
        cert = x509.load_pem_x509_certificate(first)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}
        # the printed fingerprint is the SHA-256 of the DER certificate (what browsers show)
        der = ssl.PEM_cert_to_DER_cert(first.decode())
        assert fp == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    asyncio.run(main())


def test_ending_a_session_closes_open_streams_and_refuses_events(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server, record=True)
            admin = {"Authorization": f"Bearer {server.admin_token_path.read_text().strip()}"}
            page = await joined(server, made.tokens["mentor"])
            async with MentorClient(server.grpc_target, made.tokens["surgeon"],
                                    server.cert_path) as sur:
                ws = await page.ws_connect("/api/ws")
                await ws.send_json({"type": "hello", "after_seq": 0})
                await recv(ws, "welcome")
                call = sur.stub.Annotations(metadata=sur.metadata)
                await call.write(pb.AnnotationClientMessage(hello=pb.Hello(after_seq=0)))
                r = await page.post(f"/api/admin/sessions/{made.session_id}/end",
                                    headers=admin)
                assert r.status == 200
                assert (await recv(ws, "error"))["message"] == "the session has ended"
                closed = await asyncio.wait_for(ws.receive(), 5)
                assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                reply = await asyncio.wait_for(call.read(), 5)
                assert reply.error.message == "the session has ended"
                assert await asyncio.wait_for(call.read(), 5) is grpc_eof()
                # a connection that is still open cannot add to an ended session
                ev = {"event_id": "late", "op": "create", "annotation_id": "z",
                      "points": [[0.5, 0.5]]}
                with pytest.raises(Exception, match="has ended"):
                    await server.hub.submit(
                        (await server.hub.db(server.hub.store.identify_token,
                                             made.tokens["mentor"])), "mentor", ev, "")
            await page.close()
            log = await server.hub.db(server.hub.store.audit_log, made.session_id)
            assert [(r["action"], r["detail"]) for r in log][:2] == [
                ("session_new", "recording=on label='web'"), ("join", "web recording=on")]
            assert log[-2]["action"] == "session_end"
            assert log[-1]["action"] == "refused" and "has ended" in log[-1]["detail"]
    asyncio.run(main())


def grpc_eof():
    import grpc

    return grpc.aio.EOF


def test_stopping_the_server_closes_open_websockets_going_away(tmp_path):
    async def main():
        server = MentorServer(ServerConfig(db=tmp_path / "mentor.db", port=0, grpc_port=0))
        await server.start()
        made = await new_session(server)
        page = await joined(server, made.tokens["observer"])
        ws = await page.ws_connect("/api/ws")
        await ws.send_json({"type": "hello", "after_seq": 0})
        await recv(ws, "welcome")
        stopping = asyncio.create_task(server.stop(0.2))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
        await asyncio.wait_for(stopping, 10)
        await page.close()
    asyncio.run(main())


def test_requests_from_another_sites_page_are_refused(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            page = await joined(server, made.tokens["mentor"])
            try:
                evil = {"Origin": "https://evil.example"}
                r = await page.post("/api/join", json={"token": made.tokens["mentor"]},
                                    headers=evil)
                assert r.status == 403
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await page.ws_connect("/api/ws", headers=evil)
                assert err.value.status == 403
                same = {"Origin": server.url}
                ws = await page.ws_connect("/api/ws", headers=same)
                await ws.close()
            finally:
                await page.close()
    asyncio.run(main())


def test_the_token_is_in_no_log_line(tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG)

    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            page = await joined(server, made.tokens["mentor"])
            ws = await page.ws_connect("/api/ws")
            await ws.send_json({"type": "hello", "after_seq": 0})
            await recv(ws, "welcome")
            await ws.close()
            await page.close()
            return made.tokens["mentor"]
    token = asyncio.run(main())
    assert caplog.records  # logging was on (aiohttp, asyncio, grpc debug lines)
    assert token not in caplog.text


def test_malformed_events_are_refused_naming_the_field(tmp_path):
    good = stroke("x")
    cases = [
        ({**good, "op": "paint"}, "'op': 'paint' is not one of create"),
        ({**good, "event_id": ""}, "'event_id' is missing"),
        ({**good, "event_id": "e" * 129}, "'event_id': 129 characters"),
        ({**good, "points": [[0.5, "a"]]}, "'points'[0]"),
        ({**good, "points": [[0.5, float("nan")]]}, "[0.5, nan] is not 2 finite numbers"),
        ({**good, "points": [[3.0, 0.5]]}, "outside the normalised image range"),
        ({**good, "points": []}, "needs at least one point"),
        ({**good, "frame_id": 2**32}, "'frame_id': 4294967296 is not a uint32"),
        ({**good, "kind": "scribble"}, "'kind': 'scribble'"),
        ({**good, "op": "update", "annotation_id": "never"}, "'never' was never created"),
        ({**good, "op": "anchor"}, "'anchor' is the surgeon's only"),
        ("not an object", "expected a JSON object"),
    ]

    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            page = await joined(server, made.tokens["mentor"])
            try:
                ws = await page.ws_connect("/api/ws")
                await ws.send_json({"type": "hello", "after_seq": 0})
                await recv(ws, "welcome")
                for event, message in cases:
                    # json.dumps writes NaN (not JSON, RFC 8259); the server's parser takes it
                    await ws.send_str(json.dumps({"type": "annotation", "event": event}))
                    err = await recv(ws, "error")
                    assert message in err["message"], (event, err)
                await ws.send_json({"type": "nonsense"})
                assert "expected hello, annotation" in (await recv(ws, "error"))["message"]
                await ws.close()
            finally:
                await page.close()
            assert await server.hub.db(server.hub.store.last_seq, made.session_id) == 0
    asyncio.run(main())
