"""``scrubin serve --sfu URL --sfu-secrets F`` as a user runs it: bad options are one-line
errors before anything listens; against a real Janus (in a namespace made by the test) the
server starts only if that Janus insists on the API secret, and its rooms are locked."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scrubin.mentor.sfu_janus import JanusProcess
from tests.mentor.janus_netns import janus_in_netns, needs_janus

SCRUBIN = [sys.executable, "-m", "scrubin"]


def _serve(tmp: Path, *extra: str, netns: str | None = None) -> subprocess.Popen:
    cmd = [*SCRUBIN, "serve", "--port", "0", "--grpc-port", "0", "--db", str(tmp / "m.db"),
           *extra]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])


def _secrets(tmp: Path, **fields: str) -> Path:
    p = tmp / "sfu.json"
    p.write_text(json.dumps(fields))
    return p


@pytest.mark.parametrize("args, message", [
    (["--sfu", "http://10.1.2.3:8088/janus"], "loopback"),
    (["--sfu", "ws://127.0.0.1:8188"], "expected http"),
    ([], "go together"),
    (["--sfu", "http://127.0.0.1:9/janus", "--no-secrets"], "go together"),
    (["--sfu", "http://127.0.0.1:9/janus", "--partial"], "'admin_key' missing"),
    (["--sfu", "http://127.0.0.1:9/janus"], "not reachable"),
])
def test_bad_sfu_options_are_one_line_errors(tmp_path, args, message) -> None:
    extra = list(args)
    if "--no-secrets" in extra:
        extra.remove("--no-secrets")
    elif "--partial" in extra:
        extra.remove("--partial")
        extra += ["--sfu-secrets", str(_secrets(tmp_path, api_secret="a"))]
    else:
        extra += ["--sfu-secrets", str(_secrets(tmp_path, api_secret="a", admin_key="b"))]
    proc = _serve(tmp_path, *extra)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scrubin: error: ") and message in lines[0], err
    assert "ports:" not in out and not (tmp_path / "m.db").exists()   # nothing started


@needs_janus
def test_serve_with_janus(tmp_path) -> None:
    with janus_in_netns(tmp_path) as env:
        proc = _serve(tmp_path, "--sfu", env.cfg.url, "--sfu-secrets", str(env.secrets_file),
                      netns=env.ns)
        lines: list[str] = []
        try:
            while not lines or not lines[-1].startswith("ports:"):
                line = proc.stdout.readline()
                if not line:
                    raise AssertionError(f"serve ended early: {proc.stderr.read()}")
                lines.append(line.rstrip("\n"))
            assert any(re.match(r"sfu: Janus http://127\.0\.0\.1:\d+/janus", x) for x in lines)
            # our server holds one Janus session (its admin handle) and nothing else
            admin = env.http(env.cfg.admin_url, {"janus": "list_sessions", "transaction": "t",
                                                 "admin_secret": env.cfg.admin_secret})
            assert len(admin["sessions"]) == 1, admin
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "scrubin serve: stopped" in out
        admin = env.http(env.cfg.admin_url, {"janus": "list_sessions", "transaction": "t",
                                             "admin_secret": env.cfg.admin_secret})
        assert admin["sessions"] == [], admin      # its session was destroyed on the way out


@needs_janus
def test_serve_refuses_an_open_janus(tmp_path) -> None:
    """A Janus that takes sessions without the API secret would let anyone make rooms."""
    with janus_in_netns(tmp_path) as env:
        env.proc.stop()
        core = env.cfg.folder / "janus.jcfg"
        core.write_text(re.sub(r"\n\tapi_secret = .*", "", core.read_text()))
        open_janus = JanusProcess(env.cfg, env.ns)
        try:
            for _ in range(100):
                if env.http(env.cfg.url + "/info").get("janus") == "server_info":
                    break
                time.sleep(0.2)
            proc = _serve(tmp_path, "--sfu", env.cfg.url, "--sfu-secrets",
                          str(env.secrets_file), netns=env.ns)
            out, err = proc.communicate(timeout=60)
        finally:
            open_janus.stop()
    assert proc.returncode == 2, (out, err)
    assert "accepts sessions without an api_secret" in err and "ports:" not in out
