"""``scrubin track``: a short H.264 video of a rendered marker at known poses, with a gap."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.cli import main
from scrubin.registration.bodies import RigidBody
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import Transform
from scrubin.registration.markers import get_dictionary, marker_object_points
from scrubin.samples.synth_images import look_at_pose, marker_plane, render

CAM = CameraModel(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), np.zeros(5),
                  640, 480)
# presentation times (s): 30 fps, then the marker leaves and the clock jumps (stale, lost)
TIMES = [0.0, 1 / 30, 2 / 30, 3 / 30, 4 / 30, 8 / 30, 1.0, 5.0, 5.0 + 1 / 30, 5.0 + 2 / 30]
VISIBLE = [True, True, True, True, True, False, False, False, True, True]


def _truth(k: int) -> Transform:
    return look_at_pose([-30 + 5 * k, 10 - 2 * k, 330 + 5 * k], [20, -10 + 2 * k, 8 * k], "MARKER")


def _write_video(path: Path) -> None:
    d = get_dictionary("DICT_4X4_50")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for k, (t, vis) in enumerate(zip(TIMES, VISIBLE, strict=True)):
            planes = [marker_plane(d, 6, 40, _truth(k))] if vis else []
            img = render(CAM, planes, noise_sigma=1.0, seed=k, supersample=2)
            frame = av.VideoFrame.from_ndarray(img, format="gray").reformat(format="yuv420p")
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("track")
    _write_video(folder / "clip.mp4")
    CAM.save(folder / "camera.json")
    return folder / "clip.mp4", folder / "camera.json"


def _err(pose: dict, truth: Transform) -> tuple[float, float]:
    m = np.asarray(pose["matrix"])
    dt = float(np.linalg.norm(m[:3, 3] - truth.translation))
    dr = Rotation.from_matrix(m[:3, :3].T @ truth.rotation).magnitude()
    return dt, float(np.degrees(dr))


def test_track_single_marker(video, tmp_path, capsys):
    clip, cam = video
    out = tmp_path / "poses.json"
    rc = main(["track", str(clip), "--camera", str(cam), "--marker-size", "40",
               "--dictionary", "DICT_4X4_50", "--json", str(out), "--stale-after", "0.2",
               "--lost-after", "2", "--no-filter"])
    assert rc == 0
    assert "10 frames, detected in 7" in capsys.readouterr().out
    data = json.loads(out.read_text())
    frames = data["frames"]
    assert data["meta"]["pose"] == "T_CAMERA_MARKER" and len(frames) == 10
    np.testing.assert_allclose([f["timestamp"] for f in frames], TIMES, atol=1e-3)
    states = [f["state"] for f in frames]
    assert states == ["LIVE"] * 5 + ["HELD", "STALE", "LOST", "LIVE", "LIVE"]
    for k, f in enumerate(frames):
        assert f["detected"] == VISIBLE[k]
        if f["detected"]:
            dt, dr = _err(f["pose"], _truth(k))
            assert dt < 1.5 and dr < 1.0, (k, dt, dr)  # H.264 at crf 12
            assert f["n_corners"] == 4 and f["marker_ids"] == [6]
    assert frames[5]["age_s"] == pytest.approx(4 / 30, abs=1e-3)
    assert frames[7]["pose"] is None


def test_track_body_with_filter(video, tmp_path):
    clip, cam = video
    body = RigidBody("REF", {6: marker_object_points(40)}, "DICT_4X4_50")
    body.save(tmp_path / "body.json")
    out = tmp_path / "poses.json"
    assert main(["track", str(clip), "--camera", str(cam), "--body", str(tmp_path / "body.json"),
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    frames = data["frames"]
    assert frames[0]["pose"]["from"] == "REF"
    assert _err(frames[9]["raw_pose"], _truth(9))[0] < 1.5
    # the shared defaults (0.1 s / 0.5 s): frame 5 (4 frames after the last one seen) is STALE
    assert data["meta"]["stale_after_s"] == 0.1 and data["meta"]["lost_after_s"] == 0.5
    assert [f["state"] for f in frames] == ["LIVE"] * 5 + ["STALE", "LOST", "LOST", "LIVE",
                                                          "LIVE"]


STILL = look_at_pose([10, -5, 420], [25, -10, 0], "MARKER")


@pytest.fixture(scope="module")
def still_video(tmp_path_factory) -> Path:
    """24 frames (30 fps) of a still marker under heavy pixel noise: jitter to filter."""
    path = tmp_path_factory.mktemp("still") / "still.mp4"
    d = get_dictionary("DICT_4X4_50")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for k in range(24):
            img = render(CAM, [marker_plane(d, 6, 40, STILL)], noise_sigma=8.0, seed=100 + k,
                         supersample=1)
            frame = av.VideoFrame.from_ndarray(img, format="gray").reformat(format="yuv420p")
            frame.pts = round(k * 1000 / 30)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_track_filter_smooths_the_written_pose(still_video, video, tmp_path):
    """The written ``pose`` is the filtered one: less jitter than ``raw_pose``, no bias."""
    _, cam = video
    out = tmp_path / "f.json"
    assert main(["track", str(still_video), "--camera", str(cam), "--marker-size", "40",
                 "--json", str(out)]) == 0
    frames = json.loads(out.read_text())["frames"]
    assert all(f["detected"] and f["state"] == "LIVE" for f in frames)
    tail = frames[12:]  # after the filter has learnt the noise (9 samples pass unfiltered)
    pose = np.array([np.asarray(f["pose"]["matrix"])[:3, 3] for f in tail])
    raw = np.array([np.asarray(f["raw_pose"]["matrix"])[:3, 3] for f in tail])
    jitter_pose = float(np.linalg.norm(np.std(pose, axis=0)))
    jitter_raw = float(np.linalg.norm(np.std(raw, axis=0)))
    assert jitter_raw > 0.05  # there is jitter to remove
    assert jitter_pose < 0.6 * jitter_raw, (jitter_pose, jitter_raw)
    assert np.linalg.norm(pose.mean(axis=0) - STILL.translation) < 1.0
    off = tmp_path / "nf.json"
    assert main(["track", str(still_video), "--camera", str(cam), "--marker-size", "40",
                 "--json", str(off), "--no-filter"]) == 0
    for f in json.loads(off.read_text())["frames"]:
        np.testing.assert_array_equal(f["pose"]["matrix"], f["raw_pose"]["matrix"])


def test_track_errors_are_one_line(video, tmp_path, capsys):
    clip, cam = video
    out = tmp_path / "p.json"
    assert main(["track", str(tmp_path / "none.mp4"), "--camera", str(cam),
                 "--marker-size", "40", "--json", str(out)]) == 2
    assert "none.mp4: video not found" in capsys.readouterr().err
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    assert main(["track", str(tmp_path / "junk.mp4"), "--camera", str(cam),
                 "--marker-size", "40", "--json", str(out)]) == 2
    assert "junk.mp4: not a readable video" in capsys.readouterr().err
    assert main(["track", str(clip), "--camera", str(cam), "--marker-size", "0",
                 "--json", str(out)]) == 2
    assert "marker size must be > 0 mm" in capsys.readouterr().err
    assert main(["track", str(clip), "--camera", str(cam), "--marker-size", "40",
                 "--dictionary", "DICT_NOPE", "--json", str(out)]) == 2
    assert "unknown ArUco dictionary" in capsys.readouterr().err
    assert main(["track", str(clip), "--camera", str(tmp_path / "nocam.json"),
                 "--marker-size", "40", "--json", str(out)]) == 2
    assert not out.exists()
