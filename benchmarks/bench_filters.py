"""Pose filtering (:class:`~registration.filters.PoseFilter`): jitter at rest, error when moving.

Known truth, no images: the marker corners of a target are projected with the true pose
``T_CAMERA_TARGET(t)`` into a 1280x720 camera (f = 1000 px), Gaussian corner noise is added
(``sigma`` px, as edge-refined corners of rendered frames), and the pose is re-measured per
frame with the tracker's solver (:meth:`~registration.bodies.RigidBody.estimate_pose`, previous
pose as the flip prior). Raw and filtered poses are compared with the truth: translation (mm),
rotation (deg) and the image error (px) at three "anatomy" points 100-150 mm from the target's
origin (where an overlay is drawn). Motions: a static target; sinusoidal linear motion of
0.5 and 1 m/s peak; a camera panning (rotation about the camera centre: the lever-arm case) of
90 and 180 deg/s peak; the target turning about its own axis at 90 and 180 deg/s peak; and the
synthetic overlay scene's camera path (:func:`scrubin.samples.synthetic.camera_path`, plate body).
Frames at 30 Hz. Also printed: the former filter (separate 1€ filters on translation and on
rotation, beta 0.05 per mm/s and 0.1 per deg/s) on the same measurements, for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from scrubin.registration.bodies import RigidBody
from scrubin.registration.camera import CameraModel
from scrubin.registration.filters import OneEuroFilter, OneEuroParams, PoseFilter, smoothing_factor
from scrubin.registration.frames import Transform
from scrubin.registration.markers import MarkerDetections

CAMERA = CameraModel(np.array([[1000.0, 0, 639.5], [0, 1000.0, 359.5], [0, 0, 1]]), np.zeros(5),
                     1280, 720)
#: "anatomy" points in the target frame (mm), 100-150 mm from its origin, behind the marker
TARGETS_MM = np.array([[0.0, -120.0, -40.0], [80.0, -60.0, -60.0], [-90.0, 40.0, -50.0]])
RATE_HZ = 30.0


def plate(marker_mm: float = 44.0, gap_mm: float = 12.0) -> RigidBody:
    """2x2 markers (ids 0-3) on a plate, as the synthetic overlay scene's reference."""
    h, c = marker_mm / 2, (marker_mm + gap_mm) / 2
    markers = {}
    for mid, (cx, cy) in enumerate([(-c, c), (c, c), (-c, -c), (c, -c)]):
        markers[mid] = np.array([[cx - h, cy + h, 0], [cx + h, cy + h, 0],
                                 [cx + h, cy - h, 0], [cx - h, cy - h, 0]], dtype=np.float64)
    return RigidBody("REF", markers, "DICT_4X4_50")


def measure(body: RigidBody, truth: list[Transform], sigma_px: float,
            seed: int) -> list[Transform]:
    """Raw poses from the true corners plus Gaussian noise (px), solved as the tracker does."""
    rng = np.random.default_rng(seed)
    ids = np.array(body.ids)
    corners = np.stack([body.markers[m] for m in body.ids])  # (M, 4, 3) target mm
    out: list[Transform] = []
    for pose in truth:
        uv = CAMERA.project(pose.apply(corners.reshape(-1, 3))).reshape(-1, 4, 2)
        det = MarkerDetections(ids, uv + rng.normal(0.0, sigma_px, uv.shape))
        bp = body.estimate_pose(det, CAMERA, timestamp=pose.timestamp,
                                prior=out[-1] if out else None)
        assert bp is not None
        out.append(bp.estimate.pose)
    return out


def errors(est: list[Transform], truth: list[Transform]) -> np.ndarray:
    """(N, 3): translation error (mm), rotation error (deg), mean anatomy-point error (px)."""
    rows = []
    for e, t in zip(est, truth, strict=True):
        dr = Rotation.from_matrix(e.rotation.T @ t.rotation).magnitude()
        px = np.linalg.norm(CAMERA.project(e.apply(TARGETS_MM))
                            - CAMERA.project(t.apply(TARGETS_MM)), axis=1)
        rows.append([np.linalg.norm(e.translation - t.translation), math.degrees(dr), px.mean()])
    return np.array(rows)


class ComponentFilter:
    """The former filter: 1€ on translation (mm) and on the rotation angle (deg) separately."""

    def __init__(self) -> None:
        self.tr = OneEuroFilter(OneEuroParams(1.0, 0.05, 1.0))
        self.r: Rotation | None = None
        self.t: float | None = None
        self.speed = 0.0

    def __call__(self, pose: Transform) -> Transform:
        t = float(pose.timestamp)
        r_new = Rotation.from_matrix(pose.rotation)
        tr = self.tr(pose.translation, t)
        if self.r is None or self.t is None:
            self.r, self.t = r_new, t
            return pose
        dt = t - self.t
        w = (self.r.inv() * r_new).as_rotvec()
        speed = math.degrees(float(np.linalg.norm(w))) / dt
        self.speed += smoothing_factor(1.0, dt) * (speed - self.speed)
        a = smoothing_factor(1.0 + 0.1 * self.speed, dt)
        self.r, self.t = self.r * Rotation.from_rotvec(a * w), t
        return Transform.from_rt(self.r.as_matrix(), tr, src=pose.src, dst=pose.dst,
                                 timestamp=t)


def sequence(fn: Callable[[float], Transform], n: int) -> list[Transform]:
    """Truth poses ``fn(t)`` at ``t = k / RATE_HZ``, stamped."""
    out = []
    for k in range(n):
        p = fn(k / RATE_HZ)
        out.append(Transform.from_rt(p.rotation, p.translation, src="REF", dst="CAMERA",
                                     timestamp=k / RATE_HZ))
    return out


