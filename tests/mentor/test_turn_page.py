"""The mentor page asks the server for a TURN credential issued now before every new peer
connection (mentor/static/ice.js, ``POST /api/ice-servers``), so a reconnect after the
welcome's credential expired still allocates. Real headless Chromium, the real server with
5-s TURN credentials, a real coturn (tests/mentor/coturn_netns.py); truth: coturn's log
(which usernames it allocated for, and when) and the server's audit log."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest

from tests.mentor import coturn_netns
from tests.mentor.browser import new_page

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("_coturn_required")]

TTL_S = 5
CONFIG_JS = """() => { const pc = window.scrubin.state.pc;
  return pc ? pc.getConfiguration().iceServers.filter((s) => s.username)
                .map((s) => s.username) : null; }"""


class TurnServerThread:
    """A real MentorServer with TURN on its own loop thread (tests/mentor/browser.py's
    ServerThread, with the TURN options)."""

    def __init__(self, tmp, turn) -> None:
        from scrubin.mentor.server import MentorServer, ServerConfig

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = MentorServer(ServerConfig(
            db=tmp / "mentor.db", host="127.0.0.1", port=0, grpc_port=0,
            ice_hosts=["127.0.0.1"], turn=[turn.turns_url()],
            turn_secret_file=turn.secret_file, turn_ttl_s=TTL_S))
        self.call(self.server.start)

    def call(self, fn, *args):
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(30)

    def db(self, fn, *args):
        async def run():
            return await self.server.hub.db(fn, *args)
        return self.call(run)

    def stop(self) -> None:
        self.call(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _start_peer(page) -> list[str]:
    """restartPeer (what the page does after a lost link) and the TURN usernames its new
    RTCPeerConnection was configured with, once gathering is over."""
    page.evaluate("() => window.scrubin.restartPeer()")
    page.wait_for_function("() => window.scrubin.state.pc"
                           " && window.scrubin.state.pc.iceGatheringState === 'complete'",
                           timeout=15000)
    return page.evaluate(CONFIG_JS)


def test_page_gets_a_fresh_turn_credential_for_each_peer_connection(chromium, tmp_path):
    with coturn_netns.coturn(tmp_path) as turn:
        server = TurnServerThread(tmp_path, turn)
        try:
            made = server.db(server.server.hub.store.new_session, False, "test")
            page = new_page(chromium)
            page.goto(f"{server.server.url}/m/{made.session_id}#token={made.tokens['mentor']}")
            page.wait_for_function("() => window.scrubin && window.scrubin.session"
                                   " && window.scrubin.session.welcome", timeout=15000)
            welcome_user = page.evaluate("() => window.scrubin.session.welcome.ice_servers"
                                         ".filter((s) => s.username)[0].username")
            first = _start_peer(page)
            first_at = time.time()
            time.sleep(max(0.0, int(first[0].split(":")[0]) - time.time() + 1.0))
            second = _start_peer(page)      # the first credential has expired by now
            second_at = time.time()
            errors = list(page.errors)
            page.context.close()
            audit = server.db(server.server.hub.store.audit_log)
        finally:
            server.stop()
        log = turn.log_matching(*(rf"user <{re.escape(u[0])}>: .*ALLOCATE processed, success"
                                  for u in (first, second) if len(u) == 1))
    assert len(first) == 1 and len(second) == 1
    u1, u2 = first[0], second[0]
    assert len({welcome_user, u1, u2}) == 3
    assert int(u1.split(":")[0]) < second_at - 0.5          # expired before the reconnect
    assert int(u2.split(":")[0]) >= second_at + TTL_S - 2   # issued for the reconnect
    assert u1.split(":")[1].startswith(f"{made.session_id}.mentor.")
    # Chromium allocated with each fresh credential (a relay candidate was gathered)
    for user in (u1, u2):
        assert re.search(rf"user <{re.escape(user)}>: .*ALLOCATE processed, success", log), \
            log[-3000:]
    issued = [x["detail"] for x in audit if x["action"] == "turn_credential"]
    assert issued == [f"web username={u1}", f"web username={u2}"]
    assert first_at < second_at
    assert [e for e in errors if "ice-servers" in e] == []
