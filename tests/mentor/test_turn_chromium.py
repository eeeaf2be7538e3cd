"""The mentor's browser through TURN over TLS on 443: real headless Chromium with
``iceTransportPolicy: "relay"`` and a ``turns:`` server issued by the mentoring server, and an
aiortc peer (the station's stack) also relay-only, both through a real coturn in a network
namespace the test made (tests/mentor/coturn_netns.py). Chromium's own stats say which
candidate pair carried the media (candidateType ``relay``, relayProtocol ``tls``)."""

from __future__ import annotations

import time

import pytest

from tests.mentor import coturn_netns
from tests.mentor.browser import new_page
from tests.mentor.test_fingerprint_chromium import STATE_JS, AiortcPeer
from tests.mentor.test_turn_coturn import candidates, relay_config

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.usefixtures("_coturn_required")]


OFFER_JS = """async (ice) => {
  const pc = new RTCPeerConnection({iceServers: [ice], iceTransportPolicy: 'relay'});
  window.pc = pc; window.got = [];
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  for (const t of stream.getTracks()) pc.addTrack(t, stream);
  const ch = pc.createDataChannel('meta');
  ch.onopen = () => { window.got.push('open'); ch.send('from chromium'); };
  ch.onmessage = (e) => window.got.push('message:' + e.data);
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((ok) => pc.addEventListener('icegatheringstatechange',
      () => pc.iceGatheringState === 'complete' && ok()));
  }
  return pc.localDescription.sdp;
}"""

PAIR_JS = """async () => {
  const stats = await window.pc.getStats(); let out = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      const local = stats.get(pair.localCandidateId);
      out = {type: local.candidateType, relayProtocol: local.relayProtocol,
             address: local.address, bytesSent: pair.bytesSent,
             bytesReceived: pair.bytesReceived};
    }
  });
  return out;
}"""


class Ice:
    def __init__(self, d: dict) -> None:
        self.urls, self.username, self.credential = d["urls"], d["username"], d["credential"]


def test_chromium_media_through_turns_443_relay_only(chromium, static_origin, tmp_path,
                                                       monkeypatch):
    from scrubin.mentor.turn import TurnCredentials

    with coturn_netns.coturn(tmp_path) as turn:
        monkeypatch.setenv("SSL_CERT_FILE", str(turn.ca))
        issuer = TurnCredentials([turn.turns_url()], turn.secret, 600)
        mentor, station = issuer.issue("s", "mentor"), issuer.issue("s", "surgeon")
        page = new_page(chromium)
        peer = AiortcPeer(config=relay_config([Ice(station)]))
        try:
            page.goto(f"{static_origin}/blank")
            offer = page.evaluate(OFFER_JS, {k: mentor[k] for k in
                                             ("urls", "username", "credential")})
            offered = candidates(offer)
            assert offered and all(c[7] == "relay" and c[4] == turn.address for c in offered)
            answer = peer.call(peer.answer, offer)
            assert all(c[7] == "relay" for c in candidates(answer))
            page.evaluate("(sdp) => window.pc.setRemoteDescription({type: 'answer', sdp})",
                          answer)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ours, theirs = page.evaluate(STATE_JS), peer.call(peer.state)
                if ours["frames"] > 10 and theirs["frames"] > 10 and \
                        "message:from aiortc" in ours["got"]:
                    break
                time.sleep(0.2)
            pair = page.evaluate(PAIR_JS)
        finally:
            peer.close()
            page.context.close()
    assert ours["state"] == "connected" and theirs["state"] == "connected", (ours, theirs)
    assert ours["frames"] > 10 and theirs["frames"] > 10
    assert "message:from chromium" in theirs["data"]
    assert pair["type"] == "relay" and pair["relayProtocol"] == "tls", pair
    assert pair["bytesSent"] > 0 and pair["bytesReceived"] > 0
    log = turn.log_text()
    for cred in (mentor, station):
        assert f"user <{cred['username']}>: incoming packet ALLOCATE processed, success" in log


def test_chromium_refuses_a_turn_server_whose_certificate_it_does_not_trust(
        chromium, static_origin, tmp_path):
    """Without ``--ignore-certificate-errors`` Chromium checks the TURN server's certificate
    against its own trust store (not ``SSL_CERT_FILE``): the test CA is not there, so no
    relay candidate and no allocation. A theatre installs its CA in the browsers."""
    from scrubin.mentor.turn import TurnCredentials
    from tests.mentor.browser import CHROMIUM, CHROMIUM_ARGS

    strict = chromium.browser_type.launch(
        executable_path=str(CHROMIUM), headless=True,
        args=[a for a in CHROMIUM_ARGS if a != "--ignore-certificate-errors"])
    try:
        with coturn_netns.coturn(tmp_path) as turn:
            cred = TurnCredentials([turn.turns_url()], turn.secret, 600).issue("s", "mentor")
            page = strict.new_context().new_page()
            page.goto(f"{static_origin}/blank")
            offer = page.evaluate(OFFER_JS, {k: cred[k] for k in
                                             ("urls", "username", "credential")})
            log = turn.log_text()
    finally:
        strict.close()
    assert candidates(offer) == []
    assert f"user <{cred['username']}>: incoming packet ALLOCATE processed, success" \
        not in log
