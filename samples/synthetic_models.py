"""Models and ground-truth points of the synthetic scene, from a sample phantom (cached)."""

from __future__ import annotations

from typing import Any

import numpy as np


def phantom_models(name: str = "small", max_triangles: int = 20000) -> list[Any]:
    """Skin and skull meshes (``imaging.mesh.Mesh``, LPS mm) of a sample phantom, cached.

    Built once by the imaging pipeline (load -> segment preset "skin" / "bone" -> marching
    cubes -> Taubin smoothing -> decimation) and cached as one GLB next to the sample series
    (``<cache>/overlay-models-<name>-<spec hash>-<max_triangles>.glb``).
    """
    from scrubin.imaging.fileio import write_atomic
    from scrubin.imaging.load import load_volume
    from scrubin.imaging.mesh_io import load_meshes, save_mesh
    from scrubin.imaging.segment import segment
    from scrubin.imaging.smooth import taubin_smooth
    from scrubin.imaging.surface import extract_surface
    from scrubin.samples.phantom import default_cache_dir, ensure_sample, spec_hash

    folder = ensure_sample(name)
    path = default_cache_dir() / f"overlay-models-{name}-{spec_hash(name)}-{max_triangles}.glb"
    if path.is_file():
        return load_meshes(path)
    from scrubin.imaging.decimate import decimate

    vol = load_volume(folder)
    out = []
    for preset, label, colour in (("skin", "skin", (0.93, 0.75, 0.65, 0.35)),
                                  ("bone", "skull", (0.89, 0.85, 0.79, 1.0))):
        seg = segment(vol, preset=preset)
        mesh = extract_surface(vol, mask=seg.mask, level=seg.level, name=label,
                               inside_below=bool(getattr(seg, "inside_below", False)))
        mesh = decimate(taubin_smooth(mesh, 10), max_triangles)
        mesh.name = label
        mesh.color = colour
        out.append(mesh)
    write_atomic(path, lambda tmp: save_mesh(out, tmp), suffix=".glb")
    return load_meshes(path)


def phantom_points(name: str = "small") -> tuple[np.ndarray, list[str], np.ndarray]:
    """Ground-truth points of a sample phantom from its ``truth.json`` (LPS mm).

    Returns ``(points (K, 3), names, fiducial centres (N, 3))``: the fiducials then the target.
    """
    from scrubin.samples.phantom import ensure_sample, load_truth

    truth = load_truth(ensure_sample(name))
    fid = np.array([f["center_lps"] for f in truth["fiducials"]], np.float64)
    names = [f["name"] for f in truth["fiducials"]] + ["target"]
    pts = np.concatenate([fid, np.asarray(truth["target_lps"], np.float64).reshape(1, 3)])
    return pts, names, fid
