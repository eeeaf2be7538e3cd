"""Step 3 of the DICOM pipeline: slice order and the voxel-to-LPS affine of a stack.

Orientation (PS3.3 C.7.6.2.1.1): the row and column direction cosines must be unit vectors at
right angles; rounding of the written values (up to :data:`IOP_TOLERANCE`) is normalised
away, anything larger is refused (:func:`unit_orientation`).

Slices are sorted by their position along the slice normal ``n = row_cos × col_cos``,
``d_k = IPP_k · n`` -- never by file name or InstanceNumber. The sorted steps are checked:
a duplicate position, a gap of about twice the typical step (missing slices), steps that
differ from the typical one by more than the tolerance (:data:`STEP_TOLERANCE_ABS`,
:data:`STEP_TOLERANCE_REL`), or positions off the straight line through the first and last
slice each raise :class:`GeometryError` naming the series and the positions. The slice axis
of the affine is the measured mean step vector ``(IPP_last - IPP_first) / (n - 1)``; when it
is not parallel to ``n`` (CT gantry tilt) the affine is sheared, which keeps every voxel
centre exact, and the tilt angle is reported.

Input: the stacks of :mod:`scrubin.imaging.dicom_group`; next step:
:mod:`scrubin.imaging.dicom_pixels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scrubin.imaging.dicom_group import FrameStack, Stack
from scrubin.imaging.errors import GeometryError
from scrubin.imaging.volume import affine_from_dicom

#: Largest deviation of a slice from the regular grid: max(ABS mm, REL × typical step).
STEP_TOLERANCE_ABS = 0.01
STEP_TOLERANCE_REL = 0.02
#: Steps above this multiple of the typical step are reported as missing slices.
GAP_FACTOR = 1.5
#: Largest deviation of ImageOrientationPatient from unit length / orthogonality that is
#: normalised away (rounding of the DS values); anything larger is refused.
IOP_TOLERANCE = 1e-3


@dataclass
class StackGeometry:
    """Sorted order and exact affine of a slice stack (see module docstring)."""

    order: np.ndarray
    affine: np.ndarray
    step_mm: float
    tilt_deg: float


def _fmt(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in p) + ")"


def unit_orientation(iop: np.ndarray, where: str) -> np.ndarray:
    """ImageOrientationPatient with unit, orthogonal cosines (PS3.3 C.7.6.2.1.1).

    The standard requires the row and column direction cosines to be unit vectors at right
    angles. Values written with a few decimals miss that by rounding; such deviations up to
    :data:`IOP_TOLERANCE` (length error and cosine of the angle) are removed by normalising
    both vectors and splitting the remaining dot product symmetrically between them (the
    first-order orthogonalisation, so neither axis is privileged). Larger deviations would
    scale or shear the affine (cosines of length 1.08 give voxels 8 % too large) and raise
    :class:`GeometryError` naming ``where`` and the values.

    Parameters
    ----------
    iop
        6 floats: row direction cosine then column direction cosine (LPS, unitless).
    where
        Series/file named in the error message.
    """
    iop = np.asarray(iop, dtype=np.float64).reshape(6)
    row, col = iop[:3], iop[3:]
    len_r, len_c = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    values = "[" + ", ".join(f"{v:.6g}" for v in iop) + "]"
    if not (abs(len_r - 1.0) <= IOP_TOLERANCE and abs(len_c - 1.0) <= IOP_TOLERANCE):
        raise GeometryError(
            f"{where}: ImageOrientationPatient {values} has cosines of length {len_r:.6g} and "
            f"{len_c:.6g}, expected unit vectors (within {IOP_TOLERANCE:g})"
        )
    row, col = row / len_r, col / len_c
    dot = float(row @ col)
    if abs(dot) > IOP_TOLERANCE:
        angle = float(np.degrees(np.arccos(np.clip(dot, -1.0, 1.0))))
        raise GeometryError(
            f"{where}: ImageOrientationPatient {values} has row and column cosines at "
            f"{angle:.4g} deg, expected orthogonal (|cos| within {IOP_TOLERANCE:g})"
        )
    row, col = row - 0.5 * dot * col, col - 0.5 * dot * row
    return np.concatenate([row / np.linalg.norm(row), col / np.linalg.norm(col)])


def stack_geometry(
    label: str,
    iop: np.ndarray,
    pixel_spacing: np.ndarray,
    positions_lps: np.ndarray,
    names: Sequence[str],
    single_spacing: float = 1.0,
) -> StackGeometry:
    """Sort slices along the normal, check the spacing, and build the voxel→LPS affine.

    Parameters
    ----------
    label
        Series (or file) named in error messages.
    iop, pixel_spacing
        ImageOrientationPatient (6) and PixelSpacing [row, column] mm shared by the slices.
    positions_lps
        (n, 3) ImagePositionPatient of each slice, LPS mm, in input order.
    names
        A name per slice (file name or frame number) for error messages.
    single_spacing
        Slice spacing (mm) to use when there is only one slice.
    """
    iop = unit_orientation(iop, f"{label}: {names[0]}")
    normal = np.cross(iop[:3], iop[3:])
    pos = np.asarray(positions_lps, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    if n == 1:
        return StackGeometry(
            np.zeros(1, dtype=np.intp),
            affine_from_dicom(iop, pixel_spacing, pos[0], normal * single_spacing),
            single_spacing,
            0.0,
        )
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    d, pos = d[order], pos[order]
    steps = np.diff(d)
    typical = float(np.median(steps))
    tol = max(STEP_TOLERANCE_ABS, STEP_TOLERANCE_REL * abs(typical))
    dup = np.flatnonzero(steps < STEP_TOLERANCE_ABS)
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise GeometryError(
            f"{label}: duplicate slice position {_fmt(pos[dup[0]])} mm in {names[a]} and "
            f"{names[b]} (two acquisitions in one series? choose one with --series)"
        )
    gaps = np.flatnonzero(steps > GAP_FACTOR * typical)
    if gaps.size:
        g = gaps[0]
        missing = int(round(steps[g] / typical)) - 1
        raise GeometryError(
            f"{label}: about {missing} missing slice(s) between positions {_fmt(pos[g])} and "
            f"{_fmt(pos[g + 1])} mm (gap {steps[g]:.3f} mm, typical step {typical:.3f} mm)"
        )
    odd = np.flatnonzero(np.abs(steps - typical) > tol)
    if odd.size:
        g = odd[0]
        raise GeometryError(
            f"{label}: non-uniform slice spacing: step {steps[g]:.3f} mm between "
            f"{_fmt(pos[g])} and {_fmt(pos[g + 1])} mm, typical {typical:.3f} mm "
            f"(tolerance {tol:.3f} mm)"
        )
    step_vec = (pos[-1] - pos[0]) / (n - 1)
    fit = pos[0] + np.arange(n)[:, None] * step_vec
    dev = np.linalg.norm(pos - fit, axis=1)
    if dev.max() > tol:
        g = int(np.argmax(dev))
        raise GeometryError(
            f"{label}: slice positions are not on a line: {_fmt(pos[g])} mm is "
            f"{dev[g]:.3f} mm off the line through the first and last slice"
        )
    cos_t = abs(float(step_vec @ normal)) / float(np.linalg.norm(step_vec))
    tilt = float(np.degrees(np.arccos(min(1.0, cos_t))))
    affine = affine_from_dicom(iop, pixel_spacing, pos[0], step_vec)
    tilt = tilt if tilt > 1e-3 else 0.0
    return StackGeometry(order, affine, float(np.linalg.norm(step_vec)), tilt)


def slice_geometry(stack: Stack) -> StackGeometry:
    """Order and affine of a stack of single-frame slices (PS3.3 C.7.6.2.1.1).

    Raises
    ------
    GeometryError
        A slice lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing, or the
        positions/orientation fail the checks of :func:`stack_geometry`.
    """
    headers = stack.headers
    label = f"series {stack.key}"
    for h in headers:
        missing = [name for name, v in (("ImagePositionPatient", h.ipp),
                   ("ImageOrientationPatient", h.iop), ("PixelSpacing", h.pixel_spacing))
                   if v is None]
        if missing:
            raise GeometryError(f"{label}: {h.path} has no valid {', '.join(missing)} "
                                "(not a 3-D acquisition slice)")
    h0 = headers[0]
    return stack_geometry(
        label,
        h0.iop,  # type: ignore[arg-type]
        h0.pixel_spacing,  # type: ignore[arg-type]
        np.stack([h.ipp for h in headers]),  # type: ignore[misc]
        [str(h.path) for h in headers],
        h0.slice_spacing or 1.0,
    )


def frame_geometry(stack: FrameStack) -> StackGeometry:
    """Order and affine of the frames of a multi-frame stack (PS3.3 C.7.6.16.2.3-4)."""
    return stack_geometry(f"{stack.header.path} (series {stack.key})", stack.iop,
                          stack.pixel_spacing, stack.positions,
                          [f"frame {int(f) + 1}" for f in stack.frames])
