"""Cut between commit and ack, and a server killed with SIGKILL mid-session.

* Commit-then-cut: the server stores a mentor's event, but the ack is held on the way back
  (the relay holds server -> mentor bytes) and the connection is then reset; the annotation
  stream reconnects and resends the event, and the server answers with the original seq - the
  event is stored and broadcast once.
* kill -9: ``scrubin serve`` in a subprocess is killed (SIGKILL: no shutdown code runs) while a
  mentor's event is committed but not yet acknowledged; a new server process on the same
  ports and database takes over; the surgeon's and the mentor's streams and a live surgeon
  station (Signal, Annotations, telemetry) reconnect by themselves; the session, every
  annotation (once each, seqs 1..N without a gap) and the audit log from
  before the kill are there, and the resent event is not applied twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid

import pytest

from scrubin.mentor.client import MentorClient
from scrubin.mentor.impair import Impairment
from scrubin.mentor.impair_relay import TcpRelay
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.mentor.store import Store
from tests.mentor.fault_harness import moving_source
from tests.mentor.live_station import LiveStation


def _event(aid: str, i: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "op": "create" if i == 0 else "update",
            "annotation_id": aid, "kind": "freehand", "frame_id": 1,
            "capture_time": time.time(), "points": [[0.1 + 0.01 * k, 0.5] for k in range(i + 1)]}


async def _stored(db, session_id: str, event_id: str, timeout: float = 10.0) -> list[int]:
    """Seqs under which ``event_id`` is in the database (read by a separate connection)."""
    t_end = time.time() + timeout
    while True:
        store = Store(db)
        try:
            seqs = [s for s, e in store.events_after(session_id, 0) if e["event_id"] == event_id]
        finally:
            store.close()
        if seqs or time.time() > t_end:
            return seqs
        await asyncio.sleep(0.05)


async def _drain(stream, n: int, timeout: float = 20.0) -> list[tuple[int, dict]]:
    out = []
    t_end = time.time() + timeout
    while len(out) < n and time.time() < t_end:
        try:
            out.append(await asyncio.wait_for(stream.events.get(), 0.5))
        except TimeoutError:
            pass
    await asyncio.sleep(0.5)            # anything extra (a duplicate) would arrive now
    while not stream.events.empty():
        out.append(stream.events.get_nowait())
    return out


async def _commit_then_cut(tmp_path) -> dict:
    server = MentorServer(ServerConfig(db=tmp_path / "mentor.db", port=0, grpc_port=0))
    await server.start()
    made = await server.hub.db(server.hub.store.new_session, False, "cut")
    host, port = server.grpc_target.rsplit(":", 1)
    relay = TcpRelay((host, int(port)), Impairment(), Impairment())
    await relay.start()
    surgeon = MentorClient(server.grpc_target, made.tokens["surgeon"], server.cert_path, "S")
    mentor = MentorClient(relay.target_str, made.tokens["mentor"], server.cert_path, "M")
    s_ann, m_ann = surgeon.annotations(), mentor.annotations()
    await s_ann.start()
    await m_ann.start()
    try:
        aid = str(uuid.uuid4())
        first = await m_ann.send(_event(aid, 0))
        relay.down.blackout(asyncio.get_running_loop().time(), 1.5)   # acks held from now
        ev = _event(aid, 1)
        send = asyncio.ensure_future(m_ann.send(ev))
        stored = await _stored(server.hub.store.path, made.session_id, ev["event_id"])
        acked_before_cut = send.done()
        relay.reset_all()                                   # the held ack is lost
        seq = await asyncio.wait_for(send, 20)
        seen = await _drain(s_ann, 2)
        audit = server.hub.store.audit_log(made.session_id)
        return {"first": first, "stored": stored, "acked_before_cut": acked_before_cut,
                "seq": seq, "seen": [(s, e["event_id"]) for s, e in seen],
                "event_id": ev["event_id"], "connects": m_ann.connects,
                "resets": relay.resets, "audit_actions": [a["action"] for a in audit]}
    finally:
        await s_ann.close()
        await m_ann.close()
        await surgeon.close()
        await mentor.close()
        await relay.close()
        await server.stop()


@pytest.mark.timeout(60)
def test_cut_between_commit_and_ack_applies_once(tmp_path):
    out = asyncio.run(_commit_then_cut(tmp_path))
    assert len(out["stored"]) == 1 and not out["acked_before_cut"]
    assert out["resets"] >= 1 and out["connects"] >= 2           # it did reconnect and resend
    assert out["seq"] == out["stored"][0] == out["first"] + 1      # the original seq
    assert [s for s, _ in out["seen"]] == [1, 2]                  # the surgeon: once each
    assert out["seen"][1][1] == out["event_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start_server(db, https: int, grpc_port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scrubin", "serve", "--db", str(db), "--port", str(https),
        "--grpc-port", str(grpc_port), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    t_end = time.time() + 60
    lines = []
    while time.time() < t_end:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            break
        lines.append(line.decode())
        if line.startswith(b"ports:"):
            return proc
    proc.kill()
    raise AssertionError(f"scrubin serve did not start: {''.join(lines)}")


async def _kill9(tmp_path) -> dict:
    db = tmp_path / "state" / "mentor.db"
    db.parent.mkdir()
    store = Store(db)
    made = store.new_session(False, "restart")
    store.close()
    https, grpc_port = _free_port(), _free_port()
    proc = await _start_server(db, https, grpc_port)
    cert = db.parent / "tls-cert.pem"
    target = f"127.0.0.1:{grpc_port}"
    relay = TcpRelay(("127.0.0.1", grpc_port), Impairment(), Impairment())
    await relay.start()
    surgeon = MentorClient(target, made.tokens["surgeon"], cert, "S")
    mentor = MentorClient(relay.target_str, made.tokens["mentor"], cert, "M")
    station = LiveStation(target, made.tokens["surgeon"], str(cert), moving_source(320, 180),
                          None, 320, 180, 15.0)
    await asyncio.to_thread(station.start)
    out: dict = {"online_before": (await mentor.join()).surgeon_online}
    s_ann, m_ann = surgeon.annotations(), mentor.annotations()
    await s_ann.start()
    await m_ann.start()
    try:
        aid = str(uuid.uuid4())
        sent = [_event(aid, i) for i in range(8)]
        seqs = [await m_ann.send(e) for e in sent[:3]]
        # event 4: committed, its ack held, then the server dies
        relay.down.blackout(asyncio.get_running_loop().time(), 2.0)
        pending = asyncio.ensure_future(m_ann.send(sent[3]))
        out["stored_before_kill"] = await _stored(db, made.session_id, sent[3]["event_id"])
        out["acked_before_kill"] = pending.done()
        audit_before = Store(db)
        out["audit_before"] = audit_before.audit_log(made.session_id)
        audit_before.close()
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        relay.reset_all()
        t_kill = time.time()
        # events drawn while the server is down go out once it is back
        later = [asyncio.ensure_future(m_ann.send(e)) for e in sent[4:]]
        await asyncio.sleep(1.0)
        proc = await _start_server(db, https, grpc_port)
        seqs.append(await asyncio.wait_for(pending, 30))
        seqs += await asyncio.wait_for(asyncio.gather(*later), 30)
        out["resumed_s"] = time.time() - t_kill
        out["seqs"] = seqs
        out["sent_ids"] = [e["event_id"] for e in sent]
        await asyncio.sleep(1.0)                  # the station's anchor of the settled stroke
        store = Store(db)
        n_stored = len(store.events_after(made.session_id, 0))
        store.close()
        seen = await _drain(s_ann, n_stored)
        out["seen"] = [(s, e["event_id"]) for s, e in seen]
        out["station_events"] = [(s, e["event_id"]) for s, e in list(station.events)]
        # the session is still there, and the station's Signal call is back (it reopens it)
        t_end = time.time() + 20
        while not (await mentor.join()).surgeon_online and time.time() < t_end:
            await asyncio.sleep(0.2)
        out["station_back_s"] = time.time() - t_kill
        out["online_after"] = (await mentor.join()).surgeon_online
        store = Store(db)
        out["stored"] = [(s, e["event_id"]) for s, e in store.events_after(made.session_id, 0)]
        out["audit_after"] = store.audit_log(made.session_id)
        store.close()
        out["connects"] = (s_ann.connects, m_ann.connects)
    finally:
        await asyncio.to_thread(station.stop)
        await s_ann.close()
        await m_ann.close()
        await surgeon.close()
        await mentor.close()
        await relay.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return out


@pytest.mark.timeout(120)
def test_server_kill9_mid_session_loses_and_duplicates_nothing(tmp_path):
    out = asyncio.run(_kill9(tmp_path))
    assert len(out["stored_before_kill"]) == 1 and not out["acked_before_kill"]
    # the station anchors the mentor's stroke too (its own "anchor" events share the seqs)
    stored, ids = out["stored"], out["sent_ids"]
    assert [s for s, _ in stored] == list(range(1, len(stored) + 1))
    assert len({e for _, e in stored}) == len(stored)               # nothing applied twice
    mine = [x for x in stored if x[1] in set(ids)]
    assert [e for _, e in mine] == ids and [s for s, _ in mine] == out["seqs"]
    assert out["seen"] == stored                          # the surgeon: every event once
    assert out["connects"][0] >= 2 and out["connects"][1] >= 2
    assert out["audit_after"][:len(out["audit_before"])] == out["audit_before"]
    assert any(a["action"] == "session_new" for a in out["audit_after"])
    # the live station came back online by itself and applied every event once, in order
    assert out["online_before"] and out["online_after"], out["station_back_s"]
    assert [x for x in out["station_events"] if x[1] in set(ids)] == mine
