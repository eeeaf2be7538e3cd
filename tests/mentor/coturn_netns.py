"""A real coturn (Debian ``coturn``) in a network namespace made by the test.

The namespace gets one end of a veth pair (``10.R.S.2/30``), the test's own namespace the
other (``10.R.S.1/30``): traffic stays between this process and the namespace. coturn listens
there with TLS on 443 (a certificate from ``scrubin.mentor.certs`` for the namespace's
address), TCP/UDP on 3478, REST-API credentials (``use-auth-secret``), relays on the same
address. Root only (``ip netns``); callers skip when :func:`available` says why not.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scrubin.mentor.certs import make_theatre


@dataclass
class Coturn:
    """A running coturn: its address, shared secret, CA file and log."""

    address: str
    secret: str
    ca: Path
    log: Path
    secret_file: Path
    outside: str = ""   # the test's own end of the veth pair (a TURN peer address)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_matching(self, *patterns: str, timeout: float = 5.0) -> str:
        """coturn's log once every regex in ``patterns`` is in it (coturn writes its log
        lines a little after it answers), or as it is at ``timeout`` (the caller asserts)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if all(re.search(p, text) for p in patterns) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def turns_url(self) -> str:
        return f"turns:{self.address}:443?transport=tcp"


def available() -> str:
    """Empty when the test can run, else why not."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    for tool in ("ip", "turnserver"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make deb installs coturn)"
    return ""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def coturn(tmp: Path, extra: tuple[str, ...] = ()) -> Iterator[Coturn]:
    """Start coturn in a fresh namespace; stop it and remove the namespace afterwards.

    ``extra``: more turnserver.conf lines (e.g. ``stale-nonce=2``)."""
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    ns, veth_out, veth_in = f"scrubin-turn-{tag}", f"st{tag}a"[:15], f"st{tag}b"[:15]
    r = secrets.randbelow(200) + 20
    s = secrets.randbelow(63) * 4
    outside, inside = f"10.{r}.{s}.1", f"10.{r}.{s}.2"
    pki = tmp / "turn-pki"
    pki.mkdir()
    make_theatre(pki, [inside])
    secret = secrets.token_urlsafe(24)
    secret_file = tmp / "turn-secret"
    secret_file.write_text(secret + "\n")
    log = tmp / "turnserver.log"
    conf = tmp / "turnserver.conf"
    conf.write_text("\n".join([
        f"listening-ip={inside}", f"relay-ip={inside}", "listening-port=3478",
        "tls-listening-port=443", f"cert={pki / 'server.pem'}",
        f"pkey={pki / 'server-key.pem'}", "no-dtls", "no-tlsv1", "no-tlsv1_1",
        "use-auth-secret", f"static-auth-secret={secret}", "realm=scrubin.test",
        "fingerprint", "no-cli", "no-multicast-peers", "min-port=49152", "max-port=49407",
        f"log-file={log}", "simple-log", "verbose", f"pidfile={tmp / 'turnserver.pid'}",
        "no-software-attribute", *extra, "",
    ]))
    proc = None
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", veth_out, "type", "veth", "peer", "name", veth_in)
        _ip("link", "set", veth_in, "netns", ns)
        _ip("addr", "add", f"{outside}/30", "dev", veth_out)
        _ip("link", "set", veth_out, "up")
        _ip("-n", ns, "addr", "add", f"{inside}/30", "dev", veth_in)
        _ip("-n", ns, "link", "set", veth_in, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "turnserver", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((inside, 443), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"coturn did not start: {log.read_text()[-2000:]}"
                                       if log.exists() else "coturn did not start") from None
                time.sleep(0.1)
        yield Coturn(inside, secret, pki / "ca.pem", log, secret_file, outside)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        subprocess.run(["ip", "link", "del", veth_out], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
