"""The station's recorder over a real WebRTC session: a viewer (aiortc, 127.0.0.1) speaking a
660 Hz tone, the station's microphone a 440 Hz tone, video published by a frame-loop thread.
The MCAP holds every published frame and both voices; FFmpeg's native Opus decoder (not the
libopus that encoded them) reads the pitches back."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory

from scrubin.mentor.ice import ice_configuration, restrict_host_addresses
from scrubin.mentor.media import StreamEncoder, VideoFanout
from scrubin.mentor.media_audio import AudioSource, ToneTrack
from scrubin.mentor.recording import Recorder
from scrubin.mentor.recording_audio import tap_track
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_meta import FrameMeta

W, H = 320, 180


def _pitch(packets: list[bytes]) -> float:
    dec = av.CodecContext.create("opus", "r")
    pcm = np.concatenate([f.to_ndarray()[0].astype(np.float64) for d in packets
                          for f in dec.decode(av.Packet(d))])[-24000:]  # the last 0.5 s
    n = 1 << 20
    spec = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)), n))
    return float(np.fft.rfftfreq(n, 1 / 48000)[np.argmax(spec)])


async def _session(path: Path) -> tuple[list[int], object]:
    restrict_host_addresses(["127.0.0.1"])
    station = SurgeonStation(VideoFanout(StreamEncoder(W, H + 16, 30.0, 500_000)),
                             AudioSource("tone:440"))
    rec = station.recorder = Recorder(path, True, "s", "surgeon:t", (W, H + 16)).start()
    tap_track(station.audio.track(buffered=True), rec, "station")
    pc = RTCPeerConnection(ice_configuration())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver(ToneTrack(660.0), direction="sendrecv")
    pc.createDataChannel("meta")
    await pc.setLocalDescription(await pc.createOffer())
    ans = await station.answer("p0", pc.localDescription.sdp, "mentor", "mentor:Dr M")
    await pc.setRemoteDescription(RTCSessionDescription(ans, "answer"))
    published: list[int] = []
    stop = threading.Event()

    def frame_loop() -> None:
        fid = 7000
        view = np.full((H, W, 3), 90, np.uint8)
        while not stop.is_set():
            station.publish(view, FrameMeta(fid, time.time(), W, H, (300.0, 300.0, 159.5, 89.5),
                                            (0, 0, 0, 0, 0), np.eye(4), np.eye(4), "LIVE"))
            published.append(fid)
            fid += 1
            time.sleep(1 / 30)

    th = threading.Thread(target=frame_loop, daemon=True)
    th.start()
    t_end = time.time() + 20
    while time.time() < t_end and (station.peers["p0"].audio_in is None
                                   or station.peers["p0"].audio_in.frames < 100):
        await asyncio.sleep(0.1)
    stop.set()
    th.join()
    station.recorder = None
    stats = rec.close()
    await pc.close()
    await station.close()
    restrict_host_addresses(None)
    return published, stats


def test_station_records_video_and_both_voices(tmp_path: Path) -> None:
    path = tmp_path / "v.mcap"
    published, stats = asyncio.run(_session(path))
    voices: dict[str, list[bytes]] = {}
    with open(path, "rb") as fh:
        rd = make_reader(fh, decoder_factories=[DecoderFactory()])
        video = [m.sequence for _, _, m in rd.iter_messages(topics=["/station/video"])]
        for _, ch, _, dec in rd.iter_decoded_messages(topics=["/audio/station",
                                                              "/audio/mentor-p0"]):
            voices.setdefault(ch.topic, []).append(bytes(dec.data))
    assert video == published and stats.frames == len(published)
    assert len(voices["/audio/mentor-p0"]) >= 50 and len(voices["/audio/station"]) >= 50
    assert abs(_pitch(voices["/audio/station"]) - 440.0) < 1.0
    assert abs(_pitch(voices["/audio/mentor-p0"]) - 660.0) < 1.0
