"""Errors raised by the registration and tracking stage (one-line, user-facing)."""

from __future__ import annotations


class RegistrationError(Exception):
    """Base class of the registration stage's user-facing errors."""


class FrameMismatchError(RegistrationError):
    """Two transforms or point sets are in different frames, units or source UIDs."""
