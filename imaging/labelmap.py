"""Several segments in one label map (one integer label per voxel).

A label map is the form meshing of several structures at once (surface nets on labels) and
NIfTI/NRRD export want. Voxels belong to at most one label; building from segmentations
that overlap either lets later ones overwrite earlier ones (``overlap="overwrite"``, the
default: list the structure that must win last, e.g. vessels after soft tissue) or refuses
(``overlap="refuse"``) naming the two segments and the number of shared voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scrubin.imaging.errors import SegmentationError
from scrubin.imaging.segment import Segmentation

OVERLAP_MODES = ("overwrite", "refuse")


@dataclass
class LabelMap:
    """Integer labels indexed ``[k, j, i]`` with names, geometry and provenance.

    Attributes
    ----------
    array
        uint8 (up to 255 labels) or uint16 ``[k, j, i]``; 0 is background.
    names
        ``{label_value: name}`` for every non-zero value that may occur.
    affine
        Voxel ``(i, j, k, 1)`` -> LPS mm.
    series_instance_uid, frame_of_reference_uid
        Provenance of the source volume.
    """

    array: np.ndarray
    names: dict[int, str]
    affine: np.ndarray
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    levels: dict[int, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray) or self.array.ndim != 3:
            raise SegmentationError(
                f"label map array must be 3-D [k, j, i], got {getattr(self.array, 'shape', None)}"
            )
        if self.array.dtype not in (np.uint8, np.uint16):
            raise SegmentationError(
                f"label map dtype must be uint8 or uint16, got {self.array.dtype}"
            )
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise SegmentationError(f"label map affine must be 4x4, got {self.affine.shape}")
        bad = [v for v in self.names if not (0 < int(v) <= np.iinfo(self.array.dtype).max)]
        if bad:
            raise SegmentationError(
                f"label values must be 1..{np.iinfo(self.array.dtype).max}, got {bad}"
            )
        if len(set(self.names.values())) != len(self.names):
            raise SegmentationError(f"label names must be unique, got {list(self.names.values())}")

    @classmethod
    def from_segmentations(
        cls, segmentations: Sequence[Segmentation], overlap: str = "overwrite"
    ) -> LabelMap:
        """Labels 1..n for ``segmentations`` in order (see module docstring for overlaps).

        Raises
        ------
        SegmentationError
            No segmentation, duplicate names, shapes/affines/frames of reference that differ,
            an unknown overlap mode, or overlapping masks with ``overlap="refuse"``.
        """
        if overlap not in OVERLAP_MODES:
            raise SegmentationError(f"overlap must be one of {OVERLAP_MODES}, got {overlap!r}")
        segs = list(segmentations)
        if not segs:
            raise SegmentationError("a label map needs at least one segmentation")
        first = segs[0]
        names = [s.name for s in segs]
        if len(set(names)) != len(names):
            raise SegmentationError(
                f"segment names must be unique in a label map, got {names}; pass label_name"
            )
        for s in segs[1:]:
            if s.mask.shape != first.mask.shape:
                raise SegmentationError(
                    f"segment {s.name!r} has shape {s.mask.shape}, {first.name!r} "
                    f"{first.mask.shape}: segmentations must come from one volume"
                )
            if not np.allclose(s.affine, first.affine, atol=1e-6):
                raise SegmentationError(
                    f"segment {s.name!r} has a different affine than {first.name!r}: "
                    "segmentations must come from one volume"
                )
            if s.frame_of_reference_uid != first.frame_of_reference_uid:
                raise SegmentationError(
                    f"segment {s.name!r} is in frame of reference {s.frame_of_reference_uid!r}, "
                    f"{first.name!r} in {first.frame_of_reference_uid!r}"
                )
        dtype = np.uint8 if len(segs) <= 255 else np.uint16
        if len(segs) > np.iinfo(np.uint16).max:
            raise SegmentationError(f"too many segments for a label map: {len(segs)}")
        arr = np.zeros(first.mask.shape, dtype=dtype)
        for value, s in enumerate(segs, start=1):
            if overlap == "refuse":
                shared = s.mask & (arr > 0)
                n = int(np.count_nonzero(shared))
                if n:
                    other = segs[int(arr[shared].min()) - 1].name
                    raise SegmentationError(
                        f"segments {other!r} and {s.name!r} overlap in {n} voxels; "
                        f"use overlap='overwrite' (later wins) or change the segmentations"
                    )
            arr[s.mask] = value
        return cls(
            array=arr,
            names={v: s.name for v, s in enumerate(segs, start=1)},
            affine=first.affine.copy(),
            series_instance_uid=first.series_instance_uid,
            frame_of_reference_uid=first.frame_of_reference_uid,
            levels={v: s.level for v, s in enumerate(segs, start=1)},
        )

    def value_of(self, label: int | str) -> int:
        """Label value of a name (or check a value)."""
        if isinstance(label, str):
            for v, n in self.names.items():
                if n == label:
                    return int(v)
            raise SegmentationError(
                f"no label named {label!r}; labels are {list(self.names.values())}"
            )
        if int(label) not in self.names:
            raise SegmentationError(f"no label {label!r}; values are {sorted(self.names)}")
        return int(label)

    def mask(self, label: int | str) -> np.ndarray:
        """Boolean ``[k, j, i]`` mask of one label (by value or name)."""
        return self.array == self.value_of(label)

    def counts(self) -> dict[str, int]:
        """Voxel count per label name (after overlaps were resolved)."""
        bins = np.bincount(self.array.ravel(), minlength=max(self.names, default=0) + 1)
        return {n: int(bins[v]) for v, n in sorted(self.names.items())}

    def provenance(self) -> dict[str, str]:
        """The source UIDs every derived output must carry."""
        return {
            "series_instance_uid": self.series_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
        }
