"""The overlay's one Frame-of-Reference check."""

from __future__ import annotations

import pytest

from scrubin.overlay.errors import OverlayError
from scrubin.overlay.provenance import check_frame_of_reference


def test_same_or_unknown_uids_pass() -> None:
    check_frame_of_reference("1.2.3", "1.2.3")
    check_frame_of_reference("", "1.2.3")
    check_frame_of_reference("1.2.3", "")


def test_different_uids_are_refused_naming_both() -> None:
    with pytest.raises(OverlayError) as info:
        check_frame_of_reference("1.2.3", "1.2.4", "model 'skull''s")
    msg = str(info.value)
    assert "1.2.3" in msg and "1.2.4" in msg and "model 'skull''s" in msg
    assert "another scan" in msg and "\n" not in msg
