"""Janus VideoRoom over its HTTP API: a locked room, the station's stream published once.

For large audiences the surgeon's encoded stream goes to a Janus SFU once and observers
subscribe from Janus (Janus forwards RTP without re-encoding). Our server keeps everything
else (tokens, signalling, annotations, audit); Janus only forwards media, and only for rooms
our server made.

Janus API (https://janus.conf.meetecho.com/docs/rest.html, Janus 1.1): ``POST {url}``
``{"janus": "create"}`` makes a session; ``POST {url}/{session}`` ``attach`` a plugin handle;
``POST {url}/{session}/{handle}`` ``message`` with a plugin ``body`` (and a ``jsep``);
asynchronous plugin answers arrive on the long poll ``GET {url}/{session}?maxev=N``; a session
without a request for ``session_timeout`` (60 s) is destroyed, so :class:`JanusSession` sends
``keepalive`` every :data:`KEEPALIVE_S`. Every request carries ``apisecret``.

VideoRoom (https://janus.conf.meetecho.com/docs/videoroom.html): ``create`` with the plugin's
``admin_key`` and a room ``secret`` (edit/destroy) and ``pin`` (join), ``is_private``; a
publisher ``join`` (``ptype`` publisher) then ``publish`` with its SDP offer (Janus answers);
a subscriber ``join`` (``ptype`` subscriber, ``streams: [{feed}]``) gets Janus's offer, answers
with ``start``. Codecs: the room is H.264 only (``videocodec`` h264, ``h264_profile``
42e01f), matching the station's one encoder (mentor/DESIGN.md "Media").
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from scrubin.mentor.errors import MentorError

KEEPALIVE_S = 20.0
PLUGIN = "janus.plugin.videoroom"


class SfuError(MentorError):
    """Janus refused a request or answered something unexpected."""


@dataclass
class RoomKeys:
    """A locked room: its number and the secrets only our server knows."""

    room: int
    pin: str
    secret: str


class JanusSession:
    """One Janus session over HTTP (``aiohttp``), its long poll and its keepalive.

    Parameters
    ----------
    url
        Janus HTTP API base, e.g. ``http://127.0.0.1:8088/janus``.
    api_secret
        Janus ``general.api_secret`` (every request carries it).
    """

    def __init__(self, url: str, api_secret: str | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SfuError(f"--sfu {url!r}: expected an http(s):// URL of Janus's HTTP API")
        self.url = url.rstrip("/")
        self.api_secret = api_secret
        self.session_id: int | None = None
        self._http: Any = None
        self._queues: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        body = dict(body, transaction=secrets.token_hex(8))
        if self.api_secret:
            body["apisecret"] = self.api_secret
        try:
            async with self._http.post(self.url + path, json=body) as r:
                reply = await r.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise SfuError(f"Janus {self.url}{path}: {body['janus']} failed ({exc})") from None
        if reply.get("janus") == "error":
            err = reply.get("error", {})
            raise SfuError(f"Janus {body['janus']}: error {err.get('code')} "
                           f"{err.get('reason')}")
        return reply

    async def create(self) -> None:
        """Make the session; start the long poll and the keepalive."""
        import aiohttp

        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40))
        try:
            reply = await self._post("", {"janus": "create"})
        except SfuError:
            await self._http.close()
            raise
        self.session_id = int(reply["data"]["id"])
        self._tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._keep())]

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            with contextlib.suppress(SfuError):
                await self._post(f"/{self.session_id}", {"janus": "keepalive"})

    async def _poll(self) -> None:
        import aiohttp

        params = {"maxev": "10"}
        if self.api_secret:
            params["apisecret"] = self.api_secret
        while True:
            try:
                async with self._http.get(f"{self.url}/{self.session_id}",
                                          params=params) as r:
                    data = await r.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, ValueError):
                await asyncio.sleep(0.2)
                continue
            for ev in data if isinstance(data, list) else [data]:
                q = self._queues.get(int(ev.get("sender", 0) or 0))
                if q is not None:
                    q.put_nowait(ev)

    async def attach(self) -> VideoRoomHandle:
        """A VideoRoom plugin handle."""
        reply = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": PLUGIN})
        hid = int(reply["data"]["id"])
        self._queues[hid] = asyncio.Queue()
        return VideoRoomHandle(self, hid)

    async def destroy(self) -> None:
        """Destroy the session (its handles and peer connections go with it)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self._http is not None:
            if self.session_id is not None:
                with contextlib.suppress(SfuError):
                    await self._post(f"/{self.session_id}", {"janus": "destroy"})
            await self._http.close()
            self._http = None


