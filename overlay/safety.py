"""Tracking-state gate: decides, per video frame, whether the overlay may be drawn as current.

An overlay drawn with an old pose is worse than none: the model sits where the anatomy *was*.
The gate compares *capture* timestamps (never the wall clock): the frame's capture time and the
capture time of the tracking pose that would be used to draw it.

States (``age = frame_time - pose_time``, seconds)

* ``LIVE``  : a valid pose exists and ``-max_future_s <= age <= max_pose_age_s``.
* ``STALE`` : the newest valid pose is too old (``max_pose_age_s < age <= lost_after_s``), or it
  is from the future beyond ``max_future_s`` (the clocks disagree). The overlay is hidden
  (``stale_policy="hide"``, default) or drawn in the unmistakable warning look (red outline,
  red border, "NOT CURRENT" banner; ``stale_policy="warn"``); never as if current.
* ``LOST``  : no valid pose yet, or ``age > lost_after_s``. The overlay is always hidden.

Recovery: after STALE or LOST the gate needs ``recover_frames`` consecutive frames that would be
LIVE before it reports LIVE again (1 = at once), so a flickering marker does not make the model
flash in and out.

Usage in a frame loop::

    gate = TrackingGate(SafetyConfig(max_pose_age_s=0.1))
    gate.observe_pose(msg_capture_time, valid=marker_seen)   # each tracking message
    status = gate.evaluate(frame_capture_time)              # each video frame
    if status.show_overlay: ...
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from scrubin.overlay.errors import OverlayError

STALE_POLICIES = ("hide", "warn")


class TrackingState(enum.Enum):
    """Tracking state shown on the HUD."""

    LIVE = "LIVE"
    STALE = "STALE"
    LOST = "LOST"


@dataclass(frozen=True)
class SafetyConfig:
    """Limits of the gate (seconds of capture time).

    Attributes
    ----------
    max_pose_age_s
        Largest pose age (frame time minus pose time) still drawn as current.
    lost_after_s
        Pose age from which tracking is LOST (>= ``max_pose_age_s``).
    max_future_s
        Largest amount a pose may be *newer* than the frame (interpolation, clock jitter).
    stale_policy
        ``"hide"`` or ``"warn"`` (see module docstring).
    recover_frames
        Consecutive live frames needed to leave STALE / LOST.
    """

    max_pose_age_s: float = 0.1
    lost_after_s: float = 0.5
    max_future_s: float = 0.02
    stale_policy: str = "hide"
    recover_frames: int = 1

    def __post_init__(self) -> None:
        for name in ("max_pose_age_s", "lost_after_s", "max_future_s"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise OverlayError(f"safety config {name} must be a finite number >= 0, got {v!r}")
        if self.lost_after_s < self.max_pose_age_s:
            raise OverlayError(
                f"safety config lost_after_s ({self.lost_after_s}) must be >= max_pose_age_s "
                f"({self.max_pose_age_s})"
            )
        if self.stale_policy not in STALE_POLICIES:
            raise OverlayError(
                f"safety config stale_policy must be one of {STALE_POLICIES}, got "
                f"{self.stale_policy!r}"
            )
        if not isinstance(self.recover_frames, int) or self.recover_frames < 1:
            raise OverlayError(
                f"safety config recover_frames must be an integer >= 1, got {self.recover_frames!r}"
            )


@dataclass(frozen=True)
class TrackingStatus:
    """The gate's verdict for one frame.

    Attributes
    ----------
    state
        LIVE / STALE / LOST.
    age_s
        Frame time minus pose time (None without a pose).
    show_overlay
        Draw the overlay normally (only when LIVE).
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


def _check_time(name: str, t: float) -> float:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise OverlayError(f"{name} must be a finite capture time in seconds, got {t!r}")
    return float(t)


class TrackingGate:
    """The LIVE / STALE / LOST state machine (see module docstring)."""

    def __init__(self, config: SafetyConfig | None = None) -> None:
        if config is not None and not isinstance(config, SafetyConfig):
            raise OverlayError(f"config must be a SafetyConfig, got {type(config).__name__}")
        self.config = config or SafetyConfig()
        self.reset()

    def reset(self) -> None:
        """Forget all poses (e.g. a new tracking session or a replay restart)."""
        self._pose_time: float | None = None
        self._marker_visible = False
        self._live_run = 0
        self._shown = False
        self._last_frame: float | None = None

    def observe_pose(self, capture_time_s: float, valid: bool = True) -> None:
        """Record one tracking message: its capture time and whether the marker was seen.

        Invalid messages (marker not visible) do not refresh the pose time, so the pose ages
        and the overlay disappears once it is older than ``max_pose_age_s``.
        """
        t = _check_time("pose capture time", capture_time_s)
        self._marker_visible = bool(valid)
        if valid and (self._pose_time is None or t > self._pose_time):
            self._pose_time = t

    def evaluate(self, frame_time_s: float, pose_time_s: float | None = None) -> TrackingStatus:
        """The verdict for the frame captured at ``frame_time_s``.

        ``pose_time_s`` is the capture time of the pose that will be drawn; by default the newest
        valid pose seen by :meth:`observe_pose`. A frame time earlier than the previous one
        (replay restart) resets the recovery counter but keeps the poses.
        """
        cfg = self.config
        tf = _check_time("frame capture time", frame_time_s)
        if self._last_frame is not None and tf < self._last_frame:
            self._live_run = 0
            self._shown = False
        self._last_frame = tf
        tp = self._pose_time if pose_time_s is None else _check_time("pose time", pose_time_s)
        if tp is None:
            self._live_run = 0
            self._shown = False
            return TrackingStatus(TrackingState.LOST, None, False, False,
                                  "TRACKING LOST - NO POSE - OVERLAY HIDDEN",
                                  self._marker_visible)
        age = tf - tp
        if -cfg.max_future_s <= age <= cfg.max_pose_age_s:
            self._live_run += 1
            if self._shown or self._live_run >= cfg.recover_frames:
                self._shown = True
                return TrackingStatus(TrackingState.LIVE, age, True, False,
                                      f"TRACKING LIVE ({age * 1e3:.0f} ms)", self._marker_visible)
            return TrackingStatus(
                TrackingState.STALE, age, False, False,
                f"TRACKING RECOVERING {self._live_run}/{cfg.recover_frames} - OVERLAY HIDDEN",
                self._marker_visible)
        self._live_run = 0
        self._shown = False
        if age > cfg.lost_after_s:
            return TrackingStatus(TrackingState.LOST, age, False, False,
                                  f"TRACKING LOST ({age:.1f} s) - OVERLAY HIDDEN",
                                  self._marker_visible)
        warn = cfg.stale_policy == "warn"
        tail = "OVERLAY NOT CURRENT" if warn else "OVERLAY HIDDEN"
        if age < 0:
            text = f"POSE {-age * 1e3:.0f} ms AHEAD OF FRAME (CLOCKS?) - {tail}"
        else:
            text = f"TRACKING STALE {age * 1e3:.0f} ms - {tail}"
        return TrackingStatus(TrackingState.STALE, age, False, warn, text, self._marker_visible)
