"""The load rig: one station stream, many viewers, the serving process measured apart.

Processes: the serving process (tests/mentor/load_host.py: MentorServer + live station, and
with Janus the room and the one publisher), Janus when asked, and this process, the load
generator: ``n_light`` :class:`~tests.mentor.load_viewers.CountingViewer` s (through our
server's ``Signal`` to the station, or subscribed from Janus), optionally the real mentor page
in Debian's Chromium (own path only), a mentor sending annotations over gRPC, and a gRPC
health checker (``grpc.health.v1.Health/Check`` every 50 ms on its own thread and channel).

CPU: user + system seconds over the measurement window, from psutil, per process: the
serving process, Janus, this process (the load generator), and Chromium's processes.

``python -m tests.mentor.load_rig --viewers N [--janus-url U --janus-secrets F] ...`` runs one
scenario and prints its JSON (how the Janus test and bench run it inside their namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.mentor.ice import ice_configuration, restrict_host_addresses
from tests.mentor.load_viewers import (
    CountingViewer,
    answer_offer,
    offer_via_station,
    viewer_stats,
)

ROOT = Path(__file__).resolve().parents[2]


def _cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += sum(psutil.Process(pid).cpu_times()[:2])
    return total


def _chromium_pids() -> list[int]:
    import psutil

    me = psutil.Process()
    return [p.pid for p in me.children(recursive=True)
            if "chrom" in p.name().lower() or "headless" in p.name().lower()]


class HealthProbe(threading.Thread):
    """``grpc.health.v1.Health/Check`` every ``period_s`` over its own TLS channel (ms)."""

    def __init__(self, target: str, cert: str, period_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.target, self.cert, self.period_s = target, cert, period_s
        self.ms: list[float] = []
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        creds = grpc.ssl_channel_credentials(Path(self.cert).read_bytes())
        with grpc.secure_channel(self.target, creds) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)   # connect first
            while not self.stop.is_set():
                t = time.perf_counter()
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    self.ms.append((time.perf_counter() - t) * 1e3)
                except grpc.RpcError:
                    self.failed += 1
                self.stop.wait(self.period_s)


async def _own_viewers(ready: dict, n: int) -> tuple[list[CountingViewer], list[Any], Any]:
    from scrubin.mentor.client import MentorClient

    client = MentorClient(ready["grpc"], ready["tokens"]["observer"], ready["cert"], "load")
    viewers, sigs = [], []
    for i in range(n):
        v = CountingViewer(f"light{i}")
        sig = client.signal()
        await sig.wait_open()
        await offer_via_station(v, sig, ice_configuration())
        viewers.append(v)
        sigs.append(sig)
    return viewers, sigs, client


async def _janus_viewers(ready: dict, n: int) -> tuple[list[CountingViewer], list[Any], Any]:
    """Observers subscribed from Janus through our server's Signal (sfu-subscribe)."""
    from scrubin.mentor.client import MentorClient
    from scrubin.mentor.sfu import subscribe_via_signal

    client = MentorClient(ready["grpc"], ready["tokens"]["observer"], ready["cert"], "load")
    viewers, sigs = [], []
    for i in range(n):
        v = CountingViewer(f"janus{i}")
        sig = client.signal()
        await sig.wait_open()

        async def answer(offer: str, v: CountingViewer = v) -> str:
            return await answer_offer(v, offer, ice_configuration())

        await subscribe_via_signal(sig, answer)
        viewers.append(v)
        sigs.append(sig)
    return viewers, sigs, client


