"""Automatic localisation of spherical fiducial markers in CT, sub-voxel, in LPS mm.

Method
------
1. **Candidates** — markers are far denser than bone (metal or ceramic beads reach thousands
   of HU), but partial volume dilutes the peak of a small sphere in thick voxels (a 4 mm bead
   of 3000 HU peaks at ~1900 HU in 1.7 × 1.9 × 2.5 mm voxels, a 2 mm one far lower). Voxels
   at or above the seed level (:func:`default_seed_hu`: the diluted peak of the smallest
   marker, at least 500 HU) are grouped into 26-connected components.
   Components whose extent exceeds the largest marker (plus a voxel of partial volume) are
   too large or elongated (bone, wires, implants); inside them, compact components at or
   above ``min_hu`` are still examined (a marker touching dense bone).
2. **Model fit** — around each remaining component's peak, every voxel within
   ``max_diameter/2 + 2.5 mm`` is fitted (in LPS mm through the volume affine, so oblique and
   anisotropic grids are handled) by a Gaussian-blurred sphere on a blurred planar step
   background (a marker stuck on the skin has skin on one side and air on the other)::

       I(x) = B(x) + (F − B(x)) · S(|x − c|; R, σ)
       B(x) = b₀ + Δ · Φ((n·x − o) / σ)
       S(r; R, σ) = ½[erf((R−r)/(√2σ)) + erf((R+r)/(√2σ))]
                    − σ/(r√(2π)) · [exp(−(r−R)²/2σ²) − exp(−(r+R)²/2σ²)]

   ``S`` is the exact convolution of a ball of radius ``R`` with an isotropic Gaussian of
   standard deviation ``σ`` (the CT point-spread function), ``Φ`` the normal CDF. The fit
   (``scipy.optimize.least_squares``, trust-region reflective) gives the sub-voxel centre
   ``c``, the diameter ``2R``, the blur ``σ`` and the material HU ``F``; each voxel's model
   value is the mean over 2 × 2 × 2 points inside it (the voxel's box average, which matters
   for voxels larger than the blur; voxels of 0.9 mm or less are point-sampled). A single
   threshold-based centroid would be pulled ~0.2 mm towards the skin by the asymmetric
   background; the fit removes that bias.
3. **Confidence** in [0, 1] — product of scores for size (fitted diameter within the range),
   shape (elongation of the marker's contrast moments and fit residual relative to contrast)
   and contrast (material above the brighter background: 0 at ``MIN_CONTRAST_HU / 2``, 1 at
   ``MIN_CONTRAST_HU``, so noise speckles in dense bone score 0).
4. **Rejection** — a fitted material HU ``F`` below ``min_hu`` (bone, noise), a diameter
   outside the range, or a confidence below ``min_confidence``; overlapping detections keep
   the best. Near the resolution limit size and density trade off (a small dense bead blurs
   like a larger, fainter ball), so a candidate fitted at most 0.5 mm above the minimum
   diameter is refitted as a ball of the minimum diameter; if that fits about as well
   (RMS ≤ √2 × the free fit's), its material HU decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares
from scipy.special import erf, ndtr

from scrubin.imaging.volume import Volume
from scrubin.registration.errors import RegistrationError

#: Default marker diameter range (mm) and lowest peak HU of a marker in the image.
DEFAULT_DIAMETER_MM = (2.0, 4.0)
DEFAULT_MIN_HU = 2000.0
DEFAULT_MIN_CONFIDENCE = 0.5
#: Nominal CT point-spread σ (mm) used only to choose the default seed level.
NOMINAL_PSF_MM = 0.6
#: Sub-samples per voxel axis of the fitted model (voxel box average).
_SUB = 2
#: Fitted diameters up to this much above the minimum get the smallest-ball refit (mm).
_REFIT_MARGIN_MM = 0.5
#: Voxels no larger than this (mm) are point-sampled: the blur dominates their box average.
_BOX_SPACING_MM = 0.9
#: The default seed level never goes below this (HU).
SEED_FLOOR_HU = 500.0
#: Contrast (HU) above the brighter side of the local background at which the contrast score
#: reaches 1; it is 0 at half this value (noise speckles in dense bone, bone ridges).
MIN_CONTRAST_HU = 1000.0


class FiducialError(RegistrationError):
    """Fiducial detection cannot run with the given volume or parameters."""


@dataclass(frozen=True)
class FiducialCandidate:
    """One candidate marker.

    Attributes
    ----------
    center_lps_mm
        Sub-voxel centre, LPS mm (CT frame).
    center_ijk
        The same centre as continuous voxel indices (i, j, k).
    diameter_mm
        Fitted sphere diameter 2R (mm).
    blur_sigma_mm
        Fitted Gaussian point-spread σ (mm).
    contrast_hu
        Fitted material HU minus the brighter side of the local background.
    peak_hu
        Largest voxel value of the candidate.
    voxel_count
        Voxels of the connected component at or above ``min_hu``.
    elongation
        sqrt(largest / smallest eigenvalue) of the contrast's second moments (1 = round).
    residual_ratio
        RMS fit residual divided by the fitted contrast.
    confidence
        Product of the size, shape and contrast scores, in [0, 1].
    accepted
        True for a detected fiducial; False for a rejected candidate.
    reason
        Why a candidate was rejected ("" when accepted).
    """

    center_lps_mm: np.ndarray
    center_ijk: np.ndarray
    diameter_mm: float
    blur_sigma_mm: float
    contrast_hu: float
    peak_hu: float
    voxel_count: int
    elongation: float
    residual_ratio: float
    confidence: float
    accepted: bool
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict (LPS mm centre, voxel indices, quality measures; null if unknown)."""

        def num(v: float, nd: int) -> float | None:
            return round(float(v), nd) if np.isfinite(v) else None

        return {
            "center_lps": [num(v, 4) for v in self.center_lps_mm],
            "center_ijk": [num(v, 4) for v in self.center_ijk],
            "diameter_mm": num(self.diameter_mm, 3),
            "blur_sigma_mm": num(self.blur_sigma_mm, 3),
            "contrast_hu": num(self.contrast_hu, 1),
            "peak_hu": num(self.peak_hu, 1),
            "voxel_count": int(self.voxel_count),
            "elongation": num(self.elongation, 3),
            "residual_ratio": num(self.residual_ratio, 4),
            "confidence": num(self.confidence, 3),
            **({} if self.accepted else {"rejected": self.reason}),
        }


