"""The Janus path: a real Janus (Debian ``janus``) in a network namespace made by the test.

Janus, the serving process (server + station publishing once) and the observers run inside
the namespace (tests/mentor/janus_netns.py). Checked: Janus's APIs answer only on the
namespace's 127.0.0.1, and without our server's secrets nobody makes a session, a room, or
joins ours; the station publishes its encoded stream once through our server's ``Signal``
(``sfu-offer``), observers subscribe through it too (``sfu-subscribe``), and every observer
receives the station's frames at its frame rate, byte for byte (no re-encoding).
"""

from __future__ import annotations

import json

import pytest

from scrubin.mentor.sfu import KEEPALIVE_S, JanusSession, SfuError
from scrubin.mentor.sfu_janus import SESSION_TIMEOUT_S, JanusError, write_config
from tests.mentor.janus_netns import janus_in_netns, needs_janus


def test_config_is_locked_down(tmp_path) -> None:
    cfg = write_config(tmp_path / "j", "veth7", address="10.1.2.1", http_port=8089)
    core = (tmp_path / "j" / "janus.jcfg").read_text()
    http = (tmp_path / "j" / "janus.transport.http.jcfg").read_text()
    room = (tmp_path / "j" / "janus.plugin.videoroom.jcfg").read_text()
    assert 'ice_enforce_list = "veth7"' in core and "ignore_mdns = true" in core
    assert f'api_secret = "{cfg.api_secret}"' in core and 'interface = "10.1.2.1"' in core
    assert http.count('ip = "127.0.0.1"') == 2 and "port = 8089" in http   # API + admin
    assert f'admin_key = "{cfg.admin_key}"' in room
    assert sorted(p.name for p in (tmp_path / "j" / "plugins").iterdir()) == [
        "libjanus_videoroom.so"]
    assert sorted(p.name for p in (tmp_path / "j" / "transports").iterdir()) == [
        "libjanus_http.so"]
    assert KEEPALIVE_S < SESSION_TIMEOUT_S <= 60
    assert json.loads(cfg.secrets_json())["admin_key"] == cfg.admin_key


def test_bad_options_refused(tmp_path) -> None:
    with pytest.raises(JanusError, match="interface"):
        write_config(tmp_path, 'eth0"; api_secret = "x')
    with pytest.raises(JanusError, match="address"):
        write_config(tmp_path, "eth0", address="not-an-ip")
    with pytest.raises(SfuError, match="http"):
        JanusSession("ws://127.0.0.1:8188")


@needs_janus
def test_janus_refuses_without_our_secrets(tmp_path) -> None:
    with janus_in_netns(tmp_path) as env:
        r = env.run_python(["-m", "tests.mentor.sfu_probe", env.cfg.url,
                            str(env.secrets_file), env.address], 60)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["http_on_loopback"] == "answered 200"
    assert out["http_on_address"].startswith("refused"), out
    assert out["admin_on_address"].startswith("refused"), out
    for k in ("session_without_apisecret", "session_wrong_apisecret"):
        assert "error 403" in out[k], out            # JANUS_ERROR_UNAUTHORIZED
    # VideoRoom: 429 missing mandatory element, 433 unauthorized (janus_videoroom.c codes)
    for k, code in (("room_without_admin_key", 429), ("room_wrong_admin_key", 433),
                    ("join_wrong_pin", 433), ("join_no_pin", 429),
                    ("destroy_wrong_secret", 433)):
        assert f"error {code}" in out[k], (k, out)
    assert out["room_with_admin_key"] == "ok" and out["join_right_pin"] == "ok", out
    assert out["room_listed"] == "False"             # private: not in the room list


@needs_janus
def test_observers_through_janus(tmp_path) -> None:
    with janus_in_netns(tmp_path) as env:
        r = env.run_python(["-m", "tests.mentor.load_rig", "--viewers", "4", "--seconds", "5",
                            "--janus-url", env.cfg.url, "--janus-secrets",
                            str(env.secrets_file), "--janus-pid", str(env.proc.proc.pid),
                            "--ice-host", env.address, "--annotations", "4"], 120)
        assert r.returncode == 0, r.stderr[-3000:] + env.proc.log_tail()
    res = json.loads(r.stdout.split("RESULT ", 1)[1])
    # published once: no direct peer at the station, one packet track (Janus's)
    assert res["station_peers"] == 0 and res["fanout_tracks"] == 1, res
    assert res["station_fps"] >= 5.0, res    # 30 fps aimed at; 2 shared cores
    for name, v in res["viewers"].items():
        assert v["fps"] >= 0.9 * res["station_fps"], (name, v, res["station_fps"])
        assert v["calibrated"] >= 3, (name, v)      # frame ids of sent frames, CRC-checked
        # forwarded, not re-encoded: the NAL units received are the station's encoder's bytes
        assert v["compared"] >= 3 and v["identical"] == v["compared"], (name, v)
        assert 0 < v["latency_p50_ms"] < 500, (name, v)
    assert res["cpu_cores"]["janus"] > 0
    # the server made the room, took the station's offer and each subscription: audited
    audit = res["sfu_audit"]
    assert sum(a.startswith("sfu room ") for a in audit) == 1, audit
    assert sum(a.startswith("sfu publisher surgeon") for a in audit) == 1, audit
    assert sum(a.startswith("sfu subscription for observer") for a in audit) == 4, audit
    ann = res["annotations"]
    assert ann["acked"] == ann["sent"] and set(ann["acked_seqs"]) <= set(ann["station_seqs"])
