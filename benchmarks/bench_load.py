"""DICOM series loading: ``imaging.load.load_volume`` vs SimpleITK's ImageSeriesReader (GDCM).

On the "full" phantom (512 x 512 x 300 CT slices, ``samples.phantom.ensure_sample("full")``):
medians of interleaved runs with a warm file cache, both readers in this process. The peer's
standard path is ``GetGDCMSeriesFileNames`` (GDCM's sort) + ``ImageSeriesReader.Execute``
+ ``GetArrayFromImage``. Before timing, both results are checked to be the same array and
the same voxel→LPS affine (SimpleITK's image is LPS too: affine = [D·diag(spacing), origin]).
Also reported: header listing alone (``list_series``) and the memory-pass floor (one copy of
the volume's bytes).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import interleaved, ratio_line

RUNS = 7


def _folder() -> Path:
    if len(sys.argv) > 2 and Path(sys.argv[2]).is_dir():  # python -m benchmarks load DIR
        return Path(sys.argv[2])
    from scrubin.samples.phantom import ensure_sample

    return ensure_sample("full")


def _sitk_read(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk  # noqa: N813

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image), affine


def _threads(folder: Path) -> None:
    """Pixel phase alone (direct reads + rescale) with 1 thread vs the default pool."""
    from scrubin.imaging.dicom_geometry import slice_geometry
    from scrubin.imaging.dicom_group import scan_folder
    from scrubin.imaging.dicom_pixels import READ_THREADS, read_pixels

    stack = scan_folder(folder).stacks[0]
    ordered = [stack.headers[i] for i in slice_geometry(stack).order]
    t = interleaved({"1": lambda: read_pixels(ordered, threads=1),
                     "n": lambda: read_pixels(ordered, threads=READ_THREADS)}, runs=RUNS)
    print(f"pixel phase: 1 thread {np.median(t['1']) * 1e3:.1f} ms, {READ_THREADS} threads "
          f"{np.median(t['n']) * 1e3:.1f} ms (median of {RUNS})")


def main() -> None:
    from scrubin.imaging.load import list_series, load_volume

    folder = _folder()
    t0 = time.perf_counter()
    vol = load_volume(folder)
    first = time.perf_counter() - t0
    ref, ref_affine = _sitk_read(folder)
    same_array = ref.shape == vol.array.shape and bool(np.array_equal(ref, vol.array))
    affine_err = float(np.abs(ref_affine - vol.affine).max())
    print(f"volume {vol.shape_ijk} {vol.array.dtype} from {folder.name}, "
          f"{vol.array.nbytes / 1e6:.0f} MB; first (cold-ish) load {first * 1e3:.0f} ms")
    print(f"check vs SimpleITK: same array {same_array}, max affine difference "
          f"{affine_err:.2e} mm")
    if not same_array or affine_err > 1e-4:
        print("WARNING: readers disagree; timings below compare different results")
    del vol, ref
    times = interleaved(
        {
            "scrubin": lambda: load_volume(folder),
            "sitk": lambda: _sitk_read(folder),
            "list": lambda: list_series(folder),
        },
        runs=RUNS,
    )
    print(ratio_line("load_volume 512x512x300", times["scrubin"], times["sitk"],
                     "SimpleITK/GDCM ImageSeriesReader"))
    print(f"list_series (headers only): {np.median(times['list']) * 1e3:.1f} ms "
          f"(median of {RUNS})")
    _threads(folder)
    src = np.ones(300 * 512 * 512, np.int16)
    dst = np.empty_like(src)
    floor = interleaved({"copy": lambda: np.copyto(dst, src)}, runs=RUNS)["copy"]
    print(f"memory-pass floor (copy {src.nbytes / 1e6:.0f} MB): "
          f"{np.median(floor) * 1e3:.1f} ms; cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
