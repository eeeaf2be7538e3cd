"""Remote mentoring latency on loopback: real Chromium, real server, live surgeon station.

``python -m benchmarks mentor`` (``SCRUBIN_BENCH_MENTOR_S``: run length, default 60 s).

Measured at 1280x720, 30 fps (synthetic phantom scene, one H.264 stream to one mentor page).
The server runs in a process of its own, as ``scrubin serve`` does apart from ``scrubin
surgeon`` (``SCRUBIN_BENCH_MENTOR_SERVER=thread``: in the station's process, sharing its GIL,
as the tests run it); the station (the real ``StationSink`` path, tests/mentor/live_station.py)
and Chromium run here; one clock (``time.time()``, same machine):

- video latency, capture -> composited in Chromium: ``expectedDisplayTime`` of
  ``requestVideoFrameCallback`` (wall clock via ``performance.timeOrigin``) minus the frame's
  capture time (station ``time.time()``, same machine), keyed by the frame id read from the
  strip; p50/p95 and drift (median of the last 30 s minus the first 30 s);
- annotation latency: the mentor's first ``pointermove`` (event timestamp, wall clock: the
  input's time, whichever event sent it) -> the first composite the surgeon's display got
  that shows that point (``time.time()`` after drawing): a camera frame's, or the station's
  re-composite of the latest frame when the stroke arrived between frames
  (:mod:`scrubin.mentor.station_display`), both by the real ``StationSink``;
- quality floor: decoded frame rate (``getStats`` inbound-rtp ``framesDecoded``), longest gap
  between displayed frames, SSIM (scikit-image) of the decoded pictures of every 11th frame id
  copied from the page (WebCodecs ``VideoFrame.copyTo``, :mod:`benchmarks.video_grab`: no
  canvas or PNG work on the page's main thread, which stalled its frame callbacks) against
  the station's composited source of the same id;
- CPU per stream: per-thread CPU (psutil) of the station's frame loop (composite + encode),
  its WebRTC loop (packetise, SRTP), the server, and the Chromium processes.

Targets (issue 8): video p50 <= 80 ms, p95 <= 150 ms; annotation p50 <= 30 ms, p95 <= 60 ms;
drift <= 10 ms; >= 29 fps decoded; no freeze over 200 ms; SSIM >= 0.95.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {"video_p50": 0.080, "video_p95": 0.150, "ann_p50": 0.030, "ann_p95": 0.060,
           "drift": 0.010, "fps": 29.0, "freeze": 0.200, "ssim": 0.95}

STATS = """async () => {
  const pc = window.scrubin.state.pc;
  const out = {};
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') Object.assign(out, r);
  });
  return out;
}"""


def _pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q)) if a else float("nan")


def _thread_cpu(native_ids: dict[str, int]) -> dict[str, float]:
    import psutil

    times = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    return {name: times.get(tid, 0.0) for name, tid in native_ids.items()}


def _chromium_cpu() -> float:
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            if "chrom" in p.name():
                c = p.cpu_times()
                total += c.user + c.system
        except psutil.Error:
            pass
    return total


def _encoder_ssim(views: list[np.ndarray], bitrate: int) -> float:
    """Median SSIM of ``views`` through a fresh station encoder and PyAV's decoder."""
    import av
    from skimage.metrics import structural_similarity

    from scrubin.mentor.media import StreamEncoder
    from scrubin.mentor.strip import with_strip

    enc = StreamEncoder(1280, 736, 30.0, bitrate)
    dec = av.CodecContext.create("h264", "r")
    scores = []
    for i, view in enumerate(views * 2):
        for packet in enc.encode(with_strip(view, i + 1), i * 3000):
            for frame in dec.decode(packet):
                if i >= len(views):  # second pass: rate control settled
                    shown = frame.to_ndarray(format="bgr24")[:720]
                    scores.append(structural_similarity(views[i - len(views)], shown,
                                                        channel_axis=2, data_range=255))
    return float(np.median(scores)) if scores else float("nan")


