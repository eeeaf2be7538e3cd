"""One-Euro filtering of tracked poses: less jitter at rest, no lag when moving.

The 1€ filter (Casiez, Roussel & Vogel, "1€ Filter: A Simple Speed-based Low-pass Filter for
Noisy Input in Interactive Systems", CHI 2012) is an exponential smoother whose cutoff rises
with the filtered speed: ``fc = min_cutoff + beta * |dx/dt|`` (paper eq. 4), with smoothing
factor ``alpha = 1 / (1 + tau / Te)``, ``tau = 1 / (2 pi fc)`` (eq. 2-3) and ``Te`` the time
between samples in seconds (so ``beta`` is per unit/second). Timing comes from the samples'
capture timestamps, never from the wall clock, so dropped or late frames are handled exactly.

:class:`OneEuroFilter` is the paper's filter for a vector signal. :class:`PoseFilter` filters a
pose through control points at the distance where its errors matter, one shared gain, a
trend (prediction) term, a noise estimate of its own and a lag bound; see its docstring for why
a plain 1€ filter on translation and rotation separately lags a moving camera (it did: 1-5 px
on the synthetic overlay scene with ``beta`` 0.1 per deg/s, i.e. up to ``1 / (2 pi beta)`` =
1.6 deg of lag at any speed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform
from scrubin.registration.points import fit_batch

#: Noise samples (third differences) needed before :class:`PoseFilter` starts smoothing.
MIN_NOISE_SAMPLES = 6
#: Measurements the held-pose prediction (:meth:`PoseFilter.predict`) fits (1/3 s at 30 Hz).
PREDICT_SAMPLES = 10
#: Isotropic share of the noise metric (fraction of the mean variance of the 6 coordinates).
NOISE_FLOOR = 0.05


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


def _cross_sum(q: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``sum_k q_k x e_k`` of two (K, 3) arrays (``np.cross`` is ~10x slower for K = 6)."""
    qx, qy, qz = q[:, 0], q[:, 1], q[:, 2]
    ex, ey, ez = e[:, 0], e[:, 1], e[:, 2]
    return np.array([float(qy @ ez - qz @ ey), float(qz @ ex - qx @ ez),
                     float(qx @ ey - qy @ ex)])


