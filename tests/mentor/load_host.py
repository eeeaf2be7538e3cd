"""The load rig's serving process: a real MentorServer and a live surgeon station, one process.

``python -m tests.mentor.load_host --state DIR [--janus-url URL --janus-secrets F]
[--ice-host ADDR]`` prints one JSON line when ready (``url``, ``grpc``, ``cert``, ``session``,
``tokens``; with Janus the server runs an :class:`~scrubin.mentor.sfu_bridge.SfuBridge` as
``serve --sfu`` does, and the station publishes its stream once through its ``Signal`` call:
observers then subscribe through the server's ``Signal`` too), runs until a line ``stop`` on
stdin, and prints
one JSON line with the capture time of every frame sent (``captures``: frame id -> time.time()),
the annotation seqs the station applied, its CPU seconds (user + system) and the encoder's
figures. Run by tests/mentor/load_rig.py so the load generator's CPU is counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.mentor.ice import restrict_host_addresses
from tests.mentor.browser import ServerThread
from tests.mentor.fault_harness import moving_source
from tests.mentor.live_station import LiveStation
from tests.mentor.load_viewers import nal_digest


def scene(width: int = 1280, height: int = 720):
    """A moving block over a gradient (real content for the encoder), LIVE metadata."""
    return moving_source(width, height, step=9, block=(200, 360, 160))


def start_sfu(server: ServerThread, url: str, secrets_file: Path) -> Any:
    """``serve --sfu`` in-process: the server's SfuBridge on the server's loop, as hub.sfu."""
    from scrubin.mentor.sfu_bridge import SfuBridge, read_secrets

    hub = server.server.hub
    bridge = SfuBridge(url, *read_secrets(secrets_file))
    bridge.audit = lambda sid, what: asyncio.ensure_future(
        hub.db(hub.store.audit, sid, "server", "server", "sfu", what))
    server.call(bridge.start)
    hub.sfu = bridge
    return bridge


async def publish_via_server(live: LiveStation) -> Any:
    """The station publishes its shared stream once, through the server's Signal call: by
    itself, on the server's ``sfu-available`` (mentor/sfu_station.py); its peer connection."""
    t_end = time.monotonic() + 15
    while live.link.sfu is None or live.link.sfu.state != "connected":
        if time.monotonic() > t_end:
            raise RuntimeError(f"publisher not connected: {live.link.sfu and live.link.sfu.errors}")
        await asyncio.sleep(0.05)
    return live.link.sfu.pc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--ice-host", default="127.0.0.1")
    ap.add_argument("--keyframe-gap", type=float, default=None,
                    help="StreamEncoder.min_keyframe_gap_s (s; default: the station's)")
    ap.add_argument("--janus-url")
    ap.add_argument("--janus-secrets", type=Path)
    args = ap.parse_args()
    import psutil

    server = ServerThread(args.state)
    sid, tokens = server.new_session()
    live = LiveStation(server.server.grpc_target, tokens["surgeon"],
                       str(server.server.cert_path), scene(), None, fps=args.fps)
    if args.keyframe_gap is not None:
        live.encoder.min_keyframe_gap_s = args.keyframe_gap
    live.start()   # its StationLink limits host candidates to 127.0.0.1; the SFU needs more
    restrict_host_addresses(sorted({args.ice_host, "127.0.0.1"}))
    ready = {"url": server.url, "grpc": server.server.grpc_target,
             "cert": str(server.server.cert_path), "session": sid, "tokens": tokens}
    bridge = pub_pc = None
    if args.janus_url:
        bridge = start_sfu(server, args.janus_url, args.janus_secrets)
        pub_pc = asyncio.run_coroutine_threadsafe(publish_via_server(live), live.loop
                                                  ).result(40)
        ready["sfu"] = True
    digests: dict[int, str] = {}

    class Digests:   # the station's recorder hook sees every frame's packets once
        def add_frame(self, packets, meta) -> None:
            digests[meta.frame_id] = nal_digest(b"".join(bytes(p) for p in packets))
            while len(digests) > 3000:
                digests.pop(next(iter(digests)))

        def add_event(self, seq, event) -> None:
            pass

        def add_audio(self, name, frame) -> None:
            pass

    live.station.recorder = Digests()
    captures: dict[int, float] = {}
    stop = threading.Event()
    lags: list[float] = []

    async def loop_lag() -> None:   # how late the station's event loop runs a 50 ms timer
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append((time.perf_counter() - t - 0.05) * 1e3)

    asyncio.run_coroutine_threadsafe(loop_lag(), live.loop)

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
    stop.set()
    th.join(2)
    for fid, rec in list(live.frames.items()):
        captures.setdefault(fid, rec.meta.capture_time)
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    enc = live.encoder.encode_ms[-300:]
    out = {"captures": captures, "cpu_s": cpu, "sent_frames": live.station.sent_frames,
           "seqs": [s for s, _ in live.events], "digests": digests,
           "encode_p50_ms": float(np.percentile(enc, 50)) if enc else None,
           "keyframes": live.encoder.keyframes,
           "loop_lag_p95_ms": float(np.percentile(lags[-400:], 95)) if lags else None,
           # encode once: one encoder; its packet tracks (one per direct viewer, one for Janus)
           "encoder_frames": live.encoder.frames, "fanout_tracks": live.fanout.viewers,
           "station_peers": len(live.station.peers)}
    print(json.dumps(out), flush=True)
    if bridge is not None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(pub_pc.close(), live.loop).result(10)
            server.call(bridge.close)
        audit = server.db(server.server.hub.store.audit_log)
        out2 = {"sfu_audit": [a.get("detail", "") for a in audit if a.get("action") == "sfu"]}
        print(json.dumps(out2), flush=True)
    live.stop()
    server.stop()


if __name__ == "__main__":
    main()
