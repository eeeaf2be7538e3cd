"""A session recording opened by Foxglove Studio's own code (issue 8: "opens in Foxglove Studio").

Peer: Studio's MCAP data source, the web worker of ``@foxglove/studio-base`` 1.48.0's prebuilt
bundle (npm), run in the Debian Chromium exactly as Studio runs it (tests/mentor/foxglove/): it
lists the topics, parses every channel's schema with Studio's ``parseChannel`` and decodes every
message. Each decoded message is validated against Foxglove's JSON schemas (``@foxglove/schemas``
2.1.0, read by node) and our JSON channels against their own schemas; the H.264 video goes
through Chromium's WebCodecs decoder the way Foxglove's video player feeds it, and every picture
is identified by its frame-id strip. Copies of the file with one deliberate defect each must be
caught. Truth: tests/mentor/recording_stream.py (the scene's poses, the station's frame ids).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer
from playwright.sync_api import sync_playwright
from scipy.spatial.transform import Rotation

from scrubin.mentor import recording_schema as rs
from scrubin.mentor.strip import STRIP_HEIGHT, read_strip

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "foxglove"))
import studio
from browser import launch_chromium, new_page
from recording_stream import LOST, N_FRAMES, record, stream

VOICE_FRAMES = 10
WANT_TOPICS = {
    rs.TOPIC_VIDEO: "foxglove.CompressedVideo",
    rs.TOPIC_CALIBRATION: "foxglove.CameraCalibration",
    rs.TOPIC_TF: "foxglove.FrameTransforms",
    rs.TOPIC_IMAGE_ANNOTATIONS: "foxglove.ImageAnnotations",
    rs.TOPIC_FRAME: rs.FRAME_SCHEMA_NAME,
    rs.TOPIC_EVENTS: rs.EVENT_SCHEMA_NAME,
    rs.TOPIC_LOG: "foxglove.Log",
    "/audio/station": "foxglove.CompressedAudio",
}
WANT_COUNTS = {rs.TOPIC_VIDEO: N_FRAMES, rs.TOPIC_CALIBRATION: N_FRAMES, rs.TOPIC_TF: N_FRAMES,
               rs.TOPIC_IMAGE_ANNOTATIONS: N_FRAMES, rs.TOPIC_FRAME: N_FRAMES,
               rs.TOPIC_EVENTS: 3, rs.TOPIC_LOG: 2, "/audio/station": VOICE_FRAMES}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recording ``session.mcap`` (made by our recorder from the real stream) and, later,
    its broken copies."""
    path = tmp_path_factory.mktemp("foxglove") / "session.mcap"
    stats = record(path, voice_frames=VOICE_FRAMES)
    assert (stats.frames, stats.events, stats.dropped_frames) == (N_FRAMES, 3, 0)
    return path.parent


@pytest.fixture(scope="module")
def studio_page(folder: Path) -> Iterator[Callable[[str], dict[str, Any]]]:
    """``open(name)``: the report of Studio's reader + WebCodecs on ``folder/name``."""
    with studio.serve(folder) as origin, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = new_page(browser)

            def open_(name: str) -> dict[str, Any]:
                rep = studio.open_in_studio(page, origin, name, rs.TOPIC_VIDEO, STRIP_HEIGHT)
                assert page.errors == [], page.errors
                return rep

            yield open_
        finally:
            browser.close()


@pytest.fixture(scope="module")
def report(studio_page) -> dict[str, Any]:
    return studio_page("session.mcap")


