"""WebRTC DTLS-SRTP with the fingerprint checked (RFC 8122 section 5, RFC 5763 section 5):
an SDP whose every ``a=fingerprint`` line carries a well-formed fingerprint of *another*
certificate (same hash algorithms) makes the receiving side's peer connection ``failed``, and
no media or data crosses in either direction - with the forged SDP as the offer and as the
answer. A real aiortc pair on 127.0.0.1; the forged values come from a freshly generated
certificate, so the SDP stays well-formed (a malformed line would only test the parser)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from scrubin.mentor.ice import ice_configuration, restrict_host_addresses

FP_LINE = re.compile(r"^a=fingerprint:(\S+) ([0-9A-F]{2}(?::[0-9A-F]{2})+)\r?$",
                     re.MULTILINE | re.IGNORECASE)


def forge_fingerprints(sdp: str) -> tuple[str, int]:
    """``sdp`` with every fingerprint replaced by the same algorithm's fingerprint of a new
    certificate; returns (sdp, number of lines replaced)."""
    from aiortc.rtcdtlstransport import RTCCertificate

    other = {f.algorithm: f.value for f in RTCCertificate.generateCertificate().getFingerprints()}
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        assert m.group(2) != other[m.group(1)]
        count += 1
        return f"a=fingerprint:{m.group(1)} {other[m.group(1)]}"

    return FP_LINE.sub(replace, sdp), count


async def _pair(forge: str | None) -> dict:
    """Offer/answer between two aiortc peers, each sending video and pc1 a data channel;
    ``forge`` is "offer", "answer" or None. Returns what each side saw."""
    from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

    restrict_host_addresses(["127.0.0.1"])
    pcs = {1: RTCPeerConnection(ice_configuration()), 2: RTCPeerConnection(ice_configuration())}
    seen: dict = {"states": {1: [], 2: []}, "frames": {1: 0, 2: 0}, "data": [], "forged": 0}
    pulls = []
    for i, pc in pcs.items():
        pc.on("connectionstatechange",
              lambda i=i, pc=pc: seen["states"][i].append(pc.connectionState))
        pc.addTrack(VideoStreamTrack())

        def on_track(track, i=i):
            async def pull() -> None:
                while True:
                    try:
                        await track.recv()
                    except Exception:  # MediaStreamError once the peer connection closes
                        return
                    seen["frames"][i] += 1
            pulls.append(asyncio.ensure_future(pull()))

        pc.on("track", on_track)
    channel = pcs[1].createDataChannel("meta")
    channel.on("open", lambda: (seen["data"].append("open@1"), channel.send("hello")))

    @pcs[2].on("datachannel")
    def on_datachannel(ch):
        seen["data"].append("channel@2")
        ch.on("message", lambda m: seen["data"].append(f"message@2:{m}"))

    try:
        await pcs[1].setLocalDescription(await pcs[1].createOffer())
        offer = pcs[1].localDescription.sdp
        if forge == "offer":
            offer, seen["forged"] = forge_fingerprints(offer)
        await pcs[2].setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pcs[2].setLocalDescription(await pcs[2].createAnswer())
        answer = pcs[2].localDescription.sdp
        if forge == "answer":
            answer, seen["forged"] = forge_fingerprints(answer)
        await pcs[1].setRemoteDescription(RTCSessionDescription(answer, "answer"))
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if forge is None and seen["frames"][1] and seen["frames"][2] and \
                    any(d.startswith("message") for d in seen["data"]):
                break
            if forge is not None and "failed" in seen["states"][1] + seen["states"][2]:
                await asyncio.sleep(2.0)  # what would arrive late arrives in this window
                break
        for i, pc in pcs.items():
            seen.setdefault("final", {})[i] = pc.connectionState  # before close()
            stats = await pc.getStats()
            seen.setdefault("rtp_in", {})[i] = sum(
                s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")
    finally:
        for pc in pcs.values():
            await pc.close()
        for p in pulls:
            p.cancel()
    return seen


@pytest.mark.timeout(60)
def test_true_fingerprints_connect_and_deliver():
    """The control: the same pair with untouched SDPs delivers video both ways and data."""
    seen = asyncio.run(_pair(None))
    assert seen["final"] == {1: "connected", 2: "connected"}
    assert seen["frames"][1] > 0 and seen["frames"][2] > 0
    assert "message@2:hello" in seen["data"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("forge", ["offer", "answer"])
def test_wrong_fingerprint_fails_with_nothing_delivered(forge):
    seen = asyncio.run(_pair(forge))
    # aiortc offers sha-256, sha-384 and sha-512 per media section (video + data): 6 lines.
    assert seen["forged"] >= 2
    checker = 2 if forge == "offer" else 1  # the side that received the forged SDP
    assert seen["final"][checker] == "failed", seen["states"]
    assert "connected" not in seen["states"][checker]
    # No media and no data, either direction: no decoded frame, no RTP counted, no channel.
    assert seen["frames"] == {1: 0, 2: 0}
    assert seen["rtp_in"] == {1: 0, 2: 0}
    assert seen["data"] == []
