"""Short-lived call tokens: JWTs (RFC 7519) signed HS256 (RFC 7515/7518 section 3.2).

A session token (``scrubin session new``, long-lived, one per role) is the join secret. A
``Join`` with it also returns a *call token*: a JWT whose claims say who may call and until
when::

    {"iss": "scrubin", "aud": "<session_id>", "sub": "<author>", "role": "mentor",
     "iat": 1764680000, "exp": 1764680300, "jti": "<random>"}

Clients then send ``authorization: Bearer <call token>`` and ``x-scrubin-session:
<session_id>`` on each call. The server checks, in this order (refusals audited):

- the form (three base64url parts, header ``{"alg": "HS256", "typ": "JWT"}``; any other
  ``alg``, ``none`` included, is refused - RFC 8725 section 3.1) and the HMAC-SHA256 signature
  (constant-time compare) -> UNAUTHENTICATED;
- ``exp`` (RFC 7519 section 4.1.4: refused at or after ``exp``) and ``nbf``/``iat`` not in the
  future beyond 5 s -> UNAUTHENTICATED;
- ``aud`` (section 4.1.3) equals the session the call names -> otherwise PERMISSION_DENIED
  (the caller is identified, the session is not theirs; gRPC's status-code guide keeps
  UNAUTHENTICATED for callers that cannot be identified);
- the role may make the call -> otherwise PERMISSION_DENIED.

The signing key (32 random bytes) lives in the server's state folder (``token-key``, mode
0600), so call tokens survive a server restart; ending a session stops its call tokens too
(the session is looked up on every call).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrubin.imaging.fileio import write_atomic
from scrubin.mentor.errors import MentorError

KEY_NAME = "token-key"
ISSUER = "scrubin"
SESSION_HEADER = "x-scrubin-session"
CLOCK_SKEW_S = 5.0
_HEADER = {"alg": "HS256", "typ": "JWT"}


class TokenRefusedError(MentorError):
    """A call token that does not pass; ``code`` is "unauthenticated" or "permission"."""

    def __init__(self, message: str, code: str, session_id: str | None = None,
                 role: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.session_id = session_id  # the token's own session (aud) once it is verified
        self.role = role


@dataclass(frozen=True)
class CallClaims:
    """The checked claims of a call token."""

    session_id: str
    role: str
    author: str
    expires: float
    token_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _unb64(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the JWS compact form (session tokens have no dots)."""
    return token.count(".") == 2 and token.startswith("eyJ")


def read_or_make_key(folder: Path) -> bytes:
    """The server's HMAC key from ``folder/token-key`` (32 random bytes, made once, 0600)."""
    path = Path(folder) / KEY_NAME
    if path.is_file():
        raw = path.read_text().strip()
        try:
            key = _unb64(raw)
        except ValueError:
            key = b""
        if len(key) >= 32:
            return key
        raise MentorError(f"{path}: expected a base64url key of >= 32 bytes")
    key = secrets.token_bytes(32)

    def write(tmp: Path) -> None:
        os.chmod(tmp, 0o600)
        tmp.write_text(_b64(key) + "\n")

    write_atomic(path, write)
    return key


class CallTokens:
    """Issue and check call tokens with one HMAC key.

    Parameters
    ----------
    key
        HMAC-SHA256 key (>= 32 bytes, RFC 7518 section 3.2).
    ttl_s
        Lifetime of issued tokens in seconds.
    """

    def __init__(self, key: bytes, ttl_s: float = 300.0) -> None:
        if len(key) < 32:
            raise MentorError("call-token key: expected >= 32 bytes (RFC 7518 section 3.2)")
        if not 1.0 <= float(ttl_s) <= 86400.0:
            raise MentorError(f"call-token lifetime {ttl_s!r}: expected 1..86400 s")
        self._key = bytes(key)
        self.ttl_s = float(ttl_s)

    def _sign(self, signing_input: bytes) -> bytes:
        return hmac.new(self._key, signing_input, hashlib.sha256).digest()

    def issue(self, session_id: str, role: str, author: str, now: float | None = None,
              ttl_s: float | None = None) -> tuple[str, float]:
        """A call token for ``author`` (``role``) in ``session_id``; returns (token, exp)."""
        iat = int(time.time() if now is None else now)
        exp = iat + int(round(self.ttl_s if ttl_s is None else ttl_s))
        claims = {"iss": ISSUER, "aud": session_id, "sub": author, "role": role,
                  "iat": iat, "exp": exp, "jti": secrets.token_urlsafe(12)}
        head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{head}.{body}".encode("ascii")
        return f"{head}.{body}.{_b64(self._sign(signing_input))}", float(exp)

    def verify(self, token: str, session_id: str, now: float | None = None) -> CallClaims:
        """The claims of ``token`` for a call naming ``session_id`` (else TokenRefusedError)."""
        t = time.time() if now is None else now
        parts = token.split(".")
        malformed = TokenRefusedError("call token: malformed (expected a JWS compact "
                                      "serialisation)", "unauthenticated")
        try:
            if len(parts) != 3:
                raise ValueError("not three parts")
            header: Any = json.loads(_unb64(parts[0]))
        except (ValueError, UnicodeDecodeError):
            raise malformed from None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            alg = header.get("alg") if isinstance(header, dict) else None
            raise TokenRefusedError(f"call token: alg {alg!r} refused (expected HS256)",
                                    "unauthenticated")
        try:
            claims: Any = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, UnicodeDecodeError):
            raise malformed from None
        expected = self._sign(f"{parts[0]}.{parts[1]}".encode("ascii"))
        if not hmac.compare_digest(expected, signature):
            raise TokenRefusedError("call token: bad signature", "unauthenticated")
        if not isinstance(claims, dict) or claims.get("iss") != ISSUER:
            raise TokenRefusedError("call token: issuer is not scrubin", "unauthenticated")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise TokenRefusedError("call token: exp/iat missing", "unauthenticated")
        if t >= exp:
            raise TokenRefusedError(f"call token: expired {t - exp:.0f} s ago", "unauthenticated")
        if iat > t + CLOCK_SKEW_S or claims.get("nbf", iat) > t + CLOCK_SKEW_S:
            raise TokenRefusedError("call token: not valid yet (iat/nbf in the future)",
                                    "unauthenticated")
        role, author, aud = claims.get("role"), claims.get("sub"), claims.get("aud")
        if not all(isinstance(v, str) for v in (role, author, aud)):
            raise TokenRefusedError("call token: role/sub/aud missing", "unauthenticated")
        if not session_id:
            raise TokenRefusedError(f"call token: the call names no session ({SESSION_HEADER} "
                                    "metadata)", "unauthenticated")
        if aud != session_id:
            raise TokenRefusedError("call token of another session (aud)", "permission",
                                    str(aud), str(role))
        return CallClaims(str(aud), str(role), str(author), float(exp), str(claims.get("jti")))


def unverified_lifetime(token: str) -> float:
    """``exp - iat`` of a call token, read without checking the signature (s).

    For the client's renewal schedule only (what the server granted, independent of a skew
    between the two clocks); the server never trusts a claim it has not verified.
    """
    try:
        claims = json.loads(_unb64(token.split(".")[1]))
        life = float(claims["exp"]) - float(claims["iat"])
    except (IndexError, KeyError, TypeError, ValueError):
        raise MentorError("call token: expected a JWT with exp and iat claims") from None
    if not life > 0:
        raise MentorError(f"call token: lifetime {life} s (exp <= iat)")
    return life
