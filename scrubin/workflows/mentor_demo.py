"""The last step of ``make demo``: a scripted remote-mentoring session on loopback.

Everything real and on 127.0.0.1: ``scrubin serve``'s server (:class:`MentorServer`, HTTPS +
WebSocket + gRPC, self-signed TLS, SQLite) in a thread; the surgeon station
(:func:`scrubin.workflows.surgeon.run_surgeon` on the synthetic scene) publishing the overlay
over WebRTC; a headless Chromium (Debian ``chromium`` driven by Playwright, no browser
download) that opens the mentor link, receives the video and draws one freehand stroke with
the page's own pointer events. Printed: the page's measured capture-to-display video latency
and annotation round trip, and the station's anchoring of the stroke on the models.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required",
    "--ignore-certificate-errors",
]


def _median(values: list[float]) -> float | None:
    v = sorted(x for x in values if x is not None)
    return v[len(v) // 2] if v else None


def run(out_dir: Path, frames: int = 90) -> dict[str, Any]:
    """Run the session; returns the figures (also printed). Skips with a reason when the
    browser or Playwright is missing (``make install`` provides both)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("mentoring step skipped: Playwright is not installed (make install)")
        return {"skipped": "playwright missing"}
    if not CHROMIUM.exists():
        print(f"mentoring step skipped: {CHROMIUM} not found (make install: Debian chromium)")
        return {"skipped": "chromium missing"}
    from scrubin.mentor.server import MentorServer, ServerConfig
    from scrubin.workflows.loop_thread import LoopThread
    from scrubin.workflows.overlay import OverlayRequest
    from scrubin.workflows.surgeon import SurgeonRequest, run_surgeon

    out_dir = Path(out_dir)
    lt = LoopThread("demo-server-loop")

    def call(coro: Any) -> Any:
        return lt.call(coro, 60)

    server = MentorServer(ServerConfig(db=out_dir / "mentor-state" / "mentor.db", port=0,
                                       grpc_port=0, ice_hosts=["127.0.0.1"]))
    call(server.start())
    result: dict[str, Any] = {}
    try:
        async def new_session() -> Any:
            return await server.hub.db(server.hub.store.new_session, False, "make demo")

        made = call(new_session())
        link = f"{server.url}/m/{made.session_id}#token={made.tokens['mentor']}"
        print(f"server {server.url} (gRPC {server.grpc_target}); mentor page "
              f"{server.url}/m/{made.session_id}#token=...")
        req = SurgeonRequest(
            OverlayRequest("synthetic", out_dir / "mentor-surgeon.mp4", frames=frames),
            mentor=server.grpc_target, token=made.tokens["surgeon"],
            ca_cert=server.cert_path, ice_hosts=["127.0.0.1"])
        surgeon: dict[str, Any] = {}

        def station() -> None:
            try:
                surgeon["report"] = run_surgeon(req)
            except Exception as exc:  # reported below
                surgeon["error"] = f"{type(exc).__name__}: {exc}"

        st = threading.Thread(target=station, daemon=True)
        st.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 900},
                                       ignore_https_errors=True).new_page()
            page.goto(link)
            page.wait_for_function("() => window.scrubin && window.scrubin.state.frameLog"
                                   ".length > 10", timeout=120000)
            box = page.eval_on_selector("#overlay", "c => { const r = c.getBoundingClientRect();"
                                        " return [r.left, r.top, r.width, r.height]; }")
            x0, y0 = box[0] + 0.46 * box[2], box[1] + 0.42 * box[3]
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + 0.08 * box[2], y0 + 0.02 * box[3], steps=12)
            page.mouse.up()
            aid = page.evaluate("window.scrubin.state.myAnnotations.at(-1)")
            t0 = time.time()
            state = None
            while time.time() - t0 < 30 and state in (None, "pending"):
                state = page.evaluate(f"(window.scrubin.model.items.get('{aid}') || {{}})"
                                      ".anchor_state")
                page.wait_for_timeout(100)
            item = page.evaluate(f"window.scrubin.model.items.get('{aid}')")
            lat = [f["latency_s"] for f in page.evaluate("window.scrubin.state.frameLog")]
            rtt = page.evaluate("window.scrubin.session.roundTripsMs")
            browser.close()
        st.join(300)
        anchors = (item or {}).get("anchors_ref_mm") or []
        vlat = _median(lat)
        result = {
            "video_latency_ms_median": None if vlat is None else round(vlat * 1e3, 1),
            "annotation_round_trip_ms_median": _median(rtt),
            "anchor_state": state,
            "points": len((item or {}).get("points") or []),
            "anchored_points": sum(a is not None for a in anchors),
            "surgeon": surgeon.get("report", {}).get("mentor"),
            "error": surgeon.get("error"),
        }
        m = result["surgeon"] or {}
        print(f"mentor page (headless Chromium): {len(lat)} frames shown, capture->display "
              f"latency median {result['video_latency_ms_median']} ms; one stroke of "
              f"{result['points']} points, round trip to the server median "
              f"{result['annotation_round_trip_ms_median']:.1f} ms")
        print(f"station: {m.get('frames_sent')} frames sent to {m.get('viewers_peak')} viewer(s), "
              f"encode p50 {(m.get('encoder') or {}).get('encode_ms_p50')} ms; the stroke is "
              f"{state} ({result['anchored_points']} of {result['points']} points on the model, "
              f"anchored at the pose of the frame it was drawn on)")
        fps = m.get("frames_sent", 0) / m["wall_s"] if m.get("wall_s") else 0.0
        if fps < 25:
            print(f"note: the synthetic scene rendered at {fps:.1f} fps here, below real time; "
                  "its frames carry their scene (paced) capture times, so the latency above "
                  "includes that backlog (make bench measures a 30 fps stream)")
        if result["error"]:
            print(f"station error: {result['error']}")
    finally:
        call(server.stop())
        lt.stop()
    return result
