"""TURN credentials over a long session, against a real coturn (tests/mentor/coturn_netns.py).

What coturn 4.6 does with a ``use-auth-secret`` credential whose timestamp has passed, on an
allocation made while it was valid, is measured here rather than assumed: the timestamp is
checked when the username is first seen (ALLOCATE); REFRESH, CreatePermission and ChannelBind
of the live allocation go on succeeding - also after a stale-nonce re-challenge - and data is
relayed both ways. A *new* allocation with the same credential is refused (401). So a live
peer connection outlives its credential (no renewal of live allocations is needed, and
aioice could not change an allocation's credential anyway), and what must be fresh is the
credential of every *new* peer connection: the station asks the server for one on every
viewer's offer (``IceServers``), which the second test checks through coturn after the
first credential has expired. Truth: coturn's own log and replies, and the relayed bytes.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time

import numpy as np
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from scrubin.mentor.client import MentorClient
from scrubin.mentor.station_meta import FrameMeta
from scrubin.mentor.turn import TurnCredentials
from tests.mentor import coturn_netns
from tests.mentor.test_grpc import new_session, running
from tests.mentor.test_renewal import start_link, stop_link
from tests.mentor.test_turn_coturn import candidates, relay_config

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("_coturn_required")]


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.got.put_nowait((data, addr))


async def _request(inner, method: stun.Method, **attrs) -> stun.Message:
    req = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
    for k, v in attrs.items():
        req.attributes[k.replace("_", "-")] = v
    response, _ = await inner.request_with_retry(req)
    return response


def test_coturn_keeps_an_allocation_past_its_credentials_expiry(tmp_path):
    """ALLOCATE with a 5-s credential; 2 s past its expiry the allocation is refreshed,
    permitted, channel-bound and relays both ways; a new ALLOCATE with it gets 401."""
    async def main(turn) -> dict:
        issuer = TurnCredentials([f"turn:{turn.address}:3478"], turn.secret, 5)
        cred = issuer.issue("s1", "surgeon")
        tr, inbox = await create_turn_endpoint(_Inbox, (turn.address, 3478), cred["username"],
                                               cred["credential"], lifetime=600)
        inner = tr._TurnTransport__inner_protocol   # aioice's TURN client of the allocation
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((turn.outside, 0))
        peer.settimeout(3)
        out: dict = {"relayed": inner.relayed_address, "username": cred["username"]}
        try:
            await asyncio.sleep(cred["expires"] - time.time() + 2.0)
            out["past_expiry_s"] = time.time() - cred["expires"]
            refreshed = await _request(inner, stun.Method.REFRESH, LIFETIME=600)
            out["refresh_lifetime"] = refreshed.attributes.get("LIFETIME")
            peer_addr = peer.getsockname()
            await _request(inner, stun.Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=peer_addr)
            tr.sendto(b"to the peer", peer_addr)   # aioice binds a channel first
            out["to_peer"] = await asyncio.to_thread(peer.recvfrom, 100)
            peer.sendto(b"to the surgeon", inner.relayed_address)
            out["to_client"] = await asyncio.wait_for(inbox.got.get(), 3)
            # the same credential cannot start a new allocation
            try:
                await create_turn_endpoint(_Inbox, (turn.address, 3478), cred["username"],
                                           cred["credential"], lifetime=600)
                out["new_allocation"] = "accepted"
            except stun.TransactionFailed as exc:
                out["new_allocation"] = exc.response.error_code
        finally:
            peer.close()
            tr.close()
        return out

    with coturn_netns.coturn(tmp_path, ("stale-nonce=1",)) as turn:
        r = asyncio.run(main(turn))
        user = re.escape(r["username"])
        log = turn.log_matching(rf"user <{user}>: .*(401|[Uu]nauthorized)",
                                rf"user <{user}>: incoming packet CHANNEL_BIND processed")
    assert r["past_expiry_s"] >= 1.9
    assert r["refresh_lifetime"] == 600
    assert r["to_client"][0] == b"to the surgeon"
    assert r["to_peer"][0] == b"to the peer" and r["to_peer"][1] == r["relayed"]
    assert r["new_allocation"] == 401
    # coturn's own account: a stale-nonce re-challenge, then success with the expired name
    assert re.search(r"error 438: Stale nonce", log), log[-3000:]
    for method in ("REFRESH", "CREATE_PERMISSION", "CHANNEL_BIND"):
        assert re.search(rf"user <{user}>: incoming packet {method} processed, success", log)
    assert re.search(rf"user <{user}>: .*(401|[Uu]nauthorized)", log)


def _meta(fid: int) -> FrameMeta:
    return FrameMeta(fid, time.time(), 320, 180, (300.0, 300.0, 160.0, 90.0), (0.0,) * 5,
                     np.eye(4), np.eye(4), "LIVE")


async def _view(client: MentorClient, seconds: float = 20.0) -> dict:
    """A native viewer, relay only, on credentials issued now: offer, answer, >= 10 frames."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    ice = await client.ice_servers()
    pc = RTCPeerConnection(relay_config(ice.ice_servers))
    pc.createDataChannel("meta")
    pc.addTransceiver("video", direction="recvonly")
    frames = 0

    def on_track(track) -> None:
        async def pull() -> None:
            nonlocal frames
            while True:
                await track.recv()
                frames += 1
        asyncio.ensure_future(pull())

    pc.on("track", on_track)
    sig = client.signal()
    await sig.wait_open()
    await pc.setLocalDescription(await pc.createOffer())
    offered = time.time()
    await sig.send("offer", pc.localDescription.sdp)
    answer = await asyncio.wait_for(sig.recv(), 10)
    await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (frames < 10 or pc.connectionState != "connected"):
        if pc.connectionState == "failed":
            break
        await asyncio.sleep(0.1)
    out = {"state": pc.connectionState, "frames": frames, "offered": offered,
           "answer": answer.sdp, "viewer_user": ice.ice_servers[0].username}
    await pc.close()
    sig.close()
    return out


