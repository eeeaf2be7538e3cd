"""The mentoring server's embedded store: SQLite (sessions, hashed tokens, annotation events,
browser cookies, audit log).

Durability: the database runs in WAL mode with ``synchronous=NORMAL``: a commit is written to
the WAL (so it survives a ``kill -9`` of the server: the OS holds it) without waiting for the
disk (SQLite documentation, "PRAGMA synchronous": NORMAL in WAL mode syncs only at
checkpoints). :meth:`Store.sync` then ``fsync`` s the WAL, which makes every commit so far
survive a power cut; the hub calls it after *broadcasting* an event and before
*acknowledging* it (the author keeps an unacknowledged event and resends it), so the
disk's flush (here p50 5.6 ms, p95 40 ms under load; ``synchronous=FULL`` put it in front
of every broadcast) is off the annotation's path to the other participants. Sessions and
their tokens are synced before they are returned. Each annotation event is inserted
in one ``BEGIN IMMEDIATE`` transaction that also assigns its session-wide sequence number
(``MAX(seq) + 1`` under the write lock), and a ``UNIQUE (session_id, event_id)`` constraint
makes a resent event a no-op that returns the original number.

Tokens are random 32-byte URL-safe strings (:func:`secrets.token_urlsafe`); only their
SHA-256 hex digests are stored. The store is synchronous and not thread-safe by itself:
:class:`scrubin.mentor.server.MentorServer` calls it from one worker thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrubin.mentor.errors import MentorError

ROLES = ("surgeon", "mentor", "observer")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    ended REAL,
    recording INTEGER NOT NULL,
    label TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tokens (
    token_sha256 TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    role TEXT NOT NULL,
    UNIQUE (session_id, role)
);
CREATE TABLE IF NOT EXISTS revoked (
    token_sha256 TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    role TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cookies (
    cookie_sha256 TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    role TEXT NOT NULL,
    author TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    annotation_id TEXT NOT NULL,
    op TEXT NOT NULL,
    author TEXT NOT NULL,
    role TEXT NOT NULL,
    received REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq),
    UNIQUE (session_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_annotation ON events (session_id, annotation_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    session_id TEXT,
    role TEXT,
    author TEXT,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    peer TEXT NOT NULL DEFAULT ''
);
"""


def sha256_hex(secret: str) -> str:
    """SHA-256 hex digest of a token or cookie (what the store keeps)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Who a token or cookie belongs to."""

    session_id: str
    role: str
    recording: bool
    author: str = ""
    ended: bool = False
    revoked: bool = False   # the role's token was revoked (Store.revoke_role)


@dataclass(frozen=True)
class NewSession:
    """A session just made: its id, recording flag and one token per role (plain text, shown
    once; the store keeps only hashes)."""

    session_id: str
    recording: bool
    tokens: dict[str, str]


@dataclass(frozen=True)
class Appended:
    """Result of :meth:`Store.append_event`: the event's seq and whether it was a resend."""

    seq: int
    duplicate: bool
    event: dict[str, Any]


