"""Fault scenarios shared by tests/mentor/test_faults*.py and benchmarks/bench_faults.py.

Each runs a real MentorServer (in-process, TLS gRPC on 127.0.0.1), a live surgeon station
(its own thread: shared H.264 encoder, peer connection per viewer, StationLink) and the
mentor's side behind relays (tests/mentor/fault_harness.py), and returns measured figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

from scrubin.mentor.client import MentorClient
from scrubin.mentor.impair import Impairer, Impairment
from scrubin.mentor.impair_relay import TcpRelay
from scrubin.mentor.server import MentorServer, ServerConfig
from tests.mentor.fault_harness import (
    NativeViewer,
    freeze_stats,
    moving_source,
    playout_stats,
    station_transport_stats,
)
from tests.mentor.live_station import LiveStation


class Rig:
    """Server + station + mentor (viewer and annotation stream) behind relays."""

    def __init__(self, tmp: Path, media: Impairment, tcp: Impairment,
                 tcp_mode: str = "stall", fps: float = 30.0) -> None:
        self.tmp, self.media, self.tcp_cfg, self.tcp_mode, self.fps = (tmp, media, tcp,
                                                                     tcp_mode, fps)
        self.plis = 0

    async def __aenter__(self) -> Rig:
        self.server = MentorServer(ServerConfig(db=self.tmp / "mentor.db", port=0, grpc_port=0,
                                                ice_hosts=["127.0.0.1"]))
        await self.server.start()
        made = await self.server.hub.db(self.server.hub.store.new_session, False, "faults")
        self.session_id, self.tokens = made.session_id, made.tokens
        self.live = LiveStation(self.server.grpc_target, made.tokens["surgeon"],
                                str(self.server.cert_path), moving_source(), None, 640, 360,
                                self.fps)
        request = self.live.encoder.request_keyframe

        def counted() -> None:
            self.plis += 1
            request()
        self.live.encoder.request_keyframe = counted  # type: ignore[method-assign]
        self.peer_events: list[tuple[float, str, str]] = []
        self.live.station.on_peer = lambda what, peer: self.peer_events.append(
            (time.time(), what, peer.peer_id))
        await asyncio.to_thread(self.live.start)
        host, port = self.server.grpc_target.rsplit(":", 1)
        self.tcp = TcpRelay((host, int(port)), self.tcp_cfg, self.tcp_cfg, mode=self.tcp_mode)
        await self.tcp.start()
        self.mentor = MentorClient(self.tcp.target_str, made.tokens["mentor"],
                                   self.server.cert_path, "Dr M")
        self.viewer = NativeViewer(self.mentor, Impairer(self.media), Impairer(
            Impairment(**{**self.media.__dict__, "seed": self.media.seed + 1})))
        await self.viewer.start()
        self.ann = self.mentor.annotations()
        await self.ann.start()
        return self

    async def wait_flowing(self, timeout: float = 30.0) -> float:
        t0 = time.time()
        while not self.viewer.connected():
            if time.time() - t0 > timeout:
                raise AssertionError(f"viewer never received video: {self.viewer.errors}")
            await asyncio.sleep(0.05)
        return time.time() - t0

    def blackout(self, seconds: float) -> float:
        """Cut the mentor's whole network (media and gRPC) now; returns time.time()."""
        self.viewer.blackout(seconds)
        self.tcp.blackout(seconds)
        return time.time()

    async def stroke(self, n_updates: int, every_s: float) -> tuple[str, list[str], list[int]]:
        """A freehand stroke: create + ``n_updates`` updates, each sent without waiting for
        the previous ack (as the page does); (annotation id, event ids, acked seqs)."""
        aid = str(uuid.uuid4())
        ids, sends = [], []
        pts: list[list[float]] = []
        for i in range(n_updates + 1):
            pts.append([0.3 + 0.01 * i, 0.4])
            ev = {"event_id": str(uuid.uuid4()), "op": "create" if i == 0 else "update",
                  "annotation_id": aid, "kind": "freehand", "frame_id": 1,
                  "capture_time": time.time(), "points": list(pts)}
            ids.append(ev["event_id"])
            sends.append(asyncio.ensure_future(self.ann.send(ev)))
            await asyncio.sleep(every_s)
        seqs = await asyncio.wait_for(asyncio.gather(*sends), 60)
        return aid, ids, list(seqs)

    def station_saw(self, aid: str) -> list[tuple[int, str]]:
        """(seq, event id) of the events of ``aid`` the station applied, in its order."""
        return [(s, e["event_id"]) for s, e in list(self.live.events)
                if e.get("annotation_id") == aid]

    async def __aexit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            await self.viewer.close()
        with contextlib.suppress(Exception):
            await self.ann.close()
        with contextlib.suppress(Exception):
            await self.mentor.close()
        await asyncio.to_thread(self.live.stop)
        await self.tcp.close()
        await self.server.stop()


