"""Time-limited TURN credentials, one set per participant, in coturn's REST-API scheme.

The scheme ("A REST API for access to TURN services", draft-uberti-behave-turn-rest-00,
section 2.2; coturn's ``use-auth-secret`` / ``static-auth-secret``): the server and the TURN
server share a secret; for a participant the server issues

- ``username = "<expiry Unix seconds>:<user id>"`` and
- ``credential = base64(HMAC-SHA1(secret, username))``,

and the TURN server recomputes the HMAC and refuses the username once its timestamp is in the
past (coturn: "401 Unauthorized"). Nothing is stored. The user id here is
``<session_id>.<role>.<8 random hex>`` (no ':' - coturn's default separator), so the TURN
server's log tells which session and role an allocation belongs to without naming people.

Hospital networks often block UDP and allow only TLS on 443, so the URLs handed out are
normally ``turns:HOST:443?transport=tcp``; see README "Security" for aiortc/aioice's support.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scrubin.mentor.errors import MentorError

MIN_TTL_S = 5   # a credential must outlive ICE gathering and the TURN allocation (seconds)


def turn_password(secret: str, username: str) -> str:
    """``base64(HMAC-SHA1(secret, username))`` (draft-uberti-behave-turn-rest-00, 2.2)."""
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def read_secret(path: Path) -> str:
    """The shared secret from a file (first line; >= 16 characters)."""
    p = Path(path)
    if not p.is_file():
        raise MentorError(f"--turn-secret-file {p}: file not found")
    lines = p.read_text().splitlines()
    secret = lines[0].strip() if lines else ""
    if len(secret) < 16:
        raise MentorError(f"--turn-secret-file {p}: expected a secret of >= 16 characters on "
                          "its first line")
    return secret


class TurnCredentials:
    """Issue TURN credentials for the configured URLs.

    Parameters
    ----------
    urls
        ``turn:``/``turns:`` URLs of one TURN server (e.g. ``turns:10.0.0.2:443?transport=tcp``).
    secret
        coturn's ``static-auth-secret``.
    ttl_s
        Lifetime of a credential (seconds, 5..86400). It bounds only when a credential can
        *start* an allocation: coturn (4.6, ``use-auth-secret``) checks the username's
        timestamp on ALLOCATE and keeps an allocation's REFRESH, CreatePermission and
        ChannelBind working past it (tests/mentor/test_turn_renewal.py), and every new peer
        connection gets a credential issued at that moment (:func:`ice_server_entries`).
    """

    def __init__(self, urls: Sequence[str], secret: str, ttl_s: int = 3600) -> None:
        if not urls:
            raise MentorError("--turn: give at least one turn:/turns: URL")
        for u in urls:
            if not isinstance(u, str) or u.split(":", 1)[0] not in ("turn", "turns") \
                    or len(u.split(":")) < 2 or not u.split(":")[1]:
                raise MentorError(f"--turn {u!r}: expected a turn:HOST[:PORT] or "
                                  "turns:HOST[:PORT]?transport=tcp URL")
        if not isinstance(secret, str) or len(secret) < 16:
            raise MentorError("TURN secret: expected >= 16 characters")
        if not isinstance(ttl_s, int) or not MIN_TTL_S <= ttl_s <= 86400:
            raise MentorError(f"--turn-ttl {ttl_s!r}: expected {MIN_TTL_S}..86400 seconds")
        self.urls = list(urls)
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, session_id: str, role: str, now: float | None = None,
              ttl_s: int | None = None) -> dict[str, Any]:
        """An ICE server entry ``{urls, username, credential, expires}`` for one participant."""
        expires = int(time.time() if now is None else now) + (self.ttl_s if ttl_s is None
                                                              else int(ttl_s))
        username = f"{expires}:{session_id}.{role}.{secrets.token_hex(4)}"
        return {"urls": list(self.urls), "username": username,
                "credential": turn_password(self._secret, username), "expires": expires}


def ice_server_entries(stun_urls: Sequence[str], turn: TurnCredentials | None, session_id: str,
                       role: str) -> list[dict[str, Any]]:
    """The ICE servers one participant is handed now: the STUN URLs, then (with TURN) an entry
    with a credential issued at this moment (``expires`` in Unix seconds).

    Called for every new peer connection (gRPC ``IceServers``, the page's
    ``POST /api/ice-servers``), so a reconnect never reuses a credential issued hours ago.
    """
    return [{"urls": [u]} for u in stun_urls] + (
        [turn.issue(session_id, role)] if turn is not None else [])
