"""Session recording: what the frame loop pays per frame, and what the writer thread does.

Frames: 30 frames (played 4 times) of the synthetic surgical scene (small phantom,
1280x720 + strip), encoded once by the station's :class:`~scrubin.mentor.media.StreamEncoder`
(ultrafast, 2.5 Mb/s), with their :class:`~scrubin.mentor.station_meta.FrameMeta` and one
anchored annotation.

Ours = :meth:`scrubin.mentor.recording.Recorder.add_frame` on the calling (frame-loop) thread:
the packet bytes and the metadata are queued, the writer thread does the rest (Foxglove video,
calibration, transforms, image annotations, frame JSON, zstd chunks). Peer = the same video
and transforms written synchronously on the calling thread with ``mcap_protobuf``'s
``Writer`` (the straightforward recorder, zstd chunks), i.e. what the frame loop would pay
without the queue. Both write to files in a temporary folder; times are per frame, medians
of interleaved runs. The last line is the writer thread's own cost per frame (all channels),
which bounds the sustainable frame rate of the recorder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from benchmarks.common import ratio_line

N_FRAMES = 30
RUNS = 5
REPEAT = 4


def _stream() -> tuple[list[list[bytes]], list[object]]:
    from scrubin.mentor.media import StreamEncoder
    from scrubin.mentor.station_meta import FrameMeta
    from scrubin.mentor.strip import with_strip
    from scrubin.samples.synthetic import SyntheticScene

    scene = SyntheticScene.from_phantom("small", n_frames=N_FRAMES, supersample=1,
                                        plate_supersample=1)
    enc = StreamEncoder(1280, 736, 30.0)
    m = scene.camera.matrix
    metas, packets = [], []
    for k in range(N_FRAMES):
        meta = FrameMeta(1000 + k, 1.79e9 + k / 30, 1280, 720,
                         (m[0, 0], m[1, 1], m[0, 2], m[1, 2]), tuple(scene.camera.dist),
                         scene.T_camera_ref(k).matrix, scene.T_ref_ct.matrix, "LIVE", 0.3, 0.9,
                         {"track": 2.0, "render": 5.0, "encode": 3.0})
        packets.append([bytes(p) for p in enc.encode(with_strip(scene.render(k).image_bgr,
                                                                meta.frame_id), k * 3000)])
        metas.append(meta)
    return packets, metas


def main() -> None:
    import dataclasses

    from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
    from mcap_protobuf.writer import Writer

    from scrubin.mentor.recording import Recorder
    from scrubin.mentor.recording_schema import transforms_message

    packets, metas = _stream()
    # the 30 encoded frames played 4 times (new ids and times): fixed costs amortised
    metas = [dataclasses.replace(m, frame_id=m.frame_id + r * N_FRAMES,
                                 capture_time=m.capture_time + r * N_FRAMES / 30)
             for r in range(REPEAT) for m in metas]
    packets = packets * REPEAT
    anchor = [0.0, 0.0, 0.0]  # REF mm
    ours, peer, writer = [], [], []
    with tempfile.TemporaryDirectory() as d:
        for run in range(RUNS + 1):
            p = Path(d) / f"ours{run}.mcap"
            rec = Recorder(p, True, "bench", annotations_in_video=False).start()
            rec.add_event(1, {"op": "create", "annotation_id": "a", "points": [[0.5, 0.5]],
                              "author": "mentor:M"}, metas[0].capture_time)
            rec.add_event(2, {"op": "anchor", "annotation_id": "a", "anchors_ref_mm": [anchor],
                              "anchor_state": "anchored"}, metas[0].capture_time)
            t = []
            t_first = time.perf_counter()
            for pk, meta in zip(packets, metas, strict=True):
                t0 = time.perf_counter()
                rec.add_frame(pk, meta)
                t.append(time.perf_counter() - t0)
            rec.close()
            total = time.perf_counter() - t_first  # frames arrive at once: the writer's time
            q = Path(d) / f"peer{run}.mcap"
            tp = []
            with open(q, "wb") as fh:
                w = Writer(fh)
                for pk, meta in zip(packets, metas, strict=True):
                    t0 = time.perf_counter()
                    v = CompressedVideo(frame_id="camera", data=b"".join(pk), format="h264")
                    ns = int(meta.capture_time * 1e9)
                    v.timestamp.FromNanoseconds(ns)
                    w.write_message("/station/video", v, log_time=ns, publish_time=ns)
                    w.write_message("/tf", transforms_message(meta.to_json()), log_time=ns,
                                    publish_time=ns)
                    tp.append(time.perf_counter() - t0)
                w.finish()
            if run:  # the first run warms imports and caches
                ours.append(median(t))
                peer.append(median(tp))
                writer.append(total / len(metas))
                size = p.stat().st_size / len(metas)
    print(ratio_line("frame-loop cost per frame: Recorder.add_frame (queued)", ours, peer,
                     "mcap_protobuf Writer inline (video + tf)"))
    print(f"add_frame median {median(ours) * 1e6:.0f} us per frame on the frame-loop thread")
    print(f"writer thread, all channels: {median(writer) * 1e3:.2f} ms per frame (all "
          f"{len(metas)} frames queued at once, to the file's close; {size / 1e3:.1f} kB "
          "per frame on disk, low because the repeated frames compress)")
    print(f"video alone: {np.mean([sum(map(len, pk)) for pk in packets]) / 1e3:.1f} kB per "
          "frame (2.5 Mb/s)")
