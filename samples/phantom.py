"""Sample head-CT phantoms as real DICOM series, generated on demand and cached.

``ensure_sample(name)`` returns a folder holding one CT Image Storage file per slice
(``*.dcm``, names not in slice order) and ``truth.json`` (ground truth in LPS mm, see
:func:`truth_dict`). Presets:

``small``          axial, PixelSpacing [1.9, 1.7] (row, column), 2.5 mm slices, ~1.3 M voxels
``small-oblique``  double-oblique (15 deg about x then 10 deg about y), PixelSpacing [1.8, 1.6],
                   2.4 mm slices
``full``           axial 512 x 512 x 300, PixelSpacing [0.5, 0.5], 0.8 mm slices
``sharp``          axial 512 x 512 x 300, 0.48 mm isotropic, sharp reconstruction kernel
                   (PSF sigma 0.15 mm, 20 HU noise); 144 mm of slices from the skull base
                   (z -84 .. 60 mm): the vault is cut by the first/last slice

Any name may end in ``:sharp`` (e.g. ``custom:0.96,0.96,0.96:sharp``) for the sharp kernel
(:data:`KERNELS`): edges are the partial-volume ramp of one voxel, barely blurred, so the
analytic boundary of every structure is the true one at sub-voxel scale.

``truth.json`` (all coordinates LPS mm; +x patient left, +y posterior, +z superior)
---------------------------------------------------------------------------------
``name``, ``frame`` ("LPS"), ``unit`` ("mm"), ``study_instance_uid``, ``series_instance_uid``,
``frame_of_reference_uid`` (shared by all presets: same patient, same table position),
``affine`` (4x4, voxel (i=column, j=row, k=slice, 1) -> LPS, as :mod:`scrubin.imaging.volume`),
``shape_ijk`` ([columns, rows, slices]), ``pixel_spacing`` ([row, column] mm, as DICOM),
``slice_spacing``, ``image_orientation`` (6 direction cosines, as DICOM), ``rescale_slope``,
``rescale_intercept`` (HU = stored - 1024), ``content_bbox_lps`` ([[min], [max]]),
``fiducials`` (list of ``{"name", "center_lps", "diameter_mm", "hu"}``), ``target_lps``,
``structures`` (name -> ``{"paint_order", "shape", "bbox_lps", "parts", "hu_inside",
"hu_outside", "half_max_hu", "note"}``, see :mod:`scrubin.samples.model` and
:mod:`scrubin.samples.anatomy`), ``psf_sigma_mm``, ``noise_hu``, ``supersample``, ``seed``,
``generator_version``, ``spec_hash``.

``half_max_hu = (hu_inside + hu_outside) / 2`` is the iso-level of a boundary in the
blurred image (valid where the structure is thicker than a few PSF sigmas / voxels).
:func:`phantom_model` gives the signed distance to every structure's surface.

Cache: ``$SCRUBIN_CACHE`` if set, else ``samples/cache/`` next to this module when writable,
else ``~/.cache/scrubin/``; one folder ``<name>-<spec hash>`` per preset. A series is built in
a temporary folder and renamed into place atomically, so concurrent callers are safe and a
half-written series is never used. Same spec -> byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.fileio import read_json
from scrubin.imaging.volume import Volume
from scrubin.samples import anatomy
from scrubin.samples.dicom_writer import deterministic_uid, write_series
from scrubin.samples.model import HeadPhantom, SampleError, phantom_model
from scrubin.samples.presets import PRESETS, Geometry, parse_geometry
from scrubin.samples.render import RESCALE_INTERCEPT, blur_and_noise, render_hu

__all__ = [
    "PRESETS",
    "HeadPhantom",
    "SampleError",
    "default_cache_dir",
    "ensure_sample",
    "export_sample",
    "generate_sample",
    "load_truth",
    "phantom_block",
    "phantom_model",
]

GENERATOR_VERSION = "4"
SEED = 20260101
PSF_SIGMA_MM = 0.6
NOISE_HU = 15.0
#: Reconstruction kernels: name -> (PSF sigma mm, noise HU). ``standard`` is the default;
#: ``sharp`` (bone/edge kernel: almost no blur, more noise) is chosen by the preset ``sharp``
#: or a ``:sharp`` suffix.
KERNELS: dict[str, tuple[float, float]] = {"standard": (PSF_SIGMA_MM, NOISE_HU),
                                           "sharp": (0.15, 20.0)}
SHARP_SUFFIX = ":sharp"
SUPERSAMPLE = 4
#: Margin (mm) around the anatomy's bounding box in the auto-sized presets.
FOV_MARGIN_MM = 8.0


def kernel(name: str) -> tuple[float, float]:
    """(PSF sigma mm, noise HU) of a sample name (see :data:`KERNELS`)."""
    sharp = name == "sharp" or name.endswith(SHARP_SUFFIX)
    return KERNELS["sharp" if sharp else "standard"]


def _geometry(name: str) -> Geometry:
    if name.endswith(SHARP_SUFFIX):
        name = name[: -len(SHARP_SUFFIX)]
        if name == "sharp" or name.endswith(SHARP_SUFFIX):
            raise SampleError(f"sample {name + SHARP_SUFFIX!r}: ':sharp' given twice")
    try:
        return parse_geometry(name)
    except ValueError as exc:
        raise SampleError(str(exc)) from None


def _check_name(name: str) -> None:
    _geometry(name)


def _folder_name(name: str) -> str:
    """``name`` made safe as a folder name (custom geometries hold ':' and ',')."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", name)