def _studio_messages(rep: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    if topic == rs.TOPIC_VIDEO:
        return rep["video_messages"]
    return [m["message"] for m in rep["messages"] if m["topic"] == topic]


def test_studio_lists_every_topic_and_decodes_every_message(report, folder: Path) -> None:
    assert report["problems"] == []  # what Studio's problems panel would show
    assert {t["name"]: t["schemaName"] for t in report["topics"]} == WANT_TOPICS
    assert report["topic_counts"] == WANT_COUNTS  # the file's statistics, as Studio lists them
    got = {t: len(_studio_messages(report, t)) for t in WANT_TOPICS}
    assert got == WANT_COUNTS
    assert report["profile"] == rs.PROFILE
    # Studio typed our JSON channels from their schemas (message paths for plots, raw messages)
    assert {rs.FRAME_SCHEMA_NAME, f"{rs.EVENT_SCHEMA_NAME}.event"} <= set(report["datatypes"])
    # the time range Studio's timeline shows: the file's first and last log time (Python reader)
    with open(folder / "session.mcap", "rb") as fh:
        times = [m.log_time for _, _, m in make_reader(fh).iter_messages()]
    assert [report[k]["sec"] * 10**9 + report[k]["nsec"] for k in ("start", "end")] == [
        min(times), max(times)]
    s = stream()  # (the start/stop log lines are at the wall clock, the stream's at 2026-09)
    assert min(times) <= round(s.metas[0].capture_time * 1e9) < round(
        s.metas[-1].capture_time * 1e9) <= max(times)
    # Studio's image panel pairs an image topic with the calibration and annotation topics that
    # share its prefix up to the last '/' (Foxglove/Lichtblick topicPrefixMatching)
    prefix = re.match(r"^.+/(?=.)", rs.TOPIC_VIDEO)
    assert prefix and rs.TOPIC_CALIBRATION.startswith(prefix[0])
    assert rs.TOPIC_IMAGE_ANNOTATIONS.startswith(prefix[0])


def test_every_message_valid_for_foxglove(report) -> None:
    """Foxglove's JSON schemas for its channels, ours for our JSON channels, the transform
    tree, frame ids the panels join on, and the CompressedVideo rules (studio.findings)."""
    assert studio.findings(report, WANT_TOPICS, WANT_COUNTS, rs.TOPIC_VIDEO) == []
    for topic, schema in ((rs.TOPIC_FRAME, rs.FRAME_JSON_SCHEMA),
                          (rs.TOPIC_EVENTS, rs.EVENT_JSON_SCHEMA)):
        jsonschema.Draft202012Validator.check_schema(schema)
        v = jsonschema.Draft202012Validator(schema)
        for msg in _studio_messages(report, topic):
            assert list(v.iter_errors(msg)) == [], (topic, msg)
    # the Foxglove schemas did validate something: a calibration without K is refused
    cal = dict(_studio_messages(report, rs.TOPIC_CALIBRATION)[0], K=[1.0] * 8)
    fox = studio.foxglove_json_schemas()["foxglove.CameraCalibration"]
    assert not jsonschema.Draft7Validator(fox).is_valid(cal)


def test_video_decodes_in_chromium_as_foxglove_feeds_it(report) -> None:
    s = stream()
    v = report["video"]
    assert v["supported"] is True and v["errors"] == [] and v["skipped"] == 0
    assert v["config"]["codec"].startswith("avc1.42")  # Baseline: no B-frames
    assert (v["config"]["codedWidth"], v["config"]["codedHeight"]) == (1280, 736)
    frames = v["frames"]
    assert [f["decoded"] for f in frames] == [True] * N_FRAMES
    assert [f["key"] for f in frames] == [m.frame_id in s.keyframe_ids for m in s.metas]
    want_us = [round((m.capture_time - s.metas[0].capture_time) * 1e6) for m in s.metas]
    assert [f["timestamp"] for f in frames] == pytest.approx(want_us, abs=1)
    ids = [read_strip(studio.strip_luma(f, STRIP_HEIGHT)) for f in frames]
    assert ids == [m.frame_id for m in s.metas]  # every picture, in order, none repeated
    ms = sorted(f["ms"] for f in frames)
    print(f"Chromium WebCodecs decode per frame (1280x736): median {ms[len(ms) // 2]:.1f} ms, "
          f"max {ms[-1]:.1f} ms; Studio reader open {report['open_ms']:.0f} ms")


def test_studio_values_are_the_recorded_truth(report) -> None:
    s = stream()
    tfs = _studio_messages(report, rs.TOPIC_TF)
    cals = _studio_messages(report, rs.TOPIC_CALIBRATION)
    frames = _studio_messages(report, rs.TOPIC_FRAME)
    for k, meta in enumerate(s.metas):
        tf = {(t["parent_frame_id"], t["child_frame_id"]): t for t in tfs[k]["transforms"]}
        assert frames[k]["frame_id"] == meta.frame_id
        np.testing.assert_array_equal(np.reshape(frames[k]["T_ref_ct"], (4, 4)), meta.T_ref_ct)
        assert cals[k]["K"] == pytest.approx([meta.K[0], 0, meta.K[2], 0, meta.K[1], meta.K[3],
                                              0, 0, 1])
        if k in LOST:
            assert set(tf) == {("ref", "ct")} and "T_camera_ref" not in frames[k]
            continue
        t = tf[("camera", "ref")]
        q = [t["rotation"][c] for c in "xyzw"]
        np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), meta.T_camera_ref[:3, :3],
                                   atol=1e-9)
        np.testing.assert_allclose([t["translation"][c] for c in "xyz"],
                                   meta.T_camera_ref[:3, 3] / 1000.0, atol=1e-12)  # metres
    assert [e["seq"] for e in _studio_messages(report, rs.TOPIC_EVENTS)] == [1, 2, 3]
    logs = _studio_messages(report, rs.TOPIC_LOG)
    assert [m["level"] for m in logs] == [2, 2]  # foxglove.Log INFO
    assert "recording started" in logs[0]["message"]
    assert all(m["format"] == "opus" for m in _studio_messages(report, "/audio/station"))