async def _loop_lag(out: list[float], period: float = 0.002) -> None:
    """How late a ``period`` sleep wakes on this event loop (s): the loop's stalls (a long
    callback, or a wait for the GIL held by another thread), which delay every receive."""
    import asyncio

    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(period)
        out.append(loop.time() - t - period)


def _serve(state_dir: str, conn: Any) -> None:
    """The server's process: a real MentorServer (tests.mentor.browser.ServerThread) and one
    session; on "start" its loop-stall probe runs, on "stop" it answers (submit times, loop
    stalls, CPU s of the process since "start") and stops."""
    import asyncio

    import psutil

    from tests.mentor.browser import ServerThread

    server = ServerThread(Path(state_dir))
    sid, tokens = server.new_session()
    conn.send((server.url, server.server.grpc_target, str(server.server.cert_path), sid,
               tokens))
    lag: list[float] = []
    task, cpu0 = None, 0.0
    while conn.recv() == "start":
        task = asyncio.run_coroutine_threadsafe(_loop_lag(lag), server.loop)
        c = psutil.Process().cpu_times()
        cpu0 = c.user + c.system
    if task is not None:
        task.cancel()
    c = psutil.Process().cpu_times()
    conn.send((list(server.server.hub.submit_times), lag, c.user + c.system - cpu0))
    server.stop()


class ServerProcess:
    """``scrubin serve``'s MentorServer in a process of its own, as deployed: the station's
    threads never wait for the server's GIL (``SCRUBIN_BENCH_MENTOR_SERVER=thread``: in this
    process, as the tests run it, to compare)."""

    def __init__(self, state_dir: Path, in_thread: bool = False) -> None:
        import multiprocessing

        self.thread_server = None
        if in_thread:
            from tests.mentor.browser import ServerThread

            srv = self.thread_server = ServerThread(state_dir)
            self.sid, self.tokens = srv.new_session()
            self.url, self.grpc_target = srv.url, srv.server.grpc_target
            self.cert_path = str(srv.server.cert_path)
            self.lag: list[float] = []
            return
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(str(state_dir), child), daemon=True)
        self.proc.start()
        if not self.conn.poll(60):
            raise RuntimeError("the server process did not start within 60 s")
        self.url, self.grpc_target, self.cert_path, self.sid, self.tokens = self.conn.recv()

    def start(self) -> None:
        """Start the loop-stall probe and the CPU count."""
        import asyncio

        srv = self.thread_server
        if srv is None:
            self.conn.send("start")
            return
        self._task = asyncio.run_coroutine_threadsafe(_loop_lag(self.lag), srv.loop)
        self._cpu0 = _thread_cpu({"s": srv.thread.native_id})["s"]

    def finish(self) -> tuple[list[tuple[str, float, float, float]], list[float], float]:
        """(hub submit times, loop stalls s, server CPU s since :meth:`start`); stops it."""
        srv = self.thread_server
        if srv is None:
            self.conn.send("stop")
            out = self.conn.recv()
            self.proc.join(15)
            return out
        self._task.cancel()
        cpu = _thread_cpu({"s": srv.thread.native_id})["s"] - self._cpu0
        out = (list(srv.server.hub.submit_times), self.lag, cpu)
        srv.stop()
        return out


def _breakdown(probes: list[str], first_move: dict[str, float], station: Any,
               hub_times: list[tuple[str, float, float, float]]) -> dict[str, list[float]]:
    """Where the annotation latency goes, per probe, on the one wall clock (s).

    pointermove (event timestamp) -> page sends the update (its ``client_time``) -> server
    has it (WebSocket read, JSON) -> stored (validation + SQLite commit, synchronous=FULL)
    -> broadcast -> station has it (gRPC stream, board applied) -> composite drawn (waiting
    for the next frame of the 30 fps loop + drawing).
    """
    times = {e: (t_in, t_st, t_bc) for e, t_in, t_st, t_bc in hub_times}
    steps = ("page: pointermove -> WebSocket send", "WebSocket: send -> server handler",
             "server: validate + SQLite commit", "server: commit -> broadcast",
             "gRPC: broadcast -> station board",
             "station: board -> composite drawn (display re-composite or next frame)")
    out: dict[str, list[float]] = {k: [] for k in steps}
    for a in probes:
        arr = station.first_move_arrival.get(a)
        if arr is None or a not in first_move or a not in station.first_moved:
            continue
        t_station, event_id, t_sent = arr
        if event_id not in times:
            continue
        t_in, t_st, t_bc = times[event_id]
        marks = (first_move[a], t_sent, t_in, t_st, t_bc, t_station, station.first_moved[a][1])
        for k, (t0, t1) in zip(steps, zip(marks, marks[1:], strict=False), strict=True):
            out[k].append(t1 - t0)
    return out


