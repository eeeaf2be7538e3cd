"""The SQLite store: tokens kept hashed, seq assignment, dedupe by event_id, durability,
audit (mentor/store.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from scrubin.mentor.errors import MentorError
from scrubin.mentor.events import validate_event
from scrubin.mentor.store import ROLES, Store


def _event(i: int, author: str = "mentor", role: str = "mentor") -> dict:
    return validate_event({"event_id": f"e{i}", "op": "create", "annotation_id": f"a{i}",
                           "points": [[0.25, 0.5], [0.5, 0.75]]}, role, author)


def test_tokens_are_stored_only_as_sha256(tmp_path):
    store = Store(tmp_path / "m.db")
    made = store.new_session(recording=True, label="case 12")
    store.close()
    raw = (tmp_path / "m.db").read_bytes()
    db = sqlite3.connect(tmp_path / "m.db")
    stored = {r[0] for r in db.execute("SELECT token_sha256 FROM tokens")}
    db.close()
    assert set(made.tokens) == set(ROLES)
    for token in made.tokens.values():
        assert len(token) >= 43  # 32 random bytes, base64url
        assert token.encode() not in raw
        assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_identify_roles_and_ended_sessions(tmp_path):
    store = Store(tmp_path / "m.db")
    made = store.new_session(recording=True)
    other = store.new_session()
    for role, token in made.tokens.items():
        ident = store.identify_token(token)
        assert (ident.session_id, ident.role, ident.recording, ident.ended) == (
            made.session_id, role, True, False)
    assert store.identify_token("not-a-token") is None
    assert store.identify_token(other.tokens["mentor"]).session_id == other.session_id
    assert store.end_session(made.session_id) is True
    assert store.end_session(made.session_id) is False
    assert store.identify_token(made.tokens["mentor"]).ended is True
    assert store.identify_token(other.tokens["mentor"]).ended is False


def test_seq_is_per_session_and_a_resend_is_not_applied_twice(tmp_path):
    store = Store(tmp_path / "m.db")
    s1, s2 = store.new_session().session_id, store.new_session().session_id
    seqs = [store.append_event(s1, _event(i)).seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert store.append_event(s2, _event(0)).seq == 1  # same event_id, other session
    again = store.append_event(s1, _event(2))
    assert (again.seq, again.duplicate) == (3, True)
    assert store.last_seq(s1) == 5
    assert [s for s, _ in store.events_after(s1, 2)] == [3, 4, 5]
    assert store.events_after(s1, 0)[1][1]["event_id"] == "e1"
    db = sqlite3.connect(tmp_path / "m.db")
    assert db.execute("SELECT COUNT(*) FROM events WHERE session_id=?", (s1,)).fetchone() == (5,)
    # the constraint itself, not only the code path, forbids a second row
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO events VALUES (?, 99, 'e1', 'a', 'create', 'x', 'mentor', 0, "
                   "'{}')", (s1,))
    db.close()


def test_pragmas_wal_and_synchronous_normal_with_explicit_sync(tmp_path):
    store = Store(tmp_path / "m.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL (SQLite docs)
    made = store.new_session()          # a session is synced before it is returned
    assert store._synced_changes == store._db.total_changes
    store.append_event(made.session_id, _event(1))
    assert store._synced_changes < store._db.total_changes
    store.sync()                        # fsync of the WAL (the hub's, before the ack)
    assert store._synced_changes == store._db.total_changes


def test_hub_syncs_before_returning_but_broadcasts_before_the_sync(tmp_path):
    import asyncio

    from scrubin.mentor.hub import Hub
    from scrubin.mentor.store import Identity

    store = Store(tmp_path / "m.db")
    made = store.new_session()
    hub = Hub(store)
    seen: list[tuple[int, bool]] = []

    async def run() -> None:
        feed = hub.open_feed(made.session_id)
        orig = feed.push

        def push(seq: int, event: dict) -> None:   # synced at broadcast time?
            seen.append((seq, store._synced_changes == store._db.total_changes))
            orig(seq, event)
        feed.push = push
        ident = store.identify_token(made.tokens["mentor"])
        assert isinstance(ident, Identity)
        done = await hub.submit(ident, "mentor", {"event_id": "e1", "op": "create",
                                                  "annotation_id": "a", "points": [[0.5, 0.5]]},
                                "")
        assert done.seq == 1
        assert store._synced_changes == store._db.total_changes   # on disk before the ack

    asyncio.run(run())
    hub.close()
    assert seen == [(1, False)]   # the broadcast did not wait for the disk


def test_audit_records_sessions_and_annotations(tmp_path):
    store = Store(tmp_path / "m.db")
    made = store.new_session(recording=True)
    store.append_event(made.session_id, _event(1, "mentor:ann"), peer="ipv4:127.0.0.1:5")
    store.audit(made.session_id, "observer", "observer", "refused", "annotate: observers")
    log = store.audit_log(made.session_id)
    assert [r["action"] for r in log] == ["session_new", "annotate", "refused"]
    assert "recording=on" in log[0]["detail"]
    assert log[1]["author"] == "mentor:ann" and "seq=1" in log[1]["detail"]
    assert log[1]["peer"] == "ipv4:127.0.0.1:5"


def test_not_a_database_is_a_one_line_error(tmp_path):
    bad = tmp_path / "m.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MentorError, match="m.db: not a usable SQLite database"):
        Store(bad)
    with pytest.raises(MentorError, match="does not exist"):
        Store(tmp_path / "missing" / "m.db")


_WRITER = """
import sys
from scrubin.mentor.events import validate_event
from scrubin.mentor.store import Store
store = Store(sys.argv[1])
sid = sys.argv[2]
i = 0
while True:
    ev = validate_event({"event_id": f"k{i}", "op": "create", "annotation_id": f"a{i}",
                         "points": [[0.5, 0.5]]}, "mentor", "mentor")
    seq = store.append_event(sid, ev).seq
    print(seq, flush=True)
    i += 1
