"""``scrubin serve`` and ``scrubin session new|end`` as a user runs them (real processes,
real TLS on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from scrubin.mentor.client import MentorClient

SCRUBIN = [sys.executable, "-m", "scrubin"]


def scrubin(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*SCRUBIN, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A ``scrubin serve`` process; yields (state folder, web URL, gRPC target, stdout lines)."""
    state = tmp_path_factory.mktemp("serve")
    proc = subprocess.Popen(
        [*SCRUBIN, "serve", "--port", "0", "--grpc-port", "0", "--db", str(state / "m.db"),
         "--ice-host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while not lines or not lines[-1].startswith("ports:"):
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"serve ended early: {proc.stderr.read()}")
        lines.append(line.rstrip("\n"))
    web = re.search(r"web (https://\S+)", lines[0]).group(1)
    target = re.search(r"grpc (\S+)", lines[0]).group(1)
    yield state, web, target, lines, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    proc.stdout.close()
    proc.stderr.close()


def test_serve_prints_certificate_fingerprint_and_keeps_state(served):
    state, web, target, lines, _ = served
    text = "\n".join(lines)
    assert f"certificate: {state / 'tls-cert.pem'}" in text
    fp = re.search(r"fingerprint: SHA-256 ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})$", text, re.M)
    assert fp is not None
    # the printed fingerprint matches the one openssl-compatible tooling computes
    import hashlib
    import ssl
    der = ssl.PEM_cert_to_DER_cert((state / "tls-cert.pem").read_text())
    assert fp.group(1) == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    for name in ("admin-token", "tls-key.pem"):
        assert (state / name).stat().st_mode & 0o777 == 0o600
    assert web.startswith("https://127.0.0.1:") and target.startswith("127.0.0.1:")


def test_session_new_gives_links_and_tokens_that_work_then_end(served, tmp_path):
    state, web, target, _, _ = served
    out = tmp_path / "session.json"
    done = scrubin("session", "new", "--server", web, "--state", str(state), "--record",
                   "--json", str(out))
    assert done.returncode == 0, done.stderr
    made = json.loads(out.read_text())
    assert out.stat().st_mode & 0o777 == 0o600
    assert "recording: ON" in done.stdout
    for role in ("surgeon", "mentor", "observer"):
        link = made["links"][role]
        assert link == f"{web}/m/{made['session_id']}#token={made['tokens'][role]}"
        assert link in done.stdout and "?" not in link

    async def join(token):
        async with MentorClient(target, token, state / "tls-cert.pem") as c:
            return await c.join()

    reply = asyncio.run(join(made["tokens"]["observer"]))
    assert reply.recording is True and reply.session_id == made["session_id"]
    assert list(reply.ice_hosts) == ["127.0.0.1"]
    done = scrubin("session", "end", made["session_id"], "--server", web, "--state", str(state))
    assert done.returncode == 0, done.stderr
    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(join(made["tokens"]["observer"]))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    again = scrubin("session", "end", made["session_id"], "--server", web, "--state",
                    str(state))
    assert again.returncode == 2 and "HTTP 404" in again.stderr


def run_main(capsys, *args: str) -> tuple[int, str]:
    """``scrubin ARGS`` in this process (same code path as the console script): status, stderr."""
    from scrubin.cli import main

    capsys.readouterr()
    status = main(list(args))
    return status, capsys.readouterr().err


def test_session_command_errors_are_one_line(served, tmp_path, capsys):
    state, web, _, _, _ = served
    wrong = tmp_path / "wrong-token"
    wrong.write_text("A" * 43 + "\n")
    cases = [
        (["--server", web, "--state", str(tmp_path)], "cannot read the admin token"),
        (["--server", web.replace("https", "http"), "--state", str(state)], "https://"),
        (["--server", web, "--state", str(state), "--admin-token-file",
          str(state / "tls-cert.pem")], "not an admin token"),
        (["--server", web, "--state", str(state), "--admin-token-file",
          str(wrong)], "HTTP 401"),
        (["--server", "https://127.0.0.1:1", "--state", str(state)], "cannot reach"),
        (["--server", web, "--state", str(state), "--json", str(tmp_path / "no" / "x.json")],
         "does not exist"),
    ]
    for args, message in cases:
        status, err = run_main(capsys, "session", "new", *args)
        assert status == 2, (args, err)
        assert err.startswith("scrubin: error: ") and message in err
        assert err.count("\n") == 1
    # a certificate the server does not have: refused by TLS, nothing made
    other = tmp_path / "other"
    other.mkdir()
    from scrubin.mentor.tls import ensure_self_signed
    cert, _ = ensure_self_signed(other)
    status, err = run_main(capsys, "session", "new", "--server", web, "--state", str(state),
                           "--cacert", str(cert))
    assert status == 2 and "CERTIFICATE_VERIFY_FAILED" in err


def test_serve_option_errors_are_one_line(served, tmp_path, capsys):
    state, web, target, _, _ = served
    port = web.rsplit(":", 1)[1]
    db = str(tmp_path / "m.db")
    cases = [
        (["--ice-host", "theatre-vlan"], "--ice-host 'theatre-vlan'"),
        (["--stun", "http://x"], "--stun 'http://x'"),
        (["--tls-cert", str(state / "tls-cert.pem")], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(state / "admin-token"), "--tls-key", str(state / "admin-token")],
         "not a usable PEM certificate"),
        (["--port", port], f"--port {port}: cannot listen"),
        (["--port", "70000"], "expected 0..65535"),
    ]
    for args, message in cases:
        status, err = run_main(capsys, "serve", "--db", db, "--grpc-port", "0", *args)
        assert status == 2, (args, err)
        assert err.startswith("scrubin: error: ") and message in err, err
        assert err.count("\n") == 1


def test_sigterm_stops_the_server_cleanly(tmp_path):
    proc = subprocess.Popen([*SCRUBIN, "serve", "--port", "0", "--grpc-port", "0", "--db",
                             str(tmp_path / "m.db")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        while not proc.stdout.readline().startswith("ports:"):
            assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "scrubin serve: stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert Path(tmp_path / "m.db").is_file()
