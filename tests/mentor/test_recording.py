"""Session recording (MCAP): read back with the ``mcap`` reader as the independent peer.

The stream is real (tests/mentor/recording_stream.py: synthetic scene, strip, the station's
libx264 encoder, DESIGN.md events). Checks: schemas and channel names, message counts, log
times = capture times (Unix ns, monotonic), every keyframe decodable alone by PyAV (its strip
gives its frame id), poses round-trip (scipy as the quaternion peer), Foxglove image
annotations at ``cv2.projectPoints`` of the anchor, consent refused, bounded queue.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory
from scipy.spatial.transform import Rotation

from scrubin.mentor import recording_schema as rs
from scrubin.mentor.recording import Recorder, RecordingError
from scrubin.mentor.strip import read_strip

sys.path.insert(0, str(Path(__file__).parent))
from recording_stream import LOST, N_FRAMES, record, stream


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("rec") / "session.mcap"
    stats = record(path)
    return path, stats


def _messages(path: Path) -> list[tuple[str, str, str, object, object]]:
    """(topic, schema name, message encoding, raw message, decoded) of the protobuf channels,
    in log order."""
    out = []
    topics = [rs.TOPIC_VIDEO, rs.TOPIC_TF, rs.TOPIC_CALIBRATION, rs.TOPIC_IMAGE_ANNOTATIONS,
              rs.TOPIC_LOG]
    with open(path, "rb") as fh:
        rd = make_reader(fh, decoder_factories=[DecoderFactory()])
        for schema, ch, msg, dec in rd.iter_decoded_messages(topics, log_time_order=True):
            out.append((ch.topic, schema.name, ch.message_encoding, msg, dec))
    return out


def _decoded_json(path: Path) -> list[tuple[str, str, str, object, object]]:
    with open(path, "rb") as fh:
        rd = make_reader(fh)
        return [(ch.topic, sc.name, ch.message_encoding, m,
                 json.loads(m.data) if ch.message_encoding == "json" else None)
                for sc, ch, m in rd.iter_messages(log_time_order=True)]


def test_channels_schemas_counts_and_clock(recorded) -> None:
    path, stats = recorded
    s = stream()
    with open(path, "rb") as fh:
        rd = make_reader(fh)
        header, summary = rd.get_header(), rd.get_summary()
        meta = {m.name: dict(m.metadata) for m in rd.iter_metadata()}
    assert header.profile == rs.PROFILE
    assert meta[rs.METADATA_NAME]["session_id"] == "session-1"
    assert meta[rs.METADATA_NAME]["recording_consent"] == "true"
    schemas = {sc.id: (sc.name, sc.encoding) for sc in summary.schemas.values()}
    chans = {c.topic: (schemas[c.schema_id], c.message_encoding)
             for c in summary.channels.values()}
    assert chans == {
        "/station/video": (("foxglove.CompressedVideo", "protobuf"), "protobuf"),
        "/station/calibration": (("foxglove.CameraCalibration", "protobuf"), "protobuf"),
        "/tf": (("foxglove.FrameTransforms", "protobuf"), "protobuf"),
        "/station/annotations": (("foxglove.ImageAnnotations", "protobuf"), "protobuf"),
        "/station/frame": (("scrubin.mentor.FrameMeta", "jsonschema"), "json"),
        "/mentor/events": (("scrubin.mentor.AnnotationEvent", "jsonschema"), "json"),
        "/session/log": (("foxglove.Log", "protobuf"), "protobuf"),
    }
    counts = Counter(t for t, *_ in _decoded_json(path))
    assert counts == {"/station/video": N_FRAMES, "/station/calibration": N_FRAMES,
                      "/tf": N_FRAMES, "/station/annotations": N_FRAMES,
                      "/station/frame": N_FRAMES, "/mentor/events": 3, "/session/log": 2}
    assert (stats.frames, stats.events, stats.dropped_frames) == (N_FRAMES, 3, 0)
    by_topic: dict[str, list[int]] = defaultdict(list)
    for topic, _, _, m, _ in _decoded_json(path):
        by_topic[topic].append(m.log_time)
    want_ns = [round(x.capture_time * 1e9) for x in s.metas]
    for topic in ("/station/video", "/station/frame", "/tf", "/station/calibration"):
        assert by_topic[topic] == want_ns, topic  # capture time, Unix ns, increasing
    assert np.all(np.diff(want_ns) > 0)


def test_video_frames_and_keyframes_decode(recorded) -> None:
    path, _ = recorded
    s = stream()
    videos = [(m.sequence, dec) for t, _, _, m, dec in _messages(path) if t == rs.TOPIC_VIDEO]
    assert [fid for fid, _ in videos] == [x.frame_id for x in s.metas]
    assert all(v.format == "h264" and v.frame_id == "camera" for _, v in videos)
    # Annex B, one access unit per message: the station's packets byte for byte
    assert [bytes(v.data) for _, v in videos] == [b"".join(bytes(p) for p in pk)
                                                  for pk in s.packets]
    frames_json = {d["frame_id"]: d for t, _, _, _, d in _decoded_json(path)
                   if t == rs.TOPIC_FRAME}
    keys = [fid for fid, _ in videos if frames_json[fid]["keyframe"]]
    assert keys == s.keyframe_ids and len(keys) >= 3
    for fid, v in videos:
        if fid not in keys:
            continue
        ctx = av.CodecContext.create("h264", "r")  # a fresh decoder: the keyframe alone
        pics = ctx.decode(av.Packet(bytes(v.data))) + ctx.decode(None)
        assert len(pics) == 1 and (pics[0].width, pics[0].height) == (1280, 736)
        assert read_strip(pics[0].to_ndarray(format="gray")) == fid
    ctx = av.CodecContext.create("h264", "r")
    ids = []
    for _, v in videos:
        for pic in ctx.decode(av.Packet(bytes(v.data))):
            ids.append(read_strip(pic.to_ndarray(format="gray")))
    ids += [read_strip(p.to_ndarray(format="gray")) for p in ctx.decode(None)]
    assert ids == [x.frame_id for x in s.metas]


def test_poses_quality_and_latency_round_trip(recorded) -> None:
    path, _ = recorded
    s = stream()
    msgs = _messages(path)
    metas = {d["frame_id"]: d for t, _, _, _, d in _decoded_json(path) if t == rs.TOPIC_FRAME}
    tfs = {m.sequence: dec for t, _, _, m, dec in msgs if t == rs.TOPIC_TF}
    cals = {m.sequence: dec for t, _, _, m, dec in msgs if t == rs.TOPIC_CALIBRATION}
    for k, want in enumerate(s.metas):
        got = metas[want.frame_id]
        assert got["tracking"] == want.tracking and got["fre_mm"] == 0.31
        assert got["tre_mm"] == 0.87 and got["stages_ms"]["track"] == pytest.approx(2 + k * .1)
        assert got["annotation_seq"] == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}.get(k, 3)
        np.testing.assert_array_equal(np.reshape(got["T_ref_ct"], (4, 4)), want.T_ref_ct)
        tf = {(t.parent_frame_id, t.child_frame_id): t for t in tfs[want.frame_id].transforms}
        if k in LOST:
            assert "T_camera_ref" not in got and set(tf) == {("ref", "ct")}
            continue
        np.testing.assert_array_equal(np.reshape(got["T_camera_ref"], (4, 4)),
                                      want.T_camera_ref)
        t = tf[("camera", "ref")]
        q = [t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w]
        np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), want.T_camera_ref[:3, :3],
                                   atol=1e-9)
        np.testing.assert_allclose([t.translation.x, t.translation.y, t.translation.z],
                                   want.T_camera_ref[:3, 3] / 1000.0, atol=1e-12)  # metres
        c = cals[want.frame_id]
        assert (c.width, c.height, c.distortion_model) == (1280, 736, "plumb_bob")
        assert list(c.K) == pytest.approx([want.K[0], 0, want.K[2], 0, want.K[1], want.K[3],
                                           0, 0, 1])
        assert list(c.D) == pytest.approx(list(want.dist))


def test_image_annotations_at_the_projected_anchor(recorded) -> None:
    path, _ = recorded
    s = stream()
    anns = {m.sequence: dec for t, _, _, m, dec in _messages(path)
            if t == rs.TOPIC_IMAGE_ANNOTATIONS}
    for k, meta in enumerate(s.metas):
        a = anns[meta.frame_id]
        pts = {(round(p.outline_color.r), round(p.outline_color.g), round(p.outline_color.b)):
               [(q.x, q.y) for q in p.points] for p in a.points}
        if k < 2:
            assert not pts
            continue
        if k in (2, 3):  # pending: where the mentor drew it (normalised 0.5, 0.5)
            assert pts[(1, 0, 1)] == [(639.5, 359.5)]
            continue
        if k in LOST:  # anchored annotations hidden without a pose
            assert (1, 0, 1) not in pts
        else:
            uv, _ = cv2.projectPoints(s.anchor_ref_mm[None], cv2.Rodrigues(
                meta.T_camera_ref[:3, :3])[0], meta.T_camera_ref[:3, 3], meta.camera_matrix,
                np.asarray(meta.dist))
            np.testing.assert_allclose(pts[(1, 0, 1)], uv.reshape(1, 2), atol=1e-6)
        if k >= 6:
            assert pts[(0, 1, 1)] == [(0.15 * 1280 - 0.5, 0.8 * 720 - 0.5),
                                      (0.3 * 1280 - 0.5, 0.85 * 720 - 0.5)]
    assert {t.text for t in anns[s.metas[-1].frame_id].texts} == {"mentor:Dr M"}


def test_refused_without_consent_or_over_a_file(tmp_path: Path) -> None:
    p = tmp_path / "x.mcap"
    with pytest.raises(RecordingError, match="session s9 was not created with recording on"):
        Recorder(p, False, "s9")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file
    p.write_bytes(b"keep")
    with pytest.raises(RecordingError, match="file exists"):
        Recorder(p, True, "s9")
    with pytest.raises(RecordingError, match="does not exist"):
        Recorder(tmp_path / "no" / "x.mcap", True, "s9")
    assert p.read_bytes() == b"keep"


def test_bounded_queue_drops_then_resumes_at_a_keyframe(tmp_path: Path) -> None:
    """The writer is behind (not started): add_frame drops instead of waiting, and the file
    skips to the next keyframe, so everything recorded still decodes."""
    s = stream()
    p = tmp_path / "b.mcap"
    rec = Recorder(p, True, "s", annotations_in_video=False, max_queued_frames=3)
    accepted = [rec.add_frame(pk, m) for m, pk in zip(s.metas, s.packets, strict=True)]
    assert accepted[:3] == [True] * 3 and not any(accepted[3:])
    rec.start()
    stats = rec.close()
    assert stats.frames == 3 and stats.dropped_frames == N_FRAMES - 3
    rec = Recorder(tmp_path / "c.mcap", True, "s", max_queued_frames=3).start()
    for m, pk in zip(s.metas, s.packets, strict=True):
        rec.add_frame(pk, m)
    stats = rec.close()
    msgs = _decoded_json(tmp_path / "c.mcap")
    fids = [m.sequence for t, _, _, m, _ in msgs if t == rs.TOPIC_VIDEO]
    assert len(fids) == stats.frames and stats.frames + stats.dropped_frames + \
        stats.skipped_to_keyframe == N_FRAMES
    assert stats.max_queue <= 3
    logs = [t for t, *_ in msgs if t == rs.TOPIC_LOG]
    assert len(logs) == 2 + stats.dropped_frames
    ctx = av.CodecContext.create("h264", "r")
    with open(tmp_path / "c.mcap", "rb") as fh:
        rd = make_reader(fh, decoder_factories=[DecoderFactory()])
        got = [read_strip(pic.to_ndarray(format="gray"))
               for _, _, _, v in rd.iter_decoded_messages(topics=[rs.TOPIC_VIDEO])
               for pic in ctx.decode(av.Packet(bytes(v.data)))]
    got += [read_strip(pic.to_ndarray(format="gray")) for pic in ctx.decode(None)]
    assert got == fids


def test_quaternion_against_scipy() -> None:
    """Shepperd's method (/tf rotations) vs scipy's Rotation, incl. the 180-degree turns where
    the trace-only formula breaks down."""
    mats = np.concatenate([Rotation.random(2000, random_state=3).as_matrix(),
                           [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]),
                            np.diag([-1.0, -1, 1]), np.eye(3)]])
    for r in mats:
        q = rs.quaternion_xyzw(r)
        np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), r, atol=1e-12)
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
