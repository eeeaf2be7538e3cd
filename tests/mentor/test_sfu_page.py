"""The mentor page watches through Janus: real ``scrubin serve --sfu``, a real Janus, a station
publishing by itself through its StationLink, and the real page in Debian's Chromium.

Everything runs inside a network namespace made by the test (tests/mentor/janus_netns.py;
the rig is tests/mentor/sfu_page_rig.py). Checked against sources other than the page's code:
the frame ids the page read from the strip are frames the station sent, and the metadata the
page holds for each is what the station sent for that id (the pose moves 1 mm per frame); the
bytes came through Janus (Chromium's selected ICE pair ends at Janus's address and media port
range, Janus's admin API shows a subscriber handle on that very pair, the station has no
direct peer and one fan-out track); a restarted server gets the stream again (the station
republishes, the page subscribes again). Without a valid token nothing is subscribed, and
every refusal is in the audit log.
"""

from __future__ import annotations

import json

from tests.mentor.janus_netns import janus_in_netns, needs_janus

RTP_PORTS = (20000, 20999)   # sfu_janus.write_config's default media port range


def _rig(tmp_path, mode: str) -> tuple[dict, str]:
    with janus_in_netns(tmp_path) as env:
        r = env.run_python(["-m", "tests.mentor.sfu_page_rig", "--mode", mode,
                            "--janus-url", env.cfg.url, "--janus-admin", env.cfg.admin_url,
                            "--secrets", str(env.secrets_file), "--address", env.address,
                            "--state", str(tmp_path / "state")], 150)
        assert r.returncode == 0, r.stderr[-4000:] + env.proc.log_tail()
        return json.loads(r.stdout.split("RESULT ", 1)[1]), env.address


def _checked_frames(frames: list[dict], sent: dict[str, list]) -> int:
    """Frames whose metadata the page holds: each is the station's for that frame id."""
    n = 0
    for f in frames:
        if f["T_camera_ref"] is None:
            continue
        assert str(f["frame_id"]) in sent, f           # an id the station sent (strip CRC ok)
        assert f["T_camera_ref"] == sent[str(f["frame_id"])], f
        assert f["K"] == [1536.0, 1536.0, 639.5, 359.5], f
        # same clock; a sanity bound, not a speed figure. The page's display time is
        # Chromium's expectedDisplayTime, its estimate of the vsync that shows the frame:
        # headless, it once came 4 ms before the station's capture stamp (fresh-clone CI,
        # Janus path p50 ~30 ms), so the bound allows one 60 Hz vsync period of estimate
        assert -1 / 60 < f["latency_s"] < 5.0, f
        n += 1
    return n


@needs_janus
def test_observer_page_watches_through_janus(tmp_path) -> None:
    res, address = _rig(tmp_path, "watch")
    page, station = res["page"], res["station"]
    assert page["role"] == "observer" and page["sfu"] and page["peerState"] == "connected", page
    assert page["sfuSubscribes"] == 1 and page["sfuStarted"] == 1 and not page["sfuErrors"]
    # decoded, ids read from the strip, and the per-frame metadata came through Janus
    assert page["framesDecoded"] >= 40 and page["sfuMetaCount"] == page["metaCount"] > 0
    assert page["audioPackets"] > 50, page           # the theatre audio (Opus) too
    assert _checked_frames(res["first"], res["sent"]) >= 30
    assert not page["dc"] and not page["linkLost"]   # no heartbeat owed; no loss declared
    # the bytes came from Janus: the page's pair ends at Janus's media port, on Janus's side
    # a subscriber handle holds that same pair, and the station has no direct viewer
    assert page["remote"]["address"] == address
    assert RTP_PORTS[0] <= page["remote"]["port"] <= RTP_PORTS[1], page
    handles = res["janus"]
    pair = f"{address}:{page['remote']['port']} [host,udp] <-> " \
           f"{page['local']['address']}:{page['local']['port']} [host,udp]"
    assert [h["selected_pair"] for h in handles if h["type"] == "subscriber"] == [pair], handles
    assert [h["display"] for h in handles if h["type"] == "publisher"] == ["surgeon:station"]
    assert station["peers"] == 0 and station["fanout_tracks"] == 1, station   # encoded once
    assert station["publishes"] == 1 and station["meta_sent"] > 0, station
    assert station["keyframe_requests"] >= 1, station   # Janus's PLI reached the encoder
    # mentors keep the direct path: the station answers the mentor's own offer
    assert res["mentor"]["role"] == "mentor" and res["mentor"]["sfuSubscribes"] == 0
    assert res["mentor"]["framesDecoded"] > 20 and res["mentor_station"] == ["mentor"]
    assert res["mentor"]["remote"]["port"] < RTP_PORTS[0] or \
        res["mentor"]["remote"]["port"] > RTP_PORTS[1], res["mentor"]   # not Janus's
    # server restarted: the station published again, the page subscribed again
    after, page2 = res["after"], res["page_after"]
    assert res["station_after"]["publishes"] == 2 and not res["station_after"]["errors"]
    assert res["station_after"]["peers"] == 0
    assert _checked_frames(after, res["sent"]) >= 20
    assert res["resume_s"] < 30, res["resume_s"]     # liveness (1-4 s measured, load 2-21)
    assert page2["sfuStarted"] == 2 and page2["peerState"] == "connected", page2
    # the only page errors: its WebSocket refused while the server was down
    assert all("/api/ws" in e and "ERR_CONNECTION_REFUSED" in e for e in res["page_errors"])
    details = [a["detail"] for a in res["audit"] if a["action"] == "sfu"]
    assert sum(d == "sfu publisher surgeon:station" for d in details) == 2, details
    assert sum(d == "sfu subscription for observer" for d in details) == 2, details
    assert not [a for a in res["audit"] if a["action"] == "sfu_refused"]
    # the page closed: its subscription left Janus, the station's publisher stays
    assert sorted(str(h["type"]) for h in res["janus_after_close"]) == ["None", "publisher"]


@needs_janus
def test_no_subscription_without_a_valid_token(tmp_path) -> None:
    res, _ = _rig(tmp_path, "refused")
    assert res["page"]["error"] == "join refused (401)", res["page"]
    assert res["page"]["sfuSubscribes"] == 0 and "framesDecoded" not in res["page"]   # no pc
    assert res["ws_no_cookie"] == "refused 401"
    assert res["ws_ended_cookie"] == "refused 401"
    assert "sfu-error" in res["ws_answer_first"] and "without an sfu-subscribe" in \
        res["ws_answer_first"], res["ws_answer_first"]
    # Janus: the server's own handle and the station's publisher, no subscriber
    assert sorted(str(h["type"]) for h in res["janus"]) == ["None", "publisher"], res["janus"]
    refused = [a["detail"] for a in res["audit"] if a["action"] == "refused"]
    for what in ("web join: unknown token", "websocket: unknown cookie",
                 "websocket: ended session cookie"):
        assert what in refused, refused
    sfu_refused = [a for a in res["audit"] if a["action"] == "sfu_refused"]
    assert len(sfu_refused) == 1 and sfu_refused[0]["role"] == "observer", sfu_refused
    assert not [a for a in res["audit"] if a["detail"].startswith("sfu subscription")]