async def lossy_run(tmp: Path, seconds: float, loss: float = 0.05, delay_ms: float = 80,
                    jitter_ms: float = 20, seed: int = 1,
                    playout_s: float = 0.4) -> dict[str, Any]:
    """Video + a stroke through ``loss`` and ``delay_ms`` +- ``jitter_ms`` each way."""
    media = Impairment(loss=loss, delay_ms=delay_ms, jitter_ms=jitter_ms, seed=seed)
    async with Rig(tmp, media, Impairment(delay_ms=delay_ms, loss=loss, seed=seed + 2)) as rig:
        out: dict[str, Any] = {"connect_s": await rig.wait_flowing()}
        t0 = time.time()
        stroke = asyncio.ensure_future(rig.stroke(20, 0.1))
        captures: dict[int, float] = {}
        while time.time() < t0 + seconds:
            await asyncio.sleep(1.0)
            captures.update({f: r.meta.capture_time for f, r in list(rig.live.frames.items())
                             if t0 <= r.meta.capture_time <= t0 + seconds - playout_s})
        aid, ids, seqs = await stroke
        frames = [t for t, _ in rig.viewer.frames if t >= t0]
        out.update(freeze_stats(frames))
        out.update(playout_stats(rig.viewer.frames, captures, playout_s))
        out["playout_ms"] = playout_s * 1e3
        relay = rig.viewer.relay
        await asyncio.sleep(0.3)   # the stroke's last broadcast reaches the station
        out["viewer_stats"] = await rig.viewer.transport_stats()
        out["relay_bytes"] = relay.delivered_media_bytes()     # to_a: viewer, to_b: station
        out["station_stats"] = await station_transport_stats(rig.live)
        out["relay_bytes_after"] = relay.delivered_media_bytes()
        out["down"] = rig.viewer.down.stats
        out["up"] = rig.viewer.up.stats
        out["rtcp_to_station"] = relay.rtcp_counts(toward_b=True)
        out["nacks"] = out["rtcp_to_station"].get((205, 1), 0)
        out["plis_at_relay"] = out["rtcp_to_station"].get((206, 1), 0)
        out["plis_at_encoder"] = rig.plis
        out["attempts"] = len([x for x in rig.viewer.attempts if x.started >= t0]) + 1
        out["attempt_ends"] = [x.why for x in rig.viewer.attempts if x.lost]
        out["station_link_events"] = [w for _, _, w in rig.live.station.link_events]
        out["stroke"] = (ids, seqs, rig.station_saw(aid))
        out["candidates_removed"] = relay.removed_candidates
        out["forwarders"] = len(relay.forwarders)
        return out


async def blackout_run(tmp: Path, seconds: float, tcp_mode: str = "stall") -> dict[str, Any]:
    """A ``seconds`` blackout of the mentor's network while a stroke is drawn."""
    async with Rig(tmp, Impairment(seed=5), Impairment(), tcp_mode=tcp_mode) as rig:
        await rig.wait_flowing()
        await asyncio.sleep(1.0)
        n_before = len(rig.viewer.attempts)
        # the stroke starts before the cut and goes on through it (cut mid-stroke)
        stroke = asyncio.ensure_future(rig.stroke(int(seconds / 0.25) + 8, 0.25))
        await asyncio.sleep(0.6)
        t_cut = rig.blackout(seconds)
        t_back = t_cut + seconds
        deadline = t_back + 15.0
        while time.time() < deadline:
            a = rig.viewer.attempts[n_before:]
            if any(x.first_frame is not None and x.first_frame > t_back for x in a) and \
                    stroke.done():
                break
            await asyncio.sleep(0.05)
        aid, ids, seqs = await stroke
        await asyncio.sleep(0.5)
        lost_viewer = [x.lost for x in rig.viewer.attempts if x.lost and x.lost >= t_cut]
        # the station notices by its heartbeat ("lost") or by the server's bye ("closed")
        lost_station = [t for t, what, _ in rig.peer_events
                        if what in ("lost", "closed") and t >= t_cut]
        resumed = [x.first_frame for x in rig.viewer.attempts[n_before:]
                   if x.first_frame is not None and x.first_frame > t_back]
        return {"viewer_lost_after_s": min(lost_viewer) - t_cut if lost_viewer else None,
                "station_lost_after_s": min(lost_station) - t_cut if lost_station else None,
                "resumed_after_return_s": min(resumed) - t_back if resumed else None,
                "new_peer_connections": len(rig.viewer.attempts) - n_before,
                "stroke": (ids, seqs, rig.station_saw(aid)),
                "station_by": [w for t, w, _ in rig.peer_events if t >= t_cut][:1],
                "attempts_tail": [tuple(None if v is None else round(v - t_back, 2) for v in (
                    x.started, x.answered, x.first_meta, x.first_frame, x.lost))
                    for x in rig.viewer.attempts[-3:]],
                "station_peer_events": [(round(t - t_back, 2), w) for t, w, _ in
                                        rig.peer_events if t >= t_cut][-6:],
                "tcp_resets": rig.tcp.resets, "viewer_errors": rig.viewer.errors}
