"""The surgeon's hide / show / clear-all controls, from every place the surgeon can reach.

The operations are the server's ``hide_all`` / ``show_all`` / ``clear_all`` annotation events
(mentor/DESIGN.md "Annotations": surgeon only, a mentor cannot undo them); this module only
turns the surgeon's inputs into them:

* keys in the station's own overlay window (``WindowSink.key_handlers`` -> :meth:`key`):
  ``h`` hides / shows every mentor annotation, ``c`` clears them;
* the same letters + Enter on the station's terminal (``scrubin surgeon`` in a TTY);
* a headless station (no display, no TTY, e.g. a theatre PC driven by a foot pedal or a
  voice command daemon): ``--control-fifo PATH``, a named pipe (made 0600 by the station when
  missing) from which each line ``hide``, ``show``, ``toggle`` (or ``h``), ``clear`` (or
  ``c``) is one command: ``echo hide > PATH``. No network listener is opened for it.

Commands are sent on the station's asyncio loop (fire and forget from the frame-loop thread,
so a key press never stalls a frame); a failed send is reported on stderr, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from scrubin.mentor.errors import MentorError

#: command words (a FIFO line, a terminal line) -> operation; keys use the first letter
COMMANDS = {"hide": "hide", "show": "show", "toggle": "toggle", "h": "toggle",
            "clear": "clear", "c": "clear"}


class SurgeonControls:
    """Hide / show / clear-all for the surgeon (module docstring).

    Parameters
    ----------
    link
        The station's :class:`~scrubin.mentor.station_link.StationLink` (``hide_all``,
        ``show_all``, ``clear_all`` coroutines).
    loop
        The asyncio loop the link runs on (another thread).
    report
        Called with one line per applied command (default: print to stdout).
    board
        The station's :class:`~scrubin.mentor.annotations_draw.AnnotationBoard`: ``toggle``
        starts from its state (a hide of an earlier run of the session, replayed on joining),
        then follows this object's own commands (not racing their broadcast).
    """

    def __init__(self, link: Any, loop: asyncio.AbstractEventLoop,
                 report: Callable[[str], Any] | None = None, board: Any = None) -> None:
        self.link, self.loop, self.board = link, loop, board
        self.hidden: bool | None = None
        self.sent: list[str] = []
        self._report = report or (lambda line: print(line, flush=True))
        self._lock = threading.Lock()

    def command(self, word: str) -> bool:
        """Apply one command word; False (and a warning) for an unknown word."""
        op = COMMANDS.get(word.strip().lower())
        if op is None:
            if word.strip():
                print(f"scrubin: warning: unknown surgeon control {word.strip()[:40]!r} "
                      "(expected hide, show, toggle, clear)", file=sys.stderr, flush=True)
            return False
        with self._lock:
            if op == "toggle":
                # the controls' own last command; before any, the board's (replayed) state
                hidden = self.hidden if self.hidden is not None or self.board is None \
                    else self.board.hidden
                op = "show" if hidden else "hide"
            if op == "clear":
                coro: Coroutine[Any, Any, Any] = self.link.clear_all()
            else:
                self.hidden = op == "hide"
                coro = self.link.hide_all() if self.hidden else self.link.show_all()
            self.sent.append(op)
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        fut.add_done_callback(self._done)
        done = {"hide": "hidden", "show": "shown", "clear": "cleared"}[op]
        self._report(f"scrubin surgeon: mentor annotations {done}")
        return True

    @staticmethod
    def _done(fut: Any) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None:
            print(f"scrubin: warning: surgeon control not sent: {exc}", file=sys.stderr,
                  flush=True)

    def key(self, code: int) -> bool:
        """A key from the overlay window (``cv2.waitKey`` code): ``h`` / ``c``."""
        ch = chr(code & 0xFF).lower() if code >= 0 else ""
        return self.command(ch) if ch in ("h", "c") else False

    def watch_terminal(self, stop: threading.Event) -> threading.Thread:
        """Read command lines from stdin on a daemon thread (a TTY)."""
        def run() -> None:
            while not stop.is_set():
                line = sys.stdin.readline()
                if not line:
                    return
                self.command(line)

        t = threading.Thread(target=run, daemon=True, name="surgeon-terminal")
        t.start()
        return t

    def watch_fifo(self, path: Path, stop: threading.Event) -> threading.Thread:
        """Read command lines from the named pipe ``path`` on a daemon thread.

        The pipe is made (mode 0600) when missing; an existing path must be a FIFO. Writers
        may come and go (``echo hide > PATH``): the pipe is reopened after each writer.
        """
        p = make_fifo(path)

        def run() -> None:
            while not stop.is_set():
                # O_RDWR keeps a writer end open ourselves: open() does not block and a
                # closing writer does not end the read loop (Linux fifo(7))
                fd = os.open(p, os.O_RDWR)
                with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as f:
                    for line in f:
                        if stop.is_set():
                            return
                        self.command(line)

        t = threading.Thread(target=run, daemon=True, name="surgeon-fifo")
        t.start()
        return t


def make_fifo(path: Path) -> Path:
    """Make the control pipe (0600) when missing; an existing path must be a FIFO."""
    p = Path(path)
    if not p.exists():
        try:
            os.mkfifo(p, 0o600)
        except OSError as exc:
            raise MentorError(f"--control-fifo {p}: cannot make the pipe ({exc.strerror})"
                              ) from None
    elif not stat.S_ISFIFO(p.stat().st_mode):
        raise MentorError(f"--control-fifo {p}: exists and is not a named pipe (FIFO)")
    return p


def close_fifo(path: Path | None) -> None:
    """Wake a :meth:`SurgeonControls.watch_fifo` reader so its thread sees ``stop``."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"\n")
        os.close(fd)
