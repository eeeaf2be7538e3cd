"""``scrubin certs`` and mutual TLS on the real server (gRPC and HTTPS on 127.0.0.1).

The certificates are checked by a peer (``openssl verify -purpose``, ``openssl x509``); the
handshakes are real: a plaintext gRPC client, a client without a certificate and one whose
certificate comes from another CA are refused, the theatre's client certificate is accepted.
TLS-handshake refusals happen inside gRPC core / OpenSSL before any call exists, so they leave
no audit row (README "Security" says so); the test pins that down."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest

from scrubin.mentor.certs import issue, make_theatre
from scrubin.mentor.client import MentorClient
from scrubin.protos import mentor_pb2 as pb
from scrubin.protos import mentor_pb2_grpc as pb_grpc
from tests.mentor.test_grpc import new_session, running

pytestmark = pytest.mark.timeout(60)


def scrubin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scrubin", *args], capture_output=True,
                          text=True, timeout=60)


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def test_certs_cli_makes_a_chain_openssl_accepts(tmp_path):
    r = scrubin("certs", str(tmp_path), "--host", "127.0.0.1", "--host", "theatre.local",
                "--client", "station1", "--client", "mentor-a", "--days", "30")
    assert r.returncode == 0, r.stderr
    ca = tmp_path / "ca.pem"
    # Purposes (RFC 5280 extendedKeyUsage) as OpenSSL reads them: server for TLS servers
    # only, client certificates for TLS clients only.
    assert openssl("verify", "-CAfile", str(ca), "-purpose", "sslserver",
                   str(tmp_path / "server.pem")).returncode == 0
    for name in ("station1", "mentor-a"):
        leaf = str(tmp_path / f"client-{name}.pem")
        assert openssl("verify", "-CAfile", str(ca), "-purpose", "sslclient", leaf
                       ).returncode == 0
        assert openssl("verify", "-CAfile", str(ca), "-purpose", "sslserver", leaf
                       ).returncode != 0
    text = openssl("x509", "-in", str(tmp_path / "server.pem"), "-noout", "-text").stdout
    assert "IP Address:127.0.0.1" in text and "DNS:theatre.local" in text
    assert "CA:FALSE" in text and "TLS Web Server Authentication" in text
    ca_text = openssl("x509", "-in", str(ca), "-noout", "-text").stdout
    assert "CA:TRUE, pathlen:0" in ca_text and "Certificate Sign" in ca_text
    dates = openssl("x509", "-in", str(tmp_path / "client-station1.pem"), "-noout",
                    "-startdate", "-enddate").stdout
    assert dates.count("GMT") == 2
    for key in tmp_path.glob("*-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # A second run keeps the CA and issues from it; existing leaves need --force.
    before = ca.read_bytes()
    again = scrubin("certs", str(tmp_path), "--client", "station1")
    assert again.returncode == 2 and again.stderr.startswith("scrubin: error: ")
    assert "already exists" in again.stderr and len(again.stderr.splitlines()) == 1
    assert scrubin("certs", str(tmp_path), "--client", "extra", "--force").returncode == 0
    assert ca.read_bytes() == before
    assert openssl("verify", "-CAfile", str(ca), str(tmp_path / "client-extra.pem")
                   ).returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--host", "bad host"], "--host 'bad host': expected an IP address or a DNS name"),
    (["--client", "../x"], "client name '../x'"),
    (["--days", "0"], "--days 0: expected a whole number of days"),
    (["--client", "a", "--client", "a"], "the same name given twice"),
])
def test_certs_cli_refuses_bad_input_writing_nothing(tmp_path, args, message):
    r = scrubin("certs", str(tmp_path), *args)
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []
    missing = scrubin("certs", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "output folder does not exist" in missing.stderr


@pytest.fixture(scope="module")
def theatre(tmp_path_factory):
    """Two CAs: the theatre's (server + station client) and a stranger's (one client)."""
    root = tmp_path_factory.mktemp("pki")
    ours, other = root / "ours", root / "other"
    ours.mkdir()
    other.mkdir()
    make_theatre(ours, ["127.0.0.1"], ["station"])
    make_theatre(other, ["127.0.0.1"], ["station"])
    # From our CA but expired two days ago (1-day validity starting 3 days ago).
    issue(ours, "client", "old", days=1,
          not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    return ours, other


def mtls_config(pki: Path) -> dict:
    return {"tls_cert": pki / "server.pem", "tls_key": pki / "server-key.pem",
            "client_ca": pki / "ca.pem", "https_client_ca": pki / "ca.pem"}


async def join_status(target: str, creds: grpc.ChannelCredentials | None, token: str
                      ) -> grpc.StatusCode:
    ch = (grpc.aio.secure_channel(target, creds) if creds is not None
          else grpc.aio.insecure_channel(target))
    async with ch:
        try:
            await pb_grpc.MentorStub(ch).Join(
                pb.JoinRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_plaintext_grpc_and_http_refused(tmp_path):
    async def main():
        async with running(tmp_path) as server:
            made = await new_session(server)
            token = made.tokens["mentor"]
            assert await join_status(server.grpc_target, None, token) == \
                grpc.StatusCode.UNAVAILABLE
            ok = grpc.ssl_channel_credentials(server.cert_path.read_bytes())
            assert await join_status(server.grpc_target, ok, token) == grpc.StatusCode.OK
            # Plain HTTP to the HTTPS port: no HTTP answer comes back (TLS record expected).
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.ClientError):
                    await http.get(f"http://127.0.0.1:{server.ports.https}/m/x",
                                   timeout=aiohttp.ClientTimeout(total=5))
    asyncio.run(main())


def test_grpc_mutual_tls_refuses_missing_and_foreign_client_certs(tmp_path, theatre):
    ours, other = theatre

    def creds(client_dir: Path | None, name: str = "client-station") -> grpc.ChannelCredentials:
        if client_dir is None:
            return grpc.ssl_channel_credentials((ours / "ca.pem").read_bytes())
        return grpc.ssl_channel_credentials(
            (ours / "ca.pem").read_bytes(),
            private_key=(client_dir / f"{name}-key.pem").read_bytes(),
            certificate_chain=(client_dir / f"{name}.pem").read_bytes())

    async def main():
        async with running(tmp_path, **mtls_config(ours)) as server:
            made = await new_session(server)
            token = made.tokens["surgeon"]
            before = await server.hub.db(server.hub.store.audit_log)
            target = server.grpc_target
            assert await join_status(target, creds(None), token) == grpc.StatusCode.UNAVAILABLE
            assert await join_status(target, creds(other), token) == \
                grpc.StatusCode.UNAVAILABLE
            assert await join_status(target, None, token) == grpc.StatusCode.UNAVAILABLE
            # Our CA, but expired; our CA, but a serverAuth-only certificate (RFC 5280
            # 4.2.1.12: not for client authentication).
            assert await join_status(target, creds(ours, "client-old"), token) == \
                grpc.StatusCode.UNAVAILABLE
            assert await join_status(target, creds(ours, "server"), token) == \
                grpc.StatusCode.UNAVAILABLE
            # Handshake refusals never reach the application: no audit row for them.
            assert await server.hub.db(server.hub.store.audit_log) == before
            assert await join_status(target, creds(ours), token) == grpc.StatusCode.OK
            # The project's client, with the theatre's client pair.
            async with MentorClient(target, token, ours / "ca.pem", "station",
                                    ours / "client-station.pem",
                                    ours / "client-station-key.pem") as c:
                reply = await c.join()
            assert reply.session_id == made.session_id and reply.call_token
            joins = [r["detail"] for r in await server.hub.db(server.hub.store.audit_log)
                     if r["action"] == "join"]
            assert joins == ["grpc recording=off client-cert=station"] * 2
    asyncio.run(main())


def test_https_mutual_tls_refuses_missing_and_foreign_client_certs(tmp_path, theatre):
    ours, other = theatre

    def context(client_dir: Path | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ours / "ca.pem"))
        if client_dir is not None:
            ctx.load_cert_chain(client_dir / "client-station.pem",
                                client_dir / "client-station-key.pem")
        return ctx

    async def main():
        async with running(tmp_path, **mtls_config(ours)) as server:
            made = await new_session(server)
            url = f"https://127.0.0.1:{server.ports.https}/m/{made.session_id}"
            async with aiohttp.ClientSession() as http:
                for refused in (None, other):
                    with pytest.raises(aiohttp.ClientError):
                        async with http.get(url, ssl=context(refused),
                                            timeout=aiohttp.ClientTimeout(total=5)) as r:
                            await r.read()
                async with http.get(url, ssl=context(ours)) as r:
                    assert r.status == 200
                    assert "<video" in await r.text()
    asyncio.run(main())


def test_server_refuses_a_missing_client_ca_file(tmp_path):
    from scrubin.mentor.errors import MentorError
    from scrubin.mentor.server import MentorServer, ServerConfig

    with pytest.raises(MentorError, match="--client-ca .*nope.pem: CA certificate file"):
        MentorServer(ServerConfig(db=tmp_path / "m.db", client_ca=tmp_path / "nope.pem"))
    assert not os.path.exists(tmp_path / "m.db")


@pytest.mark.parametrize("extra, message", [
    (["--client-cert", "{cert}"], "--client-cert and --client-key go together"),
    (["--client-cert", "{cert}", "--client-key", "{missing}"], "--client-key "),
])
def test_surgeon_client_certificate_options_refused_in_one_line(tmp_path, capsys, extra,
                                                                message):
    from scrubin.cli import main

    cert = tmp_path / "cert.pem"
    cert.write_text("not read before the connection\n")
    fill = {"cert": str(cert), "missing": str(tmp_path / "none.pem")}
    status = main(["surgeon", "--source", "synthetic", "--out", str(tmp_path / "v.mp4"),
                   "--mentor", "127.0.0.1:50051", "--token", "A" * 43, "--ca-cert", str(cert),
                   "--frames", "3", *[a.format(**fill) for a in extra]])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("scrubin: error: ") and "\n" not in err
    assert message in err and not (tmp_path / "v.mp4").exists()


def test_serve_refuses_a_missing_client_ca_in_one_line(tmp_path):
    r = scrubin("serve", "--db", str(tmp_path / "m.db"), "--port", "0", "--grpc-port", "0",
                "--client-ca", str(tmp_path / "none.pem"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"scrubin: error: --client-ca {tmp_path / 'none.pem'}: CA " \
                               "certificate file not found"


def test_a_ca_folder_that_is_not_a_usable_ca_is_refused(tmp_path, theatre):
    from scrubin.mentor.certs import CertError

    ours, other = theatre
    leaf_as_ca, wrong_key = tmp_path / "leaf", tmp_path / "key"
    for d in (leaf_as_ca, wrong_key):
        d.mkdir()
    (leaf_as_ca / "ca.pem").write_bytes((ours / "server.pem").read_bytes())
    (leaf_as_ca / "ca-key.pem").write_bytes((ours / "server-key.pem").read_bytes())
    (wrong_key / "ca.pem").write_bytes((ours / "ca.pem").read_bytes())
    (wrong_key / "ca-key.pem").write_bytes((other / "ca-key.pem").read_bytes())
    with pytest.raises(CertError, match="not a CA certificate"):
        issue(leaf_as_ca, "client", "x")
    with pytest.raises(CertError, match="does not belong to"):
        issue(wrong_key, "client", "x")
    with pytest.raises(CertError, match="CA file not found"):
        issue(tmp_path, "client", "x")
    assert sorted(p.name for p in leaf_as_ca.iterdir()) == ["ca-key.pem", "ca.pem"]