# ------------------------------------------------------------------ broken copies are caught
def _rewrite(src: Path, dst: Path, message: Callable[[str, int, bytes], bytes] | None = None,
             schema: Callable[[str, bytes], bytes] | None = None) -> None:
    """Copy an MCAP file message by message, editing one topic's messages or a schema."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        rd = make_reader(fi)
        w = Writer(fo, compression=CompressionType.ZSTD)
        w.start(profile=rd.get_header().profile, library="test-rewrite")
        sids: dict[int, int] = {}
        cids: dict[int, int] = {}
        for sc, ch, m in rd.iter_messages(log_time_order=True):
            if sc.id not in sids:
                data = schema(sc.name, sc.data) if schema else sc.data
                sids[sc.id] = w.register_schema(sc.name, sc.encoding, data)
            if ch.id not in cids:
                cids[ch.id] = w.register_channel(ch.topic, ch.message_encoding, sids[sc.id],
                                                 dict(ch.metadata))
            data = message(ch.topic, m.sequence, m.data) if message else m.data
            w.add_message(cids[ch.id], m.log_time, data, m.publish_time, m.sequence)
        w.finish()


def _short_k(topic: str, seq: int, data: bytes) -> bytes:
    from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration

    if topic != rs.TOPIC_CALIBRATION:
        return data
    m = CameraCalibration.FromString(data)
    del m.K[-1]
    return m.SerializeToString()


def _no_sps(topic: str, seq: int, data: bytes) -> bytes:
    from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo

    if topic != rs.TOPIC_VIDEO:
        return data
    m = CompressedVideo.FromString(data)
    nals = [b"\x00\x00\x01" + n for n in m.data.split(b"\x00\x00\x01") if n.strip(b"\x00")]
    m.data = b"".join(n for n in nals if n[3] & 0x1F != 7)
    return m.SerializeToString()


def _nullable_pose(name: str, data: bytes) -> bytes:
    if name != rs.FRAME_SCHEMA_NAME:
        return data
    d = json.loads(data)
    d["properties"]["T_camera_ref"]["type"] = ["array", "null"]  # the schema before the fix
    return json.dumps(d).encode()


def _late_annotations(topic: str, seq: int, data: bytes) -> bytes:
    from foxglove_schemas_protobuf.ImageAnnotations_pb2 import ImageAnnotations

    if topic != rs.TOPIC_IMAGE_ANNOTATIONS or seq != stream().metas[5].frame_id:
        return data
    m = ImageAnnotations.FromString(data)
    m.timestamp.nanos += 1_000_000  # stamped 1 ms after its picture
    return m.SerializeToString()


def _cut_tf(topic: str, seq: int, data: bytes) -> bytes:
    return data[: len(data) // 2] if topic == rs.TOPIC_TF and seq == stream().metas[3].frame_id \
        else data


@pytest.mark.parametrize(("name", "message", "schema", "want"), [
    ("short-k", _short_k, None, "/station/calibration foxglove.CameraCalibration: K: "),
    ("no-sps", _no_sps, None, "keyframe (IDR) without an SPS NAL unit"),
    ("nullable", None, _nullable_pose,
     'Unsupported type ["array","null"] for T_camera_ref'),
    ("cut-tf", _cut_tf, None, "Studio problem: error: Error decoding message on /tf"),
    ("late-annotations", _late_annotations, None,
     "/station/annotations: no message at the timestamp of 1 of 16 video frames"),
])
def test_a_broken_copy_is_caught(folder: Path, studio_page, name, message, schema,
                                 want) -> None:
    _rewrite(folder / "session.mcap", folder / f"{name}.mcap", message, schema)
    rep = studio_page(f"{name}.mcap")
    found = studio.findings(rep, WANT_TOPICS, WANT_COUNTS, rs.TOPIC_VIDEO)
    assert any(want in f for f in found), found