def main() -> None:
    from playwright.sync_api import sync_playwright

    from benchmarks.video_grab import VideoGrab
    from scrubin.mentor.anchor import Anchorer
    from scrubin.mentor.station_meta import FrameMeta
    from scrubin.samples.synthetic import SyntheticScene, phantom_models
    from tests.mentor.browser import launch_chromium, new_page
    from tests.mentor.live_station import LiveStation

    duration = float(os.environ.get("SCRUBIN_BENCH_MENTOR_S", "60"))
    n_src = 30
    scene = SyntheticScene.from_phantom("small", n_frames=n_src, supersample=1,
                                        plate_supersample=1)
    frames = [scene.render(k).image_bgr for k in range(n_src)]
    anchorer = Anchorer([(m.vertices, m.faces) for m in phantom_models("small")])
    km = scene.camera.matrix

    def source(i: int) -> tuple[np.ndarray, FrameMeta]:
        k = i % n_src
        return frames[k], FrameMeta(0, 0.0, 1280, 720, (km[0, 0], km[1, 1], km[0, 2], km[1, 2]),
                                    tuple(scene.camera.dist), scene.T_camera_ref(k).matrix,
                                    scene.T_ref_ct.matrix, "LIVE")

    composites: dict[int, np.ndarray] = {}
    grab = VideoGrab(every=11)   # prime: every source pose and refresh phase sampled

    def keep(fid: int, img: np.ndarray) -> None:
        composites[fid] = img
        composites.pop(fid - 90, None)
        grab.keep(fid, img)

    with tempfile.TemporaryDirectory() as tmp:
        in_thread = os.environ.get("SCRUBIN_BENCH_MENTOR_SERVER", "process") == "thread"
        server = ServerProcess(Path(tmp), in_thread)
        sid, tokens = server.sid, server.tokens
        station = LiveStation(server.grpc_target, tokens["surgeon"], server.cert_path, source,
                              anchorer, on_composite=keep).start()
        import threading

        threads = {"frame loop (composite, strip, x264 call)": station._frame_thread.native_id,
                   "WebRTC loop (RTP/SRTP, meta)": station._loop_thread.native_id,
                   "bench driver": threading.main_thread().native_id}
        hub_times: list[tuple[str, float, float, float]] = []
        server_cpu_s = 0.0
        try:
            with sync_playwright() as pw:
                browser = launch_chromium(pw)
                page = new_page(browser)
                page.goto(f"{server.url}/m/{sid}#token={tokens['mentor']}")
                page.wait_for_function("() => window.scrubin.state.frameLog.length > 60",
                                       timeout=30000)
                box = page.eval_on_selector("#overlay", "c => { const r = "
                                            "c.getBoundingClientRect(); return [r.left, r.top, "
                                            "r.width, r.height]; }")
                page.evaluate("window.scrubin.state.frameLog.length = 0")
                grab.start(page)
                import asyncio

                lag: dict[str, list[float]] = {"station": [], "server": []}
                lag_tasks = [asyncio.run_coroutine_threadsafe(_loop_lag(lag["station"]),
                                                              station.loop)]
                server.start()
                s0, w0, c0, cr0 = page.evaluate(STATS), time.time(), _thread_cpu(threads), \
                    _chromium_cpu()
                proc0 = time.process_time()
                sent0 = station.station.sent_frames
                probes: list[str] = []
                rng = np.random.default_rng(1)
                while time.time() - w0 < duration:
                    x = box[0] + box[2] * rng.uniform(0.2, 0.8)
                    y = box[1] + box[3] * rng.uniform(0.2, 0.8)
                    page.mouse.move(x, y)
                    page.mouse.down()
                    page.wait_for_timeout(60)
                    page.mouse.move(x + 12, y + 6)          # the first pointermove
                    page.wait_for_timeout(150)
                    page.mouse.up()
                    probes.append(page.evaluate("window.scrubin.state.myAnnotations.at(-1)"))
                    page.wait_for_timeout(250)
                    page.click("#btn-undo")
                    page.wait_for_timeout(450)
                elapsed = time.time() - w0
                for t in lag_tasks:
                    t.cancel()
                s1, c1, cr1 = page.evaluate(STATS), _thread_cpu(threads), _chromium_cpu()
                proc1 = time.process_time()
                sent_fps = (station.station.sent_frames - sent0) / elapsed
                log = page.evaluate("window.scrubin.state.frameLog")
                first_move = page.evaluate("Object.fromEntries(window.scrubin.state.firstMoveWall)")
                first_raw = page.evaluate("Object.fromEntries(window.scrubin.state.firstRawWall)")
                outbox_ms = page.evaluate("window.scrubin.session.outboxWriteMs")
                rtt_ms = page.evaluate("window.scrubin.session.roundTripsMs")
                ssim = [v for _, v in grab.collect(page)]   # after the measured stretch
                page.context.close()
                browser.close()
        finally:
            station.stop()
            hub_times, lag["server"], server_cpu_s = server.finish()

    lat = [f["latency_s"] for f in log if f["latency_s"] is not None]
    disp = np.array([f["display_wall"] for f in log])
    t_rel = disp - disp[0]
    half = min(30.0, elapsed / 2)
    first = [f["latency_s"] for f, t in zip(log, t_rel, strict=True)
             if t < half and f["latency_s"] is not None]
    last = [f["latency_s"] for f, t in zip(log, t_rel, strict=True)
            if t >= t_rel[-1] - half and f["latency_s"] is not None]
    drift = float(np.median(last) - np.median(first)) if first and last else float("nan")
    gaps = np.diff(disp) if len(disp) > 1 else np.array([0.0])
    decoded_fps = (s1.get("framesDecoded", 0) - s0.get("framesDecoded", 0)) / elapsed
    ann = [station.first_moved[a][1] - first_move[a] for a in probes
           if a in station.first_moved and a in first_move]
    breakdown = _breakdown(probes, first_move, station, hub_times)
    cpu = {k: (c1[k] - c0[k]) / elapsed * 100 for k in c0}
    cpu["server (HTTPS/WS/gRPC/SQLite)"] = server_cpu_s / elapsed * 100
    chromium_pct = (cr1 - cr0) / elapsed * 100
    proc_pct = (proc1 - proc0) / elapsed * 100
    # the station's share: everything in this process but the bench driver (and the server
    # when it runs in this process); x264's own worker threads included
    station_pct = proc_pct - cpu["bench driver"] - (
        cpu["server (HTTPS/WS/gRPC/SQLite)"] if in_thread else 0.0)

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    vp50, vp95 = _pct(lat, 50), _pct(lat, 95)
    ap50, ap95 = _pct(ann, 50), _pct(ann, 95)
    print(f"mentor loopback 1280x720 @30 fps, {elapsed:.0f} s, {len(log)} frames displayed, "
          f"{len(ann)} annotation probes; server in "
          f"{'this process (a thread)' if in_thread else 'its own process'}")
    video_ok = vp50 <= TARGETS["video_p50"] and vp95 <= TARGETS["video_p95"]
    print(f"video capture->composite: p50 {vp50 * 1e3:.1f} ms, p95 {vp95 * 1e3:.1f} ms "
          f"(targets 80/150: {verdict(video_ok)})")
    print(f"video drift (median last {half:.0f} s - first {half:.0f} s): {drift * 1e3:+.1f} ms "
          f"({verdict(abs(drift) <= TARGETS['drift'])})")
    print(f"annotation first pointermove->surgeon composite: p50 {ap50 * 1e3:.1f} ms, "
          f"p95 {ap95 * 1e3:.1f} ms (targets 30/60: "
          f"{verdict(ap50 <= TARGETS['ann_p50'] and ap95 <= TARGETS['ann_p95'])})")
    for name, v in breakdown.items():
        print(f"  {name}: p50 {_pct(v, 50) * 1e3:.1f} ms, p95 {_pct(v, 95) * 1e3:.1f} ms")
    kinds = [station.first_moved[a][2] for a in probes if a in station.first_moved]
    raw_lag = [first_move[a] - first_raw[a] for a in probes if a in first_raw and a in first_move]
    print(f"  first shown by: {kinds.count('display')} display re-composites, "
          f"{kinds.count('frame')} camera frames; {len(station.display_composites)} display "
          f"composites in all ({station.sink.display.dropped} dropped: a newer frame came)")
    print(f"  page: {len(raw_lag)}/{len(probes)} strokes sent from pointerrawupdate (its "
          f"timestamp - the pointermove's: max {max(map(abs, raw_lag), default=0) * 1e3:.2f} "
          f"ms); outbox write (localStorage) before each send p50 {_pct(outbox_ms, 50):.2f} "
          f"ms, p95 {_pct(outbox_ms, 95):.2f} ms")
    print("  event-loop stalls (a 2 ms sleep's lateness): " + "; ".join(
        f"{k} p50 {_pct(v, 50) * 1e3:.1f} ms, p99 {_pct(v, 99) * 1e3:.1f} ms, max "
        f"{max(v, default=float('nan')) * 1e3:.1f} ms" for k, v in lag.items()))
    print(f"station sent {sent_fps:.1f} fps; Chromium decoded {decoded_fps:.1f} fps "
          f"({verdict(decoded_fps >= TARGETS['fps'])}); longest "
          f"display gap {gaps.max() * 1e3:.0f} ms ({verdict(gaps.max() <= TARGETS['freeze'])}); "
          f"freezeCount {s1.get('freezeCount', 0) - s0.get('freezeCount', 0)}, framesDropped "
          f"{s1.get('framesDropped', 0) - s0.get('framesDropped', 0)}")
    print(f"  page -> server -> ack round trip (WebSocket, SQLite commit) p50 "
          f"{_pct(rtt_ms, 50):.1f} ms, p95 {_pct(rtt_ms, 95):.1f} ms")
    if ssim:
        low = grab.lowest(station.first_frame_id, station.encoder.idr_frames, n_src)
        print(f"SSIM displayed vs source on {len(ssim)} tagged frames (every {grab.every}th id; "
              f"{grab.grabbed} copied, {grab.unmatched} unmatched, {grab.unreadable} strips "
              f"unread): lowest {low}; min {min(ssim):.3f}, p1 "
              f"{_pct(ssim, 1):.3f}, median {np.median(ssim):.3f} "
              f"({verdict(min(ssim) >= TARGETS['ssim'])}); the "
              f"encoder alone (same frames, x264 -> PyAV decode, no browser): "
              f"{_encoder_ssim(list(composites.values())[-20:], station.encoder.bitrate):.3f} "
              f"median at {station.encoder.bitrate / 1e6:.1f} Mb/s")
    else:
        print(f"SSIM: no grabbed frame matched a kept source frame ({grab.errors[:3]})")
    enc = np.asarray(station.encode_ms[-int(elapsed * 30):])
    print(f"encode (strip + x264 {station.encoder.preset}) p50 {np.median(enc):.1f} ms, p95 "
          f"{np.percentile(enc, 95):.1f} ms per frame")
    print(f"CPU for the one stream (% of one core): station {station_pct:.0f}% (of which "
          + ", ".join(f"{k} {v:.0f}%" for k, v in cpu.items() if k.startswith(("frame", "Web")))
          + f"), server {cpu['server (HTTPS/WS/gRPC/SQLite)']:.0f}%, Chromium receiving "
          f"(all processes) {chromium_pct:.0f}%")
    print(f"machine load average during the run: {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs (figures above are only meaningful on a quiet machine)")
