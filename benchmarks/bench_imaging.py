"""Imaging benchmark on the full phantom (512 x 512 x 300 CT series, one volume throughout).

1. Iso-surface extraction: ``imaging.surface.extract_surface`` vs VTK ``vtkFlyingEdges3D``
   with 2 threads (STDThread backend), same volume and level, interleaved, >= 5 runs each.
2. Whole path, DICOM folder -> file (warm file cache): ours = ``load_volume`` -> ``segment``
   (bone) -> ``extract_surface`` (automatic step) -> Taubin 10 -> ``decimate`` to 100 k ->
   GLB; the anchors' path = SimpleITK ``ImageSeriesReader`` -> the same ``segment`` (VTK has
   no equivalent; its time is in both) -> ``vtkFlyingEdges3D`` (2 threads) on the volume
   clamped to the mask -> ``vtkWindowedSincPolyDataFilter`` (10 iterations) ->
   ``vtkQuadricDecimation`` to 100 k -> ``vtkSTLWriter``. The VTK path takes ~25 s, so it runs
   2 times against ours 5 times, interleaved (O V O V O O O).
3. Quality: symmetric point-to-triangle distance (p99, max) of both decimated surfaces to the
   full-resolution, unsmoothed surface of the same segmentation.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from benchmarks.common import interleaved, ratio_line

MAX_TRIANGLES = 100_000
SMOOTH = 10


def _vtk_setup() -> object:
    import vtk

    vtk.vtkSMPTools.SetBackend("STDThread")
    vtk.vtkSMPTools.Initialize(2)
    return vtk


def _vtk_image(vtk: object, array: np.ndarray, spacing: np.ndarray) -> object:
    from vtk.util import numpy_support

    img = vtk.vtkImageData()
    img.SetDimensions(*array.shape[::-1])
    img.SetSpacing(*spacing)
    scalars = numpy_support.numpy_to_vtk(array.reshape(-1), deep=False)
    img.GetPointData().SetScalars(scalars)
    img._keep = array  # keep the numpy buffer alive
    return img


def _flying_edges(vtk: object, img: object, level: float) -> object:
    fe = vtk.vtkFlyingEdges3D()
    fe.SetInputData(img)
    fe.SetValue(0, level)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    return fe


def _vtk_to_mesh(poly: object, affine: np.ndarray, spacing: np.ndarray) -> object:
    """VTK output (image frame: index x spacing, origin 0) -> Mesh in LPS mm."""
    from vtk.util import numpy_support

    from scrubin.imaging.mesh import Mesh

    pts = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    pts = (pts / spacing) @ affine[:3, :3].T + affine[:3, 3]
    cells = numpy_support.vtk_to_numpy(poly.GetPolys().GetConnectivityArray())
    return Mesh(pts, cells.reshape(-1, 3).astype(np.int64))


def main() -> None:
    import SimpleITK as sitk  # noqa: N813

    from scrubin.imaging.decimate import decimate, surface_distance
    from scrubin.imaging.load import load_volume
    from scrubin.imaging.mesh_io import save_mesh
    from scrubin.imaging.segment import segment
    from scrubin.imaging.smooth import taubin_smooth
    from scrubin.imaging.surface import extract_surface
    from scrubin.imaging.volume import Volume
    from scrubin.samples.phantom import ensure_sample
    from scrubin.workflows.model import auto_step

    vtk = _vtk_setup()
    folder = ensure_sample("full")
    volume = load_volume(folder)
    seg = segment(volume, preset="bone")
    level = float(seg.level)
    print(f"volume {volume.array.shape[::-1]} (i, j, k) {volume.array.dtype}, "
          f"spacing {np.round(volume.spacing, 3).tolist()} mm, bone level {level:g} HU")

    # ------------------------------------------------------------ 1. extraction
    t0 = time.perf_counter()
    extract_surface(volume, level=level)
    first = time.perf_counter() - t0
    print(f"first extraction call incl. numba cache load {first * 1e3:.0f} ms "
          "(a fresh install compiles the kernels once, ~20-40 s)")
    img = _vtk_image(vtk, volume.array, volume.spacing)
    for lvl, what in ((level, "bone preset level"), (0.0, "0 HU, ~2.4 M triangles")):
        fe = _flying_edges(vtk, img, lvl)

        def run_vtk(fe: object = fe) -> None:
            fe.Modified()
            fe.Update()

        run_vtk()
        n_vtk = fe.GetOutput().GetNumberOfCells()
        n_ours = extract_surface(volume, level=lvl).n_faces
        times = interleaved(
            {"ours": lambda lvl=lvl: extract_surface(volume, level=lvl), "vtk": run_vtk}, runs=5
        )
        print(ratio_line(f"iso-surface at {lvl:g} HU ({what}; {n_ours} vs {n_vtk} triangles)",
                         times["ours"], times["vtk"], "vtkFlyingEdges3D (2 threads)"))

    # ------------------------------------------------------------ 2. whole path
    tmp = Path(tempfile.mkdtemp(prefix="bench_imaging_"))
    step = auto_step(volume.array.shape, volume.spacing)
    results: dict[str, object] = {}

    def ours_path() -> None:
        vol = load_volume(folder)
        s = segment(vol, preset="bone")
        m = extract_surface(vol, mask=s.mask, level=s.level, step=step, name="skull")
        m = taubin_smooth(m, SMOOTH)
        results["undecimated"] = m
        m = decimate(m, MAX_TRIANGLES)
        save_mesh(m, tmp / "ours.glb")
        results["ours"] = m

    def vtk_path() -> None:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        image = reader.Execute()
        arr = sitk.GetArrayFromImage(image)
        vol = Volume(arr, volume.affine, modality="CT")
        s = segment(vol, preset="bone")
        clamped = np.where(s.mask, arr, np.minimum(arr, np.int16(level - 1)))
        vimg = _vtk_image(vtk, clamped, np.array(image.GetSpacing()))
        fe2 = _flying_edges(vtk, vimg, level)
        smooth = vtk.vtkWindowedSincPolyDataFilter()
        smooth.SetInputConnection(fe2.GetOutputPort())
        smooth.SetNumberOfIterations(SMOOTH)
        smooth.SetPassBand(0.1)
        smooth.NonManifoldSmoothingOn()
        smooth.NormalizeCoordinatesOn()
        smooth.Update()
        n = smooth.GetOutput().GetNumberOfCells()
        dec = vtk.vtkQuadricDecimation()
        dec.SetInputConnection(smooth.GetOutputPort())
        dec.SetTargetReduction(1.0 - MAX_TRIANGLES / n)
        writer = vtk.vtkSTLWriter()
        writer.SetInputConnection(dec.GetOutputPort())
        writer.SetFileName(str(tmp / "vtk.stl"))
        writer.SetFileTypeToBinary()
        writer.Write()
        results["vtk"] = dec.GetOutput()

    ours_path()  # warm-up (file cache, numba cache)
    ours_t: list[float] = []
    vtk_t: list[float] = []
    for fn, bucket in [(ours_path, ours_t), (vtk_path, vtk_t), (ours_path, ours_t),
                       (vtk_path, vtk_t), (ours_path, ours_t), (ours_path, ours_t),
                       (ours_path, ours_t)]:
        t0 = time.perf_counter()
        fn()
        bucket.append(time.perf_counter() - t0)
    ours_final = results["ours"]
    vtk_final = _vtk_to_mesh(results["vtk"], volume.affine, volume.spacing)
    print(f"whole path (read -> segment -> surface (step {step}) -> smooth {SMOOTH} -> "
          f"decimate -> write): ours {median(ours_t):.2f} s (median of {len(ours_t)}, "
          f"{ours_final.n_faces} triangles) vs SimpleITK+VTK {median(vtk_t):.2f} s "
          f"(median of {len(vtk_t)}, {vtk_final.n_faces} triangles) -> "
          f"{median(vtk_t) / median(ours_t):.1f}x; ours/VTK = {median(ours_t) / median(vtk_t):.3f}")
    print("  ours per-run s: " + " ".join(f"{t:.2f}" for t in ours_t)
          + " | VTK per-run s: " + " ".join(f"{t:.2f}" for t in vtk_t))

    # ------------------------------------------------------------ 3. quality
    full = extract_surface(volume, mask=seg.mask, level=level, name="full")
    q_ours = surface_distance(ours_final, full, max_points=300_000)
    q_vtk = surface_distance(vtk_final, full, max_points=300_000)
    q_dec = surface_distance(ours_final, results["undecimated"], max_points=300_000)
    print(f"quality vs full-resolution unsmoothed surface ({full.n_faces} triangles): "
          f"ours p99 {q_ours['p99']:.3f} mm, max {q_ours['max']:.3f} mm, mean "
          f"{q_ours['mean']:.3f} mm; VTK path p99 {q_vtk['p99']:.3f} mm, max "
          f"{q_vtk['max']:.3f} mm")
    print(f"decimation alone (ours, 100 k vs undecimated {results['undecimated'].n_faces}): "
          f"p99 {q_dec['p99']:.3f} mm, max {q_dec['max']:.3f} mm; watertight "
          f"{ours_final.is_watertight()}")
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
