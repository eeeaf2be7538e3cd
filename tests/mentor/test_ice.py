"""ICE: host candidates limited to the --ice-host addresses; explicit (empty) ICE servers."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from scrubin.mentor.ice import (
    IceError,
    ice_configuration,
    restrict_host_addresses,
    sdp_candidate_addresses,
)


async def _offer_addresses() -> set[str]:
    pc = RTCPeerConnection(ice_configuration())
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp_candidate_addresses(sdp)


def test_sdp_holds_only_given_addresses() -> None:
    try:
        restrict_host_addresses(["127.0.0.1"])
        assert asyncio.run(_offer_addresses()) == {"127.0.0.1"}
    finally:
        restrict_host_addresses(None)
    # aioice's own gathering skips loopback
    assert "127.0.0.1" not in asyncio.run(_offer_addresses())


def test_no_default_stun_server() -> None:
    assert ice_configuration().iceServers == []
    cfg = ice_configuration(["turn:10.0.0.1:3478"], "u", "p")
    assert [s.urls for s in cfg.iceServers] == ["turn:10.0.0.1:3478"]


@pytest.mark.parametrize("bad", [["localhost"], ["300.1.1.1"], []])
def test_bad_address(bad: list[str]) -> None:
    with pytest.raises(IceError, match="--ice-host"):
        restrict_host_addresses(bad)


def test_bad_server_url() -> None:
    with pytest.raises(IceError, match="stun:/turn:"):
        ice_configuration(["http://example.org"])
