"""Errors raised by the overlay stage (one-line, user-facing)."""

from __future__ import annotations


class OverlayError(Exception):
    """Base class of the overlay stage's user-facing errors."""
