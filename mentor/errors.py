"""Errors raised by the mentoring stage (one-line, user-facing)."""

from __future__ import annotations


class MentorError(Exception):
    """Base class of the mentoring stage's user-facing errors."""
