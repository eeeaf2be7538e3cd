"""Run inside the Janus test namespace: the mentor page watching through Janus, end to end.

``python -m tests.mentor.sfu_page_rig --mode watch|refused --janus-url U --janus-admin A
--secrets F --address ADDR --state DIR`` prints ``RESULT {json}``. Every part is the real one:
``scrubin serve --sfu`` (subprocess, the CLI), ``scrubin session new`` (CLI), a surgeon station
whose :class:`~scrubin.mentor.station_link.StationLink` publishes into Janus by itself when the
server says ``sfu-available`` (the code ``scrubin surgeon`` runs; the frames are the harness's
own, with a pose that changes every frame), and Debian's Chromium loading the real page as an
observer.

``watch`` (the station's theatre audio a 440 Hz tone): the page's displayed frames (frame ids
from the strip, CRC-checked), the metadata it holds for them next to what the station sent for
the same ids, its selected ICE pair, decoded video frames and received audio packets
(Chromium's getStats), the station's direct peers and fan-out tracks,
Janus's handles (admin API: publisher / subscriber and their ICE pairs); a mentor's page on the
same server (direct connection to the station); then ``scrubin serve``
is restarted (SIGTERM, same ports and state): the station reopens its Signal call and
publishes again, the page subscribes again; frames after the restart are reported too.

``refused``: a page with a wrong token, a WebSocket without a cookie, one with an observer's
cookie that answers without a subscription, and one with the cookie of an ended session;
what each got, the audit log and Janus's handles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.mentor.fault_harness import moving_source
from tests.mentor.live_station import LiveStation

ROOT = Path(__file__).resolve().parents[2]
SCRUBIN = [sys.executable, "-m", "scrubin"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``scrubin serve --sfu`` in a subprocess (same ports and state across restarts)."""

    def __init__(self, state: Path, janus_url: str, secrets: Path, address: str) -> None:
        self.args = [*SCRUBIN, "serve", "--port", str(free_port()), "--grpc-port",
                     str(free_port()), "--db", str(state / "mentor.db"), "--ice-host", address,
                     "--sfu", janus_url, "--sfu-secrets", str(secrets)]
        self.state = state
        self.proc: subprocess.Popen | None = None
        self.url = self.grpc = ""

    def start(self) -> float:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"serve ended: {self.proc.stderr.read()[-2000:]}")
            if line.startswith("scrubin serve: web "):
                parts = line.split()
                self.url, self.grpc = parts[3], parts[5]
            if line.startswith("ports:"):
                return time.time()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def session(self, cmd: str = "new", *extra: str) -> dict[str, Any]:
        out = self.state / f"session-{time.monotonic_ns()}.json"
        args = [*SCRUBIN, "session", cmd, "--server", self.url, "--state", str(self.state)]
        args += ["--json", str(out)] if cmd == "new" else list(extra)
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"scrubin session {cmd}: {r.stderr}")
        return json.loads(out.read_text()) if cmd == "new" else {}

    def audit(self) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(self.state / "mentor.db")) as db:
            rows = db.execute("SELECT role, author, action, detail FROM audit ORDER BY id")
            return [dict(zip(("role", "author", "action", "detail"), r, strict=True))
                    for r in rows]


def source(width: int = 1280, height: int = 720):
    """A moving block; the camera pose moves 1 mm per frame (each frame's meta differs)."""
    return moving_source(width, height, step=9, block=(200, 360, 160), moving_pose=True)


class Station(LiveStation):
    """The live station, joined as ``scrubin surgeon`` joins: ICE hosts the server advises."""

    async def _main(self) -> None:
        from scrubin.mentor.client import MentorClient
        from scrubin.mentor.station_link import StationLink

        try:
            self.client = MentorClient(self.target, self.token, self.cert, "station")
            self.link = StationLink(self.station, self.client, self.board, self.anchorer)
            await self.link.start(None)
            self._ready.set()
        except Exception as exc:  # reported by start()
            self.errors.append(repr(exc))

    def call(self, fn: Any, timeout: float = 10.0) -> Any:
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)


