"""The one tracking-state machine: LIVE / HELD / STALE / LOST boundaries on capture times."""

from __future__ import annotations

import pytest

from scrubin.registration.errors import RegistrationError
from scrubin.registration.tracking_state import (
    DEFAULT_LIMITS,
    TrackingLimits,
    TrackingState,
    TrackingStateMachine,
)

L, H, S, X = TrackingState.LIVE, TrackingState.HELD, TrackingState.STALE, TrackingState.LOST


def test_states_at_the_limits() -> None:
    """Ages (frame minus pose capture time, s) against sync 0.02, stale 0.1, lost 0.5 s."""
    m = TrackingStateMachine(TrackingLimits(sync_s=0.02, stale_after_s=0.1, lost_after_s=0.5))
    assert m.evaluate(100.0).state is X and m.evaluate(100.0).age_s is None  # no pose yet
    m.observe(100.0)
    want = [(100.0, L), (100.02, L), (100.0201, H), (100.1, H), (100.1001, S), (100.5, S),
            (100.5001, X)]
    for t, state in want:
        v = m.evaluate(t)
        assert v.state is state and v.age_s == pytest.approx(t - 100.0), t
    m.observe(100.6)
    assert m.evaluate(100.6).state is L
    assert m.evaluate(100.5, pose_time_s=100.6).state is S  # > sync ahead: clocks disagree
    assert m.evaluate(100.59, pose_time_s=100.6).state is L  # within sync


def test_invalid_and_late_messages_do_not_refresh() -> None:
    m = TrackingStateMachine()
    m.observe(2.0)
    m.observe(1.0)  # late
    m.observe(2.05, valid=False)
    assert not m.marker_visible and m.pose_time == 2.0
    assert m.evaluate(2.05).state is H


def test_recovery_counts_live_and_held_frames() -> None:
    m = TrackingStateMachine(TrackingLimits(recover_frames=3))
    m.observe(0.0)
    got = [m.evaluate(t) for t in (0.0, 0.03, 0.06, 0.09)]
    assert [v.state for v in got] == [S, S, H, H]
    assert [v.recovering for v in got] == [1, 2, 0, 0]
    assert m.evaluate(0.2).state is S  # stale: recovery starts again
    m.observe(0.21)
    assert [m.evaluate(t).state for t in (0.21, 0.215, 0.22)] == [S, S, L]


def test_defaults_and_json() -> None:
    assert DEFAULT_LIMITS == TrackingLimits(0.02, 0.1, 0.5, 1)
    assert DEFAULT_LIMITS.to_json() == {"sync_s": 0.02, "stale_after_s": 0.1,
                                        "lost_after_s": 0.5, "recover_frames": 1}
    assert [s.shown for s in TrackingState] == [True, True, False, False]


def test_rejections() -> None:
    with pytest.raises(RegistrationError, match="stale_after_s .* must be >= sync_s"):
        TrackingLimits(sync_s=0.2, stale_after_s=0.1)
    with pytest.raises(RegistrationError, match="limits must be TrackingLimits"):
        TrackingStateMachine({"sync_s": 0.1})  # type: ignore[arg-type]
    m = TrackingStateMachine()
    for bad in (float("nan"), None, "1", True):
        with pytest.raises(RegistrationError, match="capture time"):
            m.observe(bad)  # type: ignore[arg-type]
        with pytest.raises(RegistrationError, match="capture time"):
            m.evaluate(bad)  # type: ignore[arg-type]
