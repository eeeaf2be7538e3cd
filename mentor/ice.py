"""ICE set-up of the station's peer connections: explicit ICE servers, host candidates limited.

aioice (0.13) gathers host candidates from every interface address and skips 127.0.0.1 and ::1
(``aioice.ice.get_host_addresses``). The station's ``--ice-host ADDR`` (repeatable) restricts
the host candidates to the given addresses, 127.0.0.1 included (tests and demos stay on
loopback; a theatre network can be pinned to one interface). The restriction replaces the
module function ``aioice.ice.get_host_addresses`` (called by ``Connection.gather_candidates``)
with one returning the configured addresses; it is process-wide, as aioice offers no
per-connection hook.

ICE servers are always passed explicitly (``RTCConfiguration(iceServers=[...])``): aiortc falls
back to a public Google STUN server when given none, and nothing here may reach the internet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from scrubin.mentor.errors import MentorError

_ORIGINAL: Any = None
_ALLOWED: list[str] | None = None


class IceError(MentorError):
    """Bad ICE option (address or server URL)."""


def _patched_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _ALLOWED is None:
        return list(_ORIGINAL(use_ipv4, use_ipv6))
    return [a for a in _ALLOWED if (use_ipv4 and ":" not in a) or (use_ipv6 and ":" in a)]


def restrict_host_addresses(addresses: Sequence[str] | None) -> None:
    """Limit the host candidates of every later ICE gathering to ``addresses`` (None: all).

    Each address must be a literal IPv4/IPv6 address (``127.0.0.1`` allowed).
    """
    global _ORIGINAL, _ALLOWED
    import aioice.ice

    if addresses is not None:
        checked = []
        for a in addresses:
            try:
                checked.append(str(ipaddress.ip_address(str(a).strip())))
            except ValueError:
                raise IceError(f"--ice-host {a!r}: expected an IP address such as 127.0.0.1"
                               ) from None
        if not checked:
            raise IceError("--ice-host: give at least one address")
        addresses = checked
    if _ORIGINAL is None:
        _ORIGINAL = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _patched_get_host_addresses
    _ALLOWED = list(addresses) if addresses is not None else None


def ice_configuration(urls: Sequence[str] = (), username: str | None = None,
                      credential: str | None = None) -> Any:
    """``RTCConfiguration`` with exactly the given STUN/TURN URLs (none: host candidates only)."""
    from aiortc import RTCConfiguration, RTCIceServer

    servers = []
    for u in urls:
        if not isinstance(u, str) or u.split(":", 1)[0] not in ("stun", "stuns", "turn",
                                                                  "turns"):
            raise IceError(f"ICE server {u!r}: expected a stun:/turn: URL")
        servers.append(RTCIceServer(urls=u, username=username, credential=credential))
    return RTCConfiguration(iceServers=servers)


def sdp_candidate_addresses(sdp: str) -> set[str]:
    """Connection addresses of the ``a=candidate`` lines of an SDP (RFC 8839 section 5.1)."""
    out = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) >= 5:
                out.add(parts[4])
    return out
