"""``MentorServer``: the whole ``scrubin serve`` process in one object, on one asyncio loop.

aiohttp (HTTPS: page, join, WebSocket, admin) and grpc.aio (TLS: ``scrubin.mentor.v1.Mentor``
+ ``grpc.health.v1.Health`` + server reflection) share one :class:`~scrubin.mentor.hub.Hub`
and the SQLite store. Tests and the surgeon station run it in-process::

    server = MentorServer(ServerConfig(db=tmp / "mentor.db", port=0, grpc_port=0))
    ports = await server.start()          # bound ports (0 -> chosen by the OS)
    ...
    await server.stop()

State folder (the database's folder): ``mentor.db`` (+ WAL files), ``tls-cert.pem`` /
``tls-key.pem`` (self-signed pair made once unless ``tls_cert``/``tls_key`` are given),
``admin-token`` (mode 0600; read by ``scrubin session new``).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from scrubin.imaging.fileio import write_atomic
from scrubin.mentor.errors import MentorError
from scrubin.mentor.grpc_service import MentorService
from scrubin.mentor.hub import Hub
from scrubin.mentor.state import default_state_dir
from scrubin.mentor.store import Store
from scrubin.mentor.tls import (
    ensure_self_signed,
    fingerprint_sha256,
    read_ca,
    read_pair,
    server_ssl_context,
)
from scrubin.mentor.tokens import CallTokens, read_or_make_key
from scrubin.mentor.turn import TurnCredentials, read_secret
from scrubin.mentor.web import make_app
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc

ADMIN_TOKEN_NAME = "admin-token"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Mentor"].full_name


@dataclass
class ServerConfig:
    """Options of ``scrubin serve`` (see its ``--help``)."""

    db: Path = field(default_factory=lambda: default_state_dir() / "mentor.db")
    host: str = "127.0.0.1"
    port: int = 8443
    grpc_port: int = 50051
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ice_hosts: list[str] = field(default_factory=list)
    stun: list[str] = field(default_factory=list)
    client_ca: Path | None = None  # gRPC mutual TLS: client certificates from this CA only
    https_client_ca: Path | None = None  # the same for HTTPS (browsers need a client cert)
    call_token_ttl_s: float = 300.0  # lifetime of Join's call tokens (mentor/tokens.py)
    turn: list[str] = field(default_factory=list)  # turn:/turns: URLs (mentor/turn.py)
    turn_secret_file: Path | None = None  # coturn's static-auth-secret, first line
    turn_ttl_s: int = 3600

    def check(self) -> None:
        """Refuse malformed options with a one-line MentorError."""
        for name, port in (("--port", self.port), ("--grpc-port", self.grpc_port)):
            if not 0 <= port <= 65535:
                raise MentorError(f"{name} {port}: expected 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise MentorError("--tls-cert and --tls-key go together")
        for a in self.ice_hosts:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise MentorError(f"--ice-host {a!r}: expected an IP address such as "
                                  "127.0.0.1") from None
        for opt, ca in (("--client-ca", self.client_ca),
                        ("--https-client-ca", self.https_client_ca)):
            if ca is not None and not Path(ca).is_file():
                raise MentorError(f"{opt} {ca}: CA certificate file not found")
        if bool(self.turn) != (self.turn_secret_file is not None):
            raise MentorError("--turn and --turn-secret-file go together")
        for url in self.stun:
            if url.split(":", 1)[0] not in ("stun", "stuns", "turn", "turns") or ":" not in url:
                raise MentorError(f"--stun {url!r}: expected a stun:HOST[:PORT] URL")


@dataclass(frozen=True)
class BoundPorts:
    """The ports the server listens on (the OS's choice when 0 was asked)."""

    https: int
    grpc: int


def _read_or_make_admin_token(path: Path) -> str:
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)

    def write(tmp: Path) -> None:
        os.chmod(tmp, 0o600)
        tmp.write_text(token + "\n")

    write_atomic(path, write)
    return token


