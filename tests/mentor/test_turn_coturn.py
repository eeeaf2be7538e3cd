"""Media through a real TURN server over TLS on 443 with server-issued, time-limited
credentials (mentor/turn.py), relay candidates only.

coturn runs in a network namespace made by the test (tests/mentor/coturn_netns.py). Two
aiortc peers get their ICE servers from the real mentoring server's ``Join`` (one credential
per participant) and use ``iceTransportPolicy=relay`` with ``turns:ADDR:443?transport=tcp``:
aioice 0.13 speaks TURN over TLS (``turn_ssl``), verifying coturn's certificate against the
default trust store, which ``SSL_CERT_FILE`` points at the test CA. Expected values come from
the peer: coturn's own log says which usernames it allocated for and which it refused."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from scrubin.mentor.client import MentorClient
from scrubin.mentor.turn import TurnCredentials
from tests.mentor import coturn_netns
from tests.mentor.test_grpc import new_session, running

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.usefixtures("_coturn_required")]


@pytest.fixture()
def turn(tmp_path, monkeypatch):
    with coturn_netns.coturn(tmp_path) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca))
        yield server


def relay_config(ice_servers) -> object:
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=list(s.urls), username=s.username,
                                 credential=s.credential) for s in ice_servers],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def candidates(sdp: str) -> list[list[str]]:
    return [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def connect_pair(config1, config2, timeout: float = 20.0) -> dict:
    """Offer/answer through ``config1``/``config2``; video both ways and a data message."""
    from aiortc import RTCPeerConnection, VideoStreamTrack

    pcs = {1: RTCPeerConnection(config1), 2: RTCPeerConnection(config2)}
    seen: dict = {"frames": {1: 0, 2: 0}, "messages": []}
    pulls = []
    for i, pc in pcs.items():
        pc.addTrack(VideoStreamTrack())

        def on_track(track, i=i):
            async def pull() -> None:
                while True:
                    try:
                        await track.recv()
                    except Exception:  # MediaStreamError once closed
                        return
                    seen["frames"][i] += 1
            pulls.append(asyncio.ensure_future(pull()))

        pc.on("track", on_track)
    channel = pcs[1].createDataChannel("meta")
    channel.on("open", lambda: channel.send("through the relay"))
    pcs[2].on("datachannel",
              lambda ch: ch.on("message", lambda m: seen["messages"].append(m)))
    try:
        await pcs[1].setLocalDescription(await pcs[1].createOffer())
        await pcs[2].setRemoteDescription(pcs[1].localDescription)
        await pcs[2].setLocalDescription(await pcs[2].createAnswer())
        await pcs[1].setRemoteDescription(pcs[2].localDescription)
        seen["sdp"] = {1: pcs[1].localDescription.sdp, 2: pcs[2].localDescription.sdp}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if seen["messages"] and min(seen["frames"].values()) >= 10:
                break
            if "failed" in (pcs[1].connectionState, pcs[2].connectionState):
                break
            await asyncio.sleep(0.1)
        seen["state"] = {i: pc.connectionState for i, pc in pcs.items()}
        seen["rtp_in"] = {}
        for i, pc in pcs.items():
            stats = await pc.getStats()
            seen["rtp_in"][i] = sum(s.packetsReceived for s in stats.values()
                                    if s.type == "inbound-rtp")
    finally:
        for pc in pcs.values():
            await pc.close()
        for p in pulls:
            p.cancel()
    return seen


def test_media_and_data_through_turns_443_with_issued_credentials(tmp_path, turn):
    async def main():
        async with running(tmp_path, turn=[turn.turns_url()],
                           turn_secret_file=turn.secret_file, turn_ttl_s=600) as server:
            made = await new_session(server)
            replies = {}
            for role in ("surgeon", "mentor"):
                async with MentorClient(server.grpc_target, made.tokens[role],
                                        server.cert_path) as c:
                    replies[role] = await c.join()
            for role, reply in replies.items():
                (ice,) = reply.ice_servers
                assert list(ice.urls) == [turn.turns_url()]
                expiry, user = ice.username.split(":", 1)
                assert 590 <= int(expiry) - time.time() <= 601
                assert user.startswith(f"{made.session_id}.{role}.")
            assert replies["surgeon"].ice_servers[0].username != \
                replies["mentor"].ice_servers[0].username
            seen = await connect_pair(relay_config(replies["surgeon"].ice_servers),
                                      relay_config(replies["mentor"].ice_servers))
            return replies, seen

    replies, seen = asyncio.run(main())
    assert seen["state"] == {1: "connected", 2: "connected"}, seen
    assert seen["messages"] == ["through the relay"]
    assert min(seen["frames"].values()) >= 10 and min(seen["rtp_in"].values()) > 0
    for i in (1, 2):  # relay candidates only, all on coturn's relay address
        cands = candidates(seen["sdp"][i])
        assert cands and all(c[7] == "relay" and c[4] == turn.address for c in cands), cands
    log = turn.log_text()
    for reply in replies.values():  # coturn itself accepted each participant's credential
        user = re.escape(reply.ice_servers[0].username)
        assert re.search(rf"user <{user}>: .*ALLOCATE processed, success", log), log[-3000:]
        assert re.search(rf"username=<{user}>, lifetime=\d+, cipher=\S+, method=TLSv1\.[23]",
                         log)
    # coturn counted peer traffic relayed for both participants' allocations (its usage
    # lines come as sessions close, so wait for them a little).
    deadline = time.monotonic() + 5
    while True:
        relayed = {role: sum(int(m) for m in re.findall(
            rf"peer usage: realm=<[^>]*>, username=<{re.escape(r.ice_servers[0].username)}>,"
            r" rp=\d+, rb=(\d+)", turn.log_text())) for role, r in replies.items()}
        if min(relayed.values()) > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert min(relayed.values()) > 0, relayed


def test_expired_and_forged_turn_credentials_refused_by_coturn(tmp_path, turn):
    from aiortc import RTCIceServer, RTCPeerConnection

    async def gather(username: str, credential: str) -> str:
        from aiortc import RTCConfiguration, RTCIceTransportPolicy

        pc = RTCPeerConnection(RTCConfiguration(
            iceServers=[RTCIceServer(urls=turn.turns_url(), username=username,
                                     credential=credential)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY))
        try:
            pc.createDataChannel("meta")
            await pc.setLocalDescription(await pc.createOffer())
            return pc.localDescription.sdp
        finally:
            await pc.close()

    issuer = TurnCredentials([turn.turns_url()], turn.secret, 600)
    forger = TurnCredentials([turn.turns_url()], "not-the-shared-secret!", 600)
    expired = issuer.issue("s1", "mentor", now=time.time() - 700)  # expired 100 s ago
    forged = forger.issue("s1", "mentor")
    good = issuer.issue("s1", "mentor")
    sdps = {name: asyncio.run(gather(c["username"], c["credential"]))
            for name, c in (("expired", expired), ("forged", forged), ("good", good))}
    assert candidates(sdps["expired"]) == [] and candidates(sdps["forged"]) == []
    assert [c[7] for c in candidates(sdps["good"])] == ["relay"]
    log = turn.log_text()
    for cred in (expired, forged):
        user = re.escape(cred["username"])
        assert re.search(rf"user <{user}>: .*(401|[Uu]nauthorized)", log), log[-3000:]
        assert not re.search(rf"user <{user}>: .*ALLOCATE processed, success", log)
