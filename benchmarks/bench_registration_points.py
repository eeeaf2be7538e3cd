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

FLE_MM = 0.5
TRIALS = 20000
REPEAT = 200  # registrations per timed call

LAYOUTS = {
    "4 spread (tetrahedron)": np.array(
        [[60, 0, -30], [-30, 52, -30], [-30, -52, -30], [0, 0, 60]], float
    ),
    "6 spread (head)": np.array(
        [[70, 10, 20], [-70, 5, 25], [0, 90, 30], [5, -90, 20], [20, 30, 95], [-25, -20, -40]],
        float,
    ),
    "8 on a cube": np.array(
        [[x, y, z] for x in (-50, 50) for y in (-40, 40) for z in (-45, 45)], float
    ) + np.array([[3, -2, 1], [0, 4, -3], [-2, 0, 2], [1, 1, 0],
                  [4, -1, 2], [-3, 2, 0], [0, -4, 1], [2, 3, -2]]),
    "5 elongated near-planar": np.array(
        [[0, 0, 0], [120, 4, 1], [40, 20, -2], [80, -18, 2], [60, 2, 6]], float
    ),
}


def _targets(fid: np.ndarray) -> dict[str, np.ndarray]:
    c = fid.mean(axis=0)
    _, _, vt = np.linalg.svd(fid - c)
    return {
        "centroid": c,
        "deep 40 mm": c + 40.0 * vt[2],
        "off-axis 150 mm": c + 150.0 * (vt[1] + vt[2]) / np.sqrt(2),
    }


def _tre_table() -> None:
    from registration.tre import predicted_tre_mm, simulate_tre_mm

    rng = np.random.default_rng(0)
    print(f"TRE validation: FLE {FLE_MM} mm RMS (sigma {FLE_MM / np.sqrt(3):.3f} mm/axis), "
          f"{TRIALS} trials each")
    print(f"  {'layout':26s} {'target':16s} {'predicted':>9s} {'simulated':>9s} {'ratio':>6s}")
    worst = 0.0
    for name, fid in LAYOUTS.items():
        tg = _targets(fid)
        pts = np.array(list(tg.values()))
        pred = predicted_tre_mm(fid, pts, FLE_MM)
        sim = simulate_tre_mm(fid, pts, FLE_MM, trials=TRIALS, rng=rng)
        for label, p, s in zip(tg, pred, sim, strict=True):
            worst = max(worst, abs(s / p - 1.0))
            print(f"  {name:26s} {label:16s} {p:8.3f}  {s:8.3f}  {s / p:6.3f}")
    print(f"  largest |simulated/predicted - 1| = {worst:.1%}")


def _localisation() -> None:
    from imaging.load import load_volume
    from registration.fiducials import find_fiducials
    from samples.phantom import ensure_sample, load_truth

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

    from registration.correspondence import match_points
    from registration.points import fit_batch, register_points

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
