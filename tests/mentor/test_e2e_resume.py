"""Drops and reloads with real peers: nothing lost or duplicated down to the surgeon's output.

A mentor draws strokes through the page while its WebSocket is dropped, the page is reloaded
mid-stroke and the station's gRPC annotation stream is cut; the station must apply every
event exactly once in seq order, its board must hold each stroke with every point drawn, and
the surgeon's composited frames must show them.
"""

from __future__ import annotations

import asyncio

import numpy as np

from scrubin.mentor.station_meta import FrameMeta
from tests.mentor.browser import new_page
from tests.mentor.live_station import LiveStation

WAIT_MS = 30000
COLOURED = """() => { const c = document.getElementById('overlay');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n; }"""


def _source(i: int) -> tuple[np.ndarray, FrameMeta]:
    img = np.full((720, 1280, 3), 40, np.uint8)
    img[200:260, (6 * i) % 1200:(6 * i) % 1200 + 60] = 200
    return img, FrameMeta(0, 0.0, 1280, 720, (900.0, 900.0, 640.0, 360.0), (0.0,) * 5, None,
                          None, "LOST")


def _draw(page, box, y_frac: float, n: int, lo: int = 0, hi: int | None = None,
          down: bool = True, up: bool = True) -> np.ndarray:
    """Draw points lo..hi-1 of an n-point line at height y_frac; all n normalised points."""
    xs = box["x"] + box["w"] * np.linspace(0.1, 0.9, n)
    y = box["y"] + box["h"] * y_frac
    hi = n if hi is None else hi
    if down:
        page.mouse.move(xs[lo], y)
        page.mouse.down()
    for x in xs[lo + 1 if down else lo:hi]:
        page.mouse.move(x, y)
        page.wait_for_timeout(8)
    if up:
        page.mouse.up()
    return np.c_[(xs - box["x"]) / box["w"], np.full(n, (y - box["y"]) / box["h"])]


