"""The surgeon's hide / show / clear-all from a headless station: ``run_surgeon`` with a
control FIFO against a real server (gRPC + TLS on 127.0.0.1); commands written to the pipe
reach the server as the surgeon's ``hide_all`` / ``show_all`` / ``clear_all`` events (the
server's store is the truth), and the station's own board applies them. The CLI refuses a
``--control-fifo`` that is not a pipe with one ``scrubin: error:`` line."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from scrubin.cli import main
from scrubin.mentor.client import MentorClient
from scrubin.mentor.server import MentorServer, ServerConfig
from scrubin.workflows.overlay import OverlayRequest
from scrubin.workflows.surgeon import SurgeonRequest, run_surgeon


async def _surgeon_ops(server: MentorServer, session_id: str) -> list[tuple[str, str]]:
    evs = await server.hub.db(server.hub.store.events_after, session_id, 0)
    # the station's own "anchor" of the mentor's stroke comes whenever it settles: not counted
    return [(e["op"], e["role"]) for _, e in evs if e["op"] != "anchor"]


async def _scenario(tmp_path) -> dict:
    server = MentorServer(ServerConfig(db=tmp_path / "mentor.db", port=0, grpc_port=0,
                                       ice_hosts=["127.0.0.1"]))
    await server.start()
    made = await server.hub.db(server.hub.store.new_session, False, "test")
    fifo = tmp_path / "controls"
    req = SurgeonRequest(
        OverlayRequest("synthetic", tmp_path / "view.mp4", frames=240, width=320, height=180,
                       json_path=tmp_path / "r.json"),
        server.grpc_target, made.tokens["surgeon"], server.cert_path, "theatre 1",
        control_fifo=fifo)
    station = asyncio.create_task(asyncio.to_thread(run_surgeon, req))
    mentor = MentorClient(server.grpc_target, made.tokens["mentor"], server.cert_path, "Dr M")
    out: dict = {}
    try:
        t_end = time.time() + 60
        while not server.hub.surgeon_online(made.session_id):
            assert time.time() < t_end and not station.done(), "station did not come online"
            await asyncio.sleep(0.1)
        out["fifo_mode"] = os.stat(fifo).st_mode & 0o777
        ann = mentor.annotations()
        await ann.start()
        await ann.send({"event_id": str(uuid.uuid4()), "op": "create",
                        "annotation_id": str(uuid.uuid4()), "points": [[0.5, 0.5]],
                        "frame_id": 1})
        want = ["create"]
        for line, op in (("hide", "hide_all"), ("nonsense", None), ("toggle", "show_all"),
                         ("h", "hide_all"), ("clear", "clear_all")):
            with open(fifo, "w") as f:   # a writer that comes and goes, like `echo hide > P`
                f.write(line + "\n")
            if op is None:
                continue
            want.append(op)
            t_end = time.time() + 15
            while [o for o, _ in await _surgeon_ops(server, made.session_id)] != want:
                assert time.time() < t_end, await _surgeon_ops(server, made.session_id)
                await asyncio.sleep(0.05)
        out["ops"] = await _surgeon_ops(server, made.session_id)
        await ann.close()
        out["report"] = await station
        out["n_events"] = await server.hub.db(server.hub.store.last_seq, made.session_id)
    finally:
        await mentor.close()
        if not station.done():
            await asyncio.wait([station], timeout=60)
        await server.stop(0.2)
    return out


def test_fifo_commands_become_surgeon_events(tmp_path) -> None:
    out = asyncio.run(_scenario(tmp_path))
    assert out["fifo_mode"] == 0o600
    assert out["ops"] == [("create", "mentor"), ("hide_all", "surgeon"), ("show_all", "surgeon"),
                          ("hide_all", "surgeon"), ("clear_all", "surgeon")]
    # the station's board applied every event of the session (its own included)
    assert out["report"]["mentor"]["annotations_applied"] == out["n_events"] >= 5


def test_cli_refuses_a_control_path_that_is_not_a_pipe(tmp_path, capsys) -> None:
    f = tmp_path / "plain.txt"
    f.write_text("x")
    rc = main(["surgeon", "--source", "synthetic", "--out", str(tmp_path / "v.mp4"),
              "--mentor", "127.0.0.1:9", "--token", "A" * 43, "--ca-cert", str(f),
              "--control-fifo", str(f)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("scrubin: error:") and "--control-fifo" in err[0]
    assert str(f) in err[0] and not (tmp_path / "v.mp4").exists()