def blurred_sphere(r_mm: np.ndarray, radius_mm: float, sigma_mm: float) -> np.ndarray:
    """Fraction of a ball (radius R) seen at distance r after an isotropic Gaussian blur σ.

    Exact 3-D convolution of the ball's indicator with a Gaussian, as a function of the
    distance from the centre (see module docstring); tends to ``erf``-shaped edges for R ≫ σ.
    """
    r = np.maximum(np.asarray(r_mm, dtype=np.float64), 1e-6)
    s2 = np.sqrt(2.0) * sigma_mm
    a, b = (radius_mm - r) / s2, (radius_mm + r) / s2
    tail = sigma_mm / (r * np.sqrt(2.0 * np.pi))
    g = np.exp(-((r - radius_mm) ** 2) / (2 * sigma_mm**2)) - np.exp(
        -((r + radius_mm) ** 2) / (2 * sigma_mm**2)
    )
    return 0.5 * (erf(a) + erf(b)) - tail * g


def default_seed_hu(volume: Volume, dmin_mm: float, min_hu: float) -> float:
    """Seed level low enough for the smallest marker after blur and partial volume.

    The peak of a ball of diameter ``dmin`` and material ``min_hu`` in air (-1000 HU) is
    ``-1000 + S(0; dmin/2, σ) · (min_hu + 1000)`` with ``σ² = PSF² + mean(spacing²)/12`` (a
    nominal 0.6 mm PSF plus the voxel's box average); 90 % of it, but never below
    :data:`SEED_FLOOR_HU` (soft tissue and contrast agent stay out).
    """
    sigma = float(np.sqrt(NOMINAL_PSF_MM**2 + np.mean(volume.spacing**2) / 12.0))
    s0 = float(blurred_sphere(np.array([0.0]), dmin_mm / 2.0, sigma)[0])
    return max(SEED_FLOOR_HU, -1000.0 + 0.9 * s0 * (min_hu + 1000.0))