@dataclass
class VideoRoomHandle:
    """A VideoRoom handle of a :class:`JanusSession`."""

    session: JanusSession
    handle_id: int
    peer_id: int | None = None
    _pcs: list[Any] = field(default_factory=list)

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous VideoRoom request (create, destroy, exists, listparticipants, ...)."""
        reply = await self.session._post(f"/{self.session.session_id}/{self.handle_id}",
                                         {"janus": "message", "body": body})
        data = reply.get("plugindata", {}).get("data", {})
        if "error" in data or data.get("videoroom") == "event" and "error_code" in data:
            raise SfuError(f"VideoRoom {body.get('request')}: error {data.get('error_code')} "
                           f"{data.get('error')}")
        return data

    async def message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None,
                      timeout: float = 15.0) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """An asynchronous request: its plugin event (data, jsep) from the long poll."""
        msg: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        await self.session._post(f"/{self.session.session_id}/{self.handle_id}", msg)
        q = self.session._queues[self.handle_id]
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise SfuError(f"VideoRoom {body.get('request')}: no answer in {timeout:.0f} s")
            ev = await asyncio.wait_for(q.get(), left)
            if ev.get("janus") != "event":
                continue    # webrtcup, media, slowlink, hangup: not an answer
            data = ev.get("plugindata", {}).get("data", {})
            if "error_code" in data:
                raise SfuError(f"VideoRoom {body.get('request')}: error {data['error_code']} "
                               f"{data.get('error')}")
            return data, ev.get("jsep")


async def create_room(handle: VideoRoomHandle, admin_key: str | None,
                      description: str = "scrubin") -> RoomKeys:
    """Create a private, pin- and secret-locked H.264 room (one publisher)."""
    keys = RoomKeys(secrets.randbelow(2**31 - 2) + 1, secrets.token_urlsafe(16),
                    secrets.token_urlsafe(16))
    body: dict[str, Any] = {
        "request": "create", "room": keys.room, "description": description,
        "secret": keys.secret, "pin": keys.pin, "is_private": True, "publishers": 1,
        "videocodec": "h264", "h264_profile": "42e01f", "audiocodec": "opus",
        "notify_joining": False, "permanent": False, "fir_freq": 0,
    }
    if admin_key:
        body["admin_key"] = admin_key
    data = await handle.request(body)
    if data.get("videoroom") != "created":
        raise SfuError(f"VideoRoom create: unexpected answer {data}")
    return keys


def _prefer_h264(transceiver: Any) -> None:
    """Offer H.264 packetization-mode 1, profile 42e01f only (the shared encoder's stream)."""
    from aiortc import RTCRtpSender

    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs
              if c.mimeType.lower() == "video/h264"
              and str(c.parameters.get("packetization-mode")) == "1"
              and str(c.parameters.get("profile-level-id", "")).lower() == "42e01f"]
    if not codecs:
        raise SfuError("this aiortc offers no H.264 42e01f packetization-mode 1 codec")
    transceiver.setCodecPreferences(codecs)


async def publish(handle: VideoRoomHandle, keys: RoomKeys, track: Any,
                  ice_config: Any = None, on_keyframe_request: Any = None,
                  display: str = "surgeon") -> Any:
    """Publish ``track`` (a :class:`~scrubin.mentor.media.PacketTrack`: already-encoded H.264)
    into the room; returns the publisher's ``RTCPeerConnection`` once Janus has answered.

    ``on_keyframe_request``: called for each PLI/FIR Janus forwards from a subscriber.
    """
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from scrubin.mentor.ice import ice_configuration
    from scrubin.mentor.media import hook_keyframe_requests

    data, _ = await handle.message({"request": "join", "ptype": "publisher",
                                    "room": keys.room, "pin": keys.pin, "display": display})
    if data.get("videoroom") != "joined":
        raise SfuError(f"VideoRoom publisher join: unexpected answer {data}")
    handle.peer_id = int(data["id"])
    pc = RTCPeerConnection(ice_config or ice_configuration())
    handle._pcs.append(pc)
    tr = pc.addTransceiver(track, direction="sendonly")
    _prefer_h264(tr)
    if on_keyframe_request is not None:
        hook_keyframe_requests(tr.sender, on_keyframe_request)
    await pc.setLocalDescription(await pc.createOffer())
    data, jsep = await handle.message(
        {"request": "publish", "audio": False, "video": True, "data": False},
        {"type": "offer", "sdp": pc.localDescription.sdp})
    if jsep is None or jsep.get("type") != "answer":
        await pc.close()
        raise SfuError(f"VideoRoom publish: no SDP answer ({data})")
    await pc.setRemoteDescription(RTCSessionDescription(jsep["sdp"], "answer"))
    return pc