async def _annotate(ready: dict, count: int, period_s: float) -> list[int]:
    """A mentor draws ``count`` strokes over gRPC; the seqs the server acknowledged."""
    from scrubin.mentor.client import MentorClient

    async with MentorClient(ready["grpc"], ready["tokens"]["mentor"], ready["cert"],
                            "mentor") as client:
        stream = client.annotations()
        await stream.start()
        seqs = []
        for i in range(count):
            aid = str(uuid.uuid4())
            seqs.append(await stream.send({
                "event_id": str(uuid.uuid4()), "op": "create", "annotation_id": aid,
                "kind": "freehand", "points": [[0.1 + 0.01 * i, 0.2], [0.3, 0.4]],
                "frame_id": 1, "capture_time": time.time(), "client_time": time.time()}))
            await asyncio.sleep(period_s)
        await stream.close()
    return seqs


def run(viewers: int, seconds: float = 10.0, chromium: bool = False,
        janus_url: str | None = None, janus_secrets: Path | None = None,
        ice_host: str = "127.0.0.1", janus_pid: int | None = None,
        annotations: int = 20, keyframe_gap_s: float | None = None) -> dict[str, Any]:
    """One scenario (module docstring); per-viewer fps/latency, CPU per process, health p95,
    annotations sent/acked/applied by the station. ``keyframe_gap_s``: the encoder's
    ``min_keyframe_gap_s`` (None: the station's default)."""
    restrict_host_addresses([ice_host])
    state = Path(tempfile.mkdtemp(prefix="scrubin-load-"))
    cmd = [sys.executable, "-m", "tests.mentor.load_host", "--state", str(state),
           "--ice-host", ice_host]
    if keyframe_gap_s is not None:
        cmd += ["--keyframe-gap", str(keyframe_gap_s)]
    if janus_url:
        cmd += ["--janus-url", janus_url, "--janus-secrets", str(janus_secrets)]
    host = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    loop = asyncio.new_event_loop()
    lt = threading.Thread(target=loop.run_forever, daemon=True)
    lt.start()

    def call(coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    page = browser = pw = None
    vs: list[CountingViewer] = []
    probe: HealthProbe | None = None
    keep: list[Any] = []
    try:
        line = host.stdout.readline()
        if not line:
            raise RuntimeError("load host exited before it was ready")
        ready = json.loads(line)
        if janus_url:
            vs, sigs, client = call(_janus_viewers(ready, viewers), 120)
            keep = [sigs, client]
        else:
            vs, sigs, client = call(_own_viewers(ready, viewers), 120)
            keep = [sigs, client]
        if chromium:
            from playwright.sync_api import sync_playwright

            from tests.mentor.browser import launch_chromium, new_page

            pw = sync_playwright().start()
            browser = launch_chromium(pw)
            page = new_page(browser)
            page.goto(f"{ready['url']}/m/{ready['session']}#token={ready['tokens']['observer']}")
            page.wait_for_function("() => window.scrubin.state.frameLog.length > 30",
                                   timeout=30000)
        deadline = time.monotonic() + 30
        while min(len(v.frames) for v in vs) < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
        probe = HealthProbe(ready["grpc"], ready["cert"])
        probe.start()
        time.sleep(0.5)
        chrome = _chromium_pids()
        c0 = {"host": _cpu([host.pid]), "janus": _cpu([janus_pid]) if janus_pid else 0.0,
              "chromium": _cpu(chrome), "loadgen": time.process_time()}
        t0 = time.time()
        ann = asyncio.run_coroutine_threadsafe(
            _annotate(ready, annotations, seconds * 0.8 / max(1, annotations)), loop)
        time.sleep(seconds)
        t1 = time.time()
        c1 = {"host": _cpu([host.pid]), "janus": _cpu([janus_pid]) if janus_pid else 0.0,
              "chromium": _cpu(chrome), "loadgen": time.process_time()}
        probe.stop.set()
        time.sleep(1.0)     # frames captured in the window may still be on their way
        acked = ann.result(30)
        frame_log = page.evaluate("window.scrubin.state.frameLog") if page else []
        host.stdin.write("stop\n")
        host.stdin.flush()
        out = json.loads(host.stdout.readline())
        sfu_audit = json.loads(host.stdout.readline())["sfu_audit"] if janus_url else []
        captures = {int(k): v for k, v in out["captures"].items()}
        per_viewer = {v.name: viewer_stats(v, captures, t0, t1) for v in vs}
        sent_digests = {int(k): d for k, d in out.get("digests", {}).items()}
        for v in vs:   # frames received byte-identical to what the station encoded
            same = [fid for fid, d in v.digests.items() if sent_digests.get(fid) == d]
            per_viewer[v.name]["identical"] = float(len(same))
            per_viewer[v.name]["compared"] = float(sum(f in sent_digests for f in v.digests))
        if page is not None:
            win = [f for f in frame_log if t0 <= f["display_wall"] <= t1]
            lat = [f["latency_s"] * 1e3 for f in win if f.get("latency_s") is not None]
            per_viewer["chromium"] = {
                "frames": float(len(win)), "fps": len(win) / (t1 - t0), "calibrated": -1,
                "latency_p50_ms": float(np.percentile(lat, 50)) if lat else float("nan"),
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat else float("nan")}
        span = t1 - t0
        station_fps = sum(1 for c in captures.values() if t0 <= c <= t1) / span
        cpu = {k: (c1[k] - c0[k]) / span for k in c0}   # cores busy (CPU s per s)
        return {"viewers": per_viewer, "cpu_cores": cpu, "window_s": span,
                "loadavg_1min": os.getloadavg()[0],
                "station_fps": station_fps,
                "health_ms": {"n": len(probe.ms), "failed": probe.failed,
                              "p50": float(np.percentile(probe.ms, 50)),
                              "p95": float(np.percentile(probe.ms, 95))},
                "annotations": {"sent": annotations, "acked": len(acked),
                                "acked_seqs": acked, "station_seqs": out["seqs"]},
                "sent_frames": out["sent_frames"], "encode_p50_ms": out["encode_p50_ms"],
                "keyframes": out["keyframes"], "loop_lag_p95_ms": out.get("loop_lag_p95_ms"),
                "encoder_frames": out["encoder_frames"],
                "fanout_tracks": out["fanout_tracks"], "station_peers": out["station_peers"],
                "sfu_audit": sfu_audit}
    finally:
        if probe is not None:
            probe.stop.set()
        if page is not None:
            with contextlib.suppress(Exception):
                page.close()
                browser.close()
                pw.stop()
        if host.poll() is None:
            with contextlib.suppress(Exception):
                host.stdin.write("stop\n")
                host.stdin.flush()
            try:
                host.wait(15)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait(5)

        async def _close() -> None:
            from scrubin.mentor.client import MentorClient
            from scrubin.mentor.sfu import JanusSession

            for v in vs:
                if v.pc is not None:
                    with contextlib.suppress(Exception):
                        await v.pc.close()
            for obj in keep if isinstance(keep, list) else []:
                items = obj if isinstance(obj, list) else [obj]
                for it in items:
                    with contextlib.suppress(Exception):
                        if isinstance(it, JanusSession):
                            await it.destroy()
                        elif isinstance(it, MentorClient):
                            await it.close()
                        else:
                            it.close()
        with contextlib.suppress(Exception):
            call(_close(), 20)
        loop.call_soon_threadsafe(loop.stop)
        lt.join(5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--viewers", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--chromium", action="store_true")
    ap.add_argument("--janus-url")
    ap.add_argument("--janus-secrets", type=Path)
    ap.add_argument("--janus-pid", type=int)
    ap.add_argument("--ice-host", default="127.0.0.1")
    ap.add_argument("--annotations", type=int, default=20)
    ap.add_argument("--keyframe-gap", type=float, default=0.0)
    a = ap.parse_args()
    res = run(a.viewers, a.seconds, a.chromium, a.janus_url, a.janus_secrets, a.ice_host,
              a.janus_pid, a.annotations, a.keyframe_gap)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