def _check_params(
    diameter_mm: tuple[float, float], min_hu: float, min_confidence: float
) -> tuple[float, float]:
    try:
        dmin, dmax = (float(v) for v in diameter_mm)
    except (TypeError, ValueError):
        raise FiducialError(
            f"diameter range must be two numbers (min, max) in mm, got {diameter_mm!r}"
        ) from None
    if not (np.isfinite(dmin) and np.isfinite(dmax) and 0 < dmin <= dmax):
        raise FiducialError(
            f"diameter range must satisfy 0 < min <= max (mm), got {dmin:g}:{dmax:g}"
        )
    if not np.isfinite(min_hu):
        raise FiducialError(f"min HU must be a finite number, got {min_hu!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise FiducialError(f"min confidence must be in [0, 1], got {min_confidence!r}")
    return dmin, dmax


def find_fiducials(
    volume: Volume,
    diameter_mm: tuple[float, float] = DEFAULT_DIAMETER_MM,
    min_hu: float = DEFAULT_MIN_HU,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    include_rejected: bool = False,
    seed_hu: float | None = None,
) -> list[FiducialCandidate]:
    """Detect spherical fiducial markers in a CT volume.

    Parameters
    ----------
    volume
        CT volume (HU), geometry from its affine (LPS mm; oblique grids are fine).
    diameter_mm
        (min, max) marker diameter in mm.
    min_hu
        Lowest material HU of a marker (the fitted plateau ``F``); markers must be denser than
        any bone near them.
    seed_hu
        Lowest peak voxel value of a candidate; default :func:`default_seed_hu`.
    min_confidence
        Candidates scoring below this are rejected.
    include_rejected
        Also return rejected candidates (``accepted=False`` with a ``reason``).

    Returns
    -------
    list of FiducialCandidate
        Accepted markers sorted by decreasing confidence (then rejected ones, if asked).
    """
    dmin, dmax = _check_params(diameter_mm, min_hu, min_confidence)
    arr = np.asarray(volume.array)
    if not np.issubdtype(arr.dtype, np.number):
        raise FiducialError(f"volume array must be numeric HU, got dtype {arr.dtype}")
    spacing_kji = volume.spacing[::-1]
    seed = default_seed_hu(volume, dmin, min_hu) if seed_hu is None else float(seed_hu)
    if not np.isfinite(seed):
        raise FiducialError(f"seed HU must be a finite number, got {seed_hu!r}")
    voxel_volume = float(np.prod(volume.spacing))
    # a component with more voxels than 4x a ball of the largest size is never a marker
    max_voxels = int(4.0 * (np.pi / 6.0) * (dmax + 2.0 * volume.spacing.max()) ** 3
                     / voxel_volume) + 8
    limit = dmax + 2.0 * float(volume.spacing.max())
    structure = np.ones((3, 3, 3), dtype=bool)
    out: list[FiducialCandidate] = []
    seed_labels, _ = ndimage.label(arr >= seed, structure=structure)
    big: set[int] = set()
    for index, slc in enumerate(ndimage.find_objects(seed_labels), start=1):
        if slc is not None and not _examine(
            volume, arr, seed_labels, index, slc, max_voxels, limit,
            dmin, dmax, min_hu, spacing_kji, min_confidence, include_rejected, out,
        ):
            big.add(index)
    if big and seed < min_hu:
        # markers touching dense bone merge with it at the seed level: examine the compact
        # components at or above min_hu inside the too-large seed components
        dense_labels, _ = ndimage.label(arr >= min_hu, structure=structure)
        for index, slc in enumerate(ndimage.find_objects(dense_labels), start=1):
            if slc is None:
                continue
            first = np.argwhere(dense_labels[slc] == index)[0] + [b.start for b in slc]
            if int(seed_labels[tuple(first)]) in big:
                _examine(
                    volume, arr, dense_labels, index, slc, max_voxels, limit, dmin, dmax,
                    min_hu, spacing_kji, min_confidence, include_rejected, out,
                )
    accepted = _suppress_duplicates([c for c in out if c.accepted], dmin)
    accepted.sort(key=lambda c: -c.confidence)
    if include_rejected:
        kept = {id(c) for c in accepted}
        return accepted + [c for c in out if id(c) not in kept]
    return accepted




def _examine(
    volume: Volume,
    arr: np.ndarray,
    labels: np.ndarray,
    index: int,
    slc: tuple[slice, ...],
    max_voxels: int,
    limit: float,
    dmin: float,
    dmax: float,
    min_hu: float,
    spacing_kji: np.ndarray,
    min_confidence: float,
    include_rejected: bool,
    out: list[FiducialCandidate],
) -> bool:
    """Reject a too-large component or fit a compact one; False when it was too large.

    A bounding-box side longer than ``limit`` (mm) proves the component too large without
    touching its voxels (huge bone components cost nothing more).
    """
    sides_mm = (np.array([b.stop - b.start - 1 for b in slc]) * spacing_kji)
    extent, size = float("inf"), -1
    if sides_mm.max() <= limit:
        comp = labels[slc] == index
        size = int(comp.sum())
        if size <= max_voxels:
            kji = np.argwhere(comp) + [b.start for b in slc]
            pts = volume.index_to_lps(kji[:, ::-1].astype(np.float64))
            extent = 2.0 * float(np.linalg.norm(pts - pts.mean(axis=0), axis=1).max())
    if extent > limit:
        if include_rejected and size < 0:
            size = int(np.count_nonzero(labels[slc] == index))
        if include_rejected:
            centre_ijk = np.array([(b.start + b.stop - 1) / 2 for b in slc])[::-1]
            size_text = (f"at least {sides_mm.max():.1f} mm" if np.isinf(extent)
                         else f"{extent:.1f} mm")
            out.append(_rejected(
                volume, volume.index_to_lps(centre_ijk), float(arr[slc].max()), size,
                f"too large or elongated ({size_text} across, max {dmax:g} mm)",
            ))
        return False
    values = arr[tuple(kji.T)].astype(np.float64)
    peak = int(np.argmax(values))
    out.append(_fit_candidate(
        volume, arr, kji[peak], pts[peak], size, dmin, dmax, min_hu, spacing_kji,
        min_confidence,
    ))
    return True


def _rejected(
    volume: Volume, lps: np.ndarray, peak: float, voxels: int, reason: str
) -> FiducialCandidate:
    return FiducialCandidate(
        np.asarray(lps, dtype=np.float64), volume.lps_to_index(lps), float("nan"), float("nan"),
        float("nan"), float(peak), voxels, float("nan"), float("nan"), 0.0, False, reason,
    )


def _suppress_duplicates(cands: list[FiducialCandidate], dmin: float) -> list[FiducialCandidate]:
    kept: list[FiducialCandidate] = []
    for c in sorted(cands, key=lambda c: -c.confidence):
        if all(np.linalg.norm(c.center_lps_mm - k.center_lps_mm) >= dmin for k in kept):
            kept.append(c)
    return kept


def _fit_candidate(
    volume: Volume,
    arr: np.ndarray,
    peak_kji: np.ndarray,
    peak_lps: np.ndarray,
    voxels: int,
    dmin: float,
    dmax: float,
    min_hu: float,
    spacing_kji: np.ndarray,
    min_confidence: float,
) -> FiducialCandidate:
    """Fit the blurred-sphere-on-step model around one candidate's peak voxel."""
    radius_w = dmax / 2.0 + 2.5 + 0.5 * float(spacing_kji.max())
    half = np.ceil(radius_w / spacing_kji).astype(int)
    lo = np.maximum(peak_kji - half, 0)
    hi = np.minimum(peak_kji + half + 1, arr.shape)
    block = arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float64)
    kk, jj, ii = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)),
                             indexing="ij")
    ijk = np.stack([ii, jj, kk], axis=-1).reshape(-1, 3).astype(np.float64)
    rel = volume.index_to_lps(ijk) - peak_lps  # mm, relative to the peak voxel
    val = block.reshape(-1)
    dist = np.linalg.norm(rel, axis=1)
    sel = dist <= radius_w
    rel, val, dist = rel[sel], val[sel], dist[sel]
    peak_hu = float(val.max())
    if rel.shape[0] < 20:
        return _rejected(volume, peak_lps, peak_hu, voxels, "too close to the volume edge")

    shell = dist > dmax / 2.0 + 1.0
    bg = val[shell] if shell.sum() >= 8 else val[dist > np.median(dist)]
    b_lo, b_hi = np.percentile(bg, [10, 90])
    if peak_hu - b_hi < 0.5 * MIN_CONTRAST_HU:  # cheap test before the fit
        return _rejected(volume, peak_lps, peak_hu, voxels,
                         f"no contrast above the surroundings ({peak_hu - b_hi:.0f} HU)")
    level = b_hi + 0.5 * (peak_hu - b_hi)
    core = (val >= level) & (dist <= dmax / 2.0 + float(spacing_kji.max()))
    w = val[core] - level
    c0 = (w[:, None] * rel[core]).sum(axis=0) / max(w.sum(), 1e-9)
    bright = bg > 0.5 * (b_lo + b_hi)
    n0 = rel[shell][bright].mean(axis=0) if shell.sum() >= 8 and 0 < bright.sum() < bg.size \
        else np.array([0.0, 0.0, 1.0])
    n0 = n0 / max(float(np.linalg.norm(n0)), 1e-9) if np.linalg.norm(n0) > 1e-9 \
        else np.array([0.0, 0.0, 1.0])
    sigma0 = max(0.5, 0.5 * float(spacing_kji.max()))

    # each voxel is the mean of the blurred model over 2x2x2 points inside it (box average)
    n_sub = _SUB if float(spacing_kji.max()) > _BOX_SPACING_MM else 1
    grid = (np.arange(n_sub) - (n_sub - 1) / 2.0) / n_sub
    offs_ijk = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    sub = rel[:, None, :] + (offs_ijk @ volume.affine[:3, :3].T)[None, :, :]

    def model(p: np.ndarray) -> np.ndarray:
        c, radius, sigma, f, b0, delta, n, o = p[:3], p[3], p[4], p[5], p[6], p[7], p[8:11], p[11]
        n = n / max(float(np.linalg.norm(n)), 1e-9)
        b = b0 + delta * ndtr((sub @ n - o) / sigma)
        s = blurred_sphere(np.linalg.norm(sub - c, axis=2), radius, sigma)
        return (b + (f - b) * s).mean(axis=1)

    p0 = np.r_[c0, np.clip(0.25 * (dmin + dmax), 0.3, None), sigma0,
               peak_hu + 0.1 * (peak_hu - b_lo), b_lo, max(b_hi - b_lo, 1.0), n0, 0.0]
    span = dmax / 2.0 + 1.5
    lower = np.r_[c0 - span, 0.2, 0.15, b_lo, -3000.0, 0.0, -2, -2, -2, -radius_w]
    upper = np.r_[c0 + span, dmax + 3.0, 4.0, 1e5, 4000.0, 1e4, 2, 2, 2, radius_w]
    p0 = np.clip(p0, lower + 1e-9, upper - 1e-9)
    scale = np.r_[1, 1, 1, 1, 1, 1000, 1000, 1000, 1, 1, 1, 1.0]
    fit = least_squares(lambda p: model(p) - val, p0, bounds=(lower, upper), x_scale=scale,
                        max_nfev=60, tr_solver="lsmr")
    p = fit.x
    centre_rel, radius, sigma, f_hu = p[:3], float(p[3]), float(p[4]), float(p[5])
    n = p[8:11] / max(float(np.linalg.norm(p[8:11])), 1e-9)
    bg_fit = p[6] + p[7] * ndtr((rel @ n - p[11]) / sigma)
    contrast = f_hu - float(max(p[6], p[6] + p[7]))
    resid = float(np.sqrt(np.mean(fit.fun**2))) / max(f_hu - float(p[6]), 1.0)

    # shape: second moments of the contrast over the marker (fitted background removed)
    near = np.linalg.norm(rel - centre_rel, axis=1) <= radius + 2.0 * max(
        sigma, float(spacing_kji.max()))
    wt = np.clip(val[near] - bg_fit[near], 0.0, None)
    d = rel[near] - centre_rel
    cov = (wt[:, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0) / max(wt.sum(), 1e-9)
    eig = np.linalg.eigvalsh(cov)
    elongation = float(np.sqrt(eig[-1] / max(eig[0], 1e-12)))

    diameter = 2.0 * radius
    tol = max(0.5, 0.5 * float(spacing_kji.max()))
    material_ok = f_hu >= min_hu
    if not material_ok and dmin < diameter <= dmin + _REFIT_MARGIN_MM:
        # Near the resolution limit size and density trade off (a smaller, denser ball blurs
        # to almost the same image). If a ball of the smallest allowed diameter explains the
        # data as well, judge the material from that fit.
        fixed_r = dmin / 2.0
        keep = np.r_[0:3, 4:12]
        fit_r = least_squares(
            lambda q: model(np.insert(q, 3, fixed_r)) - val,
            np.clip(p[keep], lower[keep] + 1e-9, upper[keep] - 1e-9),
            bounds=(lower[keep], upper[keep]), x_scale=scale[keep], max_nfev=60,
            tr_solver="lsmr",
        )
        rms_free = float(np.sqrt(np.mean(fit.fun**2)))
        rms_small = float(np.sqrt(np.mean(fit_r.fun**2)))
        # "as well": the misfit added by fixing R is no larger than the free fit's own
        if rms_small <= np.sqrt(2.0) * rms_free and fit_r.x[4] >= min_hu:
            material_ok = True
            f_hu = float(fit_r.x[4])
    size_score = float(np.clip(1.0 - max(dmin - diameter, diameter - dmax, 0.0) / tol, 0, 1))
    shape_score = float(np.clip((2.5 - elongation) / 0.7, 0, 1)) * float(
        np.clip(1.0 - (resid - 0.03) / 0.07, 0, 1)
    )
    contrast_score = float(np.clip(2.0 * contrast / MIN_CONTRAST_HU - 1.0, 0, 1))
    confidence = size_score * shape_score * contrast_score
    centre_lps = peak_lps + centre_rel
    reason = ""
    if not material_ok:
        reason = f"material {f_hu:.0f} HU below {min_hu:g} HU (bone or noise)"
    elif size_score == 0.0:
        reason = f"diameter {diameter:.2f} mm outside {dmin:g}-{dmax:g} mm"
    elif shape_score == 0.0:
        reason = f"not spherical (elongation {elongation:.2f}, residual {resid:.3f})"
    elif contrast_score == 0.0:
        reason = f"no contrast above the background ({contrast:.0f} HU)"
    elif confidence < min_confidence:
        weakest = min(
            (size_score, f"diameter {diameter:.2f} mm vs {dmin:g}-{dmax:g} mm"),
            (shape_score, f"elongation {elongation:.2f}, residual {resid:.3f}"),
            (contrast_score, f"contrast {contrast:.0f} HU"),
        )[1]
        reason = f"confidence {confidence:.2f} < {min_confidence:g} ({weakest})"
    return FiducialCandidate(
        centre_lps, volume.lps_to_index(centre_lps), diameter, sigma, contrast, peak_hu, voxels,
        elongation, resid, confidence, reason == "", reason,
    )