async def subscribe_offer(handle: VideoRoomHandle, keys: RoomKeys, feed: int) -> str:
    """Join as a subscriber of ``feed``; returns Janus's SDP offer (answer with
    :func:`subscribe_answer`)."""
    data, jsep = await handle.message({"request": "join", "ptype": "subscriber",
                                       "room": keys.room, "pin": keys.pin,
                                       "streams": [{"feed": feed}]})
    if data.get("videoroom") != "attached" or jsep is None or jsep.get("type") != "offer":
        raise SfuError(f"VideoRoom subscriber join: unexpected answer {data}")
    return str(jsep["sdp"])


async def subscribe_answer(handle: VideoRoomHandle, keys: RoomKeys, answer_sdp: str) -> None:
    """Send the subscriber's answer (``start``)."""
    data, _ = await handle.message({"request": "start", "room": keys.room},
                                   {"type": "answer", "sdp": answer_sdp})
    if data.get("started") != "ok":
        raise SfuError(f"VideoRoom start: unexpected answer {data}")


async def publish_via_link(link: Any, track: Any, on_keyframe_request: Any = None,
                           ice_config: Any = None, timeout: float = 20.0,
                           audio_track: Any = None, pc: Any = None) -> Any:
    """The surgeon station publishes ``track`` through our server (``serve --sfu``): its
    offer goes as ``sfu-offer`` on the station's own ``Signal`` call (a
    :class:`~scrubin.mentor.station_link.StationLink`), the server's bridge publishes it
    into the session's locked room and returns Janus's answer as ``sfu-answer``. The
    station never sees Janus's API, room number or pin. Returns the ``RTCPeerConnection``.

    ``audio_track``: the theatre voice (Opus), published too; ``pc``: the peer connection to
    use (made here when None), e.g. one with a data channel already made (Janus VideoRoom
    relays a publisher's data channel messages to every subscriber, under the same label)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from scrubin.mentor.ice import ice_configuration
    from scrubin.mentor.media import hook_keyframe_requests

    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_sfu(msg: Any) -> None:
        if msg.sdp_type == "sfu-answer" and not answer.done():
            answer.set_result(msg.sdp)
        elif msg.sdp_type == "sfu-error" and not answer.done():   # refused; the call stays
            answer.set_exception(SfuError(f"the server refused the publish: {msg.sdp}"))

    link.on_sfu = on_sfu
    pc = pc or RTCPeerConnection(ice_config or ice_configuration())
    tr = pc.addTransceiver(track, direction="sendonly")
    _prefer_h264(tr)
    if on_keyframe_request is not None:
        hook_keyframe_requests(tr.sender, on_keyframe_request)
    if audio_track is not None:
        pc.addTransceiver(audio_track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await link.signal.send("sfu-offer", pc.localDescription.sdp)
    try:
        sdp = await asyncio.wait_for(answer, timeout)
    except TimeoutError:
        await pc.close()
        raise SfuError(f"no sfu-answer from the server in {timeout:.0f} s") from None
    except SfuError:
        await pc.close()
        raise
    await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
    return pc


async def subscribe_via_signal(sig: Any, answer_offer: Any, timeout: float = 20.0) -> None:
    """A viewer subscribes through our server: ``sfu-subscribe`` on its ``Signal`` call,
    Janus's offer back as ``sfu-offer``, ``answer_offer(sdp) -> answer sdp`` (the viewer's
    peer connection), ``sfu-answer``, and the server's ``sfu-started``."""
    await sig.send("sfu-subscribe")
    offer = await _wait_kind(sig, "sfu-offer", timeout)
    await sig.send("sfu-answer", await answer_offer(offer))
    await _wait_kind(sig, "sfu-started", timeout)


async def _wait_kind(sig: Any, kind: str, timeout: float) -> str:
    while True:
        msg = await asyncio.wait_for(sig.recv(), timeout)
        if msg is None:
            raise SfuError(f"signal call ended while waiting for {kind}")
        if msg.sdp_type == kind:
            return str(msg.sdp)