def janus_handles(admin_url: str, admin_secret: str) -> list[dict[str, Any]]:
    """Every handle Janus has: its VideoRoom role and its selected ICE pair (admin API)."""
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body, transaction="t", admin_secret=admin_secret)
        req = urllib.request.Request(admin_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    out = []
    for s in post("", {"janus": "list_sessions"}).get("sessions", []):
        for h in post(f"/{s}", {"janus": "list_handles"}).get("handles", []):
            info = post(f"/{s}/{h}", {"janus": "handle_info"}).get("info", {})
            ps = info.get("plugin_specific", {})
            ice = info.get("webrtc", {}).get("ice", {})
            out.append({"type": ps.get("type"), "selected_pair": ice.get("selected-pair"),
                        "display": ps.get("display"),
                        "media": [m.get("type") for m in info.get("webrtc", {})
                                  .get("media", [])] if isinstance(info.get("webrtc", {})
                                                                   .get("media"), list)
                        else None})
    return out


PAGE_STATS = """async () => {
  const s = window.scrubin.state, pc = s.pc;
  const out = {peerState: s.peerState, sfu: s.sfu, sfuFeed: s.sfuFeed, errors: s.errors,
    sfuErrors: s.sfuErrors, sfuStarted: s.sfuStarted, sfuSubscribes: s.sfuSubscribes,
    sfuMetaCount: s.sfuMetaCount, metaCount: s.metaCount, role: s.role, dc: s.dc !== null,
    linkLost: s.linkLost, error: window.scrubin.error};
  if (pc) {
    const st = await pc.getStats();
    st.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') out.framesDecoded = r.framesDecoded;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') out.audioPackets = r.packetsReceived;
      if (r.type === 'transport' && r.selectedCandidatePairId) {
        const pair = st.get(r.selectedCandidatePairId);
        const rem = pair && st.get(pair.remoteCandidateId);
        const loc = pair && st.get(pair.localCandidateId);
        if (rem) out.remote = {address: rem.address, port: rem.port};
        if (loc) out.local = {address: loc.address, port: loc.port};
      }
    });
  }
  return out;
}"""


def frames_since(page: Any, t0: float) -> list[dict[str, Any]]:
    """The page's displayed frames after ``t0`` with the metadata it holds for each."""
    return page.evaluate("""(t0) => window.scrubin.state.frameLog
      .filter((f) => f.display_wall >= t0)
      .map((f) => { const m = window.scrubin.metaRing.get(f.frame_id);
        return {frame_id: f.frame_id, latency_s: f.latency_s,
                T_camera_ref: m ? m.T_camera_ref : null, K: m ? m.K : null}; })""", t0)


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def _wait_page(page: Any, js: str, arg: Any, timeout_s: float) -> None:
    """``page.wait_for_function``; on a timeout the page's state goes into the error."""
    from playwright.sync_api import TimeoutError as PwTimeout

    try:
        page.wait_for_function(js, arg=arg, timeout=timeout_s * 1000)
    except PwTimeout:
        raise RuntimeError(f"page: {js} not true after {timeout_s} s: "
                           f"{page.evaluate(PAGE_STATS)} {page.errors}") from None


def run_watch(a: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from scrubin.mentor.media_audio import AudioSource
    from tests.mentor.browser import launch_chromium, new_page

    admin_secret = json.loads(a.secrets.read_text())["admin_secret"]
    serve = Serve(a.state, a.janus_url, a.secrets, a.address)
    serve.start()
    made = serve.session()
    station = Station(serve.grpc, made["tokens"]["surgeon"], str(a.state / "tls-cert.pem"),
                      source(), None, audio=AudioSource("tone:440")).start()
    res: dict[str, Any] = {}
    try:
        wait_for(lambda: station.link.sfu is not None and station.link.sfu.state == "connected",
                 20, "station did not publish into Janus")
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = new_page(browser)
            t0 = time.time()
            page.goto(made["links"]["observer"])
            _wait_page(page, "() => window.scrubin.state.frameLog.filter("
                       "(f) => f.latency_s != null).length > 40", None, 30)
            res["first"] = frames_since(page, t0)
            res["page"] = page.evaluate(PAGE_STATS)
            sfu = station.link.sfu
            res["station"] = station.call(lambda: {
                "peers": len(station.station.peers), "fanout_tracks": station.fanout.viewers,
                "publishes": sfu.publishes, "keyframe_requests": sfu.keyframe_requests,
                "meta_sent": sfu.meta_sent})
            res["janus"] = janus_handles(a.janus_admin, admin_secret)
            sent = {fid: r.meta for fid, r in list(station.frames.items())}
            res["sent"] = {str(f["frame_id"]): sent[f["frame_id"]].to_json()["T_camera_ref"]
                           for f in res["first"] if f["frame_id"] in sent}
            # a mentor on the same server keeps the direct connection to the station
            mentor = new_page(browser)
            mentor.goto(made["links"]["mentor"])
            _wait_page(mentor, "() => window.scrubin.state.frameLog.filter("
                       "(f) => f.latency_s != null).length > 20", None, 30)
            res["mentor"] = mentor.evaluate(PAGE_STATS)
            res["mentor_station"] = station.call(lambda: sorted(
                p.role for p in station.station.peers.values()))
            mentor.context.close()
            # restart the server: the station republishes, the page subscribes again
            serve.stop()
            t_up = serve.start()
            res["restart_ready_s"] = t_up
            _wait_page(page, "(t) => window.scrubin.state.frameLog.filter((f) => "
                       "f.display_wall > t && f.latency_s != null).length > 20", t_up, 40)
            after = frames_since(page, t_up)
            res["after"] = after
            res["resume_s"] = page.evaluate(
                "(t) => window.scrubin.state.frameLog.find((f) => f.display_wall > t"
                " && f.latency_s != null).display_wall", t_up) - t_up
            res["page_after"] = page.evaluate(PAGE_STATS)
            res["station_after"] = station.call(lambda: {
                "peers": len(station.station.peers), "fanout_tracks": station.fanout.viewers,
                "publishes": sfu.publishes, "keyframe_requests": sfu.keyframe_requests,
                "errors": sfu.errors})
            sent = {fid: r.meta for fid, r in list(station.frames.items())}
            res["sent"].update({str(f["frame_id"]): sent[f["frame_id"]].to_json()["T_camera_ref"]
                                for f in after if f["frame_id"] in sent})
            res["page_errors"] = list(page.errors)
            browser.close()
        # the page left: its Janus subscription ends with its WebSocket
        deadline = time.monotonic() + 10
        while True:
            res["janus_after_close"] = janus_handles(a.janus_admin, admin_secret)
            if time.monotonic() > deadline or not any(
                    h["type"] == "subscriber" for h in res["janus_after_close"]):
                break
            time.sleep(0.2)
    finally:
        station.stop()
        serve.stop()
    res["audit"] = serve.audit()
    return res


def run_refused(a: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from tests.mentor.browser import launch_chromium, new_page

    admin_secret = json.loads(a.secrets.read_text())["admin_secret"]
    serve = Serve(a.state, a.janus_url, a.secrets, a.address)
    serve.start()
    made = serve.session()
    station = Station(serve.grpc, made["tokens"]["surgeon"], str(a.state / "tls-cert.pem"),
                      source(), None).start()
    res: dict[str, Any] = {}
    try:
        wait_for(lambda: station.link.sfu is not None and station.link.sfu.state == "connected",
                 20, "station did not publish into Janus")
        sid = made["session_id"]
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = new_page(browser)
            page.goto(f"{serve.url}/m/{sid}#token=not-a-valid-token-0123456789")
            page.wait_for_function("() => window.scrubin.error !== null", timeout=20000)
            time.sleep(1.0)
            res["page"] = page.evaluate(PAGE_STATS)
            browser.close()
        res["ws_no_cookie"] = asyncio.run(_ws_attempt(serve.url, None))
        cookie = asyncio.run(_join_cookie(serve.url, made["tokens"]["observer"]))
        res["ws_answer_first"] = asyncio.run(_ws_attempt(serve.url, cookie, "sfu-answer"))
        serve.session("end", sid)
        res["ws_ended_cookie"] = asyncio.run(_ws_attempt(serve.url, cookie))
        res["janus"] = janus_handles(a.janus_admin, admin_secret)
    finally:
        station.stop()
        serve.stop()
    res["audit"] = serve.audit()
    return res


async def _join_cookie(url: str, token: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(
            url + "/api/join", json={"token": token}, ssl=False) as r:
        r.raise_for_status()
        return r.cookies["scrubin_session"].value


async def _ws_attempt(url: str, cookie: str | None, kind: str = "sfu-subscribe") -> str:
    """Open /api/ws (with ``cookie``) and send an ``sfu`` message ``kind``; what came back."""
    import aiohttp

    cookies = {"scrubin_session": cookie} if cookie else None
    async with aiohttp.ClientSession(cookies=cookies) as http:
        try:
            async with http.ws_connect(url.replace("https", "wss") + "/api/ws",
                                       ssl=False) as ws:
                await ws.send_json({"type": "hello", "after_seq": 0})
                await ws.send_json({"type": "sfu", "sdp_type": kind, "sdp": "v=0\r\n", "req": 1})
                with contextlib.suppress(TimeoutError):
                    while True:
                        msg = json.loads((await ws.receive(timeout=3)).data)
                        if msg.get("type") == "sfu" and "sdp_type" in msg:
                            return f"opened: {msg}"
                return "opened: no sfu answer"
        except aiohttp.WSServerHandshakeError as exc:
            return f"refused {exc.status}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("watch", "refused"), required=True)
    ap.add_argument("--janus-url", required=True)
    ap.add_argument("--janus-admin", required=True)
    ap.add_argument("--secrets", type=Path, required=True)
    ap.add_argument("--address", required=True)
    ap.add_argument("--state", type=Path, required=True)
    a = ap.parse_args()
    a.state.mkdir(parents=True, exist_ok=True)
    res = run_watch(a) if a.mode == "watch" else run_refused(a)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
