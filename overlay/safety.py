"""Tracking-state gate: decides, per video frame, whether the overlay may be drawn as current.

An overlay drawn with an old pose is worse than none: the model sits where the anatomy *was*.
The gate compares *capture* timestamps (never the wall clock): the frame's capture time and the
capture time of the tracking pose that would be used to draw it.

The states and their limits are those of the one tracking-state machine,
:mod:`scrubin.registration.tracking_state` (LIVE / HELD / STALE / LOST, defaults
:data:`~scrubin.registration.tracking_state.DEFAULT_LIMITS`, the same as ``scrubin track``'s);
this module adds what the overlay does in each:

* ``LIVE``  : drawn normally.
* ``HELD``  : drawn normally with the pose *predicted* to the frame's capture time (the
  tracker does this, :meth:`scrubin.registration.filters.PoseFilter.predict`); the HUD says
  ``POSE HELD <age> ms (PREDICTED)`` (``(NOT PREDICTED)`` when the caller held the pose
  unchanged).
* ``STALE`` : hidden (``stale_policy="hide"``, default) or drawn in the unmistakable warning
  look (red outline, red border, "NOT CURRENT" banner; ``stale_policy="warn"``); never as if
  current. Also while recovering (``recover_frames``) and for a pose from the future.
* ``LOST``  : always hidden.

Usage in a frame loop::

    gate = TrackingGate(SafetyConfig())
    gate.observe_pose(msg_capture_time, valid=marker_seen)   # each tracking message
    status = gate.evaluate(frame_capture_time)              # each video frame
    if status.show_overlay: ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scrubin.overlay.errors import OverlayError
from scrubin.registration.errors import RegistrationError
from scrubin.registration.tracking_state import (
    DEFAULT_LIMITS,
    TrackingLimits,
    TrackingState,
    TrackingStateMachine,
    TrackingVerdict,
)

__all__ = ["STALE_POLICIES", "SafetyConfig", "TrackingGate", "TrackingLimits", "TrackingState",
           "TrackingStatus"]

STALE_POLICIES = ("hide", "warn")


@dataclass(frozen=True)
class SafetyConfig:
    """The gate's limits and what it draws while STALE.

    Attributes
    ----------
    limits
        The state machine's capture-time limits (default: the shared defaults).
    stale_policy
        ``"hide"`` or ``"warn"`` (see module docstring).
    """

    limits: TrackingLimits = field(default_factory=lambda: DEFAULT_LIMITS)
    stale_policy: str = "hide"

    def __post_init__(self) -> None:
        if not isinstance(self.limits, TrackingLimits):
            raise OverlayError(f"safety config limits must be TrackingLimits, got "
                               f"{type(self.limits).__name__}")
        if self.stale_policy not in STALE_POLICIES:
            raise OverlayError(
                f"safety config stale_policy must be one of {STALE_POLICIES}, got "
                f"{self.stale_policy!r}"
            )


@dataclass(frozen=True)
class TrackingStatus:
    """The gate's verdict for one frame.

    Attributes
    ----------
    state
        LIVE / HELD / STALE / LOST.
    age_s
        Frame time minus pose time (None without a pose).
    show_overlay
        Draw the overlay normally (LIVE or HELD).
    warn_overlay
        Draw it in the warning look (STALE with ``stale_policy="warn"``).
    message
        One-line HUD text (ASCII), e.g. ``"TRACKING LOST - OVERLAY HIDDEN"``.
    marker_visible
        Whether the newest tracking message saw the marker.
    """

    state: TrackingState
    age_s: float | None
    show_overlay: bool
    warn_overlay: bool
    message: str
    marker_visible: bool


class TrackingGate:
    """The overlay's view of :class:`TrackingStateMachine` (module docstring)."""

    def __init__(self, config: SafetyConfig | None = None) -> None:
        if config is not None and not isinstance(config, SafetyConfig):
            raise OverlayError(f"config must be a SafetyConfig, got {type(config).__name__}")
        self.config = config or SafetyConfig()
        self.machine = TrackingStateMachine(self.config.limits)

    def reset(self) -> None:
        """Forget all poses (e.g. a new tracking session or a replay restart)."""
        self.machine.reset()

    def observe_pose(self, capture_time_s: float, valid: bool = True) -> None:
        """Record one tracking message: its capture time and whether the marker was seen.

        Invalid messages (marker not visible) do not refresh the pose time, so the pose ages
        and the overlay disappears once it is older than ``stale_after_s``.
        """
        try:
            self.machine.observe(capture_time_s, valid)
        except RegistrationError as exc:
            raise OverlayError(str(exc)) from None

    def evaluate(self, frame_time_s: float, pose_time_s: float | None = None,
                 predicted: bool = False) -> TrackingStatus:
        """The verdict for the frame captured at ``frame_time_s``.

        ``pose_time_s`` is the capture time of the pose that will be drawn; by default the newest
        valid pose seen by :meth:`observe_pose`. A frame time earlier than the previous one
        (replay restart) resets the recovery counter but keeps the poses. ``predicted``: the
        pose to be drawn was predicted to the frame's time (shown on the HUD when HELD).
        """
        try:
            v = self.machine.evaluate(frame_time_s, pose_time_s)
        except RegistrationError as exc:
            raise OverlayError(str(exc)) from None
        return self.status(v, self.machine.marker_visible, predicted)

    def status(self, verdict: TrackingVerdict, marker_visible: bool,
               predicted: bool = False) -> TrackingStatus:
        """What the overlay does with a verdict of the state machine (module docstring).

        A frame loop whose tracker already runs the machine (:class:`MarkerTracker` gives
        ``TrackResult.verdict`` and ``TrackResult.predicted``) passes that verdict here
        instead of running a second one.
        """
        if not isinstance(verdict, TrackingVerdict):
            raise OverlayError(f"verdict must be a TrackingVerdict, got "
                               f"{type(verdict).__name__}")
        v, seen = verdict, bool(marker_visible)
        age = v.age_s
        if v.state is TrackingState.LIVE:
            assert age is not None
            return TrackingStatus(v.state, age, True, False,
                                  f"TRACKING LIVE ({age * 1e3:.0f} ms)", seen)
        if v.state is TrackingState.HELD:
            assert age is not None
            how = " (PREDICTED)" if predicted else " (NOT PREDICTED)"
            return TrackingStatus(v.state, age, True, False,
                                  f"POSE HELD {age * 1e3:.0f} ms{how}", seen)
        if age is None:
            return TrackingStatus(TrackingState.LOST, None, False, False,
                                  "TRACKING LOST - NO POSE - OVERLAY HIDDEN", seen)
        if v.state is TrackingState.LOST:
            return TrackingStatus(v.state, age, False, False,
                                  f"TRACKING LOST ({age:.1f} s) - OVERLAY HIDDEN", seen)
        if v.recovering:
            return TrackingStatus(
                v.state, age, False, False,
                f"TRACKING RECOVERING {v.recovering}/{self.config.limits.recover_frames} - "
                "OVERLAY HIDDEN", seen)
        warn = self.config.stale_policy == "warn"
        tail = "OVERLAY NOT CURRENT" if warn else "OVERLAY HIDDEN"
        if age < 0:
            text = f"POSE {-age * 1e3:.0f} ms AHEAD OF FRAME (CLOCKS?) - {tail}"
        else:
            text = f"TRACKING STALE {age * 1e3:.0f} ms - {tail}"
        return TrackingStatus(v.state, age, False, warn, text, seen)
