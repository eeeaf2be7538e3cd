"""``scrubin register points|surface``: one module per registration kind."""

from __future__ import annotations

import argparse
import sys

from scrubin.commands._discover import add_group


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``register`` group."""
    add_group(sub, sys.modules[__name__], "register", "register points or a surface to a model")