def test_station_reconnect_after_turn_credential_expiry_uses_a_fresh_credential(
        tmp_path, monkeypatch):
    """5-s TURN credentials: a viewer connects through coturn (relay only), leaves, and comes
    back after the station's first credential has expired; the station answers with a new
    one (IceServers on the offer) and the media flows through the relay again."""
    async def main(turn) -> dict:
        async with running(tmp_path, turn=[turn.turns_url()], turn_secret_file=turn.secret_file,
                           turn_ttl_s=5, ice_hosts=["127.0.0.1"]) as server:
            made = await new_session(server)
            link = await start_link(server, made.tokens["surgeon"])
            viewer = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path,
                                  "Dr A")
            await viewer.use_call_tokens("mentor")

            async def frames() -> None:
                fid = 1
                img = np.full((180, 320, 3), 90, np.uint8)
                while True:
                    await asyncio.to_thread(link.station.publish, img, _meta(fid))
                    fid += 1
                    await asyncio.sleep(1 / 15)

            pump = asyncio.create_task(frames())
            try:
                first = await _view(viewer)
                station_first = link.station.ice_credentials
                expires_first = int(station_first[0].split(":", 1)[0])
                await asyncio.sleep(max(0.0, expires_first - time.time() + 1.0))
                second = await _view(viewer)
                station_second = link.station.ice_credentials
                # the station's first credential, now expired, would not allocate
                from aiortc import (
                    RTCConfiguration,
                    RTCIceServer,
                    RTCIceTransportPolicy,
                    RTCPeerConnection,
                )

                pc = RTCPeerConnection(RTCConfiguration(
                    iceServers=[RTCIceServer(urls=turn.turns_url(), username=station_first[0],
                                             credential=station_first[1])],
                    iceTransportPolicy=RTCIceTransportPolicy.RELAY))
                pc.createDataChannel("meta")
                await pc.setLocalDescription(await pc.createOffer())
                stale_sdp = pc.localDescription.sdp
                await pc.close()
            finally:
                pump.cancel()
                await viewer.close()
                await stop_link(link)
            log = await server.hub.db(server.hub.store.audit_log)
            return dict(first=first, second=second, station_first=station_first,
                        station_second=station_second, expires_first=expires_first,
                        stale_sdp=stale_sdp, log=log, errors=link.errors)

    with coturn_netns.coturn(tmp_path) as turn:
        monkeypatch.setenv("SSL_CERT_FILE", str(turn.ca))
        r = asyncio.run(main(turn))
        log = turn.log_matching(
            rf"user <{re.escape(r['station_first'][0])}>: .*(401|[Uu]nauthorized)",
            rf"user <{re.escape(r['second']['viewer_user'])}>: .*ALLOCATE processed")
    for view in (r["first"], r["second"]):
        assert view["state"] == "connected" and view["frames"] >= 10, (view, r["errors"])
        cands = candidates(view["answer"])   # the station's answer: relay candidates present
        assert any(c[7] == "relay" and c[4] == turn.address for c in cands), cands
    assert r["second"]["offered"] > r["expires_first"]          # after the first expired
    user1, user2 = r["station_first"][0], r["station_second"][0]
    assert user1 != user2 and int(user2.split(":", 1)[0]) > r["second"]["offered"]
    for user in (user1, user2, r["second"]["viewer_user"]):
        assert re.search(rf"user <{re.escape(user)}>: .*ALLOCATE processed, success", log)
    assert candidates(r["stale_sdp"]) == []      # the old one is refused now ...
    assert re.search(rf"user <{re.escape(user1)}>: .*(401|[Uu]nauthorized)", log)
    issued = [x for x in r["log"] if x["action"] == "turn_credential"]
    assert sum(x["role"] == "surgeon" for x in issued) == 2      # one per viewer offer
    assert sum(x["role"] == "mentor" for x in issued) == 2
    assert f"grpc username={user2}" in [x["detail"] for x in issued]
