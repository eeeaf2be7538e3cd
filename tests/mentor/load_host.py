"""The load rig's serving process: a real MentorServer and a live surgeon station, one process.

``python -m tests.mentor.load_host --state DIR [--janus-url URL --janus-secrets F]
[--ice-host ADDR]`` prints one JSON line when ready (``url``, ``grpc``, ``cert``, ``session``,
``tokens``; with Janus also ``room``, ``pin``, ``feed``: the station's stream published once
into a locked room this process made), then runs until a line ``stop`` on stdin, and prints
one JSON line with the capture time of every frame sent (``captures``: frame id -> time.time()),
the annotation seqs the station applied, its CPU seconds (user + system) and the encoder's
figures. Run by tests/mentor/load_rig.py so the load generator's CPU is counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from scrubin.mentor.ice import restrict_host_addresses
from scrubin.mentor.station_meta import FrameMeta
from tests.mentor.browser import ServerThread
from tests.mentor.live_station import LiveStation


def scene(width: int = 1280, height: int = 720):
    """A moving block over a gradient (real content for the encoder), LIVE metadata."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height),
                     ((xx + yy) * 127 // (width + height))], -1).astype(np.uint8)
    k = (width * 1.2, width * 1.2, width / 2 - 0.5, height / 2 - 0.5)

    def source(i: int) -> tuple[np.ndarray, FrameMeta]:
        img = base.copy()
        x = (i * 9) % (width - 160)
        img[200:360, x:x + 160] = 255
        return img, FrameMeta(0, 0.0, width, height, k, (0.0,) * 5, np.eye(4), np.eye(4),
                              "LIVE")
    return source


async def publish_to_janus(live: LiveStation, url: str, secrets_file: Path) -> dict:
    """Server side: make the locked room; station side: publish the shared stream once."""
    from scrubin.mentor import sfu

    keys_in = json.loads(secrets_file.read_text())
    admin = sfu.JanusSession(url, keys_in["api_secret"])
    await admin.create()
    h = await admin.attach()
    keys = await sfu.create_room(h, keys_in["admin_key"], "scrubin load")
    pub_session = sfu.JanusSession(url, keys_in["api_secret"])
    await pub_session.create()
    ph = await pub_session.attach()
    track = live.fanout.add_viewer("janus")
    pc = await sfu.publish(ph, keys, track,
                           on_keyframe_request=live.fanout.encoder.request_keyframe)
    t_end = time.monotonic() + 15
    while pc.connectionState != "connected":
        if time.monotonic() > t_end:
            raise RuntimeError(f"publisher not connected: {pc.connectionState}")
        await asyncio.sleep(0.05)
    live._janus = (admin, pub_session, pc)   # kept alive with the station
    return {"room": keys.room, "pin": keys.pin, "feed": ph.peer_id}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--ice-host", default="127.0.0.1")
    ap.add_argument("--janus-url")
    ap.add_argument("--janus-secrets", type=Path)
    args = ap.parse_args()
    import psutil

    server = ServerThread(args.state)
    sid, tokens = server.new_session()
    live = LiveStation(server.server.grpc_target, tokens["surgeon"],
                       str(server.server.cert_path), scene(), None, fps=args.fps)
    live.start()   # its StationLink limits host candidates to 127.0.0.1; the SFU needs more
    restrict_host_addresses(sorted({args.ice_host, "127.0.0.1"}))
    ready = {"url": server.url, "grpc": server.server.grpc_target,
             "cert": str(server.server.cert_path), "session": sid, "tokens": tokens}
    if args.janus_url:
        fut = asyncio.run_coroutine_threadsafe(
            publish_to_janus(live, args.janus_url, args.janus_secrets), live.loop)
        ready.update(fut.result(40))
    captures: dict[int, float] = {}
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            for fid, rec in list(live.frames.items()):
                captures.setdefault(fid, rec.meta.capture_time)
            time.sleep(0.5)

    th = threading.Thread(target=collect, daemon=True)
    th.start()
    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
        if line.strip() == "cpu":    # CPU seconds so far (the measurement window's bounds)
            print(json.dumps({"cpu_s": sum(proc.cpu_times()[:2]) - cpu0}), flush=True)
    stop.set()
    th.join(2)
    for fid, rec in list(live.frames.items()):
        captures.setdefault(fid, rec.meta.capture_time)
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    enc = live.encoder.encode_ms[-300:]
    out = {"captures": captures, "cpu_s": cpu, "sent_frames": live.station.sent_frames,
           "seqs": [s for s, _ in live.events],
           "encode_p50_ms": float(np.percentile(enc, 50)) if enc else None,
           "keyframes": live.encoder.keyframes,
           # encode once: one encoder; its packet tracks (one per direct viewer, one for Janus)
           "encoder_frames": live.encoder.frames, "fanout_tracks": live.fanout.viewers,
           "station_peers": len(live.station.peers)}
    print(json.dumps(out), flush=True)
    live.stop()
    server.stop()


if __name__ == "__main__":
    main()
