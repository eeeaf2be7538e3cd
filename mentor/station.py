"""The surgeon station as media server: one peer connection per viewer, one encoder for all.

Media flow (mentor/DESIGN.md "Who runs what"): the frame loop (its own thread) hands each
composited 1280x720 view and its :class:`~scrubin.mentor.station_meta.FrameMeta` to
:meth:`SurgeonStation.publish`, which appends the frame-id strip (:mod:`scrubin.mentor.strip`),
encodes once (:class:`~scrubin.mentor.media.VideoFanout`) and queues the packet and the
``meta`` JSON to every viewer. Signalling is not ours: the server forwards each page's offer
(``Signal`` stream) and :meth:`SurgeonStation.answer` returns the answer SDP (aiortc gathers
all candidates before answering: no trickle ICE).

Per viewer: video H.264 only (the answer keeps the offer's H.264 codecs, packetization-mode 1
first; RFC 6184 section 8.1), its PLI/FIR routed to the shared encoder; audio Opus both ways
(:mod:`scrubin.mentor.media_audio`); the ``meta`` data channel made by the page.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrubin.mentor.audio_jitter import use_gap_skipping_buffer
from scrubin.mentor.errors import MentorError
from scrubin.mentor.ice import ice_configuration
from scrubin.mentor.media import VideoFanout, hook_keyframe_requests
from scrubin.mentor.media_audio import AudioSink, AudioSource
from scrubin.mentor.recording_audio import voice_name
from scrubin.mentor.station_meta import FrameMeta, MetaHistory
from scrubin.mentor.strip import with_strip

log = logging.getLogger(__name__)

HEARTBEAT_POLL_S = 0.25   # how often each peer's received-packet count is read
LINK_TIMEOUT_S = 1.25     # no packet from a connected viewer for this long: link lost
CONNECT_TIMEOUT_S = 10.0  # an answered peer not connected by then is closed


class SignalError(MentorError):
    """An offer the station cannot answer."""


@dataclass
class Peer:
    """One viewer's connection."""

    peer_id: str
    role: str
    author: str
    pc: Any
    video: Any
    meta: Any = None
    audio_in: AudioSink | None = None
    created: float = field(default_factory=time.time)
    lost_at: float | None = None    # time.time() the heartbeat declared the link lost
    rx_at: float | None = None      # time.time() a packet was last seen from the viewer
    heartbeats: int = 0             # ``hb`` messages received on ``meta``
    watch: Any = None               # the heartbeat task


def _h264_only(transceiver: Any) -> None:
    """Keep the H.264 codecs (mode 1 first) and their RTX of an answering video transceiver.

    aiortc applies ``setCodecPreferences`` while *making* a transceiver, which the offer does
    here, so the negotiated list (``_codecs``) is filtered after ``setRemoteDescription``.
    """
    codecs = list(transceiver._codecs)
    h264 = [c for c in codecs if c.mimeType.lower() == "video/h264"]
    if not h264:
        raise SignalError("the viewer's offer has no H.264 video (the station sends H.264 only)")
    h264.sort(key=lambda c: (str(c.parameters.get("packetization-mode", "0")) != "1",
                             str(c.parameters.get("profile-level-id", "")).lower()
                             != "42e01f"))
    pts = {c.payloadType for c in h264}
    rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx"
           and int(c.parameters.get("apt", -1)) in pts]
    transceiver._codecs = h264 + rtx


