"""The mentoring link's state in the surgeon's composited view (issue 10, "the overlay shows
the link and tracking state honestly throughout").

A real MentorServer (TLS gRPC on 127.0.0.1), a live surgeon station whose gRPC link goes
through a TCP relay, and a native viewer (aiortc) whose media goes through an impairment
relay. Both relays black out for 3 s: the composited frames (the pixels the station
publishes) must show the server link RECONNECTING with a red marker and the viewer LOST within
2 s of the cut, and SERVER CONNECTED with one viewer connected (green) after the link returns.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.client import MentorClient
from scrubin.mentor.impair import Impairer, Impairment
from scrubin.mentor.impair_relay import TcpRelay
from scrubin.mentor.link_status import (
    COLOURS,
    LinkMonitor,
    StatusLine,
    draw_status,
    marker_colours,
)
from scrubin.mentor.media import StreamEncoder, VideoFanout
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_sink import StationSink
from scrubin.overlay.pipeline import Registration
from scrubin.overlay.sinks import SinkItem
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import CT, REF, Transform
from tests.mentor.fault_harness import NativeViewer, moving_source
from tests.mentor.live_station import LiveStation


def _near(bgr: tuple[int, int, int], severity: str) -> bool:
    return bool(np.abs(np.subtract(bgr, COLOURS[severity])).max() <= 2)


def test_draw_status_markers_and_text_pixels() -> None:
    img = np.full((200, 400, 3), 128, np.uint8)
    lines = [StatusLine("SERVER CONNECTED", "ok"), StatusLine("VIEWER x LOST 1 s ago", "lost")]
    draw_status(img, lines)
    got = marker_colours(img, 2, lines)
    assert _near(got[0], "ok") and _near(got[1], "lost")
    assert (img[140:192, 200:392] == 255).all(axis=2).sum() > 50   # white text drawn
    assert (img[:100, :] == 128).all()                             # nothing outside the box


def test_station_sink_draws_the_status_into_the_published_frame() -> None:
    cam = CameraModel(np.array([[500.0, 0, 319.5], [0, 500.0, 179.5], [0, 0, 1]]),
                      np.zeros(5), 640, 360)

    async def go() -> None:
        station = SurgeonStation(VideoFanout(StreamEncoder(640, 376)))
        station.loop = asyncio.get_running_loop()
        sink = StationSink(station, AnnotationBoard(), cam,
                           Registration(Transform(np.eye(4), CT, REF), 0.4, 0.9))
        mon = LinkMonitor(station)          # no server channel: the server line is "..."
        sink.status = mon
        img = np.zeros((360, 640, 3), np.uint8)
        sink.write(SinkItem(1, 0.0, img, "LIVE", None))
        lines = mon.lines()
        assert [ln.text for ln in lines] == ["SERVER ...", "VIEWERS 0 connected"]
        assert [_near(c, "warn") for c in marker_colours(img, 2, lines)] == [True, True]
        await station.close()
    asyncio.run(go())


async def _scenario(tmp_path) -> dict:
    server = MentorServer(ServerConfig(db=tmp_path / "mentor.db", port=0, grpc_port=0,
                                       ice_hosts=["127.0.0.1"]))
    await server.start()
    made = await server.hub.db(server.hub.store.new_session, False, "status")
    host, port = server.grpc_target.rsplit(":", 1)
    tcp = TcpRelay((host, int(port)), Impairment(), Impairment(), mode="stall")
    await tcp.start()
    seen: list[tuple[float, list[StatusLine], list[tuple[int, int, int]]]] = []
    lock = threading.Lock()
    holder: dict[str, LinkMonitor] = {}

    def on_composite(frame_id: int, img: np.ndarray) -> None:
        mon = holder.get("m")
        if mon is None:
            return
        lines = mon.draw(img)   # what StationSink.write does after the annotations
        with lock:
            seen.append((time.time(), lines, marker_colours(img, len(lines), lines)))

    live = LiveStation(tcp.target_str, made.tokens["surgeon"], str(server.cert_path),
                       moving_source(), None, 640, 360, 15.0, on_composite=on_composite)
    await asyncio.to_thread(live.start)
    mon = LinkMonitor(live.station, live.client.channel)
    live.loop.call_soon_threadsafe(mon.start)
    holder["m"] = mon
    mentor = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path, "Dr M")
    viewer = NativeViewer(mentor, Impairer(Impairment(seed=1)), Impairer(Impairment(seed=2)))
    await viewer.start()

    def last() -> tuple[float, list[str], list[tuple[int, int, int]]]:
        with lock:
            t, lines, colours = seen[-1]
        return t, [ln.text for ln in lines], colours

    async def until(pred, timeout: float) -> float | None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if seen and pred(*last()[1:]):
                return time.time() - t0
            await asyncio.sleep(0.05)
        return None

    def healthy(texts: list[str], colours: list) -> bool:
        return (texts[0] == "SERVER CONNECTED" and _near(colours[0], "ok")
                and texts[1].startswith("VIEWERS 1 connected") and _near(colours[1], "ok")
                and not any("LOST" in t for t in texts))

    def down(texts: list[str], colours: list) -> bool:
        return (texts[0].startswith("SERVER RECONNECTING") and _near(colours[0], "lost")
                and "ANNOTATIONS MAY BE STALE" in texts
                and any(t.startswith("VIEWER ") and "LOST" in t for t in texts))

    out: dict = {}
    try:
        t0 = time.time()
        while not viewer.connected() and time.time() - t0 < 30:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)   # heartbeats flowing: the station holds the viewer to them
        out["healthy_before_s"] = await until(healthy, 5.0)
        viewer.blackout(3.0)
        tcp.blackout(3.0)
        t_cut = time.time()
        out["shown_lost_s"] = await until(down, 2.5)
        out["lost_texts"] = last()[1]
        await asyncio.sleep(max(0.0, t_cut + 3.0 - time.time()))
        out["shown_back_s"] = await until(healthy, 12.0)
        out["back_texts"] = last()[1]
        out["probes"] = mon.probes
    finally:
        live.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(mon.stop()))
        await viewer.close()
        await mentor.close()
        await asyncio.to_thread(live.stop)
        await tcp.close()
        await server.stop()
    return out


@pytest.mark.timeout(60)
def test_blackout_shown_in_view_within_2s_and_cleared_after(tmp_path) -> None:
    out = asyncio.run(_scenario(tmp_path))
    print(out)
    assert out["healthy_before_s"] is not None, out
    assert out["shown_lost_s"] is not None and out["shown_lost_s"] <= 2.0, out
    assert out["shown_back_s"] is not None and out["shown_back_s"] <= 5.0, out
    lost = [t for t in out["lost_texts"] if t.startswith("VIEWER ")]
    # the age shown is since the viewer's last packet: the heartbeat's 1.25 s or more
    assert lost and float(lost[0].split("last rx ")[1].split(" s")[0]) >= 1.2, out


def test_a_stuck_probe_is_not_shown_as_connected() -> None:
    station = SurgeonStation(VideoFanout(StreamEncoder(64, 80)))   # no viewers
    mon = LinkMonitor(station, channel=object())   # never started: only last_ok ages
    mon.server_up, mon.last_ok = True, 1000.0
    assert mon.lines(now=1001.0)[0].text == "SERVER CONNECTED"
    texts = [ln.text for ln in mon.lines(now=1005.0)]
    assert texts[:2] == ["SERVER RECONNECTING 5 s", "ANNOTATIONS MAY BE STALE"]
