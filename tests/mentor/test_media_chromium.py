"""Debian's Chromium receives the station's stream: it offers H.264, decodes the encode-once
packets, and every frame id it reads from the strip (pixels drawn from the <video> in
``requestVideoFrameCallback``) passes the CRC and was sent; the ``meta`` channel delivers the
metadata of those ids. It joins a stream already running with intra refresh (no periodic
IDR: its own IDR comes on joining) and keeps decoding over several refresh periods from that
one IDR."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from scrubin.mentor.ice import restrict_host_addresses
from scrubin.mentor.media import StreamEncoder, VideoFanout
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_meta import FrameMeta
from scrubin.mentor.strip import crc8
from tests.mentor.browser import new_page

OFFER_JS = """async () => {
  const pc = new RTCPeerConnection({iceServers: []});
  const caps = RTCRtpReceiver.getCapabilities('video').codecs
      .filter(c => c.mimeType === 'video/H264').map(c => c.sdpFmtpLine || '');
  pc.addTransceiver('video', {direction: 'recvonly'});
  const dc = pc.createDataChannel('meta');
  window._meta = {};
  dc.onmessage = e => { const m = JSON.parse(e.data); window._meta[m.frame_id] = m.width; };
  pc.ontrack = e => { window._stream = e.streams[0] || new MediaStream([e.track]); };
  window._pc = pc;
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => {
    if (pc.iceGatheringState === 'complete') return r();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') r(); };
  });
  return {sdp: pc.localDescription.sdp, caps};
}"""

PLAY_JS = """async (sdp) => {
  await window._pc.setRemoteDescription({type: 'answer', sdp});
  await new Promise(r => { const t = setInterval(() => {
    if (window._stream) { clearInterval(t); r(); } }, 20); });
  const v = document.createElement('video');
  v.muted = true; v.playsInline = true; v.srcObject = window._stream;
  document.body.appendChild(v);
  await v.play();
  const c = document.createElement('canvas');
  const ctx = c.getContext('2d', {willReadFrequently: true});
  window._bits = [];
  const read = () => {
    const w = v.videoWidth, h = v.videoHeight, cw = Math.floor(w / 40);
    c.width = w; c.height = 16;
    ctx.drawImage(v, 0, h - 16, w, 16, 0, 0, w, 16);
    const d = ctx.getImageData(0, 0, w, 16).data, bits = [];
    for (let i = 0; i < 40; i++) {
      let s = 0, n = 0;
      for (let y = 4; y < 12; y++)
        for (let x = i * cw + Math.floor(cw / 4); x < i * cw + Math.floor(3 * cw / 4); x++) {
          const k = (y * w + x) * 4; s += (d[k] + d[k + 1] + d[k + 2]) / 3; n++; }
      bits.push(s / n >= 128 ? 1 : 0);
    }
    window._bits.push(bits);
  };
  const cb = () => { read(); v.requestVideoFrameCallback(cb); };
  v.requestVideoFrameCallback(cb);
}"""

STATS_JS = """async () => {
  const s = await window._pc.getStats();
  let codec = null, decoded = 0, keys = 0, plis = 0, firs = 0;
  s.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') {
    decoded = r.framesDecoded; keys = r.keyFramesDecoded; plis = r.pliCount; firs = r.firCount;
    codec = s.get(r.codecId) ? s.get(r.codecId).mimeType : null; } });
  return {codec, decoded, keys, plis, firs, bits: window._bits,
          meta: Object.keys(window._meta).map(Number)};
}"""


def _decode(bits: list[int]) -> int | None:
    word = int("".join(map(str, bits)), 2)
    fid, crc = word >> 8, word & 0xFF
    return fid if crc8(fid.to_bytes(4, "big")) == crc else None


def test_chromium_decodes_h264_and_reads_strip(chromium, static_origin) -> None:
    restrict_host_addresses(["127.0.0.1"])
    loop = asyncio.new_event_loop()
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    enc = StreamEncoder(1280, 736, 30.0)
    station = SurgeonStation(VideoFanout(enc))
    stop = threading.Event()
    sent: list[int] = []

    def frames() -> None:
        rng = np.random.default_rng(3)
        base = rng.integers(40, 200, (720, 1280, 3), dtype=np.uint8)
        fid = 77_000_000
        while not stop.is_set():
            view = np.roll(base, fid % 1280, axis=1)
            station.publish(view, FrameMeta(fid, time.time(), 1280, 720,
                                            (900.0, 900.0, 639.5, 359.5), (0.0,) * 5, None,
                                            None, "LOST"))
            sent.append(fid)
            fid += 1
            time.sleep(1 / 30)

    page = new_page(chromium)
    try:
        page.goto(f"{static_origin}/")
        offer = page.evaluate(OFFER_JS)
        assert any("42e01f" in c or "42001f" in c for c in offer["caps"])  # H.264 offered
        th_f = threading.Thread(target=frames, daemon=True)
        th_f.start()                     # the stream runs (IDR at its start) before the join
        t_end = time.time() + 10
        while time.time() < t_end and enc.frames < 30:
            time.sleep(0.05)
        assert enc.idr_frames == [0]
        answer = asyncio.run_coroutine_threadsafe(station.answer("c1", offer["sdp"]),
                                                  loop).result(30)
        assert "H264/90000" in answer and "VP8" not in answer
        page.evaluate(PLAY_JS, answer)
        stats = {}
        for _ in range(200):             # 75 pictures: > 2 refresh periods (1 s)
            stats = page.evaluate(STATS_JS)
            if len(stats["bits"]) >= 75:
                break
            time.sleep(0.1)
        stop.set()
        th_f.join()
        assert stats["codec"] == "video/H264"
        assert stats["decoded"] >= 75
        # one IDR for the join, more only if Chromium asked (PLI/FIR) or the track dropped
        track_drops = station.fanout._tracks[0].dropped if station.fanout._tracks else 0
        assert stats["keys"] <= 1 + stats["plis"] + stats["firs"] + track_drops, stats
        ids = [_decode(b) for b in stats["bits"]]
        good = [i for i in ids if i is not None]
        assert len(good) >= 0.9 * len(ids) and set(good) <= set(sent)
        assert good == sorted(good)
        assert len(set(good) & set(stats["meta"])) >= 0.8 * len(set(good))
        assert not page.errors
    finally:
        stop.set()
        page.context.close()
        asyncio.run_coroutine_threadsafe(station.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
        restrict_host_addresses(None)
