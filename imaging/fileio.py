"""Small file helpers shared by the stages: JSON reading with one-line errors, atomic writes.

Atomic writes go to a hidden temporary file in the destination's folder
(``.NAME.<random><suffix>``, created with mode ``0o666 & ~umask`` like a plain ``open``) that
is renamed over the destination only once it is complete (``os.replace``, atomic on POSIX
within one file system); on any failure the temporary file is removed, so no partial output
is ever left behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_json(
    path: str | Path,
    error: type[Exception],
    missing: str = "file not found",
    unreadable: str = "not a readable JSON file",
) -> Any:
    """Parse the JSON file ``path``; failures raise ``error`` with a message naming the file.

    Parameters
    ----------
    error
        The caller's (stage) error class.
    missing
        Message after ``"{path}: "`` when the file does not exist.
    unreadable
        Message after ``"{path}: "`` (followed by the reason in parentheses) when the file
        cannot be read or is not UTF-8 JSON.
    """
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise error(f"{p}: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{p}: {unreadable} ({exc})") from None  # RecursionError: nested too deep


def temp_path(path: str | Path, suffix: str = ".tmp") -> Path:
    """Create and return an empty, uniquely named temporary file next to ``path``.

    The name is ``.NAME.<12 hex digits><suffix>`` in ``path``'s folder (so a rename onto
    ``path`` stays on one file system); the file is created exclusively with mode
    ``0o666 & ~umask``. The caller renames or removes it.
    """
    p = Path(path)
    for _ in range(100):
        tmp = p.with_name(f".{p.name}.{os.urandom(6).hex()}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # pragma: no cover  (48 random bits)
            continue
        return tmp
    raise FileExistsError(f"{p}: no free temporary name")  # pragma: no cover


def write_atomic(path: str | Path, write: Callable[[Path], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` on a fresh temporary file next to ``path``, then rename it to ``path``.

    ``suffix`` ends the temporary name (writers that pick a format from the extension need
    it). Any exception from ``write`` or the rename removes the temporary file and propagates.
    """
    p = Path(path)
    tmp = temp_path(p, suffix)
    try:
        write(tmp)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def write_text_atomic(
    path: str | Path,
    text: str,
    error: type[Exception] | None = None,
    make_parents: bool = False,
) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see the module docstring).

    Parameters
    ----------
    error
        When given, an ``OSError`` (folder missing or not writable, disk full, ...) is raised
        as ``error("{path}: cannot write (<reason>)")``; otherwise it propagates.
    make_parents
        Create the missing parent folders first.
    """
    p = Path(path)
    try:
        if make_parents:
            p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(p, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:
        if error is None:
            raise
        raise error(f"{p}: cannot write ({exc.strerror or exc})") from None


def write_json_atomic(
    path: str | Path,
    doc: Any,
    indent: int | None = 2,
    error: type[Exception] | None = None,
    make_parents: bool = False,
) -> None:
    """Write ``json.dumps(doc, indent=indent)`` plus a newline to ``path`` atomically.

    ``error`` and ``make_parents`` as in :func:`write_text_atomic`.
    """
    text = json.dumps(doc, indent=indent) + "\n"
    write_text_atomic(path, text, error=error, make_parents=make_parents)
