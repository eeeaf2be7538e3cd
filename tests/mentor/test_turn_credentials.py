"""TURN REST-API credentials (mentor/turn.py): the HMAC checked against OpenSSL's
(``openssl dgst -sha1 -hmac``), one credential per participant in the page's ``welcome`` and
the gRPC ``JoinReply``, bad options refused in one line. coturn's own acceptance of them is
tests/mentor/test_turn_coturn.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import time

import pytest

from scrubin.mentor.client import MentorClient
from scrubin.mentor.errors import MentorError
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.mentor.turn import TurnCredentials, read_secret, turn_password
from tests.mentor.test_web import joined, recv

SECRET = "a-shared-secret-of-some-length"
URL = "turns:10.1.2.3:443?transport=tcp"


def openssl_hmac_sha1_b64(secret: str, message: str) -> str:
    out = subprocess.run(["openssl", "dgst", "-sha1", "-hmac", secret, "-binary"],
                         input=message.encode(), capture_output=True, check=True, timeout=10)
    return base64.b64encode(out.stdout).decode()


def test_password_is_base64_hmac_sha1_of_the_username():
    for username in ("1764680000:s.mentor.0a1b2c3d", "1:x", "2000000000:ünïcode.role.ff"):
        assert turn_password(SECRET, username) == openssl_hmac_sha1_b64(SECRET, username)


def test_issued_credentials_expire_and_differ_per_participant():
    issuer = TurnCredentials([URL], SECRET, ttl_s=900)
    a = issuer.issue("sess", "mentor", now=1764680000.7)
    b = issuer.issue("sess", "mentor", now=1764680000.7)
    assert a["urls"] == [URL] and a["expires"] == 1764680900
    expiry, user = a["username"].split(":")  # coturn's separator appears exactly once
    assert int(expiry) == 1764680900 and user.startswith("sess.mentor.")
    assert a["username"] != b["username"]
    assert a["credential"] == openssl_hmac_sha1_b64(SECRET, a["username"])


@pytest.mark.parametrize("kwargs, message", [
    ({"urls": []}, "give at least one"),
    ({"urls": ["stun:1.2.3.4"]}, "--turn 'stun:1.2.3.4': expected a turn:HOST"),
    ({"urls": ["turn:"]}, "--turn 'turn:'"),
    ({"secret": "short"}, "TURN secret: expected >= 16"),
    ({"ttl_s": 4}, "--turn-ttl 4: expected 5..86400"),
])
def test_bad_turn_options_refused(kwargs, message):
    args = {"urls": [URL], "secret": SECRET, "ttl_s": 600} | kwargs
    with pytest.raises(MentorError, match=message):
        TurnCredentials(**args)


def test_secret_file_and_option_pairing_refused_in_one_line(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(MentorError, match=r"--turn-secret-file .*short: expected a secret"):
        read_secret(short)
    with pytest.raises(MentorError, match="file not found"):
        read_secret(tmp_path / "none")
    with pytest.raises(MentorError, match="--turn and --turn-secret-file go together"):
        MentorServer(ServerConfig(db=tmp_path / "m.db", turn=[URL]))


@contextlib.asynccontextmanager
async def turn_server(tmp_path):
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(SECRET + "\n")
    server = MentorServer(ServerConfig(db=tmp_path / "mentor.db", port=0, grpc_port=0,
                                       stun=["stun:10.1.2.3:3478"], turn=[URL],
                                       turn_secret_file=secret_file, turn_ttl_s=600))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.2)


def test_welcome_and_join_carry_a_credential_per_participant(tmp_path):
    async def main():
        async with turn_server(tmp_path) as server:
            made = await server.hub.db(server.hub.store.new_session, False, "t")
            entries = []
            for role in ("mentor", "observer"):
                s = await joined(server, made.tokens[role])
                try:
                    ws = await s.ws_connect("/api/ws")
                    await ws.send_json({"type": "hello", "after_seq": 0})
                    welcome = await recv(ws, "welcome")
                    await ws.close()
                finally:
                    await s.close()
                stun, turn = welcome["ice_servers"]
                assert stun == {"urls": ["stun:10.1.2.3:3478"]}
                entries.append((role, turn))
            async with MentorClient(server.grpc_target, made.tokens["surgeon"],
                                    server.cert_path) as c:
                reply = await c.join()
            _, grpc_turn = reply.ice_servers
            entries.append(("surgeon", {"urls": list(grpc_turn.urls),
                                        "username": grpc_turn.username,
                                        "credential": grpc_turn.credential}))
            return made, entries

    made, entries = asyncio.run(main())
    assert len({e["username"] for _, e in entries}) == 3
    for role, entry in entries:
        assert entry["urls"] == [URL]
        expiry, user = entry["username"].split(":")
        assert 590 <= int(expiry) - time.time() <= 601
        assert user.startswith(f"{made.session_id}.{role}.")
        assert entry["credential"] == openssl_hmac_sha1_b64(SECRET, entry["username"])
