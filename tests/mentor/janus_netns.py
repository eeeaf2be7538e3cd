"""A real Janus (Debian ``janus``) in a network namespace made by the test.

Janus skips the loopback interface when gathering ICE candidates, so the namespace gets a veth
pair (both ends inside: no route out) with ``10.R.S.1/30`` on the end Janus may use
(``ice_enforce_list``); the HTTP and admin APIs listen on the namespace's own 127.0.0.1. Janus,
the serving process and the viewers all run inside (``ip netns exec``): every packet stays in
the namespace. Root only; callers skip when :func:`available` says why not.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scrubin.mentor.sfu_janus import JanusConfig, JanusProcess, janus_available, write_config

#: mark a test that needs Janus (the fixture, tests/mentor/conftest.py, fails when it is missing)
needs_janus = pytest.mark.usefixtures("_janus_required")

ROOT = Path(__file__).resolve().parents[2]
available = janus_available


@dataclass
class JanusNetns:
    ns: str
    address: str          # the namespace's non-loopback address (ICE)
    cfg: JanusConfig
    proc: JanusProcess
    secrets_file: Path

    def run_python(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """``python ARGS`` inside the namespace (cwd: the repository)."""
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def http(self, url: str, body: dict | None = None) -> dict:
        """One HTTP request from inside the namespace (JSON in/out; ``{"error": ...}``
        for a refused connection)."""
        code = ("import json,sys,urllib.request as u\n"
                "url,body=sys.argv[1],sys.argv[2]\n"
                "req=u.Request(url,data=body.encode() if body else None,"
                "headers={'Content-Type':'application/json'})\n"
                "try:\n print(u.urlopen(req,timeout=3).read().decode())\n"
                "except OSError as e:\n print(json.dumps({'error':str(e)}))\n")
        r = self.run_python(["-c", code, url, "" if body is None else json.dumps(body)], 20)
        return json.loads(r.stdout or '{"error": "no output"}')


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def janus_in_netns(tmp: Path) -> Iterator[JanusNetns]:
    """Namespace + veth + Janus; all removed afterwards."""
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    ns, v_a, v_b = f"scrubin-sfu-{tag}", f"sj{tag}a"[:15], f"sj{tag}b"[:15]
    r, s = secrets.randbelow(200) + 20, secrets.randbelow(63) * 4
    addr, peer = f"10.{r}.{s}.1", f"10.{r}.{s}.2"
    proc = None
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", v_a, "type", "veth", "peer", "name", v_b)
        _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", v_a)
        _ip("-n", ns, "addr", "add", f"{peer}/30", "dev", v_b)
        _ip("-n", ns, "link", "set", v_a, "up")
        _ip("-n", ns, "link", "set", v_b, "up")
        cfg = write_config(tmp / "janus", v_a, address=addr)
        secrets_file = tmp / "janus-secrets.json"
        secrets_file.write_text(cfg.secrets_json())
        secrets_file.chmod(0o600)
        proc = JanusProcess(cfg, ns)
        env = JanusNetns(ns, addr, cfg, proc, secrets_file)

        deadline = time.monotonic() + 20
        while env.http(cfg.url + "/info").get("janus") != "server_info":
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"janus did not start: {proc.log_tail()}")
            time.sleep(0.2)
        yield env
    finally:
        if proc is not None:
            proc.stop()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
