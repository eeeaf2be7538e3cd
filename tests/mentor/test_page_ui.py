"""The mentor page against the real server (HTTPS, WebSocket, SQLite) in headless Chromium.

Strokes are drawn through the page's own UI (pointer events from Playwright's mouse); what the
server stored is compared with the pointer positions the test chose. Reloads mid-stroke and
dropped links must lose and duplicate nothing.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.mentor.browser import new_page

WAIT_MS = 15000


def open_page(browser, server, sid: str, token: str):
    page = new_page(browser)
    page.goto(f"{server.url}/m/{sid}#token={token}")
    page.wait_for_function("() => window.scrubin && window.scrubin.session"
                           " && window.scrubin.session.state === 'connected'", timeout=WAIT_MS)
    return page


def canvas_box(page) -> dict:
    return page.eval_on_selector("#overlay", "c => { const r = c.getBoundingClientRect();"
                                 " return {x: r.left, y: r.top, w: r.width, h: r.height}; }")


def wait_outbox_empty(page) -> None:
    page.wait_for_function("() => window.scrubin.session.outbox.size === 0"
                           " && window.scrubin.session.open", timeout=WAIT_MS)


def stored_annotation(server, sid: str, annotation_id: str) -> list[dict]:
    return [ev for _, ev in server.events(sid) if ev.get("annotation_id") == annotation_id]


def final_points(events: list[dict]) -> list[list[float]]:
    pts: list[list[float]] = []
    for ev in events:
        if ev["op"] in ("create", "update"):
            pts = ev["points"]
    return pts


@pytest.fixture(scope="module")
def session(mentor_server):
    return mentor_server.new_session()


def test_join_token_leaves_url_and_cookie_is_httponly(chromium, mentor_server, session) -> None:
    sid, tokens = session
    page = open_page(chromium, mentor_server, sid, tokens["mentor"])
    assert tokens["mentor"] not in page.url
    assert page.evaluate("document.cookie") == ""          # HttpOnly: not visible to scripts
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["scrubin_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["secure"] and cookies[0]["sameSite"] == "Strict"
    assert page.is_visible("#tools")
    assert page.evaluate("window.scrubin.state.role") == "mentor"
    # a reload (fragment gone) stays joined through the cookie
    page.reload()
    page.wait_for_function("() => window.scrubin.session"
                           " && window.scrubin.session.state === 'connected'", timeout=WAIT_MS)
    assert page.errors == []
    page.context.close()


def test_stroke_through_ui_stores_normalised_points(chromium, mentor_server, session) -> None:
    sid, tokens = session
    page = open_page(chromium, mentor_server, sid, tokens["mentor"])
    box = canvas_box(page)
    # pointer positions (CSS px) along an arc; expected normalised = (pos - origin) / size
    t = np.linspace(0, 1, 40)
    xs = box["x"] + box["w"] * (0.2 + 0.5 * t)
    ys = box["y"] + box["h"] * (0.3 + 0.3 * np.sin(np.pi * t))
    page.mouse.move(xs[0], ys[0])
    page.mouse.down()
    for x, y in zip(xs[1:], ys[1:], strict=True):
        page.mouse.move(x, y)
        page.wait_for_timeout(5)
    page.mouse.up()
    wait_outbox_empty(page)
    aid = page.evaluate("window.scrubin.state.myAnnotations.at(-1)")
    events = stored_annotation(mentor_server, sid, aid)
    assert events[0]["op"] == "create" and events[0]["author"].startswith("mentor")
    expected = np.c_[(xs - box["x"]) / box["w"], (ys - box["y"]) / box["h"]]
    got = np.array(final_points(events))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-6
    # updates are streamed while drawing, coalesced to at most one per 16 ms
    updates = [ev for ev in events if ev["op"] == "update"]
    assert 1 < len(updates) < len(xs)
    gaps = np.diff([ev["client_time"] for ev in updates[:-1]])
    assert gaps.min() >= 0.0155
    # the stroke is on the page's own canvas at once (red pixels near the middle point)
    assert page.evaluate("""() => { const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 100) n++;
        return n; }""") > 100
    assert page.errors == []
    page.context.close()


def test_reload_mid_stroke_loses_and_duplicates_nothing(chromium, mentor_server, session) -> None:
    sid, tokens = session
    page = open_page(chromium, mentor_server, sid, tokens["mentor"])
    box = canvas_box(page)
    xs = box["x"] + box["w"] * np.linspace(0.1, 0.4, 25)
    ys = box["y"] + box["h"] * np.linspace(0.7, 0.5, 25)
    page.mouse.move(xs[0], ys[0])
    page.mouse.down()
    for x, y in zip(xs[1:13], ys[1:13], strict=True):
        page.mouse.move(x, y)
        page.wait_for_timeout(5)
    # cut the link without reconnecting, so the rest lives only in localStorage
    page.evaluate("window.scrubin.session.close()")
    for x, y in zip(xs[13:], ys[13:], strict=True):
        page.mouse.move(x, y)
        page.wait_for_timeout(5)
    aid = page.evaluate("window.scrubin.state.myAnnotations.at(-1)")
    assert page.evaluate("window.scrubin.session.outbox.size") >= 1
    page.reload()               # mid-stroke: the button is still down
    page.wait_for_function("() => window.scrubin.session"
                           " && window.scrubin.session.state === 'connected'", timeout=WAIT_MS)
    wait_outbox_empty(page)
    page.mouse.up()
    events = stored_annotation(mentor_server, sid, aid)
    expected = np.c_[(xs - box["x"]) / box["w"], (ys - box["y"]) / box["h"]]
    assert np.abs(np.array(final_points(events)) - expected).max() < 1e-6
    seqs = [seq for seq, _ in mentor_server.events(sid)]
    assert seqs == list(range(1, len(seqs) + 1))
    ids = [ev["event_id"] for _, ev in mentor_server.events(sid)]
    assert len(ids) == len(set(ids))
    # after the reload the page rebuilt its view from the replay: the stroke is there once
    page.wait_for_function(f"() => window.scrubin.model.items.has('{aid}')", timeout=WAIT_MS)
    assert page.errors == []
    page.context.close()


def test_dropped_link_exactly_once_in_order(chromium, mentor_server, session) -> None:
    sid, tokens = session
    mentor = open_page(chromium, mentor_server, sid, tokens["mentor"])
    observer = open_page(chromium, mentor_server, sid, tokens["observer"])
    box = canvas_box(mentor)
    made = []
    for k in range(6):
        if k in (1, 3):
            mentor.evaluate("window.scrubin.session.dropLink()")
        if k == 4:
            observer.evaluate("window.scrubin.session.dropLink()")
        y = box["y"] + box["h"] * (0.1 + 0.12 * k)
        mentor.mouse.move(box["x"] + 0.6 * box["w"], y)
        mentor.mouse.down()
        for j in range(1, 8):
            mentor.mouse.move(box["x"] + (0.6 + 0.03 * j) * box["w"], y)
            mentor.wait_for_timeout(5)
        mentor.mouse.up()
        made.append(mentor.evaluate("window.scrubin.state.myAnnotations.at(-1)"))
    wait_outbox_empty(mentor)
    assert mentor.evaluate("window.scrubin.session.stats.reconnects") >= 2
    last = mentor_server.events(sid)[-1][0]
    observer.wait_for_function(f"() => window.scrubin.session.lastSeq === {last}",
                               timeout=WAIT_MS)
    time.sleep(0.3)
    for page in (observer, mentor):
        log = page.evaluate("window.scrubin.state.seqLog")
        assert log == sorted(set(log)), "an event applied twice or out of order"
        assert log[-1] == last
        for aid in made:
            assert page.evaluate(f"window.scrubin.model.items.has('{aid}')")
    # every annotation stored once per event id, final points complete (8 per stroke)
    for aid in made:
        assert len(final_points(stored_annotation(mentor_server, sid, aid))) == 8
    for page in (mentor, observer):
        assert page.errors == []
        page.context.close()


def test_observer_has_no_tools_and_cannot_draw(chromium, mentor_server, session) -> None:
    sid, tokens = session
    page = open_page(chromium, mentor_server, sid, tokens["observer"])
    assert page.evaluate("window.scrubin.state.role") == "observer"
    assert not page.is_visible("#tools") and not page.is_visible("#voice")
    before = len(mentor_server.events(sid))
    box = canvas_box(page)
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 150)
    page.mouse.up()
    page.wait_for_timeout(300)
    assert len(mentor_server.events(sid)) == before
    assert page.evaluate("window.scrubin.session.outbox.size") == 0
    assert page.errors == []
    page.context.close()


def test_undo_and_clear_delete_own_annotations(chromium, mentor_server, session) -> None:
    sid, tokens = session
    page = open_page(chromium, mentor_server, sid, tokens["mentor"])
    box = canvas_box(page)
    page.click("[data-tool=arrow]")
    for k in range(3):
        page.mouse.move(box["x"] + 50 + 100 * k, box["y"] + 50)
        page.mouse.down()
        page.mouse.move(box["x"] + 90 + 100 * k, box["y"] + 120, steps=4)
        page.mouse.up()
    ids = page.evaluate("window.scrubin.state.myAnnotations.slice(-3)")
    page.click("#btn-undo")
    wait_outbox_empty(page)
    ops = [(ev["op"], ev["annotation_id"]) for _, ev in mentor_server.events(sid)]
    assert ("delete", ids[2]) in ops and ("delete", ids[1]) not in ops
    kinds = {ev["kind"] for ev in stored_annotation(mentor_server, sid, ids[0])}
    assert kinds == {"arrow"}
    assert len(final_points(stored_annotation(mentor_server, sid, ids[0]))) == 2
    page.click("#btn-clear")
    wait_outbox_empty(page)
    ops = [(ev["op"], ev["annotation_id"]) for _, ev in mentor_server.events(sid)]
    assert ("delete", ids[0]) in ops and ("delete", ids[1]) in ops
    assert page.errors == []
    page.context.close()


COLOURED_PIXELS = """() => { const c = document.getElementById('overlay');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0) n++;
    return n; }"""


def test_laser_fades_and_text_is_stored(chromium, mentor_server) -> None:
    sid, tokens = mentor_server.new_session()
    page = open_page(chromium, mentor_server, sid, tokens["mentor"])
    box = canvas_box(page)
    page.click("[data-tool=laser]")
    page.mouse.move(box["x"] + 300, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 360, box["y"] + 230, steps=6)
    page.mouse.up()
    assert page.evaluate(COLOURED_PIXELS) > 50
    page.wait_for_timeout(2000)                  # fades within 1.5 s of its last update
    assert page.evaluate(COLOURED_PIXELS) == 0
    page.click("[data-tool=text]")
    page.mouse.click(box["x"] + 640, box["y"] + 360)
    page.keyboard.type("check the margin")
    page.keyboard.press("Enter")
    wait_outbox_empty(page)
    stored = [ev for _, ev in mentor_server.events(sid)]
    assert {ev["kind"] for ev in stored if ev["op"] == "create"} == {"laser", "text"}
    [text] = [ev for ev in stored if ev["kind"] == "text"]
    assert text["text"] == "check the margin"
    assert np.allclose(text["points"][0], [640 / box["w"], 360 / box["h"]], atol=1e-6)
    assert page.evaluate(COLOURED_PIXELS) > 50   # the text is drawn
    assert page.errors == []
    page.context.close()


def test_first_move_sent_from_pointerrawupdate(chromium, mentor_server, session) -> None:
    """The first move of a stroke leaves the page from pointerrawupdate, before Chromium
    dispatches the (animation-frame aligned) pointermove of the same input; the points are
    taken once (not again from pointermove), and the latency start stays the input time."""
    sid, tokens = session
    page = open_page(chromium, mentor_server, sid, tokens["mentor"])
    assert page.evaluate("'onpointerrawupdate' in window")   # a secure context (HTTPS)
    box = canvas_box(page)
    xs = box["x"] + box["w"] * np.array([0.3, 0.35, 0.4, 0.45])
    ys = box["y"] + box["h"] * np.array([0.6, 0.62, 0.64, 0.66])
    page.mouse.move(xs[0], ys[0])
    page.mouse.down()
    page.wait_for_timeout(60)
    for x, y in zip(xs[1:], ys[1:], strict=True):
        page.mouse.move(x, y)
        page.wait_for_timeout(40)
    page.mouse.up()
    wait_outbox_empty(page)
    aid = page.evaluate("window.scrubin.state.myAnnotations.at(-1)")
    raw, move, handled = page.evaluate(f"""[window.scrubin.state.firstRawWall.get('{aid}'),
        window.scrubin.state.firstMoveWall.get('{aid}'),
        window.scrubin.state.firstMoveHandled.get('{aid}')]""")
    assert raw is not None and move is not None
    assert abs(raw - move) < 1e-3          # one input: the same event timestamp
    events = stored_annotation(mentor_server, sid, aid)
    first_update = next(ev for ev in events if ev["op"] == "update")
    assert len(first_update["points"]) == 2
    assert first_update["client_time"] <= handled   # sent before pointermove was handled
    expected = np.c_[(xs - box["x"]) / box["w"], (ys - box["y"]) / box["h"]]
    got = np.array(final_points(events))
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-6
    assert page.errors == []
    page.context.close()
