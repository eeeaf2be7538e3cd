"""The DTLS fingerprint check between real Chromium and aiortc (the station's stack): every
``a=fingerprint`` line forged (well-formed, another certificate's), in the SDP Chromium
receives or in the one aiortc receives -> the receiving side's connection ends ``failed``
and neither side receives RTP or data. The untouched exchange is the control. Chromium runs
headless from Debian; all candidates are 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from scrubin.mentor.ice import ice_configuration, restrict_host_addresses
from tests.mentor.browser import new_page
from tests.mentor.test_fingerprint_mismatch import forge_fingerprints

pytestmark = pytest.mark.timeout(90)

OFFER_JS = """async () => {
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc; window.got = [];
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  for (const t of stream.getTracks()) pc.addTrack(t, stream);
  const ch = pc.createDataChannel('meta');
  ch.onopen = () => { window.got.push('open'); ch.send('from chromium'); };
  ch.onmessage = (e) => window.got.push('message:' + e.data);
  pc.ondatachannel = (e) => window.got.push('channel');
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((ok) => pc.addEventListener('icegatheringstatechange',
      () => pc.iceGatheringState === 'complete' && ok()));
  }
  return pc.localDescription.sdp;
}"""

STATE_JS = """async () => {
  let rtp = 0, frames = 0;
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp') { rtp += s.packetsReceived || 0;
                                    frames += s.framesDecoded || 0; }
  });
  return {state: window.pc.connectionState, got: window.got, rtp, frames};
}"""


class AiortcPeer:
    """An aiortc answerer on its own loop/thread (Playwright's sync API owns this thread)."""

    def __init__(self, config=None) -> None:
        self.config = config  # RTCConfiguration (default: host candidates on 127.0.0.1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.seen: dict = {"data": [], "frames": 0}

    def call(self, fn, *args):
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(30)

    async def answer(self, offer_sdp: str) -> str:
        from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

        restrict_host_addresses(["127.0.0.1"])
        self.pc = pc = RTCPeerConnection(self.config or ice_configuration())
        pc.addTrack(VideoStreamTrack())

        @pc.on("datachannel")
        def on_datachannel(ch):
            self.seen["data"].append("channel")
            ch.on("message", lambda m: (self.seen["data"].append(f"message:{m}"),
                                        ch.send("from aiortc")))

        @pc.on("track")
        def on_track(track):
            async def pull() -> None:
                while True:
                    try:
                        await track.recv()
                    except Exception:  # MediaStreamError once closed
                        return
                    self.seen["frames"] += 1
            self.puller = asyncio.ensure_future(pull())

        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def state(self) -> dict:
        stats = await self.pc.getStats()
        return {"state": self.pc.connectionState, "data": list(self.seen["data"]),
                "frames": self.seen["frames"],
                "rtp": sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")}

    async def _close(self) -> None:
        await self.pc.close()
        if getattr(self, "puller", None) is not None:
            self.puller.cancel()
            await asyncio.gather(self.puller, return_exceptions=True)

    def close(self) -> None:
        if hasattr(self, "pc"):
            self.call(self._close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def exchange(chromium, static_origin, forge: str | None) -> tuple[dict, dict]:
    """Chromium offers, aiortc answers; ``forge`` "to-aiortc", "to-chromium" or None."""
    page = new_page(chromium)
    peer = AiortcPeer()
    try:
        page.goto(f"{static_origin}/blank")
        offer = page.evaluate(OFFER_JS)
        if forge == "to-aiortc":
            offer, n = forge_fingerprints(offer)
            assert n >= 1
        answer = peer.call(peer.answer, offer)
        if forge == "to-chromium":
            answer, n = forge_fingerprints(answer)
            assert n >= 1
        page.evaluate("(sdp) => window.pc.setRemoteDescription({type: 'answer', sdp})", answer)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ours, theirs = page.evaluate(STATE_JS), peer.call(peer.state)
            if forge is None and theirs["frames"] > 5 and ours["frames"] > 5 and \
                    "message:from aiortc" in ours["got"]:
                break
            if forge is not None and "failed" in (ours["state"], theirs["state"]):
                time.sleep(2.0)  # anything late would arrive in this window
                ours, theirs = page.evaluate(STATE_JS), peer.call(peer.state)
                break
            time.sleep(0.1)
        return ours, theirs
    finally:
        peer.close()
        page.context.close()


def test_chromium_and_aiortc_connect_with_true_fingerprints(chromium, static_origin):
    ours, theirs = exchange(chromium, static_origin, None)
    assert ours["state"] == "connected" and theirs["state"] == "connected"
    assert ours["frames"] > 5 and theirs["frames"] > 5
    assert "message:from chromium" in theirs["data"] and "message:from aiortc" in ours["got"]


@pytest.mark.parametrize("forge", ["to-chromium", "to-aiortc"])
def test_forged_fingerprint_fails_the_receiver_and_nothing_crosses(chromium, static_origin,
                                                                    forge):
    chromium_side, aiortc_side = exchange(chromium, static_origin, forge)
    receiver = chromium_side if forge == "to-chromium" else aiortc_side
    assert receiver["state"] == "failed", (chromium_side, aiortc_side)
    assert chromium_side["rtp"] == 0 and chromium_side["frames"] == 0
    assert aiortc_side["rtp"] == 0 and aiortc_side["frames"] == 0
    assert [g for g in chromium_side["got"] if g != "channel"] == []
    assert aiortc_side["data"] == []