"""


def test_acknowledged_events_survive_kill_9(tmp_path):
    """Every seq the writer reported (committed) is in the database after SIGKILL."""
    db = tmp_path / "m.db"
    sid = Store(db).new_session().session_id
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), sid],
                            stdout=subprocess.PIPE, text=True)
    acked = [int(proc.stdout.readline()) for _ in range(20)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    store = Store(db)
    stored = [s for s, _ in store.events_after(sid, 0)]
    assert acked == list(range(1, 21))
    assert stored[:20] == acked and stored == list(range(1, len(stored) + 1))
    assert json.loads(json.dumps(store.events_after(sid, 0)[0][1]))["event_id"] == "k0"


def test_edits_need_an_existing_annotation_and_its_author_unless_surgeon(tmp_path):
    store = Store(tmp_path / "m.db")
    sid = store.new_session().session_id
    store.append_event(sid, _event(1, "mentor:A"))

    def edit(op, author, role, event_id, annotation="a1"):
        ev = validate_event({"event_id": event_id, "op": op, "annotation_id": annotation,
                             "points": [[0.5, 0.5]]}, role, author)
        return store.append_event(sid, ev, edit_any=role == "surgeon")

    assert edit("update", "mentor:A", "mentor", "u1").seq == 2
    with pytest.raises(MentorError, match="is mentor:A's; mentor:B may not update it"):
        edit("update", "mentor:B", "mentor", "u2")
    with pytest.raises(MentorError, match="'nope' was never created"):
        edit("delete", "mentor:A", "mentor", "u3", "nope")
    assert edit("delete", "surgeon", "surgeon", "u4").seq == 3
    assert edit("update", "mentor:A", "mentor", "u1").duplicate  # a resend stays a resend
    store.end_session(sid)
    with pytest.raises(MentorError, match="has ended"):
        store.append_event(sid, _event(9))
    assert store.last_seq(sid) == 3
