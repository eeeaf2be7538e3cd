"""Mentoring server (``python -m benchmarks mentor_server``): annotation round trip and the
cost of durable storage.

1. gRPC: a mentor's annotation event sent on the ``Annotations`` stream until its ``ack``
   comes back (validation, role check, SQLite insert with ``synchronous=FULL`` on the store
   thread, broadcast) vs the peer: a bare grpc.aio bidirectional echo of the same bytes over
   the same kind of TLS channel in the same process (grpc's own floor).
2. WebSocket: the same event as JSON on ``/api/ws`` until its ``ack`` vs an aiohttp WebSocket
   echo over TLS in the same process.
3. The store: one ``append_event`` (fsync'd commit) and how long the event loop stalls when it
   runs inline on the loop vs on the store thread (the server's choice), measured as the
   largest lag of a 1 ms ticker during 100 appends.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from scrubin.mentor.client import MentorClient
from scrubin.mentor.events import event_to_pb, validate_event
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.mentor.store import Store
from scrubin.mentor.tls import client_ssl_context, server_ssl_context
from scrubin.protos import mentor_pb2 as pb

N = 200


def _event() -> dict:
    return {"event_id": str(uuid.uuid4()), "op": "create", "annotation_id": "a",
            "kind": "freehand", "color": "#ff0000", "frame_id": 1, "capture_time": 1.0,
            "points": [[0.1 + i / 1000, 0.2] for i in range(50)]}


def _ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values) * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms"


async def _grpc_round_trips(server: MentorServer, token: str) -> tuple[list[float], list[float]]:
    async with MentorClient(server.grpc_target, token, server.cert_path) as c:
        call = c.stub.Annotations(metadata=c.metadata)
        ours = []
        for _ in range(N):
            msg = pb.AnnotationClientMessage(event=event_to_pb(validate_event(
                _event(), "mentor", "mentor")))
            t0 = time.perf_counter()
            await call.write(msg)
            reply = await call.read()
            ours.append(time.perf_counter() - t0)
            assert reply.WhichOneof("msg") == "ack", reply
        call.cancel()

    async def echo(request_iterator, context):
        async for raw in request_iterator:
            yield raw

    peer_server = grpc.aio.server()
    peer_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(echo)}),))
    key, cert = server.key_path.read_bytes(), server.cert_path.read_bytes()
    port = peer_server.add_secure_port("127.0.0.1:0",
                                       grpc.ssl_server_credentials([(key, cert)]))
    await peer_server.start()
    peer = []
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}",
                                       grpc.ssl_channel_credentials(cert)) as ch:
        call = ch.stream_stream("/bench.Echo/Chat")()
        for _ in range(N):
            raw = pb.AnnotationClientMessage(event=event_to_pb(validate_event(
                _event(), "mentor", "mentor"))).SerializeToString()
            t0 = time.perf_counter()
            await call.write(raw)
            await call.read()
            peer.append(time.perf_counter() - t0)
        call.cancel()
    await peer_server.stop(None)
    return ours, peer


async def _ws_round_trips(server: MentorServer, token: str) -> tuple[list[float], list[float]]:
    ctx = client_ssl_context(server.cert_path)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        await s.post(f"{server.url}/api/join", json={"token": token})
        ws = await s.ws_connect(f"{server.url}/api/ws")
        await ws.send_json({"type": "hello", "after_seq": 10**9})
        await ws.receive()
        ours = []
        for _ in range(N):
            t0 = time.perf_counter()
            await ws.send_json({"type": "annotation", "event": _event()})
            while (await ws.receive_json())["type"] != "ack":
                pass
            ours.append(time.perf_counter() - t0)
        await ws.close()

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=server_ssl_context(server.cert_path, server.key_path))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    peer = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        ws = await s.ws_connect(f"https://127.0.0.1:{port}/echo")
        for _ in range(N):
            t0 = time.perf_counter()
            await ws.send_json({"type": "annotation", "event": _event()})
            await ws.receive_json()
            peer.append(time.perf_counter() - t0)
        await ws.close()
    await runner.cleanup()
    return ours, peer


async def _loop_stall(store: Store, session_id: str, inline: bool) -> tuple[float, list[float]]:
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(1)
    lags: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t0 - 0.001)

    tick = asyncio.create_task(ticker())
    appends = []
    loop = asyncio.get_running_loop()
    for _ in range(100):
        ev = validate_event(_event(), "mentor", "mentor")
        t0 = time.perf_counter()
        if inline:
            store.append_event(session_id, ev)
        else:
            await loop.run_in_executor(executor, store.append_event, session_id, ev)
        appends.append(time.perf_counter() - t0)
        await asyncio.sleep(0)
    running = False
    await tick
    executor.shutdown()
    return max(lags), appends


async def _main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = MentorServer(ServerConfig(db=Path(tmp) / "m.db", port=0, grpc_port=0))
        await server.start()
        made = await server.hub.db(server.hub.store.new_session, False, "bench")
        ours, peer = await _grpc_round_trips(server, made.tokens["mentor"])
        print(f"gRPC annotation -> ack: scrubin {_ms(ours)}; grpc.aio echo {_ms(peer)} "
              f"-> {statistics.median(peer) / statistics.median(ours):.2f}x (median of {N})")
        ours, peer = await _ws_round_trips(server, made.tokens["mentor"])
        print(f"WebSocket annotation -> ack: scrubin {_ms(ours)}; aiohttp echo {_ms(peer)} "
              f"-> {statistics.median(peer) / statistics.median(ours):.2f}x (median of {N})")
        await server.stop(0)
        store = Store(Path(tmp) / "stall.db")
        sid = store.new_session().session_id
        for inline in (True, False):
            stall, appends = await _loop_stall(store, sid, inline)
            print(f"store append ({'inline on the loop' if inline else 'store thread'}): "
                  f"{_ms(appends)}; largest event-loop stall {stall * 1e3:.2f} ms")
        store.close()


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()
