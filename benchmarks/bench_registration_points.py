"""Point-based registration: eq. 46 validation table, fiducial localisation, speed vs peers.

Prints
* the Fitzpatrick-West-Maurer (1998, eq. 46) predicted RMS TRE against the RMS TRE measured
  over vectorised Monte-Carlo trials (isotropic Gaussian FLE, per-axis σ = FLE/√3) for several
  fiducial layouts and targets, with their ratio;
* the CT fiducial localisation error on the small, small-oblique and full phantoms (mm, voxels);
* the time of one paired registration (8 points) against open3d's
  ``TransformationEstimationPointToPoint().compute_transformation`` and SimpleITK's
  ``LandmarkBasedTransformInitializer`` (ratios of medians, interleaved, same process), and
  the time of unpaired matching and of fiducial detection.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import interleaved, ratio_line
from scrubin.registration.tre import VALIDATION_LAYOUTS_MM as LAYOUTS

FLE_MM = 0.5
TRIALS = 20000
REPEAT = 200  # registrations per timed call

def _tre_table() -> None:
    from scrubin.registration.tre import predicted_tre_mm, simulate_tre_mm, validation_targets_mm

    rng = np.random.default_rng(0)
    print(f"TRE validation: FLE {FLE_MM} mm RMS (sigma {FLE_MM / np.sqrt(3):.3f} mm/axis), "
          f"{TRIALS} trials each")
    print(f"  {'layout':26s} {'target':16s} {'predicted':>9s} {'simulated':>9s} {'ratio':>6s}")
    worst = 0.0
    for name, fid in LAYOUTS.items():
        tg = validation_targets_mm(fid)
        pts = np.array(list(tg.values()))
        pred = predicted_tre_mm(fid, pts, FLE_MM)
        sim = simulate_tre_mm(fid, pts, FLE_MM, trials=TRIALS, rng=rng)
        for label, p, s in zip(tg, pred, sim, strict=True):
            worst = max(worst, abs(s / p - 1.0))
            print(f"  {name:26s} {label:16s} {p:8.3f}  {s:8.3f}  {s / p:6.3f}")
    print(f"  largest |simulated/predicted - 1| = {worst:.1%}")


def _localisation() -> None:
    from scrubin.imaging.load import load_volume
    from scrubin.registration.fiducials import find_fiducials
    from scrubin.samples.phantom import ensure_sample, load_truth

    for name in ("small", "small-oblique", "full"):
        folder = ensure_sample(name)
        truth = load_truth(folder)
        vol = load_volume(folder)
        t0 = time.perf_counter()
        found = find_fiducials(vol)
        dt = time.perf_counter() - t0
        true = np.array([f["center_lps"] for f in truth["fiducials"]])
        got = np.array([f.center_lps_mm for f in found]).reshape(-1, 3)
        d = np.linalg.norm(got[:, None] - true[None], axis=2)
        err = d.min(axis=1)
        vox = np.linalg.norm(vol.lps_to_index(got) - vol.lps_to_index(true[d.argmin(axis=1)]),
                             axis=1)
        print(f"fiducials {name} (spacing {np.round(vol.spacing, 2).tolist()} mm): "
              f"{len(found)}/{len(true)} found, error RMS {np.sqrt(np.mean(err**2)):.3f} mm, "
              f"max {err.max():.3f} mm = {vox.max():.3f} voxel; detection {dt * 1e3:.0f} ms")


def _speed() -> None:
    import open3d as o3d
    import SimpleITK

    from scrubin.registration.correspondence import match_points
    from scrubin.registration.points import fit_batch, register_points

    rng = np.random.default_rng(1)
    ct = LAYOUTS["8 on a cube"]
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.linalg.det(q)
    ref = ct @ q.T + [10.0, -20.0, 30.0] + rng.normal(0, 0.3, ct.shape)

    est = o3d.pipelines.registration.TransformationEstimationPointToPoint()
    src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(ct))
    dst = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(ref))
    corr = o3d.utility.Vector2iVector(np.c_[np.arange(len(ct)), np.arange(len(ct))])
    fixed_flat = [float(v) for v in ref.ravel()]
    moving_flat = [float(v) for v in ct.ravel()]

    def ours() -> None:
        for _ in range(REPEAT):
            register_points(ref, ct)

    def ours_core() -> None:
        for _ in range(REPEAT):
            fit_batch(ct, ref)

    def open3d_p2p() -> None:
        for _ in range(REPEAT):
            est.compute_transformation(src, dst, corr)

    def sitk_landmarks() -> None:
        for _ in range(REPEAT):
            SimpleITK.LandmarkBasedTransformInitializer(
                SimpleITK.VersorRigid3DTransform(), fixed_flat, moving_flat
            )

    ref_o3d = np.asarray(est.compute_transformation(src, dst, corr))
    ours_m = register_points(ref, ct).transform.matrix
    print(f"agreement with open3d: max |matrix difference| {np.abs(ref_o3d - ours_m).max():.2e}")
    times = interleaved({"ours": ours, "core": ours_core, "open3d": open3d_p2p,
                         "sitk": sitk_landmarks}, runs=7)
    label = f"paired rigid, 8 points, x{REPEAT} (register_points: checks + Transform)"
    print(ratio_line(label, times["ours"], times["open3d"], "open3d PointToPoint"))
    print(ratio_line(label, times["ours"], times["sitk"], "SimpleITK LandmarkBased"))
    core = f"paired rigid, 8 points, x{REPEAT} (closed-form core fit_batch only)"
    print(ratio_line(core, times["core"], times["open3d"], "open3d PointToPoint"))

    batch_m = np.broadcast_to(ct, (10000, *ct.shape))
    batch_f = batch_m + rng.normal(0, 0.3, batch_m.shape)
    t0 = time.perf_counter()
    fit_batch(batch_m, batch_f)
    print(f"batched closed form (Monte-Carlo path): 10000 x 8 points in "
          f"{(time.perf_counter() - t0) * 1e3:.1f} ms")

    perm = rng.permutation(len(ref))
    t0 = time.perf_counter()
    for _ in range(20):
        match_points(ref[perm][1:], ct)
    print(f"unpaired matching, 8 CT vs 7 tracked points (one missing): "
          f"{(time.perf_counter() - t0) / 20 * 1e3:.1f} ms")


def main() -> None:
    """Print the TRE table, localisation errors and timings."""
    _tre_table()
    _localisation()
    _speed()


if __name__ == "__main__":
    main()