BASE = Transform.from_rt(Rotation.from_euler("xyz", [180 + 20, 15, 5], degrees=True).as_matrix(),
                         np.array([30.0, -20.0, 500.0]), src="REF", dst="CAMERA")


def linear(speed_mm_s: float) -> Callable[[float], Transform]:
    """Side-to-side (and in depth) sinusoid of amplitude 150 mm and peak ``speed_mm_s``."""
    d = np.array([0.8, 0.3, 0.5]) / np.linalg.norm([0.8, 0.3, 0.5])
    w = speed_mm_s / 150.0

    def fn(t: float) -> Transform:
        return Transform.from_rt(BASE.rotation, BASE.translation + 150.0 * math.sin(w * t) * d,
                                 src="REF", dst="CAMERA")
    return fn


def panning(deg_s: float) -> Callable[[float], Transform]:
    """The camera turns about its own centre (y axis), +-25 deg, peak ``deg_s``."""
    w = math.radians(deg_s) / math.radians(25.0)

    def fn(t: float) -> Transform:
        r = Rotation.from_euler("y", 25.0 * math.sin(w * t), degrees=True).as_matrix()
        return Transform.from_rt(r @ BASE.rotation, r @ BASE.translation, src="REF", dst="CAMERA")
    return fn


def turning(deg_s: float) -> Callable[[float], Transform]:
    """The target turns about its own x/y axis, +-30 deg, peak ``deg_s``."""
    w = math.radians(deg_s) / math.radians(30.0)
    axis = np.array([0.6, 0.8, 0.0])

    def fn(t: float) -> Transform:
        r = Rotation.from_rotvec(axis * math.radians(30.0) * math.sin(w * t)).as_matrix()
        return Transform.from_rt(BASE.rotation @ r, BASE.translation, src="REF", dst="CAMERA")
    return fn


def static() -> Callable[[float], Transform]:
    """The target at rest."""
    return lambda t: BASE


def scene_path() -> Callable[[float], Transform]:
    """``T_CAMERA_REF`` of the synthetic overlay scene (its camera path and plate)."""
    from scrubin.samples.synthetic import camera_path, plate_pose

    t_ct_ref = plate_pose().inverse()
    look_at = np.array([0.0, -30.0, 65.0])  # about the scene's (head centre + its offset)
    return lambda t: camera_path(t, look_at) @ t_ct_ref


def row(label: str, body: RigidBody, fn: Callable[[float], Transform], sigma_px: float,
        n: int = 240, skip: int = 30) -> None:
    """One table line: raw / former / new filter, mean and p95 of the three errors."""
    truth = sequence(fn, n)
    raw = measure(body, truth, sigma_px, seed=len(label))
    new, old = PoseFilter(), ComponentFilter()
    e = {"raw": errors(raw, truth)[skip:], "1€ t+R": errors([old(p) for p in raw], truth)[skip:],
         "new": errors([new(p) for p in raw], truth)[skip:]}
    for name, v in e.items():
        mean, p95 = v.mean(axis=0), np.percentile(v, 95, axis=0)
        print(f"  {label:<28} {name:<7} t {mean[0]:6.3f} / {p95[0]:6.3f} mm   R {mean[1]:6.3f} / "
              f"{p95[1]:6.3f} deg   anatomy {mean[2]:6.3f} / {p95[2]:6.3f} px")


def jitter(label: str, body: RigidBody, sigma_px: float, n: int = 300, skip: int = 30) -> None:
    """Static target: std of translation (mm, mean over axes) and rotation (deg), raw vs new."""
    truth = sequence(static(), n)
    raw = measure(body, truth, sigma_px, seed=3)
    f = PoseFilter()
    out = [f(p) for p in raw]

    def stds(ps: list[Transform]) -> tuple[float, float, float]:
        t = np.array([p.translation for p in ps[skip:]])
        rv = np.array([(Rotation.from_matrix(p.rotation) * Rotation.from_matrix(
            BASE.rotation).inv()).as_rotvec() for p in ps[skip:]])
        px = errors(ps[skip:], truth[skip:])[:, 2]
        return (float(t.std(axis=0).mean()), math.degrees(float(rv.std(axis=0).mean())),
                float(px.mean()))

    (tr, rr, pr), (tf, rf, pf) = stds(raw), stds(out)
    print(f"  {label:<28} std t {tr:.3f} -> {tf:.3f} mm ({tr / tf:.1f}x)   std R {rr:.4f} -> "
          f"{rf:.4f} deg ({rr / rf:.1f}x)   anatomy mean {pr:.3f} -> {pf:.3f} px")


def main() -> None:
    """Print the jitter and motion tables."""
    single = RigidBody.single(0, 44.0, "REF")
    body = plate()
    print("pose filter, static target at 0.5 m, 30 Hz (std over 270 frames, raw -> filtered):")
    for sigma in (0.1, 0.3):
        jitter(f"44 mm marker, {sigma} px", single, sigma)
        jitter(f"2x2 plate, {sigma} px", body, sigma)
    print("pose filter in motion, 30 Hz: error vs truth, mean / p95 (raw, former 1€ t+R, new):")
    cases = [("static", static()), ("linear 0.5 m/s", linear(500.0)),
             ("linear 1 m/s", linear(1000.0)), ("camera pan 90 deg/s", panning(90.0)),
             ("camera pan 180 deg/s", panning(180.0)), ("target turn 90 deg/s", turning(90.0)),
             ("target turn 180 deg/s", turning(180.0)), ("overlay scene path", scene_path())]
    for label, fn in cases:
        row(f"plate 0.2 px {label}", body, fn, 0.2)
    for label, fn in cases[:5]:
        row(f"marker 0.2 px {label}", single, fn, 0.2)


if __name__ == "__main__":
    main()
