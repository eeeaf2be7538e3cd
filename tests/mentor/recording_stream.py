"""A session-like stream for the recording/replay tests, made of real parts.

Frames: the synthetic phantom scene (ray-cast camera images with true poses), the frame-id
strip, the station's libx264 encoder (:class:`~scrubin.mentor.media.StreamEncoder`, keyframe
every 6 frames). Metadata: the station's :class:`~scrubin.mentor.station_meta.FrameMeta` with
the scene's true ``T_CAMERA_REF`` / ``T_REF_CT`` (tracking LOST, no pose, on frames 10 and 11).
Annotation events (mentor/DESIGN.md form, as the server broadcasts them), interleaved with the
frames in the order a station applies them:

* before frame 2: ``create`` of a one-point magenta mark ``A`` by a mentor (pending, 2-D);
* before frame 4: the station's ``anchor`` of ``A`` on fiducial F1 (REF mm);
* before frame 6: ``create`` of a cyan two-point stroke ``B`` (stays pending: screen space).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

N_FRAMES = 16
STEP = 8                     # scene frames between recorded ones (visible motion)
LOST = (10, 11)
T0_UNIX = 1_790_000_000.0
FPS = 30.0
FIRST_ID = 2_000_000
ANCHOR_FIDUCIAL = "F1_forehead_right"
B_POINTS = [[0.15, 0.8], [0.3, 0.85]]


@dataclass
class Stream:
    """The stream's parts and truth."""

    metas: list[Any]
    packets: list[list[Any]]
    events_before: dict[int, list[tuple[int, dict[str, Any]]]]
    anchor_ref_mm: np.ndarray
    keyframe_ids: list[int] = field(default_factory=list)

    def events(self) -> list[tuple[int, dict[str, Any]]]:
        return [e for k in sorted(self.events_before) for e in self.events_before[k]]


def _event(seq: int, op: str, aid: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    ev = {"event_id": f"ev-{seq}", "op": op, "annotation_id": aid, "author": "mentor:Dr M",
          "role": "mentor", "kind": "freehand", "color": "#ff00ff", "text": "",
          "frame_id": FIRST_ID, "capture_time": T0_UNIX, "points": [], "anchors_ref_mm": [],
          "anchor_state": "pending", "client_time": T0_UNIX}
    ev.update(kw)
    return seq, ev


@functools.lru_cache(maxsize=1)
def stream() -> Stream:
    """Render, strip and encode the frames once per test session."""
    from scrubin.mentor.media import StreamEncoder
    from scrubin.mentor.station_meta import FrameMeta
    from scrubin.mentor.strip import with_strip
    from scrubin.samples.synthetic import SyntheticScene

    scene = SyntheticScene.from_phantom("small", n_frames=N_FRAMES * STEP, supersample=1,
                                        plate_supersample=1)
    enc = StreamEncoder(1280, 736, fps=FPS, keyframe_interval_s=6 / FPS)
    m = scene.camera.matrix
    K = (float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2]))
    dist = tuple(float(d) for d in np.ravel(scene.camera.dist))
    f1 = scene.points_ct_mm[scene.point_names.index(ANCHOR_FIDUCIAL)]
    anchor_ref = scene.T_ref_ct.apply(f1[None])[0]
    metas, packets, keys = [], [], []
    for k in range(N_FRAMES):
        lost = k in LOST
        meta = FrameMeta(FIRST_ID + k, T0_UNIX + k / FPS, 1280, 720, K, dist,
                         None if lost else scene.T_camera_ref(k * STEP).matrix,
                         scene.T_ref_ct.matrix, "LOST" if lost else "LIVE", 0.31, 0.87,
                         {"track": 2.0 + k * 0.1, "render": 5.0, "encode": 3.0})
        img = scene.render(k * STEP).image_bgr
        pk = enc.encode(with_strip(img, meta.frame_id), round(k / FPS * 90000))
        assert pk, "zerolatency encoder: one packet per frame"
        if any(p.is_keyframe for p in pk):
            keys.append(meta.frame_id)
        metas.append(meta)
        packets.append(pk)
    events = {
        2: [_event(1, "create", "A", points=[[0.5, 0.5]])],
        4: [_event(2, "anchor", "A", author="surgeon:station", role="surgeon",
                   anchors_ref_mm=[anchor_ref.tolist()], anchor_state="anchored")],
        6: [_event(3, "create", "B", color="#00ffff", points=B_POINTS)],
    }
    return Stream(metas, packets, events, anchor_ref, keys)


def tone_frames(n: int, hz: float = 440.0, rate: int = 48000, samples: int = 960) -> list[Any]:
    """``n`` consecutive 20-ms mono s16 ``av.AudioFrame`` s of a sine (pts on ``1/rate``)."""
    import fractions

    import av

    out = []
    for k in range(n):
        t = (k * samples + np.arange(samples)) / rate
        f = av.AudioFrame.from_ndarray((8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)[None],
                                       format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = rate, k * samples, fractions.Fraction(1, rate)
        out.append(f)
    return out


def record(path: Path, annotations_in_video: bool = False, voice_frames: int = 0,
           **kw: Any) -> Any:
    """Record :func:`stream` into ``path`` the way the station feeds a recorder; with
    ``voice_frames`` > 0, that many 20-ms frames of a tone as the voice ``station``, one per
    frame period from the first frame's capture time."""
    from scrubin.mentor.recording import Recorder

    s = stream()
    rec = Recorder(path, True, "session-1", "surgeon:station",
                   annotations_in_video=annotations_in_video, **kw).start()
    for k, frame in enumerate(tone_frames(voice_frames)):
        rec.add_audio("station", frame, s.metas[0].capture_time + 0.02 * k)
    for k, (meta, pk) in enumerate(zip(s.metas, s.packets, strict=True)):
        for seq, ev in s.events_before.get(k, []):
            rec.add_event(seq, ev, meta.capture_time - 0.01)
        rec.add_frame(pk, meta)
    return rec.close()
