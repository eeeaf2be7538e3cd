"""``scrubin calibrate camera|hand-eye|pivot``: one module per calibration."""

from __future__ import annotations

import argparse
import sys

from scrubin.commands._discover import add_group


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` group."""
    add_group(sub, sys.modules[__name__], "calibrate", "camera, hand-eye or pointer calibration")
