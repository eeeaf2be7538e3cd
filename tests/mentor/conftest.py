"""Fixtures of tests/mentor: the real headless Chromium and the static page server."""

from tests.mentor.browser import chromium, mentor_server, static_origin  # noqa: F401
