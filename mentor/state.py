"""Where the mentoring server keeps its state (standard library only, so that building the
command-line parser, which shows this default in ``--help``, imports no gRPC/aiohttp)."""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    """``$SCRUBIN_STATE`` or ``$XDG_DATA_HOME/scrubin`` (``~/.local/share/scrubin``)."""
    if os.environ.get("SCRUBIN_STATE"):
        return Path(os.environ["SCRUBIN_STATE"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "scrubin"
