"""The pipeline sink of the station: frame ids, per-frame metadata, annotations in place."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scrubin.mentor.annotations_draw import AnnotationBoard
from scrubin.mentor.errors import MentorError
from scrubin.mentor.media import StreamEncoder, VideoFanout
from scrubin.mentor.station import SurgeonStation
from scrubin.mentor.station_sink import ID_EPOCH_UNIX, FrameIds, StationSink
from scrubin.overlay.pipeline import Registration
from scrubin.overlay.sinks import SinkItem
from scrubin.registration.camera import CameraModel
from scrubin.registration.frames import CAMERA, CT, REF, Transform


def _rigid(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.eye(4)
    m[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    m[:3, 3] = rng.uniform(-200, 200, 3)
    return m


def test_frame_ids_monotonic_and_unique_across_restarts() -> None:
    ids = FrameIds()
    t = ID_EPOCH_UNIX + 1000.0
    a = [ids.next(t + k / 240) for k in range(240)]  # 240 frames/s for 1 s: faster than 60 Hz
    assert a == list(range(a[0], a[0] + 240))
    assert a[0] == 60_000
    restarted = FrameIds()  # a new station process 1 s later, same session
    assert restarted.next(t + 5.0) > a[-1]
    # at the wrap (2^32 ticks of 1/60 s after the epoch) the reserved id 0 is skipped
    wrap = FrameIds()
    t_wrap = ID_EPOCH_UNIX + 2 ** 32 / 60.0
    assert wrap.next(t_wrap - 1 / 60) == 2 ** 32 - 1 and wrap.next(t_wrap) == 1


def test_meta_and_annotations_in_place() -> None:
    t_ref_ct, t_cam_ref = _rigid(1), _rigid(2)
    cam = CameraModel(np.array([[500.0, 0, 159.5], [0, 500.0, 89.5], [0, 0, 1]]),
                      np.array([-0.1, 0.02, 0, 0, 0]), 320, 180)
    reg = Registration(Transform(t_ref_ct, CT, REF), fre_mm=0.4, tre_mm=0.9)

    async def go() -> None:
        station = SurgeonStation(VideoFanout(StreamEncoder(320, 196)))
        station.loop = asyncio.get_running_loop()
        board = AnnotationBoard()
        board.apply(1, {"op": "create", "annotation_id": "a", "kind": "freehand",
                        "color": "#00ff00", "author": "mentor:X", "frame_id": 1,
                        "points": [[0.25, 0.5], [0.75, 0.5]]})
        got = []
        sink = StationSink(station, board, cam, reg, got.append)
        img = np.zeros((180, 320, 3), np.uint8)
        t_cam_ct = Transform(t_cam_ref @ t_ref_ct, CT, CAMERA)
        sink.write(SinkItem(7, 0.5, img, "LIVE", t_cam_ct.to_json(),
                            {"capture_time_unix": 1.8e9}))
        sink.write(SinkItem(8, 0.6, img.copy(), "LOST", None))
        m0, m1 = got
        np.testing.assert_allclose(m0.T_camera_ref, t_cam_ref, atol=1e-9)
        np.testing.assert_allclose(m0.T_ref_ct, t_ref_ct)
        assert m0.capture_time == 1.8e9 and m0.K == (500.0, 500.0, 159.5, 89.5)
        assert (m0.fre_mm, m0.tre_mm, m0.tracking) == (0.4, 0.9, "LIVE")
        assert m1.T_camera_ref is None and m1.tracking == "LOST" and m1.frame_id > m0.frame_id
        assert img[89:91, 90:230, 1].max() == 255  # the stroke drawn into the caller's image
        assert station.fanout.encoder.frames == 2 and len(station.history) == 2
        with pytest.raises(MentorError, match="streams 320x180"):
            sink.write(SinkItem(9, 0.7, np.zeros((100, 100, 3), np.uint8), "LOST", None))
        await station.close()
    asyncio.run(go())
