"""Replay of a recording to MP4: decoded by OpenCV (FFmpeg backend) as the peer.

The recording is the real stream of tests/mentor/recording_stream.py (annotations not drawn
into the video, so the replay draws them). The anchored mark ``A`` (magenta, one point: a
filled 4-px disc) must sit within 2 px of ``cv2.projectPoints`` of its REF anchor with the
pose *recorded for that frame* (read back with the ``mcap`` reader); it is absent before its
event arrived and on the frames where tracking was LOST; the pending stroke ``B`` (cyan) stays
where the mentor drew it. Timestamps of the MP4 are the recorded capture times.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer

from scrubin.mentor import recording_schema as rs
from scrubin.mentor.recording import Recorder, RecordingError
from scrubin.mentor.replay import open_recording, replay_to_mp4

sys.path.insert(0, str(Path(__file__).parent))
from recording_stream import B_POINTS, FPS, LOST, N_FRAMES, record, stream


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "session.mcap"
    record(path)
    return path


def _read_mp4(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)


def _mask(img: np.ndarray, colour: str) -> np.ndarray:
    b, g, r = (img[..., i].astype(int) for i in range(3))
    if colour == "magenta":
        return (r > 150) & (b > 150) & (g < 110)
    return (b > 150) & (g > 150) & (r < 110)


def _recorded_poses(path: Path) -> dict[int, dict]:
    with open(path, "rb") as fh:
        return {m.sequence: json.loads(m.data) for _, _, m in
                make_reader(fh).iter_messages(topics=[rs.TOPIC_FRAME], log_time_order=True)}


def test_replay_draws_annotations_at_the_recorded_pose(recording: Path, tmp_path: Path
                                                         ) -> None:
    s = stream()
    out = tmp_path / "replay.mp4"
    rep = replay_to_mp4(recording, out)
    assert rep.drew_annotations and rep.frames == N_FRAMES and rep.strip_mismatch == 0
    assert rep.tracking == {"LIVE": N_FRAMES - len(LOST), "LOST": len(LOST)}
    assert (rep.width, rep.height) == (1280, 720) and rep.events == 3
    frames = _read_mp4(out)
    assert len(frames) == N_FRAMES and frames[0].shape == (720, 1280, 3)  # strip cropped
    poses = _recorded_poses(recording)
    centres = []
    for k, (img, meta) in enumerate(zip(frames, s.metas, strict=True)):
        mag = _mask(img, "magenta")
        if k < 2 or k in LOST:
            assert mag.sum() == 0, k  # not yet created / hidden without tracking
            continue
        ys, xs = np.nonzero(mag)
        assert 25 <= len(xs) <= 80, (k, len(xs))  # one 4-px disc
        c = np.array([xs.mean(), ys.mean()])
        if k < 4:  # pending: where the mentor clicked (0.5, 0.5) -> (639.5, 359.5)
            np.testing.assert_allclose(c, [639.5, 359.5], atol=1.0)
            continue
        rec = poses[meta.frame_id]
        t = np.reshape(rec["T_camera_ref"], (4, 4))
        fx, fy, cx, cy = rec["K"]
        uv, _ = cv2.projectPoints(s.anchor_ref_mm[None], cv2.Rodrigues(t[:3, :3])[0], t[:3, 3],
                                  np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]),
                                  np.asarray(rec["dist"]))
        assert np.hypot(*(c - uv.ravel())) < 2.0, (k, c, uv)
        centres.append(c)
        cy_mask = _mask(img, "cyan")
        if k >= 6:  # pending stroke B: a line between its two normalised points
            ys, xs = np.nonzero(cy_mask)
            p0 = np.array([B_POINTS[0][0] * 1280 - 0.5, B_POINTS[0][1] * 720 - 0.5])
            p1 = np.array([B_POINTS[1][0] * 1280 - 0.5, B_POINTS[1][1] * 720 - 0.5])
            d = p1 - p0
            tt = np.clip(((np.column_stack([xs, ys]) - p0) @ d) / (d @ d), 0, 1)
            dist = np.hypot(*(np.column_stack([xs, ys]) - (p0 + tt[:, None] * d)).T)
            assert len(xs) > 100 and dist.max() < 3.0  # 3-px line: within 1.5 px + codec
        else:
            assert cy_mask.sum() == 0
    assert np.hypot(*(centres[-1] - centres[0])) > 10  # it followed the anatomy


def test_mp4_times_are_the_capture_times(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.mp4"
    replay_to_mp4(recording, out, annotations="none")
    with av.open(str(out)) as c:
        st = c.streams.video[0]
        pts = sorted(float(f.pts * f.time_base) for f in c.decode(st))
    np.testing.assert_allclose(np.diff(pts), 1 / FPS, atol=2e-3)
    frames = _read_mp4(out)
    assert all(_mask(f, "magenta").sum() == 0 for f in frames)  # not drawn, not in the video


def test_station_drawn_annotations_are_not_drawn_twice(tmp_path: Path) -> None:
    p = tmp_path / "s.mcap"
    record(p, annotations_in_video=True)
    assert open_recording(p).annotations_in_video
    rep = replay_to_mp4(p, tmp_path / "a.mp4")
    assert not rep.drew_annotations and rep.annotated == 0
    rep = replay_to_mp4(p, tmp_path / "b.mp4", annotations="draw")
    # from frame 2 on something is drawn (A, or B while tracking is lost)
    assert rep.drew_annotations and rep.annotated == N_FRAMES - 2


def test_bad_inputs_are_one_line_errors(recording: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.mcap"
    text.write_text("not mcap")
    with pytest.raises(RecordingError, match="notes.mcap: not an MCAP file"):
        replay_to_mp4(text, tmp_path / "x.mp4")
    other = tmp_path / "other.mcap"
    with open(other, "wb") as fh:
        w = Writer(fh)
        w.start(profile="ros2", library="test")
        w.finish()
    with pytest.raises(RecordingError, match="not a Scrub In session recording"):
        replay_to_mp4(other, tmp_path / "x.mp4")
    with pytest.raises(RecordingError, match="no such file"):
        replay_to_mp4(tmp_path / "missing.mcap", tmp_path / "x.mp4")
    with pytest.raises(RecordingError, match="expected a .mp4"):
        replay_to_mp4(recording, tmp_path / "x.avi")
    with pytest.raises(RecordingError, match="annotations must be one of"):
        replay_to_mp4(recording, tmp_path / "x.mp4", annotations="some")
    truncated = tmp_path / "cut.mcap"
    truncated.write_bytes(recording.read_bytes()[: recording.stat().st_size // 2])
    with pytest.raises(RecordingError, match="cut.mcap"):
        replay_to_mp4(truncated, tmp_path / "x.mp4")
    empty = tmp_path / "empty.mcap"
    Recorder(empty, True, "s").start().close()  # a session that never sent a frame
    assert open_recording(empty).info["session_id"] == "s"
    with pytest.raises(RecordingError, match="no decodable video frame"):
        replay_to_mp4(empty, tmp_path / "x.mp4")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cut.mcap", "empty.mcap",
                                                          "notes.mcap", "other.mcap"]
