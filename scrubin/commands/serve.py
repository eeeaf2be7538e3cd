"""``scrubin serve``: the remote-mentoring server (HTTPS page + WebSocket, gRPC, SQLite)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    from scrubin.mentor.state import default_state_dir

    parser = sub.add_parser(
        "serve",
        help="run the remote-mentoring server (HTTPS + WebSocket, gRPC, SQLite; TLS always)",
        description=(
            "Run the remote-mentoring server in one process: the mentor page, join and "
            "WebSocket over HTTPS; scrubin.mentor.v1.Mentor, health checking and reflection "
            "over gRPC with TLS; sessions, hashed tokens, annotations and the audit log in "
            "SQLite. Without --tls-cert/--tls-key a self-signed pair is made once in the "
            "database's folder and its SHA-256 fingerprint printed. The admin token that "
            "'scrubin session new' needs is kept there too (admin-token, mode 0600). Stop "
            "with Ctrl-C or SIGTERM."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8443, help="HTTPS port (0: any free)")
    parser.add_argument("--grpc-port", type=int, default=50051, help="gRPC port (0: any free)")
    parser.add_argument("--tls-cert", type=Path, metavar="F", help="PEM certificate (chain)")
    parser.add_argument("--tls-key", type=Path, metavar="F", help="PEM private key")
    parser.add_argument(
        "--ice-host", action="append", default=[], metavar="ADDR",
        help="limit WebRTC host candidates to this address (repeatable; told to clients)",
    )
    parser.add_argument(
        "--stun", action="append", default=[], metavar="URL",
        help="STUN/TURN server for clients (repeatable); none by default: host candidates only",
    )
    parser.add_argument("--client-ca", type=Path, metavar="F",
                        help="gRPC mutual TLS: require client certificates issued by this CA "
                             "(scrubin certs)")
    parser.add_argument("--https-client-ca", type=Path, metavar="F",
                        help="HTTPS mutual TLS: the same for the page (browsers need a cert)")
    parser.add_argument("--call-token-ttl", type=float, default=300.0, metavar="S",
                        help="lifetime of the call tokens Join returns (default %(default)s s)")
    parser.add_argument("--turn", action="append", default=[], metavar="URL",
                        help="TURN server for clients, e.g. turns:HOST:443?transport=tcp; each "
                             "participant gets its own time-limited credential (repeatable)")
    parser.add_argument("--turn-secret-file", type=Path, metavar="F",
                        help="coturn's static-auth-secret (first line; use-auth-secret)")
    parser.add_argument("--turn-ttl", type=int, default=3600, metavar="S",
                        help="lifetime of TURN credentials (default %(default)s s)")
    parser.add_argument("--sfu", metavar="URL",
                        help="Janus HTTP API on 127.0.0.1 (e.g. http://127.0.0.1:8088/janus): "
                             "one locked VideoRoom per session for large audiences")
    parser.add_argument("--sfu-secrets", type=Path, metavar="F",
                        help="JSON {api_secret, admin_key} of that Janus "
                             "(scrubin.mentor.sfu_janus.write_config)")
    parser.add_argument(
        "--db", type=Path, default=default_state_dir() / "mentor.db", metavar="FILE",
        help="SQLite database; its folder is the state folder (default: %(default)s)",
    )
    parser.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from scrubin.mentor.server import MentorServer, ServerConfig

    bridge = None
    if args.sfu or args.sfu_secrets:   # checked (and Janus asked) before anything listens
        from scrubin.mentor.sfu import SfuError
        from scrubin.mentor.sfu_bridge import SfuBridge, read_secrets

        if not (args.sfu and args.sfu_secrets):
            raise SfuError("--sfu and --sfu-secrets go together")
        bridge = SfuBridge(args.sfu, *read_secrets(args.sfu_secrets))
        await bridge.start()
    server = MentorServer(ServerConfig(
        db=args.db, host=args.host, port=args.port, grpc_port=args.grpc_port,
        tls_cert=args.tls_cert, tls_key=args.tls_key, ice_hosts=list(args.ice_host),
        stun=list(args.stun), client_ca=args.client_ca, https_client_ca=args.https_client_ca,
        call_token_ttl_s=args.call_token_ttl, turn=list(args.turn),
        turn_secret_file=args.turn_secret_file, turn_ttl_s=args.turn_ttl,
    ))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before "ports:" is printed
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except BaseException:
        if bridge is not None:
            await bridge.close()
        raise
    if bridge is not None:
        hub = server.hub
        bridge.audit = lambda sid, what: asyncio.ensure_future(
            hub.db(hub.store.audit, sid, "server", "server", "sfu", what))
        hub.sfu = bridge  # Signal sfu-* messages go to it (grpc_service._sfu)
        print(f"sfu: Janus {args.sfu} (rooms private, pin + secret per session)", flush=True)
    assert server.ports is not None
    print(f"scrubin serve: web {server.url}  grpc {server.grpc_target} (TLS)", flush=True)
    print(f"certificate: {server.cert_path}", flush=True)
    print(f"fingerprint: SHA-256 {server.fingerprint}", flush=True)
    print(f"admin token: {server.admin_token_path}", flush=True)
    print(f"database: {Path(args.db).resolve()}", flush=True)
    print(f"ports: https={server.ports.https} grpc={server.ports.grpc}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        if bridge is not None:
            await bridge.close()
    print("scrubin serve: stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    import asyncio  # here, not at import: keeps 'scrubin --help' light

    return asyncio.run(_serve(args))
