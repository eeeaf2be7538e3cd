"""Segmentation speed on the full phantom (512 x 512 x 300 int16): scrubin vs scipy / SimpleITK.

Peers run the standard path of each library on the same array in the same process:

* bone: threshold + ``scipy.ndimage.label`` (26-connected) + largest component; and
  SimpleITK ``BinaryThreshold`` + ``ConnectedComponent(fullyConnected)`` + ``RelabelComponent``;
* skin: threshold + ``scipy.ndimage.label`` + largest + hole filling as ``ndimage.label`` of the
  background with border components removed (``binary_fill_holes`` takes minutes here).

Also prints the per-stage times of ``segment()`` for each preset and the DICOM SEG write time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
from scipy import ndimage as ndi

from benchmarks.common import interleaved, ratio_line
from scrubin.imaging.load import load_volume
from scrubin.imaging.segment import segment
from scrubin.imaging.volume import Volume
from scrubin.samples.phantom import ensure_sample

RUNS = 5


def _scipy_bone(a: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(a >= 300, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _sitk_bone(a: np.ndarray) -> np.ndarray:
    import SimpleITK as sitk  # noqa: N813

    img = sitk.GetImageFromArray(a)
    m = sitk.BinaryThreshold(img, 300, 32767, 1, 0)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(m, True), sortByObjectSize=True)
    return sitk.GetArrayViewFromImage(cc) == 1


def _scipy_skin(a: np.ndarray) -> np.ndarray:
    lab, _ = ndi.label(a >= -300, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == int(np.argmax(sizes))
    bg, _ = ndi.label(~body)  # 6-connected background
    border = np.unique(np.concatenate([bg[0].ravel(), bg[-1].ravel(), bg[:, 0].ravel(),
                                       bg[:, -1].ravel(), bg[:, :, 0].ravel(),
                                       bg[:, :, -1].ravel()]))
    return body | (~np.isin(bg, border) & (bg > 0))


def main() -> None:
    t0 = time.perf_counter()
    vol = load_volume(ensure_sample("full"))
    a = vol.array
    print(f"full phantom {a.shape} {a.dtype} loaded in {time.perf_counter() - t0:.2f} s")
    segment(vol, "bone")  # JIT warm-up (numba cache)

    t = interleaved({
        "ours": lambda: segment(vol, "bone"),
        "scipy": lambda: _scipy_bone(a),
        "sitk": lambda: _sitk_bone(a),
    }, runs=RUNS)
    print(ratio_line("bone (>=300 HU, largest 26-cc)", t["ours"], t["scipy"], "scipy.ndimage"))
    print(ratio_line("bone (>=300 HU, largest 26-cc)", t["ours"], t["sitk"], "SimpleITK"))
    ours = segment(vol, "bone").mask
    print(f"bone masks equal to scipy's: {bool(np.array_equal(ours, _scipy_bone(a)))}")

    t = interleaved({
        "ours": lambda: segment(vol, "skin"),
        "scipy": lambda: _scipy_skin(a),
    }, runs=RUNS)
    print(ratio_line("skin (>=-300, largest, holes filled)", t["ours"], t["scipy"],
                     "scipy.ndimage"))

    for preset in ("bone", "skin", "soft-tissue", "air", "vessels"):
        stages: dict[str, list[float]] = {}
        totals = []
        for _ in range(RUNS):
            t1 = time.perf_counter()
            seg = segment(vol, preset)
            totals.append(time.perf_counter() - t1)
            for k, v in seg.timings.items():
                stages.setdefault(k, []).append(v)
        parts = ", ".join(f"{k} {median(v) * 1e3:.0f}" for k, v in stages.items()
                          if median(v) >= 0.0005)
        print(f"segment {preset}: {median(totals) * 1e3:.0f} ms ({parts} ms), "
              f"{seg.voxel_count} voxels")
    # a scan ending in the neck: the body touches the volume border -> table separation runs
    k0 = int(np.rint(vol.lps_to_index(np.array([0.0, 0.0, -110.0]))[2]))
    affine = vol.affine.copy()
    affine[:3, 3] = vol.index_to_lps(np.array([0.0, 0.0, k0]))
    cut = Volume(np.ascontiguousarray(a[k0:]), affine, modality="CT")
    totals, seps = [], []
    for _ in range(RUNS):
        t1 = time.perf_counter()
        seg = segment(cut, "skin")
        totals.append(time.perf_counter() - t1)
        seps.append(seg.timings.get("separate", 0.0))
    print(f"segment skin, scan cut through the neck {cut.array.shape}: "
          f"{median(totals) * 1e3:.0f} ms (table separation {median(seps) * 1e3:.0f} ms)")
    t1 = time.perf_counter()
    segment(vol, "skin", exclude_fiducials=True)
    print(f"segment skin --exclude-fiducials: {(time.perf_counter() - t1) * 1e3:.0f} ms")

    from scrubin.imaging.seg_dicom import write_seg

    segs = [segment(vol, "bone"), segment(vol, "skin")]
    with tempfile.TemporaryDirectory() as d:
        t1 = time.perf_counter()
        write_seg(vol, segs, Path(d) / "seg.dcm")
        dt = time.perf_counter() - t1
        size = (Path(d) / "seg.dcm").stat().st_size
    print(f"DICOM SEG write (bone + skin, {a.shape[0]} slices): {dt:.2f} s, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
