"""The one tracking-state machine: LIVE / HELD / STALE / LOST on capture timestamps.

Used by the marker tracker (:class:`scrubin.registration.tracker.MarkerTracker`, ``scrubin
track``) and by the overlay's gate (:class:`scrubin.overlay.safety.TrackingGate`, ``scrubin
overlay``) with the same defaults (:data:`DEFAULT_LIMITS`), so a report never holds two
verdicts on one frame. Ages are *capture* times (frame capture time minus the capture time of
the newest valid pose), never the wall clock.

States (``age = frame_time - pose_time``, seconds; limits from :class:`TrackingLimits`)

* ``LIVE``  : ``-sync_s <= age <= sync_s``: the pose was measured for this frame (within the
  synchronisation tolerance of two clocks, e.g. a 60 Hz tracker against a 30 Hz camera).
* ``HELD``  : ``sync_s < age <= stale_after_s``: no measurement for this frame; the last pose
  is *predicted* to the frame's capture time (the pose filter's trend term,
  :meth:`scrubin.registration.filters.PoseFilter.predict`) and drawn as current; the HUD says
  "HELD" with the age.
* ``STALE`` : ``stale_after_s < age <= lost_after_s``, or the pose is newer than the frame by
  more than ``sync_s`` (the clocks disagree): the overlay is hidden (or drawn in the warning
  look), and poses that depend on the tracking are not streamed.
* ``LOST``  : no valid pose yet, or ``age > lost_after_s``.

Recovery: after STALE or LOST the machine needs ``recover_frames`` consecutive frames that
would be LIVE or HELD before it reports them again (1 = at once).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from scrubin.registration.errors import RegistrationError


class TrackingState(enum.Enum):
    """Tracking state of one frame (the value is what reports and the HUD show)."""

    LIVE = "LIVE"
    HELD = "HELD"
    STALE = "STALE"
    LOST = "LOST"

    @property
    def shown(self) -> bool:
        """Whether a pose in this state may be drawn / streamed as current (LIVE, HELD)."""
        return self in (TrackingState.LIVE, TrackingState.HELD)


@dataclass(frozen=True)
class TrackingLimits:
    """Capture-time limits of the state machine (seconds).

    Attributes
    ----------
    sync_s
        Largest ``|age|`` of a pose still counted as measured for the frame (LIVE).
    stale_after_s
        Largest age of a held (predicted) pose drawn as current (HELD); older is STALE.
    lost_after_s
        Age from which tracking is LOST (>= ``stale_after_s``).
    recover_frames
        Consecutive LIVE/HELD frames needed to leave STALE / LOST.
    """

    sync_s: float = 0.02
    stale_after_s: float = 0.1
    lost_after_s: float = 0.5
    recover_frames: int = 1

    def __post_init__(self) -> None:
        for name in ("sync_s", "stale_after_s", "lost_after_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v < 0:
                raise RegistrationError(
                    f"tracking limit {name} must be a finite number >= 0 s, got {v!r}")
        if self.stale_after_s < self.sync_s:
            raise RegistrationError(f"tracking limit stale_after_s ({self.stale_after_s}) must "
                                    f"be >= sync_s ({self.sync_s})")
        if self.lost_after_s < self.stale_after_s:
            raise RegistrationError(f"tracking limit lost_after_s ({self.lost_after_s}) must be "
                                    f">= stale_after_s ({self.stale_after_s})")
        if isinstance(self.recover_frames, bool) or not isinstance(self.recover_frames, int) \
                or self.recover_frames < 1:
            raise RegistrationError(f"tracking limit recover_frames must be an integer >= 1, "
                                    f"got {self.recover_frames!r}")

    def to_json(self) -> dict[str, float | int]:
        """The limits as a JSON object (seconds)."""
        return {"sync_s": self.sync_s, "stale_after_s": self.stale_after_s,
                "lost_after_s": self.lost_after_s, "recover_frames": self.recover_frames}


#: The defaults of ``scrubin track`` and ``scrubin overlay`` alike.
DEFAULT_LIMITS = TrackingLimits()


@dataclass(frozen=True)
class TrackingVerdict:
    """The machine's answer for one frame.

    ``recovering`` counts the LIVE/HELD frames seen so far while leaving STALE / LOST (state
    then STALE); 0 otherwise.
    """

    state: TrackingState
    age_s: float | None
    recovering: int = 0


def check_time(name: str, t: float) -> float:
    """``t`` as a float, or :class:`RegistrationError` naming ``name`` when not finite."""
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise RegistrationError(f"{name} must be a finite capture time in seconds, got {t!r}")
    return float(t)


class TrackingStateMachine:
    """LIVE / HELD / STALE / LOST from pose and frame capture times (module docstring)."""

    def __init__(self, limits: TrackingLimits | None = None) -> None:
        if limits is not None and not isinstance(limits, TrackingLimits):
            raise RegistrationError(f"limits must be TrackingLimits, got "
                                    f"{type(limits).__name__}")
        self.limits = limits or DEFAULT_LIMITS
        self.reset()

    def reset(self) -> None:
        """Forget all poses (a new stream or a replay restart)."""
        self.pose_time: float | None = None
        self.marker_visible = False
        self._run = 0
        self._shown = False
        self._last_frame: float | None = None

    def observe(self, capture_time_s: float, valid: bool = True) -> None:
        """One tracking message: its capture time and whether it measured the target.

        Invalid messages do not refresh the pose time, so the pose ages through HELD, STALE
        and LOST.
        """
        t = check_time("pose capture time", capture_time_s)
        self.marker_visible = bool(valid)
        if valid and (self.pose_time is None or t > self.pose_time):
            self.pose_time = t

    def evaluate(self, frame_time_s: float, pose_time_s: float | None = None) -> TrackingVerdict:
        """The state of the frame captured at ``frame_time_s``.

        ``pose_time_s``: capture time of the pose to be drawn (default: the newest valid pose
        observed). A frame earlier than the previous one (replay restart) restarts recovery.
        """
        lim = self.limits
        tf = check_time("frame capture time", frame_time_s)
        if self._last_frame is not None and tf < self._last_frame:
            self._run, self._shown = 0, False
        self._last_frame = tf
        tp = self.pose_time if pose_time_s is None else check_time("pose time", pose_time_s)
        if tp is None:
            self._run, self._shown = 0, False
            return TrackingVerdict(TrackingState.LOST, None)
        age = tf - tp
        if -lim.sync_s <= age <= lim.stale_after_s:
            self._run += 1
            if self._shown or self._run >= lim.recover_frames:
                self._shown = True
                state = TrackingState.LIVE if age <= lim.sync_s else TrackingState.HELD
                return TrackingVerdict(state, age)
            return TrackingVerdict(TrackingState.STALE, age, self._run)
        self._run, self._shown = 0, False
        if age > lim.lost_after_s:
            return TrackingVerdict(TrackingState.LOST, age)
        return TrackingVerdict(TrackingState.STALE, age)
