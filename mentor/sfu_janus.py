"""A locked-down Janus (Debian ``janus`` 1.1) for the mentoring server: config files and a runner.

:func:`write_config` writes a complete Janus configuration into one folder (nothing from
``/etc/janus`` is read):

* plugins: only the VideoRoom (``plugins_folder`` is a folder of our own holding one link to
  ``libjanus_videoroom.so``); transports: only HTTP (same trick); no event handlers or loggers;
* the HTTP API and the admin API bind ``127.0.0.1`` only (``ip`` / ``admin_ip`` of
  ``janus.transport.http.jcfg``), so nothing outside the host reaches them;
* every API request must carry ``apisecret`` (``general.api_secret``), the admin API needs
  ``admin_secret``, and VideoRoom rooms can be created only with the plugin's ``admin_key``:
  all three are random and known only to our server (a client that knows Janus's address still
  cannot make a session, let alone join a room around our tokens);
* ``session_timeout`` 60 s (our client keeps sessions alive every 20 s), ``ignore_mdns``,
  and ``ice_enforce_list`` = the interface the media may use (Janus skips the loopback
  interface when gathering candidates, so tests give it a non-loopback one inside a network
  namespace of their own).

:class:`JanusProcess` starts ``janus`` with that configuration (optionally under
``ip netns exec NS``) and waits until its HTTP API answers ``info``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from scrubin.mentor.errors import MentorError

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
SESSION_TIMEOUT_S = 60


class JanusError(MentorError):
    """Janus cannot be configured, started or asked (message names what and why)."""


@dataclass(frozen=True)
class JanusConfig:
    """What our server needs to drive the Janus it configured."""

    folder: Path
    url: str              # HTTP API base, e.g. http://127.0.0.1:8088/janus
    admin_url: str        # admin API base
    api_secret: str
    admin_secret: str
    admin_key: str        # VideoRoom plugin: needed to create rooms

    def secrets_json(self) -> str:
        """The secrets as one JSON object (for ``scrubin serve --sfu-secrets F``)."""
        return json.dumps({"api_secret": self.api_secret, "admin_key": self.admin_key,
                           "admin_secret": self.admin_secret})


def _lib_folder(folder: Path, kind: str, names: list[str], lib: Path) -> Path:
    out = folder / kind
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = lib / kind / name
        if not src.exists():
            raise JanusError(f"{src}: missing (install the Debian package 'janus')")
        link = out / name
        if not link.exists():
            link.symlink_to(src)
    return out


def write_config(folder: Path, interface: str, *, address: str | None = None, http_port: int = 8088,
                 admin_port: int = 7088, rtp_ports: tuple[int, int] = (20000, 20999),
                 lib: Path = JANUS_LIB, debug_level: int = 3) -> JanusConfig:
    """Write ``janus.jcfg``, ``janus.transport.http.jcfg`` and ``janus.plugin.videoroom.jcfg``.

    Parameters
    ----------
    folder
        Configuration folder (created).
    interface
        Name of the network interface (or address prefix) Janus may gather ICE candidates on
        (``nat.ice_enforce_list``).
    address
        The interface's IP address, written into SDP (``general.interface``); Janus's own
        choice falls back to 127.0.0.1 when it finds no address it likes.
    http_port, admin_port
        Ports of the HTTP and admin APIs, both bound to 127.0.0.1.
    rtp_ports
        Inclusive UDP port range for media (``media.rtp_port_range``).
    """
    if address is not None:
        import ipaddress

        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise JanusError(f"Janus address {address!r}: expected an IP address") from None
    if not interface or any(c in interface for c in '"\\\n'):
        raise JanusError(f"Janus interface {interface!r}: expected an interface name")
    for name, port in (("http_port", http_port), ("admin_port", admin_port)):
        if not 1 <= int(port) <= 65535:
            raise JanusError(f"Janus {name} {port!r}: expected 1..65535")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plugins = _lib_folder(folder, "plugins", ["libjanus_videoroom.so"], lib)
    transports = _lib_folder(folder, "transports", ["libjanus_http.so"], lib)
    empty = folder / "none"
    empty.mkdir(exist_ok=True)
    cfg = JanusConfig(folder, f"http://127.0.0.1:{http_port}/janus",
                      f"http://127.0.0.1:{admin_port}/admin", secrets.token_urlsafe(24),
                      secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    (folder / "janus.jcfg").write_text(f"""general: {{
	configs_folder = "{folder}"
	plugins_folder = "{plugins}"
	transports_folder = "{transports}"
	events_folder = "{empty}"
	loggers_folder = "{empty}"
	log_to_stdout = true
	debug_level = {int(debug_level)}
	api_secret = "{cfg.api_secret}"
	admin_secret = "{cfg.admin_secret}"
	session_timeout = {SESSION_TIMEOUT_S}
	server_name = "scrubin-sfu"
{f'	interface = "{address}"' if address else ""}
	protected_folders = ["/bin", "/boot", "/dev", "/etc", "/initrd", "/lib", "/lib32",
		"/lib64", "/proc", "/sbin", "/sys", "/usr", "/var"]
}}
certificates: {{
}}
media: {{
	rtp_port_range = "{rtp_ports[0]}-{rtp_ports[1]}"
}}
nat: {{
	ice_enforce_list = "{interface}"
	ignore_mdns = true
	nice_debug = false
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
	broadcast = false
}}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	port = {int(http_port)}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_base_path = "/admin"
	admin_http = true
	admin_port = {int(admin_port)}
	admin_ip = "127.0.0.1"
	admin_https = false
}}
cors: {{
}}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text(f"""general: {{
	admin_key = "{cfg.admin_key}"
	lock_rtp_forward = true
	string_ids = false
}}
""")
    for name in ("janus.jcfg", "janus.transport.http.jcfg", "janus.plugin.videoroom.jcfg"):
        (folder / name).chmod(0o600)   # the secrets: readable by Janus's user only
    return cfg


class JanusProcess:
    """A running ``janus -C folder/janus.jcfg`` (``netns``: run it under ``ip netns exec``)."""

    def __init__(self, cfg: JanusConfig, netns: str | None = None,
                 binary: str = "janus") -> None:
        exe = shutil.which(binary)
        if exe is None:
            raise JanusError(f"{binary}: not installed (Debian package 'janus'; make install)")
        self.cfg = cfg
        self.log_path = cfg.folder / "janus.log"
        cmd = [exe, "-C", str(cfg.folder / "janus.jcfg"), "-F", str(cfg.folder)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self.netns = netns

    def wait_ready(self, timeout: float = 20.0, probe: bool = True) -> None:
        """Wait until ``info`` answers (``probe`` False: the caller probes, e.g. from the
        namespace); a process that exits first is a :class:`JanusError` with its log tail."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise JanusError(f"janus exited with {self.proc.returncode}: "
                                 f"{self.log_tail()}")
            if not probe:
                if "HTTP webserver started" in self.log_path.read_text(errors="replace"):
                    return
            else:
                try:
                    with urllib.request.urlopen(self.cfg.url + "/info", timeout=1) as r:
                        if json.load(r).get("janus") == "server_info":
                            return
                except (OSError, urllib.error.URLError, ValueError):
                    pass
            if time.monotonic() > deadline:
                raise JanusError(f"janus not ready after {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; the log file is closed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def janus_available() -> str:
    """Empty when Janus and ``ip netns`` can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    for tool in ("ip", "janus"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make install installs janus)"
    if not (JANUS_LIB / "plugins" / "libjanus_videoroom.so").exists():
        return "janus VideoRoom plugin missing"
    return ""
