"""Phantom generation time: analytic voxelisation (4^3 supersampling at boundaries), PSF,
noise and DICOM writing, for the "small" (median of 5), "full" and "sharp" (one run each)
presets.

There is no peer to compare against; the targets are small < ~10 s and full < ~90 s on
two cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np


def _stages(name: str) -> dict[str, float]:
    from scrubin.samples import phantom
    from scrubin.samples.render import blur_and_noise, render_hu

    truth = phantom.truth_dict(name)
    affine = np.asarray(truth["affine"])
    i, j, k = truth["shape_ijk"]
    t0 = time.perf_counter()
    hu = render_hu(truth["structures"], affine, (k, j, i), supersample=phantom.SUPERSAMPLE)
    t1 = time.perf_counter()
    row, col = truth["pixel_spacing"]
    blur_and_noise(hu, np.array([col, row, truth["slice_spacing"]]), truth["psf_sigma_mm"],
                   truth["noise_hu"], phantom.SEED)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        phantom.generate_sample(name, Path(tmp))
    t3 = time.perf_counter()
    return {"voxelise": t1 - t0, "psf+noise": t2 - t1, "generate (all, incl. DICOM)": t3 - t2}


def main() -> None:
    from scrubin.samples import phantom

    phantom.truth_dict("small")
    _stages("small")  # warm-up: numba cache load / compile
    runs = [_stages("small") for _ in range(5)]
    i, j, k = phantom.grid("small")[1]
    for key in runs[0]:
        print(f"samples small ({i}x{j}x{k}) {key}: {median(r[key] for r in runs):.2f} s "
              f"(median of 5)")
    for name in ("full", "sharp"):
        stages = _stages(name)
        i, j, k = phantom.grid(name)[1]
        for key, value in stages.items():
            print(f"samples {name} ({i}x{j}x{k}) {key}: {value:.2f} s (one run)")


if __name__ == "__main__":
    main()
