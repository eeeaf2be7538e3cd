"""Load: one surgeon stream, ten viewers on loopback through our own serving process.

One real Chromium (the mentor page, as an observer: it decodes and displays every frame and
logs capture-to-display latency) and nine light aiortc viewers that count reassembled frames
without decoding (tests/mentor/load_viewers.py); the server + station run in their own process
(tests/mentor/load_host.py) so their CPU is measured apart from this load generator's. A
mentor draws strokes over gRPC meanwhile and a health checker polls ``grpc.health.v1``.
Expected values come from the station's own record of what it sent (capture times, frame
count) and from the server's acks; the figures themselves go to ``make bench``
(benchmarks/bench_mentor_load.py).
"""

from __future__ import annotations

import math

from tests.mentor.load_rig import run

WINDOW_S = 8.0


def test_ten_viewers_one_stream() -> None:
    res = run(viewers=9, seconds=WINDOW_S, chromium=True, annotations=12)
    views = res["viewers"]
    assert len(views) == 10 and "chromium" in views
    sent_in_window = res["station_fps"] * res["window_s"]
    # the station aims at 30 fps; on 2 shared cores it gets what the machine leaves it
    assert res["station_fps"] >= 5.0, res
    for name, v in views.items():
        # every light viewer receives what the station sent (90 %: a queued frame may be
        # replaced by a newer one); Chromium counts *displayed* frames, which its compositor
        # drops too when the two shared cores are busy (75 %)
        share = 0.75 if name == "chromium" else 0.9
        assert v["fps"] >= share * res["station_fps"], (name, v, res["station_fps"],
                                                        res["cpu_cores"])
        assert v["frames"] <= sent_in_window * 1.1, (name, v)   # no frame counted twice
        assert math.isfinite(v["latency_p95_ms"]) and 0 < v["latency_p50_ms"] < 500, (name, v)
        if name != "chromium":
            assert v["calibrated"] >= 3, (name, v)   # frame ids read back through the strip
            # encode once: each viewer gets the very bytes the one encoder made
            assert v["compared"] >= 3 and v["identical"] == v["compared"], (name, v)
    # encode once: one encoder, one packet track per viewer, every station frame encoded once
    assert res["fanout_tracks"] == 10 == res["station_peers"]
    assert abs(res["encoder_frames"] - res["sent_frames"]) <= 1
    # the server stays responsive and drops no annotations
    h = res["health_ms"]
    assert h["failed"] == 0 and h["n"] >= WINDOW_S * 5 and h["p95"] < 250, h
    ann = res["annotations"]
    assert ann["acked"] == ann["sent"] == 12
    assert len(set(ann["acked_seqs"])) == 12
    assert set(ann["acked_seqs"]) <= set(ann["station_seqs"]), ann   # all reached the station
    # CPU accounted per process (cores busy over the window)
    assert res["cpu_cores"]["host"] > 0 and res["cpu_cores"]["loadgen"] > 0
    assert res["cpu_cores"]["chromium"] > 0