def grid(name: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine (voxel (i, j, k) -> LPS mm) and shape (i, j, k) of a preset.

    The grid is centred on the anatomy's bounding box; auto-sized presets cover it plus
    :data:`FOV_MARGIN_MM` along each image axis.
    """
    rot, (row_sp, col_sp), slice_sp, fixed = _geometry(name)
    spacing = np.array([col_sp, row_sp, slice_sp])
    box = anatomy.content_bbox_lps()
    corners = np.array([[box[a, 0], box[b, 1], box[c, 2]] for a in (0, 1) for b in (0, 1)
                        for c in (0, 1)])
    proj = corners @ rot  # coordinates along (row cosine, column cosine, normal)
    lo, hi = proj.min(axis=0) - FOV_MARGIN_MM, proj.max(axis=0) + FOV_MARGIN_MM
    if fixed is None:
        shape = tuple(int(np.ceil((h - low) / s)) + 1 for low, h, s in zip(lo, hi, spacing,
                                                                             strict=True))
    else:
        shape = fixed
    centre = 0.5 * (lo + hi)
    first = centre - 0.5 * (np.asarray(shape) - 1) * spacing  # along each image axis
    affine = np.eye(4)
    affine[:3, :3] = rot * spacing
    affine[:3, 3] = rot @ first
    return affine, (int(shape[0]), int(shape[1]), int(shape[2]))


def _spec(name: str) -> dict[str, Any]:
    affine, shape = grid(name)
    psf_sigma_mm, noise_hu = kernel(name)
    return {
        "name": name,
        "generator_version": GENERATOR_VERSION,
        "seed": SEED,
        "affine": np.round(affine, 12).tolist(),
        "shape_ijk": list(shape),
        "psf_sigma_mm": psf_sigma_mm,
        "noise_hu": noise_hu,
        "supersample": SUPERSAMPLE,
        "structures": anatomy.structures(),
        "fiducials": anatomy.fiducials(),
        "target_lps": list(anatomy.TARGET_LPS),
    }


def spec_hash(name: str) -> str:
    """12-hex-digit hash of everything that determines a preset's files."""
    blob = json.dumps(_spec(name), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def truth_dict(name: str) -> dict[str, Any]:
    """The ``truth.json`` content of a preset (all coordinates LPS mm)."""
    spec = _spec(name)
    h = spec_hash(name)
    affine = np.asarray(spec["affine"])
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    _, (row_sp, col_sp), slice_sp, _ = _geometry(name)
    return {
        "name": name,
        "frame": "LPS",
        "unit": "mm",
        "study_instance_uid": deterministic_uid("scrubin-phantom-study", SEED),
        "series_instance_uid": deterministic_uid("scrubin-phantom-series", name, h),
        "frame_of_reference_uid": deterministic_uid("scrubin-phantom-for", SEED),
        "affine": spec["affine"],
        "shape_ijk": spec["shape_ijk"],
        "pixel_spacing": [row_sp, col_sp],
        "slice_spacing": slice_sp,
        "image_orientation": [float(v) for v in (*rot[:, 0], *rot[:, 1])],
        "rescale_slope": 1.0,
        "rescale_intercept": RESCALE_INTERCEPT,
        "content_bbox_lps": anatomy.content_bbox_lps().tolist(),
        "fiducials": spec["fiducials"],
        "target_lps": spec["target_lps"],
        "structures": spec["structures"],
        "psf_sigma_mm": spec["psf_sigma_mm"],
        "noise_hu": spec["noise_hu"],
        "supersample": SUPERSAMPLE,
        "seed": SEED,
        "generator_version": GENERATOR_VERSION,
        "spec_hash": h,
    }


def generate_sample(name: str, folder: Path) -> Path:
    """Generate preset ``name`` into the existing, empty ``folder``; return ``folder``."""
    truth = truth_dict(name)
    affine = np.asarray(truth["affine"])
    i, j, k = truth["shape_ijk"]
    hu = render_hu(truth["structures"], affine, (k, j, i), supersample=SUPERSAMPLE)
    row_sp, col_sp = truth["pixel_spacing"]
    spacing = (col_sp, row_sp, truth["slice_spacing"])
    stored = blur_and_noise(hu, np.asarray(spacing), truth["psf_sigma_mm"], truth["noise_hu"],
                            SEED)
    del hu
    uids = {
        "study_instance_uid": truth["study_instance_uid"],
        "series_instance_uid": truth["series_instance_uid"],
        "frame_of_reference_uid": truth["frame_of_reference_uid"],
        "sop_root": f"scrubin-phantom-sop-{name}-{truth['spec_hash']}",
    }
    number = list(PRESETS).index(name) + 1 if name in PRESETS else len(PRESETS) + 1
    write_series(folder, stored, affine, uids, f"Head phantom {name}", series_number=number,
                 spacing_ijk=spacing)
    (folder / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return folder


def phantom_block(
    center_lps: tuple[float, float, float], size_mm: float, spacing_mm: float = 0.48,
    kernel_name: str = "sharp",
) -> tuple[Volume, dict[str, Any]]:
    """An axial cube of the phantom rendered in memory (no DICOM): HU volume and its truth.

    The cube has edge ``size_mm`` around ``center_lps`` (LPS mm), isotropic ``spacing_mm``
    voxels, the kernel ``kernel_name`` of :data:`KERNELS` and the generator's seed: a small
    sharp-kernel scan whose true boundaries are the analytic structures of ``truth`` (same
    fields as ``truth.json`` for ``affine``, ``shape_ijk``, ``structures``, ``psf_sigma_mm``,
    ``noise_hu``).
    """
    if kernel_name not in KERNELS:
        raise SampleError(f"unknown kernel {kernel_name!r}; expected one of {list(KERNELS)}")
    if not (0.2 <= spacing_mm <= 10.0) or not (2 * spacing_mm <= size_mm <= 400.0):
        raise SampleError(f"phantom block: spacing {spacing_mm} mm / size {size_mm} mm out of "
                          "range (spacing 0.2..10, size 2 spacings..400 mm)")
    n = int(round(size_mm / spacing_mm))
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = np.asarray(center_lps, dtype=np.float64) - 0.5 * (n - 1) * spacing_mm
    structures = anatomy.structures()
    psf, noise = KERNELS[kernel_name]
    hu = render_hu(structures, affine, (n, n, n), supersample=SUPERSAMPLE)
    stored = blur_and_noise(hu, np.full(3, spacing_mm), psf, noise, SEED)
    volume = Volume((stored.astype(np.float32) + RESCALE_INTERCEPT).astype(np.int16), affine,
                    modality="CT")
    truth = {"frame": "LPS", "unit": "mm", "affine": affine.tolist(), "shape_ijk": [n, n, n],
             "structures": structures, "psf_sigma_mm": psf, "noise_hu": noise,
             "supersample": SUPERSAMPLE, "seed": SEED}
    return volume, truth


def default_cache_dir() -> Path:
    """``$SCRUBIN_CACHE``, else ``samples/cache`` when writable, else ``~/.cache/scrubin``."""
    env = os.environ.get("SCRUBIN_CACHE")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    local = here / "cache"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK | os.X_OK):
            return local
    except OSError:
        pass
    return Path.home() / ".cache" / "scrubin"


#: A temporary generation folder older than this (s) was left by a killed process.
STALE_TMP_S = 3600.0


def _sweep_stale(root: Path, name: str) -> None:
    """Remove ``.tmp-<name>-*`` folders older than :data:`STALE_TMP_S` (crashed writers)."""
    now = time.time()
    for p in root.glob(f".tmp-{name}-*"):
        try:
            if now - p.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _publish(tmp: Path, final: Path) -> None:
    """Atomically rename the finished folder ``tmp`` to ``final``.

    If another process published ``final`` first (rename fails on a non-empty target), its
    complete copy is kept and ``tmp`` is discarded.
    """
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / "truth.json").is_file():  # not a concurrent winner: a real error
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_sample(name: str = "small", cache_dir: Path | None = None) -> Path:
    """Folder of preset ``name`` (``*.dcm`` + ``truth.json``), generating it once if needed.

    Raises
    ------
    SampleError
        Unknown name, or the cache folder cannot be created or written.
    """
    _check_name(name)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / f"{_folder_name(name)}-{spec_hash(name)}"
    if (final / "truth.json").is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        _sweep_stale(root, _folder_name(name))
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{_folder_name(name)}-", dir=root))
    except OSError as exc:
        raise SampleError(f"cannot write the sample cache {root}: {exc.strerror}") from None
    try:
        generate_sample(name, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        _publish(tmp, final)
    except OSError as exc:
        raise SampleError(f"cannot write sample {name!r} into {root}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_truth(folder: Path | str) -> dict[str, Any]:
    """The ground truth of a sample folder (``truth.json``), LPS mm."""
    path = Path(folder) / "truth.json"
    truth = read_json(path, SampleError, "not found; expected a folder made by ensure_sample",
                      "cannot read")
    if not isinstance(truth, dict) or truth.get("frame") != "LPS":
        raise SampleError(f"{path} is not a phantom truth file (expected 'frame': 'LPS')")
    return truth


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_sample(name: str, out_dir: Path | str) -> Path:
    """Write preset ``name`` (``*.dcm`` + ``truth.json``) into ``out_dir`` and return it.

    ``out_dir`` must not exist or be empty. The files are assembled in a temporary sibling
    folder and renamed into place, so a failure leaves nothing behind. The cache is used when
    writable; otherwise the series is generated directly.

    Raises
    ------
    SampleError
        Unknown name, ``out_dir`` not empty or a file, or its parent not writable.
    """
    _check_name(name)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SampleError(f"output {out} exists and is not an empty folder; choose a new one")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise SampleError(f"cannot write into {parent}: {exc.strerror}") from None
    try:
        try:
            source: Path | None = ensure_sample(name)
        except SampleError:  # cache not writable: generate straight into the output
            source = None
        if source is None:
            generate_sample(name, tmp)
        else:
            for f in sorted(source.iterdir()):
                shutil.copyfile(f, tmp / f.name)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; honour the umask
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except OSError as exc:
        raise SampleError(f"cannot write sample {name!r} to {out}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