class Store:
    """SQLite store at ``path`` (created with its schema if missing).

    Parameters
    ----------
    path
        Database file; its folder must exist.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise MentorError(f"{self.path}: folder {self.path.parent} does not exist")
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise MentorError(f"{self.path}: not a usable SQLite database ({exc})") from None
        self._synced_changes = -1
        self._tx_lock = threading.Lock()

    def close(self) -> None:
        """Close the connection (after a last :meth:`sync`)."""
        self.sync()
        self._db.close()

    def sync(self) -> None:
        """Flush every commit so far to the disk (``fsync`` of the WAL; module docstring).

        A checkpoint syncs what it moves into the database file itself (NORMAL in WAL mode);
        what is still in the WAL is synced here. Cheap when nothing was written since.
        Thread-safe against the store's own thread (the hub syncs on a thread of its own, so
        the next event's commit does not queue behind a flush): the change count is read
        between transactions, and only changes counted before the ``fsync`` are marked synced.
        """
        with self._tx_lock:
            changes = self._db.total_changes
        if changes == self._synced_changes:
            return
        for f in (Path(f"{self.path}-wal"), self.path):
            try:
                fd = os.open(f, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            break
        self._synced_changes = changes

    # -- sessions and tokens -------------------------------------------------------------
    def new_session(self, recording: bool = False, label: str = "") -> NewSession:
        """Make a session with one fresh token per role; audit it."""
        session_id = uuid.uuid4().hex
        tokens = {role: secrets.token_urlsafe(32) for role in ROLES}
        now = time.time()
        with self._tx():
            self._db.execute(
                "INSERT INTO sessions (session_id, created, recording, label) VALUES (?,?,?,?)",
                (session_id, now, int(recording), label),
            )
            for role, token in tokens.items():
                self._db.execute(
                    "INSERT INTO tokens (token_sha256, session_id, role) VALUES (?,?,?)",
                    (sha256_hex(token), session_id, role),
                )
            self._audit(session_id, None, None, "session_new",
                        f"recording={'on' if recording else 'off'} label={label!r}", "", now)
        self.sync()
        return NewSession(session_id, recording, tokens)

    def end_session(self, session_id: str) -> bool:
        """Mark a session ended (its tokens and cookies stop working); False if unknown."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE sessions SET ended=? WHERE session_id=? AND ended IS NULL",
                (time.time(), session_id),
            )
            if cur.rowcount:
                self._audit(session_id, None, None, "session_end", "", "")
        self.sync()
        return bool(cur.rowcount)

    def session(self, session_id: str) -> dict[str, Any] | None:
        """The session's row as a dict (``ended`` None while open), or None if unknown."""
        row = self._db.execute(
            "SELECT session_id, created, ended, recording, label FROM sessions "
            "WHERE session_id=?", (session_id,)
        ).fetchone()
        if row is None:
            return None
        return {"session_id": row[0], "created": row[1], "ended": row[2],
                "recording": bool(row[3]), "label": row[4]}

    def identify_token(self, token: str) -> Identity | None:
        """The session and role of ``token`` (None when unknown; check ``ended``)."""
        row = self._db.execute(
            "SELECT t.session_id, t.role, s.recording, s.ended FROM tokens t JOIN sessions s "
            "USING (session_id) WHERE t.token_sha256=?",
            (sha256_hex(token),),
        ).fetchone()
        if row is None:
            row = self._db.execute(
                "SELECT r.session_id, r.role, s.recording, s.ended FROM revoked r JOIN sessions s "
                "USING (session_id) WHERE r.token_sha256=?", (sha256_hex(token),)).fetchone()
            return None if row is None else Identity(row[0], row[1], bool(row[2]),
                                                     ended=row[3] is not None, revoked=True)
        return Identity(row[0], row[1], bool(row[2]), ended=row[3] is not None)

    def revoke_role(self, session_id: str, role: str) -> bool:
        """Revoke the token of one role of a session (its joins, renewals, call tokens and
        browser cookies stop working; the others' go on); False if there is none to revoke."""
        with self._tx():
            row = self._db.execute("SELECT token_sha256 FROM tokens WHERE session_id=? AND "
                                   "role=?", (session_id, role)).fetchone()
            if row is not None:
                self._db.execute("INSERT INTO revoked (token_sha256, session_id, role, time) "
                                 "VALUES (?,?,?,?)", (row[0], session_id, role, time.time()))
                self._db.execute("DELETE FROM tokens WHERE token_sha256=?", (row[0],))
                self._db.execute("DELETE FROM cookies WHERE session_id=? AND role=?",
                                 (session_id, role))
                self._audit(session_id, role, None, "revoke", f"{role} token revoked", "")
        self.sync()
        return row is not None

    def role_revoked(self, session_id: str, role: str) -> bool:
        """Whether the token of ``role`` in ``session_id`` was revoked (call tokens check it)."""
        return self._db.execute("SELECT 1 FROM revoked WHERE session_id=? AND role=? LIMIT 1",
                                (session_id, role)).fetchone() is not None

    def new_cookie(self, ident: Identity, author: str) -> str:
        """A fresh browser cookie value for ``ident`` (stored hashed)."""
        cookie = secrets.token_urlsafe(32)
        with self._tx():
            self._db.execute(
                "INSERT INTO cookies (cookie_sha256, session_id, role, author, created) "
                "VALUES (?,?,?,?,?)",
                (sha256_hex(cookie), ident.session_id, ident.role, author, time.time()),
            )
        return cookie

    def identify_cookie(self, cookie: str) -> Identity | None:
        """The identity of a browser cookie (None when unknown; check ``ended``)."""
        row = self._db.execute(
            "SELECT c.session_id, c.role, s.recording, c.author, s.ended FROM cookies c "
            "JOIN sessions s USING (session_id) WHERE c.cookie_sha256=?",
            (sha256_hex(cookie),),
        ).fetchone()
        if row is None:
            return None
        return Identity(row[0], row[1], bool(row[2]), row[3], ended=row[4] is not None)

    # -- annotation events ---------------------------------------------------------------
    def append_event(self, session_id: str, event: dict[str, Any], peer: str = "",
                     edit_any: bool = False) -> Appended:
        """Store ``event`` (validated, author/role already set) with the next seq.

        A repeated ``event_id`` in the session is not stored again: the original seq and
        event come back with ``duplicate=True``. ``update``/``delete``/``anchor`` need an
        annotation created before; ``update``/``delete`` of another author's annotation need
        ``edit_any`` (the surgeon). The audit line ("annotate") is written in the same
        transaction as the event.

        Raises
        ------
        MentorError
            Unknown or ended session; an annotation never created or not the author's.
        """
        with self._tx():
            row = self._db.execute("SELECT ended FROM sessions WHERE session_id=?",
                                   (session_id,)).fetchone()
            if row is None or row[0] is not None:
                raise MentorError(f"session {session_id}: "
                                  f"{'unknown' if row is None else 'has ended'}")
            old = self._db.execute(
                "SELECT seq, body FROM events WHERE session_id=? AND event_id=?",
                (session_id, event["event_id"]),
            ).fetchone()
            if old is not None:
                return Appended(int(old[0]), True, json.loads(old[1]))
            if event["op"] in ("update", "delete", "anchor"):
                aid = event["annotation_id"]
                creator = self.annotation_creator(session_id, aid)
                if creator is None:
                    raise MentorError(f"annotation {aid!r} was never created")
                if event["op"] != "anchor" and not edit_any and creator != event["author"]:
                    raise MentorError(f"annotation {aid!r} is {creator}'s; {event['author']} "
                                      f"may not {event['op']} it")
            (last,) = self._db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id=?", (session_id,)
            ).fetchone()
            seq = int(last) + 1
            self._db.execute(
                "INSERT INTO events (session_id, seq, event_id, annotation_id, op, author, role,"
                " received, body) VALUES (?,?,?,?,?,?,?,?,?)",
                (session_id, seq, event["event_id"], event.get("annotation_id", ""),
                 event["op"], event["author"], event["role"], time.time(),
                 json.dumps(event, separators=(",", ":"))),
            )
            self._audit(session_id, event["role"], event["author"], "annotate",
                        f"seq={seq} op={event['op']} annotation={event.get('annotation_id', '')}",
                        peer)
        return Appended(seq, False, event)

    def events_after(self, session_id: str, after_seq: int,
                     limit: int = 10000) -> list[tuple[int, dict[str, Any]]]:
        """Events with seq > ``after_seq`` in order (at most ``limit``)."""
        rows = self._db.execute(
            "SELECT seq, body FROM events WHERE session_id=? AND seq>? ORDER BY seq LIMIT ?",
            (session_id, int(after_seq), int(limit)),
        ).fetchall()
        return [(int(seq), json.loads(body)) for seq, body in rows]

    def last_seq(self, session_id: str) -> int:
        """The session's highest seq (0 when it has no events)."""
        (last,) = self._db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id=?", (session_id,)
        ).fetchone()
        return int(last)

    def annotation_creator(self, session_id: str, annotation_id: str) -> str | None:
        """Author of the ``create`` event of ``annotation_id`` (None if never created)."""
        row = self._db.execute(
            "SELECT author FROM events WHERE session_id=? AND annotation_id=? AND op='create' "
            "ORDER BY seq LIMIT 1", (session_id, annotation_id),
        ).fetchone()
        return None if row is None else str(row[0])

    # -- audit ---------------------------------------------------------------------------
    def audit(self, session_id: str | None, role: str | None, author: str | None,
              action: str, detail: str = "", peer: str = "") -> None:
        """Append one line to the audit log (its own transaction)."""
        with self._tx():
            self._audit(session_id, role, author, action, detail, peer)

    def audit_log(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """The audit log (of one session, or all), oldest first."""
        sql = "SELECT time, session_id, role, author, action, detail, peer FROM audit"
        args: tuple[Any, ...] = ()
        if session_id is not None:
            sql += " WHERE session_id=?"
            args = (session_id,)
        keys = ("time", "session_id", "role", "author", "action", "detail", "peer")
        return [dict(zip(keys, row, strict=True))
                for row in self._db.execute(sql + " ORDER BY id", args)]

    # -- internals -----------------------------------------------------------------------
    def _audit(self, session_id: str | None, role: str | None, author: str | None,
               action: str, detail: str, peer: str, now: float | None = None) -> None:
        self._db.execute(
            "INSERT INTO audit (time, session_id, role, author, action, detail, peer) "
            "VALUES (?,?,?,?,?,?,?)",
            (time.time() if now is None else now, session_id, role, author, action, detail,
             peer),
        )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self._tx_lock)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection,
    holding the store's transaction lock (:meth:`Store.sync` reads the change count between
    transactions)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._lock.release()