class PoseFilter:
    """1€ filter of a pose ``T_dst_src`` through control points, with trend and a lag bound.

    Why not filter translation and rotation separately: the error that matters is where the
    pose *places things* (anatomy 50-150 mm from a reference marker, drawn in the image). A
    rotation filtered with its own cutoff lags by ``omega / (2 pi fc)`` degrees, which a lever
    arm of 100 mm turns into millimetres; and a camera rotating about its own centre moves the
    target's origin fast while its orientation turns slowly, so two independent cutoffs adapt to
    the wrong speeds. Here the pose is represented by ``K = 6`` control points ``p_k = ±lever_mm``
    along the target's axes (target frame, mm), mapped to ``x_k = T p_k`` (``dst`` frame, mm);
    one 1€ gain drives all of them and the filtered points are re-fitted to a rigid pose by the
    least-squares method of Arun, Huang & Blostein (1987) / Umeyama (1991) (SVD of the 3x3
    covariance). Per sample at capture time ``t`` (``Te = t - t_prev``, seconds, from the
    capture timestamps, never the wall clock):

    1. raw velocity ``v_k = (x_k - x_k,prev) / Te`` (mm/s); smoothed ``V_k += a_d (v_k - V_k)``,
       ``a_d = alpha(d_cutoff_hz)`` (Casiez et al. 2012, eq. 1-3 with ``dx`` per second);
    2. measurement noise, estimated online: the third divided difference of the last four
       measurements, ``sum_j c_j x_j`` with ``c_j = 1 / prod_(m != j) (t_j - t_m)``, is zero
       for any motion of constant acceleration, so pure noise of variance ``sum_j c_j^2``
       times the noise's. It is reduced to 6 pose coordinates (:meth:`_pose_coords`: mean
       translation, and ``lever * dtheta``) whose 6x6 covariance ``C`` is averaged (running
       mean, then a ``noise_cutoff_hz`` smoother; a sample beyond 9x the running trace is
       scaled down: a jerk must not pass for noise). Single-marker noise is very anisotropic
       (depth, out-of-plane tilt), so every "is this motion?" test below is a Mahalanobis
       length in ``C`` (plus a small isotropic floor), i.e. in units of noise sigmas;
    3. trend: ``r_V`` = RMS Mahalanobis length of ``V`` over the value noise alone gives
       (``a_d / Te sqrt(2 / (2 - a_d))``: EMA of differenced white noise); trend gate
       ``g = max(0, 1 - noise_gate / r_V)``; prediction ``x_pred = x_hat,prev + g V Te``;
    4. speed for the cutoff: ``s_e = max(g |V|, g_i |x - x_pred| / Te)`` (RMS over points,
       mm/s), ``g_i = max(0, 1 - noise_gate / r_i)`` with ``r_i`` the innovation's RMS
       Mahalanobis length: a start, stop or reversal the smoothed speed has not seen yet opens
       the filter at once; cutoff ``fc = min_cutoff_hz + beta s_e`` (paper eq. 4, beta per
       mm/s); ``x_hat = x_pred + alpha(fc) (x - x_pred)`` (paper eq. 1 around the
       prediction: no steady-state lag on constant-velocity motion, where the plain 1€ filter
       lags ``v / (2 pi fc)``);
    5. lag bound: an output whose Mahalanobis distance from the measurement exceeds
       ``clamp_sigma`` is pulled back to it along the same direction.

    Noise is only ever estimated, never configured: the filter adapts to the tracker's actual
    jitter (a 2x2 marker plate or a single small marker, near or far); the first
    ``MIN_NOISE_SAMPLES + 3`` samples after a (re)start pass unfiltered while it is learnt.
    At rest (``s_e`` ~ 0) this is an exponential smoother at ``min_cutoff_hz`` (jitter std x
    ``sqrt(a / (2 - a))``: /3.2 at 30 Hz and 1 Hz).

    Parameters
    ----------
    params
        1€ parameters of the control points: ``min_cutoff_hz`` (default 1 Hz), ``beta`` per mm/s
        of control-point speed (default 1), ``d_cutoff_hz`` (default 1 Hz).
    max_gap_s
        A gap between samples longer than this restarts the filter (no smoothing across a
        loss of tracking).
    lever_mm
        Distance of the control points from the target's origin (mm): the distance at which
        rotation and translation errors are weighed alike (the typical distance to the anatomy).
    noise_gate
        Velocities and innovations below ``noise_gate`` times what noise alone gives (RMS
        noise sigmas) count as rest.
    noise_cutoff_hz
        Cutoff of the running noise estimate (Hz).
    clamp_sigma
        Largest Mahalanobis distance (noise sigmas, 6 pose coordinates) of the output from
        the measurement.
    """

    def __init__(
        self,
        params: OneEuroParams | None = None,
        max_gap_s: float = 0.25,
        lever_mm: float = 100.0,
        noise_gate: float = 2.0,
        clamp_sigma: float = 5.0,
        noise_cutoff_hz: float = 0.2,
    ) -> None:
        if params is not None and not isinstance(params, OneEuroParams):
            raise RegistrationError(f"params must be OneEuroParams, got {type(params).__name__}")
        for label, v in (("max_gap_s", max_gap_s), ("lever_mm", lever_mm),
                         ("clamp_sigma", clamp_sigma), ("noise_cutoff_hz", noise_cutoff_hz)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise RegistrationError(f"{label} must be a finite number > 0, got {v!r}")
        if not isinstance(noise_gate, (int, float)) or not math.isfinite(noise_gate) \
                or noise_gate < 0:
            raise RegistrationError(f"noise_gate must be a finite number >= 0, got {noise_gate!r}")
        self.params = params or OneEuroParams(1.0, 1.0, 1.0)
        self.max_gap_s = float(max_gap_s)
        self.lever_mm = float(lever_mm)
        self.noise_gate = float(noise_gate)
        self.clamp_sigma = float(clamp_sigma)
        self.noise_cutoff_hz = float(noise_cutoff_hz)
        r = self.lever_mm
        #: control points, target frame (mm): +-lever along each axis (centroid at the origin)
        self.points_mm = np.array([[r, 0, 0], [-r, 0, 0], [0, r, 0], [0, -r, 0], [0, 0, r],
                                   [0, 0, -r]], dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget the history; the next sample passes unfiltered."""
        self._t: float | None = None
        self._x_hat: np.ndarray | None = None  # (K, 3) filtered control points, dst mm
        #: last <= 4 measurements: (capture time s, (K, 3) control points dst mm)
        self._hist: list[tuple[float, np.ndarray]] = []
        #: last <= PREDICT_SAMPLES measurements (same form) for :meth:`predict`
        self._meas: list[tuple[float, np.ndarray]] = []
        self._v_hat: np.ndarray | None = None  # (K, 3) smoothed velocity, mm/s
        self._cov: np.ndarray | None = None  # noise covariance of the 6 pose coordinates, mm^2
        self._n_noise = 0  # noise samples so far
        self._out: Transform | None = None
        self._g = 0.0  # trend gate of the last output (0 until the noise is known)
        #: last speed (mm/s), effective speed (mm/s), noise sigma (mm), cutoff (Hz) for reports
        self.last_state: dict[str, float] = {}

    @property
    def noise_sigma_mm(self) -> float | None:
        """Current noise estimate: RMS over the 6 pose coordinates (mm; :meth:`_pose_coords`).

        For translation noise only, of ``sigma`` per axis, this is ``sigma / sqrt(2)``
        (the rotation coordinates are then noise-free)."""
        return None if self._cov is None else math.sqrt(float(np.trace(self._cov)) / 6.0)

    @property
    def noise_cov_mm2(self) -> np.ndarray | None:
        """Current 6x6 noise covariance of the pose coordinates (translation mm, lever *
        rotation mm; ``dst`` axes)."""
        return None if self._cov is None else self._cov.copy()

    def _pose_coords(self, e_mm: np.ndarray, x_mm: np.ndarray) -> np.ndarray:
        """6 pose coordinates (mm) of control-point deviations ``e_mm`` (K, 3) at ``x_mm``.

        The mean deviation (a translation) and ``lever * dtheta``, the rotation that
        ``e_k = dtheta x q_k`` gives (``q_k`` the lever vectors of ``x_mm``):
        ``sum_k q_k x e_k = 4 lever^2 dtheta`` for the six ``±lever`` axis points.
        """
        q = x_mm - x_mm.mean(axis=0)
        return np.concatenate([e_mm.mean(axis=0),
                               _cross_sum(q, e_mm) / (4.0 * self.lever_mm)])

    def _fit(self, x_mm: np.ndarray, pose: Transform) -> Transform:
        """Rigid pose mapping the control points onto ``x_mm`` (Arun et al. 1987, SVD)."""
        rot, trans, _ = fit_batch(self.points_mm, x_mm)
        return Transform.from_rt(rot, trans, src=pose.src, dst=pose.dst,
                                 timestamp=pose.timestamp, source=dict(pose.source))

    def __call__(self, pose: Transform, t_s: float | None = None) -> Transform:
        """Filter ``pose`` captured at ``t_s`` (default ``pose.timestamp``), seconds.

        A sample not later than the previous one returns the previous output.
        """
        if not isinstance(pose, Transform):
            raise RegistrationError(f"PoseFilter needs a Transform, got {type(pose).__name__}")
        t = pose.timestamp if t_s is None else t_s
        if t is None or not math.isfinite(float(t)):
            raise RegistrationError("PoseFilter needs a finite capture timestamp (s)")
        t = float(t)
        if self._t is not None and t - self._t > self.max_gap_s:
            self.reset()
        x = pose.apply(self.points_mm)
        if self._t is None or self._x_hat is None or not self._hist:
            self._t, self._x_hat, self._hist = t, x.copy(), [(t, x)]
            self._meas = [(t, x)]
            self._out = pose
            return pose
        dt = t - self._t
        if dt <= 0:
            assert self._out is not None
            return Transform.from_rt(self._out.rotation, self._out.translation, src=pose.src,
                                     dst=pose.dst, timestamp=pose.timestamp,
                                     source=dict(pose.source))
        p = self.params
        v = (x - self._hist[-1][1]) / dt  # step 1: raw velocity, mm/s
        a_d = smoothing_factor(p.d_cutoff_hz, dt)
        self._hist = [*self._hist[-3:], (t, x)]
        self._meas = [*self._meas[-(PREDICT_SAMPLES - 1):], (t, x)]
        if len(self._hist) == 4:  # step 2: noise from the third divided difference
            ts = [h[0] for h in self._hist]
            c = [1.0 / math.prod(ts[j] - ts[m] for m in range(4) if m != j) for j in range(4)]
            dd3 = sum(cj * h[1] for cj, h in zip(c, self._hist, strict=True))
            y = self._pose_coords(dd3, x)
            sample = np.outer(y, y) / sum(cj * cj for cj in c)  # 6x6, mm^2
            self._n_noise += 1
            if self._cov is None:
                self._cov = sample
            else:
                grow = float(np.trace(sample)) / max(float(np.trace(self._cov)), 1e-300)
                if grow > 9.0 and self._n_noise > MIN_NOISE_SAMPLES:
                    sample = sample * (9.0 / grow)
                rate = max(smoothing_factor(self.noise_cutoff_hz, dt), 1.0 / self._n_noise)
                self._cov += rate * (sample - self._cov)
        self._v_hat = v.copy() if self._v_hat is None else self._v_hat + a_d * (v - self._v_hat)
        self._t = t
        if self._cov is None or self._n_noise < MIN_NOISE_SAMPLES:  # noise not known yet
            self._x_hat = x.copy()
            self._out = pose
            self._g = 0.0
            return pose
        tr = float(np.trace(self._cov))
        # noise metric (1/mm^2); the isotropic part keeps a direction whose noise was
        # under-estimated (few samples, a nearly noise-free coordinate) from reading as motion
        w = np.linalg.inv(self._cov + (NOISE_FLOOR * tr / 6.0 + 1e-18) * np.eye(6))
        x_ref = self._x_hat

        def rms(e: np.ndarray) -> float:  # RMS length over the points (mm or mm/s)
            return float(np.sqrt(np.mean(np.sum(e * e, axis=1))))

        def rms_w(e: np.ndarray) -> float:  # Mahalanobis length / sqrt(6): noise ~ 1
            y = self._pose_coords(e, x_ref)
            return float(np.sqrt(max(float(y @ w @ y), 0.0) / 6.0))

        gate = self.noise_gate
        speed, speed_w = rms(self._v_hat), rms_w(self._v_hat)  # step 3
        noise_w = a_d / dt * math.sqrt(2.0 / (2.0 - a_d))  # V of pure noise (sigmas/s)
        g = max(0.0, 1.0 - gate * noise_w / speed_w) if speed_w > 0 else 0.0  # step 4
        x_pred = self._x_hat + g * self._v_hat * dt
        # innovation: what the prediction missed, beyond what the noise explains
        innov, innov_w = rms(x - x_pred) / dt, rms_w(x - x_pred)
        gi = max(0.0, 1.0 - gate / innov_w) if innov_w > 0 else 0.0
        s_eff = max(speed * g, innov * gi)
        cutoff = p.min_cutoff_hz + p.beta * s_eff
        a = smoothing_factor(cutoff, dt)
        x_hat = x_pred + a * (x - x_pred)
        n = rms_w(x_hat - x) * math.sqrt(6.0)  # step 5: lag bound, Mahalanobis length
        if n > self.clamp_sigma:
            x_hat = x + (x_hat - x) * (self.clamp_sigma / n)
        self._x_hat = x_hat
        self._g = g
        self.last_state = {"speed_mm_s": speed, "innovation_speed_mm_s": innov,
                           "effective_speed_mm_s": s_eff, "noise_sigma_mm": math.sqrt(tr / 6),
                           "cutoff_hz": cutoff, "trend_gate": g}
        self._out = self._fit(x_hat, pose)
        return self._out

    def predict(self, t_s: float) -> Transform | None:
        """The pose predicted to capture time ``t_s`` (s) for a frame without a measurement.

        A held pose drawn on a moving camera is off by its motion since the last measurement
        (up to 6.7 px on the synthetic camera path after 0.1 s). The prediction fits a
        quadratic in time (constant acceleration) by least squares to each control point's
        last ``PREDICT_SAMPLES`` *measurements* (``x_k(t) = a + b (t - t_n) + c (t - t_n)^2``;
        linear with 2-5 samples), evaluates it at ``t_s`` and re-fits a rigid pose (Arun et
        al. 1987). The step-3 trend ``x_hat + g V dt`` is not used for this: ``V`` is an
        exponential average of the velocity and lags whenever the camera accelerates (on the
        synthetic path it left 1.2 px median, 2.7 px max after 1-3 frames, against 0.35 / 1.1
        px for the quadratic; ``tests/registration/test_filters.py``). At rest the trend gate
        ``g`` of step 3 is 0 and the filtered output is held (an extrapolated quadratic
        would add noise); in between the two are blended with weight ``g``:
        ``x = x_hat + g (x_quad(t_s) - x_hat)``.

        ``t_s`` not after the last sample returns the last output. The result is stamped
        ``t_s`` (the time it is predicted for); the filter's state is unchanged. None before
        the first sample.
        """
        if isinstance(t_s, bool) or not isinstance(t_s, int | float) or not math.isfinite(t_s):
            raise RegistrationError(f"prediction time must be a finite number of seconds, got "
                                    f"{t_s!r}")
        if self._out is None or self._t is None or self._x_hat is None:
            return None
        out = self._out
        dt = float(t_s) - self._t
        x = self._x_hat
        if dt > 0 and self._g > 0.0 and len(self._meas) >= 2:
            ts = np.array([m[0] for m in self._meas]) - self._t  # s, last sample at 0
            pts = np.stack([m[1] for m in self._meas]).reshape(len(ts), -1)  # (n, K*3) mm
            deg = 2 if len(ts) >= 6 else 1
            a = np.vander(ts, deg + 1)
            coef, *_ = np.linalg.lstsq(a, pts, rcond=None)
            x_quad = (np.vander(np.array([dt]), deg + 1) @ coef).reshape(-1, 3)
            x = self._x_hat + self._g * (x_quad - self._x_hat)
        fit = self._fit(x, out)
        return Transform(fit.matrix, out.src, out.dst, timestamp=float(t_s),
                         source=dict(out.source), clock=out.clock)
