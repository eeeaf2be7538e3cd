"""One-Euro filtering of tracked poses: less jitter at rest, little lag when moving.

The 1€ filter (Casiez, Roussel & Vogel, "1€ Filter: A Simple Speed-based Low-pass Filter for
Noisy Input in Interactive Systems", CHI 2012) is an exponential smoother whose cutoff rises
with the filtered speed: ``fc = min_cutoff + beta * |dx/dt|`` (paper eq. for ``fc``), with
smoothing factor ``alpha = 1 / (1 + tau / Te)``, ``tau = 1 / (2 pi fc)`` (paper §3) and ``Te``
the time between samples. Timing comes from the samples' capture timestamps, never from the
wall clock, so dropped or late frames are handled exactly.

Rotation is filtered on the manifold: the measured rotation is expressed relative to the
previous filtered one as a rotation vector ``w = log(R_hat_prev^T R)``; its angle over ``Te``
is the angular speed (deg/s) that sets the cutoff, and the filtered rotation is
``R_hat = R_hat_prev exp(alpha w)`` (a slerp by ``alpha``). Translation (mm) is filtered per
axis with the speed taken as the norm of the filtered velocity vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from registration.errors import RegistrationError
from registration.frames import Transform


@dataclass(frozen=True)
class OneEuroParams:
    """Parameters of one 1€ filter.

    min_cutoff_hz
        Cutoff at rest (Hz): lower = less jitter, more lag when slow.
    beta
        Cutoff increase per unit of speed (per mm/s for translation, per deg/s for rotation).
    d_cutoff_hz
        Cutoff of the speed estimate (Hz).
    """

    min_cutoff_hz: float = 1.0
    beta: float = 0.05
    d_cutoff_hz: float = 1.0

    def __post_init__(self) -> None:
        for name in ("min_cutoff_hz", "beta", "d_cutoff_hz"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise RegistrationError(f"One-Euro {name} must be a finite number >= 0, got {v!r}")
        if self.min_cutoff_hz <= 0 or self.d_cutoff_hz <= 0:
            raise RegistrationError("One-Euro cutoffs must be > 0 Hz")


def smoothing_factor(cutoff_hz: float, dt_s: float) -> float:
    """``alpha = 1 / (1 + tau / Te)`` with ``tau = 1 / (2 pi fc)`` (Casiez et al. 2012, §3)."""
    if not (cutoff_hz > 0 and dt_s > 0 and math.isfinite(cutoff_hz) and math.isfinite(dt_s)):
        raise RegistrationError(
            f"smoothing factor needs a cutoff > 0 Hz and a time step > 0 s, got {cutoff_hz}, "
            f"{dt_s}")
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """1€ filter of a vector signal (e.g. a translation in mm) sampled at given times (s)."""

    def __init__(self, params: OneEuroParams | None = None) -> None:
        self.params = params or OneEuroParams()
        self.reset()

    def reset(self) -> None:
        """Forget the history; the next sample passes unfiltered."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        """Filter sample ``x`` taken at capture time ``t_s``; returns the filtered value.

        A sample not later than the previous one (``dt <= 0``) returns the previous output.
        """
        v = np.asarray(x, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(v)) or not math.isfinite(t_s):
            raise RegistrationError("One-Euro filter input and timestamp must be finite")
        if self._x is None or self._t is None or self._dx is None:
            self._x, self._dx, self._t = v.copy(), np.zeros_like(v), float(t_s)
            return v.copy()
        if v.shape != self._x.shape:
            raise RegistrationError(f"filter input changed shape {self._x.shape} -> {v.shape}")
        dt = float(t_s) - self._t
        if dt <= 0:
            return self._x.copy()
        p = self.params
        dx = (v - self._x) / dt
        a_d = smoothing_factor(p.d_cutoff_hz, dt)
        self._dx = self._dx + a_d * (dx - self._dx)
        cutoff = p.min_cutoff_hz + p.beta * float(np.linalg.norm(self._dx))
        a = smoothing_factor(cutoff, dt)
        self._x = self._x + a * (v - self._x)
        self._t = float(t_s)
        return self._x.copy()


class PoseFilter:
    """1€ filter of a pose ``T_dst_src``: translation (mm) and rotation (on SO(3)).

    Parameters
    ----------
    translation
        Parameters for the translation; ``beta`` per mm/s (default 1 Hz, 0.05, 1 Hz).
    rotation
        Parameters for the rotation; ``beta`` per deg/s (default 1 Hz, 0.1, 1 Hz).
    max_gap_s
        A gap between samples longer than this restarts the filter (no smoothing across a
        loss of tracking).
    """

    def __init__(
        self,
        translation: OneEuroParams | None = None,
        rotation: OneEuroParams | None = None,
        max_gap_s: float = 0.25,
    ) -> None:
        if not math.isfinite(max_gap_s) or max_gap_s <= 0:
            raise RegistrationError(f"max_gap_s must be > 0, got {max_gap_s}")
        self.translation = OneEuroFilter(translation or OneEuroParams(1.0, 0.05, 1.0))
        self.rotation_params = rotation or OneEuroParams(1.0, 0.1, 1.0)
        self.max_gap_s = float(max_gap_s)
        self.reset()

    def reset(self) -> None:
        """Forget the history."""
        self.translation.reset()
        self._r: Rotation | None = None
        self._w_speed = 0.0
        self._t: float | None = None

    def __call__(self, pose: Transform, t_s: float | None = None) -> Transform:
        """Filter ``pose`` captured at ``t_s`` (default ``pose.timestamp``)."""
        if not isinstance(pose, Transform):
            raise RegistrationError(f"PoseFilter needs a Transform, got {type(pose).__name__}")
        t = pose.timestamp if t_s is None else t_s
        if t is None or not math.isfinite(float(t)):
            raise RegistrationError("PoseFilter needs a finite capture timestamp (s)")
        t = float(t)
        if self._t is not None and (t - self._t > self.max_gap_s):
            self.reset()
        r_new = Rotation.from_matrix(pose.rotation)
        if self._r is None or self._t is None:
            self._r, self._t, self._w_speed = r_new, t, 0.0
            self.translation(pose.translation, t)
            return pose
        dt = t - self._t
        tr = self.translation(pose.translation, t)
        if dt > 0:
            p = self.rotation_params
            w = (self._r.inv() * r_new).as_rotvec()  # relative rotation, body frame (rad)
            speed = math.degrees(float(np.linalg.norm(w))) / dt
            self._w_speed += smoothing_factor(p.d_cutoff_hz, dt) * (speed - self._w_speed)
            a = smoothing_factor(p.min_cutoff_hz + p.beta * self._w_speed, dt)
            self._r = self._r * Rotation.from_rotvec(a * w)
            self._t = t
        return Transform.from_rt(self._r.as_matrix(), tr, src=pose.src, dst=pose.dst,
                                 timestamp=pose.timestamp, source=dict(pose.source))
