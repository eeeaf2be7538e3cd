"""Cost of the mentoring server's security (``python -m benchmarks mentor_security``).

1. Call-token check: ``CallTokens.verify`` (HS256 JWT, audience = session) vs the peer PyJWT
   ``jwt.decode`` of the same token with the same key and audience, same process.
2. A call authenticated by the session token (SHA-256 + SQLite lookup) vs by a call token
   (HMAC-SHA256 + session row): ``Annotations`` hello + half-close until the call ends, on one
   open TLS channel.
3. A new channel's TLS handshake + ``Join``: server TLS vs mutual TLS (client certificate
   from ``scrubin certs``), to see what the client certificate adds per connection.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from scrubin.mentor.certs import make_theatre
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.mentor.tokens import SESSION_HEADER, CallTokens, read_or_make_key
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc

N_VERIFY = 20000
N_CALLS = 200
N_HANDSHAKES = 60


def _us(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1e6:.1f} us"


def _ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values) * 1e3:.2f} ms, p95 {q[94] * 1e3:.2f} ms"


def bench_verify(folder: Path) -> None:
    import jwt

    key = read_or_make_key(folder)
    tokens = CallTokens(key, 300)
    token, _ = tokens.issue("session-1", "mentor", "mentor:A")
    ours, peer = [], []
    for _ in range(5):  # interleaved rounds, best-of per side
        t0 = time.perf_counter()
        for _ in range(N_VERIFY // 5):
            tokens.verify(token, "session-1")
        ours.append((time.perf_counter() - t0) / (N_VERIFY // 5))
        t0 = time.perf_counter()
        for _ in range(N_VERIFY // 5):
            jwt.decode(token, key, algorithms=["HS256"], audience="session-1", issuer="scrubin")
        peer.append((time.perf_counter() - t0) / (N_VERIFY // 5))
    print(f"call-token check: scrubin {min(ours) * 1e6:.1f} us; PyJWT decode "
          f"{min(peer) * 1e6:.1f} us (ratio {min(ours) / min(peer):.2f})")


async def _call(stub: pb_grpc.MentorStub, meta: list[tuple[str, str]]) -> float:
    t0 = time.perf_counter()
    call = stub.Annotations(metadata=meta, timeout=5)
    await call.write(pb.AnnotationClientMessage(hello=pb.Hello(after_seq=0)))
    await call.done_writing()
    async for _ in call:
        pass
    assert await call.code() == grpc.StatusCode.OK
    return time.perf_counter() - t0


async def bench_calls(tmp: Path) -> None:
    server = MentorServer(ServerConfig(db=tmp / "calls" / "mentor.db", port=0, grpc_port=0))
    await server.start()
    try:
        made = await server.hub.db(server.hub.store.new_session, False, "bench")
        creds = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
        async with grpc.aio.secure_channel(server.grpc_target, creds) as ch:
            stub = pb_grpc.MentorStub(ch)
            session_meta = [("authorization", f"Bearer {made.tokens['mentor']}")]
            reply = await stub.Join(pb.JoinRequest(), metadata=session_meta)
            call_meta = [("authorization", f"Bearer {reply.call_token}"),
                         (SESSION_HEADER, made.session_id)]
            by_session, by_call = [], []
            for _ in range(N_CALLS):
                by_session.append(await _call(stub, session_meta))
                by_call.append(await _call(stub, call_meta))
        print(f"Annotations call (hello, half-close, end): session token {_ms(by_session)}; "
              f"call token {_ms(by_call)} (ratio "
              f"{statistics.median(by_call) / statistics.median(by_session):.2f})")
    finally:
        await server.stop(0.2)


async def bench_handshakes(tmp: Path) -> None:
    pki = tmp / "pki"
    pki.mkdir()
    make_theatre(pki, ["127.0.0.1"], ["station"])
    ca = (pki / "ca.pem").read_bytes()
    results = {}
    for mode in ("tls", "mtls"):
        extra = {"client_ca": pki / "ca.pem"} if mode == "mtls" else {}
        server = MentorServer(ServerConfig(db=tmp / mode / "mentor.db", port=0, grpc_port=0,
                                           tls_cert=pki / "server.pem",
                                           tls_key=pki / "server-key.pem", **extra))
        await server.start()
        try:
            made = await server.hub.db(server.hub.store.new_session, False, "bench")
            meta = [("authorization", f"Bearer {made.tokens['surgeon']}")]
            creds = grpc.ssl_channel_credentials(
                ca, private_key=(pki / "client-station-key.pem").read_bytes(),
                certificate_chain=(pki / "client-station.pem").read_bytes()) \
                if mode == "mtls" else grpc.ssl_channel_credentials(ca)
            times = []
            for _ in range(N_HANDSHAKES):
                t0 = time.perf_counter()
                async with grpc.aio.secure_channel(server.grpc_target, creds) as ch:
                    await pb_grpc.MentorStub(ch).Join(pb.JoinRequest(), metadata=meta)
                times.append(time.perf_counter() - t0)
            results[mode] = times
        finally:
            await server.stop(0.2)
    print(f"new channel + Join: TLS {_ms(results['tls'])}; mutual TLS {_ms(results['mtls'])} "
          f"(ratio {statistics.median(results['mtls']) / statistics.median(results['tls']):.2f})")


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_verify(tmp)
        asyncio.run(bench_calls(tmp))
        asyncio.run(bench_handshakes(tmp))


if __name__ == "__main__":
    main()