class MentorServer:
    """The mentoring server (see the module docstring)."""

    def __init__(self, config: ServerConfig) -> None:
        config.check()
        self.config = config
        self.state_dir = Path(config.db).resolve().parent
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self.fingerprint = ""
        self.admin_token_path = self.state_dir / ADMIN_TOKEN_NAME
        self.ports: BoundPorts | None = None
        self._hub: Hub | None = None
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: HealthServicer | None = None

    @property
    def hub(self) -> Hub:
        """The live hub (after :meth:`start`)."""
        if self._hub is None:
            raise MentorError("server not started")
        return self._hub

    @property
    def url(self) -> str:
        """``https://HOST:PORT`` of the web side (after :meth:`start`)."""
        assert self.ports is not None
        host = self.config.host
        return f"https://{f'[{host}]' if ':' in host else host}:{self.ports.https}"

    @property
    def grpc_target(self) -> str:
        """``HOST:PORT`` of the gRPC side (after :meth:`start`)."""
        assert self.ports is not None
        host = self.config.host
        return f"{f'[{host}]' if ':' in host else host}:{self.ports.grpc}"

    async def start(self) -> BoundPorts:
        """Open the store, make/load TLS and the admin token, listen; return the ports."""
        cfg = self.config
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise MentorError(f"{self.state_dir}: cannot create the state folder ({exc})"
                              ) from None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            self.cert_path, self.key_path = Path(cfg.tls_cert), Path(cfg.tls_key)
        else:
            extra = () if cfg.host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::") \
                else (cfg.host,)
            self.cert_path, self.key_path = ensure_self_signed(self.state_dir, extra)
        cert_pem, key_pem = read_pair(self.cert_path, self.key_path)
        self.fingerprint = fingerprint_sha256(self.cert_path)
        admin_token = _read_or_make_admin_token(self.admin_token_path)
        client_ca = read_ca(cfg.client_ca) if cfg.client_ca is not None else None
        turn = (TurnCredentials(cfg.turn, read_secret(cfg.turn_secret_file), cfg.turn_ttl_s)
                if cfg.turn_secret_file is not None else None)
        call_tokens = CallTokens(read_or_make_key(self.state_dir), cfg.call_token_ttl_s)
        self._hub = Hub(Store(cfg.db), cfg.stun, cfg.ice_hosts, call_tokens, turn)

        # gRPC: Mentor + health + reflection, TLS only.
        server = grpc.aio.server(options=[
            ("grpc.keepalive_time_ms", 20000),
            ("grpc.keepalive_timeout_ms", 10000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ])
        pb_grpc.add_MentorServicer_to_server(MentorService(self._hub), server)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_ca,
                                            require_client_auth=client_ca is not None)
        grpc_port = server.add_secure_port(f"{self._bracket(cfg.host)}:{cfg.grpc_port}", creds)
        if grpc_port == 0:
            self._hub.close()
            raise MentorError(f"--grpc-port {cfg.grpc_port}: cannot listen on "
                              f"{cfg.host} (in use?)")
        await server.start()
        self._grpc = server
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

        # HTTPS.
        runner = web.AppRunner(make_app(self._hub, admin_token, lambda: self.url),
                                access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port,
                           ssl_context=server_ssl_context(self.cert_path, self.key_path,
                                                          cfg.https_client_ca))
        try:
            await site.start()
        except OSError as exc:
            await server.stop(None)
            await runner.cleanup()
            self._hub.close()
            raise MentorError(f"--port {cfg.port}: cannot listen on {cfg.host} ({exc})"
                              ) from None
        self._runner = runner
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.ports = BoundPorts(https=int(sock.getsockname()[1]), grpc=grpc_port)
        return self.ports

    async def stop(self, grace: float = 1.0) -> None:
        """Stop listening (open calls get ``grace`` seconds), then close the store."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._hub is not None:
            self._hub.close()
            self._hub = None

    @staticmethod
    def _bracket(host: str) -> str:
        return f"[{host}]" if ":" in host else host
