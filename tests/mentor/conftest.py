"""Fixtures of tests/mentor: the real headless Chromium, the static page server, and the
Janus and coturn set-up checks (``needs_janus``, tests/mentor/janus_netns.py; the
``_coturn_required`` fixture, tests/mentor/coturn_netns.py)."""

import pytest

from tests.mentor import coturn_netns
from tests.mentor.browser import chromium, mentor_server, static_origin  # noqa: F401
from tests.mentor.janus_netns import available


@pytest.fixture()
def _janus_required() -> None:
    """make install installs janus and the tests run as root: missing means a broken set-up,
    which fails here instead of turning into a skip."""
    reason = available()
    if reason:
        pytest.fail(f"Janus test cannot run: {reason}")


@pytest.fixture()
def _coturn_required() -> None:
    """make install installs coturn and the tests run as root: missing means a broken set-up,
    which fails here instead of turning into a skip."""
    reason = coturn_netns.available()
    if reason:
        pytest.fail(f"TURN test cannot run: {reason}")
