"""The mentor page (real headless Chromium) behind the media relay: a 3 s blackout.

The page's offer and the station's answer are rewritten on their way through the page's
WebSocket (Playwright ``route_web_socket``), so Chromium and the station only know relay
addresses; the relay's byte count to the page matches Chromium's transport ``bytesReceived``.
During the blackout the page's heartbeat (mentor/static/mentor.js) declares the link lost
within 2 s and shows it; the station learns it within 2 s too (its heartbeat,
mentor/station.py, holds the page to its ``hb``; here the server's ``bye`` for the page's old
peer, sent when the page's new offer arrives, usually comes first); the page makes a new
peer connection and video frames are displayed again within 5 s of the link's return.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from dataclasses import replace

import pytest

from scrubin.mentor.impair import Impairer, Impairment
from scrubin.mentor.impair_relay import IceRelay
from tests.mentor.browser import new_page
from tests.mentor.fault_harness import moving_source
from tests.mentor.live_station import LiveStation

WAIT_MS = 30000


class RelayThread:
    """IceRelays (one per peer connection, all on one impaired link) on their own loop."""

    def __init__(self, media: Impairment) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.up = Impairer(media)                                   # page -> station
        self.down = Impairer(replace(media, seed=media.seed + 1))   # station -> page
        self.relays: list[IceRelay] = []

    def call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def rewrite_offer(self, sdp: str) -> str:
        async def run() -> str:
            relay = IceRelay(self.up, self.down)
            self.relays.append(relay)
            return await relay.rewrite_offer(sdp)
        return self.call(run())

    def rewrite_answer(self, sdp: str) -> str:
        return self.call(self.relays[-1].rewrite_answer(sdp))

    def blackout(self, seconds: float) -> None:
        async def run() -> None:
            now = self.loop.time()
            self.up.blackout(now, seconds)
            self.down.blackout(now, seconds)
        self.call(run())

    def delivered_to_page(self) -> int:
        async def run() -> int:
            return self.relays[-1].delivered_media_bytes()["to_a"]
        return self.call(run())

    def stop(self) -> None:
        async def run() -> None:
            for r in self.relays:
                r.close()
        self.call(run())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _route_signalling(page, relay: RelayThread) -> None:
    def handler(ws) -> None:
        server = ws.connect_to_server()

        def rewrite(message, sdp_type: str, fn):
            if isinstance(message, str) and '"signal"' in message:
                d = json.loads(message)
                if d.get("type") == "signal" and d.get("sdp_type") == sdp_type:
                    d["sdp"] = fn(d["sdp"])
                    return json.dumps(d)
            return message

        ws.on_message(lambda m: server.send(rewrite(m, "offer", relay.rewrite_offer)))
        server.on_message(lambda m: ws.send(rewrite(m, "answer", relay.rewrite_answer)))

    page.route_web_socket(re.compile(r"/api/ws"), handler)


@pytest.mark.timeout(120)
def test_page_blackout_heartbeat_and_reconnect(chromium, mentor_server) -> None:
    sid, tokens = mentor_server.new_session()
    station = LiveStation(mentor_server.server.grpc_target, tokens["surgeon"],
                          str(mentor_server.server.cert_path), moving_source(), None,
                          640, 360)
    closed: list[tuple[float, str]] = []    # the station: (time, what) of each peer's end
    station.station.on_peer = lambda what, peer: closed.append((time.time(), what)) \
        if what in ("lost", "closed") else None
    station.start()
    relay = RelayThread(Impairment(seed=11))
    page = new_page(chromium)
    try:
        _route_signalling(page, relay)
        page.goto(f"{mentor_server.url}/m/{sid}#token={tokens['mentor']}")
        page.wait_for_function("() => window.scrubin.state.frameLog.length > 30",
                               timeout=WAIT_MS)
        # the relay is the only path: its bytes to the page are Chromium's transport bytes
        page_bytes = page.evaluate("""async () => { let n = 0;
            (await window.scrubin.state.pc.getStats()).forEach((s) => {
              if (s.type === 'transport') n += s.bytesReceived; }); return n; }""")
        relayed = relay.delivered_to_page()
        assert page_bytes > 100_000
        assert page_bytes <= relayed <= page_bytes * 1.05 + 20_000, (page_bytes, relayed)
        sdp = page.evaluate("() => window.scrubin.state.pc.currentRemoteDescription.sdp")
        ports = {int(line.split()[5]) for line in sdp.splitlines()
                 if line.startswith("a=candidate:")}
        assert ports and ports <= {f.port for f in relay.relays[-1].forwarders}
        peers = list(station.station.peers.values())
        assert len(peers) == 1 and peers[0].heartbeats > 0          # the page sends hb
        t_cut = time.time()
        relay.blackout(3.0)
        t_back = t_cut + 3.0
        page.wait_for_function("() => window.scrubin.state.linkLost.length > 0",
                               timeout=5000, polling=50)
        lost_page = page.evaluate("() => window.scrubin.state.linkLost[0]") - t_cut
        page.wait_for_function("() => document.getElementById('st-conn').textContent"
                               ".includes('link lost')", timeout=int((t_cut + 2.0 - time.time())
                                                                     * 1000), polling=50)
        shown = time.time() - t_cut
        # the tracking state does not go on saying LIVE from the last frame
        page.wait_for_function("() => document.getElementById('st-track').textContent"
                               ".startsWith('NO VIDEO')", timeout=int((t_cut + 2.0 - time.time())
                                                                      * 1000), polling=50)
        page.wait_for_function(f"() => window.scrubin.state.frameLog.some("
                               f"(f) => f.display_wall > {t_back})", timeout=15000, polling=50)
        resumed = page.evaluate(f"() => window.scrubin.state.frameLog.find("
                                f"(f) => f.display_wall > {t_back}).display_wall") - t_back
        # the station notices by its heartbeat ("lost") or the server's bye for the page's
        # old peer ("closed", the page's new offer arrives first when only media is cut)
        lost_station = [t - t_cut for t, what in closed if t >= t_cut]
        print({"page_lost_s": lost_page, "station_lost_s": lost_station,
               "resumed_s": resumed, "shown": shown, "relay_bytes": relayed,
               "page_bytes": page_bytes})
        assert lost_page <= 2.0
        assert shown <= 2.0                                         # shown on the page
        assert lost_station and lost_station[0] <= 2.0
        assert resumed <= 5.0
        assert len(relay.relays) >= 2                               # a new peer connection
        assert station.errors == [] and page.errors == []
    finally:
        page.context.close()
        station.stop()
        relay.stop()


INBOUND_VIDEO = """async () => { let v = null; const audio = {};
    (await window.scrubin.state.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') v = s;
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        audio.samples = s.totalSamplesReceived || 0;
        audio.concealed = s.concealedSamples || 0;
        audio.energy = s.totalAudioEnergy || 0; audio.duration = s.totalSamplesDuration || 0;
      } });
    return v && {t: performance.now() / 1000, wall: Date.now() / 1000,
                 framesDecoded: v.framesDecoded,
                 freezes: v.freezeCount || 0, frozen: v.totalFreezesDuration || 0,
                 nack: v.nackCount || 0, pli: v.pliCount || 0, lost: v.packetsLost || 0,
                 received: v.packetsReceived, jb: v.jitterBufferDelay || 0,
                 emitted: v.jitterBufferEmittedCount || 0, ...audio}; }"""


def page_under_loss(chromium, mentor_server, seconds: float, loss: float = 0.05,
                    delay_ms: float = 80, jitter_ms: float = 20) -> dict:
    """Chromium's own figures (inbound-rtp video and audio) over ``seconds`` of impaired
    media; the station sends a 440 Hz tone as its voice."""
    from scrubin.mentor.media_audio import AudioSource

    sid, tokens = mentor_server.new_session()
    station = LiveStation(mentor_server.server.grpc_target, tokens["surgeon"],
                          str(mentor_server.server.cert_path), moving_source(), None,
                          640, 360, audio=AudioSource("tone:440")).start()
    relay = RelayThread(Impairment(loss=loss, delay_ms=delay_ms, jitter_ms=jitter_ms, seed=21))
    page = new_page(chromium)
    try:
        _route_signalling(page, relay)
        page.goto(f"{mentor_server.url}/m/{sid}#token={tokens['mentor']}")
        page.wait_for_function("() => window.scrubin.state.frameLog.length > 30",
                               timeout=WAIT_MS)
        # the page's loss guard reacts to the first NACKs; Chromium's jitter buffer then
        # grows towards its target over a few seconds: measure after that
        page.wait_for_function("() => window.scrubin.state.lossGuard.targetMs > 0",
                               timeout=WAIT_MS)
        page.wait_for_timeout(3000)
        a = page.evaluate(INBOUND_VIDEO)
        page.wait_for_timeout(int(seconds * 1000))
        b = page.evaluate(INBOUND_VIDEO)
        dt = b["t"] - a["t"]
        # capture -> display of the frames shown in the window (the price of the loss guard)
        lat = sorted(page.evaluate(
            f"() => window.scrubin.state.frameLog.filter((f) => f.latency_s !== null"
            f" && f.display_wall >= {a['wall']} && f.display_wall <= {b['wall']})"
            f".map((f) => f.latency_s)"))
        lost_down = relay.call(_stats(relay.down))
        guard = page.evaluate("() => window.scrubin.state.lossGuard.targetMs")
        delays = page.evaluate("() => window.scrubin.state.lossGuard.history")
        return {"fps": (b["framesDecoded"] - a["framesDecoded"]) / dt, "guard_ms": guard,
                "frozen_share": (b["frozen"] - a["frozen"]) / dt,
                "freezes": b["freezes"] - a["freezes"], "nack": b["nack"] - a["nack"],
                "pli": b["pli"] - a["pli"],
                "latency_p50_ms": 1e3 * lat[len(lat) // 2] if lat else math.nan,
                "latency_p95_ms": 1e3 * lat[int(0.95 * (len(lat) - 1))] if lat else math.nan,
                "jitter_buffer_ms": 1e3 * (b["jb"] - a["jb"]) / max(1, b["emitted"] - a["emitted"]),
                "relay_loss": lost_down, "peer_connections": len(relay.relays),
                "audio_concealed_share": (b["concealed"] - a["concealed"]) / max(
                    1, b["samples"] - a["samples"]),
                # mean power over the window as dBFS (energy = sum of level^2 x duration)
                "audio_dbfs": 10 * math.log10(max(1e-12, (b["energy"] - a["energy"]) / max(
                    1e-9, b["duration"] - a["duration"]))),
                "station_frames": station.station.sent_frames,
                "errors": station.errors + page.errors,
                # per second: the guard's target and Chromium's own per-frame delays (ms)
                "delays": [(round(d["t"] - a["wall"], 1), d["target"], d["jb"], d["chromeTarget"],
                            d["chromeMin"], d["freezes"]) for d in delays]}
    finally:
        page.context.close()
        station.stop()
        relay.stop()


async def _stats(imp: Impairer) -> float:
    return imp.stats.lost / max(1, imp.stats.packets_in)


@pytest.mark.timeout(120)
def test_page_video_under_5pct_loss_80ms(chromium, mentor_server) -> None:
    """Chromium's inbound-rtp figures over 10 s: >= 20 fps decoded, <= 5 % of the time frozen
    (Chromium's totalFreezesDuration), NACKs sent; the relay applied ~5 % loss. The page's loss
    guard (link.js) holds a playout delay of 3 RTT + 60 ms while NACKs are sent (without it:
    ~30 % of the time frozen, 12 freezes in 10 s; with 2 RTT + 60 ms: 0-12 %, measured here)."""
    out = page_under_loss(chromium, mentor_server, 10.0)
    print(out)
    assert abs(out["relay_loss"] - 0.05) < 0.02
    assert out["nack"] > 0
    assert out["fps"] >= 20.0, out
    assert out["frozen_share"] <= 0.05, out
    assert out["peer_connections"] == 1 and out["errors"] == []
    # the station's voice plays on at its level (AudioSource "tone:440", about -7 dBFS sent);
    # Chromium's concealed share (11-20 % here, CPU starvation included) is reported by
    # benchmarks/bench_faults.py, not asserted: it does not establish intelligibility
    assert out["audio_dbfs"] > -20.0, out