class SurgeonStation:
    """Peers, the shared encoder and the per-frame metadata of a surgeon station.

    Parameters
    ----------
    fanout
        The shared encoder and its tracks (size = view + strip).
    audio
        The outgoing voice (None: no audio sent; received audio is still taken).
    ice_servers
        STUN/TURN URLs (possibly none; never a default public server).
    record_audio
        ``peer_id -> path`` for recording a viewer's voice, or None.
    on_peer
        Called with ``("open" | "closed", Peer)``.
    """

    def __init__(self, fanout: VideoFanout, audio: AudioSource | None = None,
                 ice_servers: Sequence[str] = (),
                 record_audio: Callable[[str], str | None] | None = None,
                 on_peer: Callable[[str, Peer], None] | None = None) -> None:
        self.fanout = fanout
        self.audio = audio
        self.ice_servers = list(ice_servers)
        # TURN username/credential for ice_servers (the server's per-participant credential).
        self.ice_credentials: tuple[str | None, str | None] = (None, None)
        self.record_audio = record_audio
        self.on_peer = on_peer
        self.history = MetaHistory(3.0)
        self.peers: dict[str, Peer] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._buf: np.ndarray | None = None
        self.sent_frames = 0
        self.link_timeout_s = LINK_TIMEOUT_S
        self.link_events: list[tuple[float, str, str]] = []   # (time.time(), peer_id, what)
        self.recorder: Any = None  # a scrubin.mentor.recording.Recorder when recording

    # ------------------------------------------------------------------ signalling
    async def answer(self, peer_id: str, offer_sdp: str, role: str = "mentor",
                     author: str = "") -> str:
        """Answer a viewer's offer (SDP text); returns the answer SDP with every candidate."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.loop = asyncio.get_running_loop()
        if peer_id in self.peers:
            await self.close_peer(peer_id)
        if not isinstance(offer_sdp, str) or "m=video" not in offer_sdp:
            raise SignalError(f"peer {peer_id}: offer has no video section")
        pc = RTCPeerConnection(ice_configuration(self.ice_servers, *self.ice_credentials))
        peer = Peer(peer_id, role, author, pc, None)

        @pc.on("datachannel")
        def _on_dc(channel: Any) -> None:
            if channel.label == "meta":
                peer.meta = channel

                @channel.on("message")
                def _on_message(message: Any) -> None:
                    try:
                        if isinstance(message, str) and len(message) < 256 and \
                                json.loads(message).get("type") == "hb":
                            peer.heartbeats += 1
                    except (ValueError, AttributeError):
                        pass

        @pc.on("track")
        def _on_track(track: Any) -> None:
            if track.kind == "audio":
                # aiortc's audio jitter buffer turns each lost packet into ~5 lost 20 ms frames
                # (aiortc #543; mentor/audio_jitter.py): the mentor's voice under loss
                for rx in pc.getReceivers():
                    if rx.track is track:
                        use_gap_skipping_buffer(rx)
                path = self.record_audio(peer_id) if self.record_audio else None
                peer.audio_in = AudioSink(track, path)
                name = voice_name(peer.role or "viewer", peer_id)
                peer.audio_in.on_frame = lambda f: (self.recorder is not None
                                                    and self.recorder.add_audio(name, f))
                asyncio.ensure_future(peer.audio_in.start())

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close_peer(peer_id)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except ValueError as exc:
            await pc.close()
            raise SignalError(f"peer {peer_id}: malformed offer ({exc})") from None
        try:
            for tr in pc.getTransceivers():
                if tr.kind == "video":
                    _h264_only(tr)
        except SignalError:
            await pc.close()
            raise
        peer.video = self.fanout.add_viewer(peer_id)
        sender = pc.addTrack(peer.video)
        hook_keyframe_requests(sender, self.fanout.encoder.request_keyframe)
        if self.audio is not None:
            at = self.audio.track()
            if at is not None:
                pc.addTrack(at)
        await pc.setLocalDescription(await pc.createAnswer())
        self.peers[peer_id] = peer
        if self.on_peer:
            self.on_peer("open", peer)
        peer.watch = asyncio.ensure_future(self._watch(peer))
        return pc.localDescription.sdp

    async def _watch(self, peer: Peer) -> None:
        """The link heartbeat (DESIGN.md "Link loss"): a viewer that sends ``hb`` messages on
        ``meta`` (every 0.25 s) and from which no packet at all has come for
        ``link_timeout_s`` has lost its link. aioice's consent checks take ~30 s to
        notice, and aiortc has no ICE restart, so the peer is closed and the viewer's next
        offer makes a new connection. A peer not connected after ``CONNECT_TIMEOUT_S`` is
        closed too."""
        rx, silent = -1, 0.0
        started = last_poll = time.monotonic()
        while self.peers.get(peer.peer_id) is peer:
            await asyncio.sleep(HEARTBEAT_POLL_S)
            if self.peers.get(peer.peer_id) is not peer:
                return
            stats = await peer.pc.getStats()
            n = sum(s.packetsReceived for s in stats.values() if s.type == "transport")
            now = time.monotonic()
            # silence counts at most two polls per poll: a busy loop that has not yet read
            # the datagrams waiting for it is not a silent link
            step, last_poll = min(now - last_poll, 2 * HEARTBEAT_POLL_S), now
            # only a viewer that sends ``hb`` is held to it: another one may be silent for
            # seconds while nothing is sent to it (aiortc's RTCP reports come 0.5-1.5 s apart)
            if n != rx:
                peer.rx_at = time.time()
            silent = 0.0 if n != rx or not peer.heartbeats else silent + step
            rx = n
            connected = peer.pc.connectionState == "connected"
            if (connected and silent > self.link_timeout_s) or (
                    not connected and now - started > CONNECT_TIMEOUT_S):
                peer.lost_at = time.time()
                what = "lost" if connected else "never connected"
                self.link_events.append((peer.lost_at, peer.peer_id, what))
                log.info("viewer %s: link %s", peer.peer_id, what)
                if self.on_peer:
                    self.on_peer("lost", peer)
                await self.close_peer(peer.peer_id)
                return

    async def close_peer(self, peer_id: str) -> None:
        """Close one viewer's connection (idempotent)."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        if peer.watch is not None and peer.watch is not asyncio.current_task():
            peer.watch.cancel()
        if peer.video is not None:
            peer.video.stop()
        if peer.audio_in is not None:
            await peer.audio_in.stop()
        await peer.pc.close()
        if self.on_peer:
            self.on_peer("closed", peer)

    async def close(self) -> None:
        """Close every viewer and the audio input."""
        for pid in list(self.peers):
            await self.close_peer(pid)
        if self.audio is not None:
            self.audio.close()

    # ------------------------------------------------------------------ frames
    def publish(self, view_bgr: np.ndarray, meta: FrameMeta) -> float:
        """Strip + encode once + queue to every viewer (frame-loop thread); encode time (ms).

        ``meta.stages_ms["encode"]`` is filled in before the JSON is sent.
        """
        t = time.perf_counter()
        self._buf = with_strip(view_bgr, meta.frame_id, self._buf)
        packets = self.fanout.publish(self._buf, meta.capture_time)
        enc_ms = (time.perf_counter() - t) * 1e3
        meta.stages_ms["encode"] = enc_ms
        if self.recorder is not None:  # queued only: never waits for the disk
            if self.recorder.add_frame(packets, meta) is False:
                # it resumes at an IDR, and with intra refresh none comes unasked (media.py)
                self.fanout.encoder.request_keyframe()
        self.history.add(meta)
        self.sent_frames += 1
        msg = json.dumps(meta.to_json(), separators=(",", ":"))
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._send_meta, msg)
            except RuntimeError:
                pass
        return enc_ms

    def _send_meta(self, msg: str) -> None:
        for peer in list(self.peers.values()):
            ch = peer.meta
            if ch is not None and ch.readyState == "open":
                try:
                    ch.send(msg)
                except Exception as exc:
                    log.debug("meta to %s: %s", peer.peer_id, exc)