def test_drops_and_reload_reach_the_station_exactly_once(chromium, mentor_server) -> None:
    sid, tokens = mentor_server.new_session()
    station = LiveStation(mentor_server.server.grpc_target, tokens["surgeon"],
                          str(mentor_server.server.cert_path), _source, None,
                          keep_composites=30).start()
    page = new_page(chromium)
    url = f"{mentor_server.url}/m/{sid}#token={tokens['mentor']}"
    try:
        page.goto(url)
        page.wait_for_function("() => window.scrubin.session"
                               " && window.scrubin.session.state === 'connected'",
                               timeout=WAIT_MS)
        page.locator("#color").fill("#00ff00")
        box = page.eval_on_selector("#overlay", "c => { const r = c.getBoundingClientRect();"
                                    " return {x: r.left, y: r.top, w: r.width, h: r.height}; }")
        expected: dict[str, np.ndarray] = {}
        # 1: the page's WebSocket drops mid-stroke
        _draw(page, box, 0.2, 40, 0, 20, up=False)
        page.evaluate("window.scrubin.session.dropLink()")
        pts = _draw(page, box, 0.2, 40, 20, 40, down=False)
        expected[page.evaluate("window.scrubin.state.myAnnotations.at(-1)")] = pts
        # 2: the station's gRPC annotation stream is cut while the mentor draws
        station.loop.call_soon_threadsafe(station.link.ann.drop_connection)
        pts = _draw(page, box, 0.4, 30)
        expected[page.evaluate("window.scrubin.state.myAnnotations.at(-1)")] = pts
        # 3: reload mid-stroke (the link cut first, so the tail lives only in localStorage)
        _draw(page, box, 0.6, 30, 0, 15, up=False)
        aid = page.evaluate("window.scrubin.state.myAnnotations.at(-1)")
        page.evaluate("window.scrubin.session.close()")
        pts = _draw(page, box, 0.6, 30, 15, 30, down=False, up=False)
        page.reload()
        page.mouse.up()
        expected[aid] = pts
        page.wait_for_function("() => window.scrubin.session"
                               " && window.scrubin.session.state === 'connected'"
                               " && window.scrubin.session.outbox.size === 0", timeout=WAIT_MS)
        last = mentor_server.events(sid)[-1][0]
        page.wait_for_function(f"() => window.scrubin.session.lastSeq >= {last}",
                               timeout=WAIT_MS)
        deadline_ok = False
        for _ in range(100):
            if station.board.last_seq >= last:
                deadline_ok = True
                break
            page.wait_for_timeout(100)
        assert deadline_ok, (station.board.last_seq, last)
        # (the station's own anchor events may follow: compare up to what it has applied)
        for _ in range(20):                             # read when no event is arriving
            final, applied = station.board.last_seq, station.board.applied
            if final == applied:
                break
            page.wait_for_timeout(100)
        seqs = sorted({seq for seq, _ in list(station.events) if seq <= final})
        assert seqs == list(range(1, final + 1))        # none missing
        assert applied == final                         # each applied once, in seq order
        assert station.link.ann.connects >= 2           # the station did resume
        for aid, pts in expected.items():
            item = station.board.items[aid]
            assert np.abs(np.array(item.points) - pts).max() < 1e-6, aid
        # the surgeon's output shows all three end to end (dashed: 2-D, nothing to anchor on)
        page.wait_for_timeout(300)
        img = list(station.composites.values())[-1]
        for pts in expected.values():
            row = int(round(pts[0, 1] * 720 - 0.5))
            band = img[row - 2:row + 3].astype(int)
            cols = np.nonzero(((band[:, :, 1] > 150) & (band[:, :, 0] < 100)
                               & (band[:, :, 2] < 100)).any(axis=0))[0]
            assert abs(cols.min() - (0.1 * 1280 - 0.5)) < 6
            assert abs(cols.max() - (0.9 * 1280 - 0.5)) < 12
            assert len(cols) > 0.4 * (cols.max() - cols.min())
        # an observer gets the same view without tools: video, every stroke; then the
        # surgeon's hide-all empties both pages' overlays
        observer = new_page(chromium)
        observer.goto(f"{mentor_server.url}/m/{sid}#token={tokens['observer']}")
        observer.wait_for_function("() => window.scrubin.state.frameLog.length > 10",
                                   timeout=WAIT_MS)
        assert not observer.is_visible("#tools") and not observer.is_visible("#voice")
        for aid in expected:
            observer.wait_for_function(f"() => window.scrubin.model.items.has('{aid}')",
                                       timeout=WAIT_MS)
        assert observer.evaluate(COLOURED) > 100 and page.evaluate(COLOURED) > 100
        asyncio.run_coroutine_threadsafe(station.link.hide_all(), station.loop).result(10)
        for p in (page, observer):
            p.wait_for_function("() => window.scrubin.model.hiddenAll", timeout=WAIT_MS)
            p.wait_for_timeout(100)
            assert p.evaluate(COLOURED) == 0
        assert observer.errors == []
        observer.context.close()
        assert station.errors == [] and station.link.errors == [] and page.errors == []
    finally:
        page.context.close()
        station.stop()


def test_video_comes_back_after_the_station_restarts(chromium, mentor_server) -> None:
    sid, tokens = mentor_server.new_session()

    def start() -> LiveStation:
        return LiveStation(mentor_server.server.grpc_target, tokens["surgeon"],
                           str(mentor_server.server.cert_path), _source, None).start()

    station = start()
    page = new_page(chromium)
    try:
        page.goto(f"{mentor_server.url}/m/{sid}#token={tokens['mentor']}")
        page.wait_for_function("() => window.scrubin.state.frameLog.length > 10",
                               timeout=WAIT_MS)
        station.stop()                           # the station goes away (presence false)
        page.wait_for_function("() => window.scrubin.state.peerState === 'surgeon offline'",
                               timeout=WAIT_MS)
        station = start()                        # and comes back: the page offers again
        first_new = station.first_frame_id
        page.wait_for_function(
            f"() => window.scrubin.state.frameLog.filter((f) => f.frame_id >= {first_new})"
            ".length > 10", timeout=WAIT_MS)
        assert page.inner_text("#st-conn") == "connected / video connected"
        assert station.errors == [] and station.link.errors == [] and page.errors == []
    finally:
        page.context.close()
        station.stop()
