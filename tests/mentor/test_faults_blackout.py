"""Link blackouts of the mentor's whole network (media relay and gRPC relay) mid-stroke.

3 s here (30 s in benchmarks/bench_faults.py). Both sides notice within 2 s through the
application heartbeat (the station: no packet from the viewer for 1.25 s, mentor/station.py;
the viewer: no packet for 1 s), the viewer reconnects by itself with a new peer connection
(aiortc has no ICE restart) and video resumes within 5 s of the link's return; the stroke's
events drawn during the blackout arrive after it, each exactly once and in order. With the
gRPC link held ("stall", TCP across a short outage) and with every connection reset at the
cut ("reset": the annotation stream reconnects and resends; the server dedupes by event id,
so an event committed before the cut whose ack was lost is not applied twice).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.mentor.fault_scenarios import blackout_run


@pytest.mark.timeout(90)
@pytest.mark.parametrize("tcp_mode", ["stall", "reset"])
def test_3s_blackout_detected_reconnected_exactly_once(tmp_path, tcp_mode):
    out = asyncio.run(blackout_run(tmp_path, 3.0, tcp_mode))
    print(out)
    assert out["viewer_lost_after_s"] is not None and out["viewer_lost_after_s"] <= 2.0, out
    assert out["station_lost_after_s"] is not None and out["station_lost_after_s"] <= 2.0, out
    assert out["new_peer_connections"] >= 1
    assert out["resumed_after_return_s"] is not None and out["resumed_after_return_s"] <= 5.0
    ids, seqs, saw = out["stroke"]
    mine = [(s, e) for s, e in saw if e in set(ids)]
    assert [e for _, e in mine] == ids, "each stroke event once, in the order drawn"
    assert [s for s, _ in mine] == seqs == sorted(seqs)
    if tcp_mode == "reset":
        assert out["tcp_resets"] >= 1
