"""Segmentation presets on the head phantom against its analytic truth; every rejection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from scrubin.imaging.errors import SegmentationError
from scrubin.imaging.load import load_volume
from scrubin.imaging.segment import PRESETS, iso_field, segment
from scrubin.imaging.volume import Volume
from scrubin.samples.model import phantom_model


@pytest.fixture(scope="module")
def vol(small_phantom):
    return load_volume(small_phantom)


class _LazySignedDistance(dict):
    """Signed distance (mm, < 0 inside) of every voxel centre to a phantom structure.

    Computed on first use, only within the structure's bounding box + 5 mm (tube-like
    structures are costly); voxels beyond that get +5 mm (far outside for every test here).
    """

    def __init__(self, vol: Volume, truth: dict) -> None:
        super().__init__()
        self.model = phantom_model(truth)
        self.truth = truth
        K, J, NI = vol.array.shape
        kk, jj, ii = np.meshgrid(np.arange(K), np.arange(J), np.arange(NI), indexing="ij")
        self.shape = (K, J, NI)
        self.pts = vol.index_to_lps(np.stack([ii, jj, kk], axis=-1).reshape(-1, 3))

    def __missing__(self, name: str) -> np.ndarray:
        box = np.asarray(self.truth["structures"][name]["bbox_lps"], dtype=float)
        near = np.all((self.pts >= box[0] - 5.0) & (self.pts <= box[1] + 5.0), axis=1)
        d = np.full(len(self.pts), 5.0)
        d[near] = self.model.signed_distance(name, self.pts[near])
        self[name] = d.reshape(self.shape)
        return self[name]


@pytest.fixture(scope="module")
def sd(vol, small_truth):
    return _LazySignedDistance(vol, small_truth)


def _voxel(vol: Volume, lps) -> tuple[int, int, int]:
    i, j, k = np.rint(vol.lps_to_index(np.asarray(lps, float))).astype(int)
    return int(k), int(j), int(i)


def _cap_volume(part: list[dict]) -> float:
    """Volume (mm^3) of ellipsoid ∩ {z >= z0}, the skull/brain solids of the phantom."""
    ell = next(p for p in part if p["type"] == "ellipsoid")
    half = next(p for p in part if p["type"] == "halfspace")
    assert half["normal"] == [0.0, 0.0, -1.0]
    a, b, c = ell["semi_axes"]
    z0 = -half["offset"] - ell["center"][2]  # inside where z >= z0, relative to the centre
    return np.pi * a * b * ((c - z0) - (c**3 - z0**3) / (3 * c * c))


def test_presets_table():
    assert set(PRESETS) == {"bone", "skin", "soft-tissue", "vessels", "air"}
    for name, p in PRESETS.items():
        assert p.name == name and p.keep in ("largest", "all") and p.description
        if p.lo is not None and p.hi is not None:
            assert p.level is None  # two-sided band: mask only
        else:
            assert p.level == (p.lo if p.lo is not None else p.hi)


def test_bone_is_the_skull_shell(vol, sd, small_truth):
    st = small_truth["structures"]
    shell_mm3 = _cap_volume(st["skull"]["parts"][0]) - _cap_volume(st["brain"]["parts"][0])
    voxel_mm3 = float(np.prod(vol.spacing))
    half_max = st["skull"]["half_max_hu"]
    at_half = segment(vol, "bone", threshold=(half_max, None))
    # at the half-maximum the boundary is unbiased: voxel count ~ analytic volume
    assert at_half.voxel_count == pytest.approx(shell_mm3 / voxel_mm3, rel=0.06)
    seg = segment(vol, "bone")
    assert seg.level == 300.0 and seg.threshold == (300.0, None)
    # 300 HU lies below the half-maximum: the mask is larger, never smaller
    assert shell_mm3 / voxel_mm3 < seg.voxel_count < 1.3 * shell_mm3 / voxel_mm3
    bone_sd = np.maximum(sd["skull"], -sd["brain"])
    assert seg.mask[bone_sd < -1.0].all()  # the inside of the bone is in
    assert not seg.mask[bone_sd > 2.0].any()  # nothing far from it
    for f in small_truth["fiducials"]:  # fiducials are separate dense blobs: out
        assert not seg.mask[_voxel(vol, f["center_lps"])]
    assert seg.provenance() == vol.provenance()
    assert seg.timings and all(t >= 0 for t in seg.timings.values())
    assert seg.mask.shape == vol.array.shape and seg.mask.dtype == bool
    outside_box = seg.mask.copy()
    outside_box[seg.bbox_kji] = False
    assert not outside_box.any() and seg.mask[seg.bbox_kji].sum() == seg.voxel_count


def test_skin_is_one_closed_solid_without_table(vol, sd, small_truth):
    seg = segment(vol, "skin")
    assert seg.mask[_voxel(vol, [0.0, 0.0, 0.0])]  # brain centre
    assert not seg.mask[sd["table"] < 0].any()
    # all cavities (airway, sinuses) are filled: every voxel well inside the skin is in
    assert seg.mask[sd["skin"] < -1.0].all()
    assert seg.mask[sd["airway"] < 0].all() and seg.mask[sd["sinus"] < 0].all()
    inside = sd["skin"] < 0
    assert seg.voxel_count == pytest.approx(inside.sum(), rel=0.03)
    # fiducials sit on the skin as bumps ...
    assert seg.mask[sd["skin"] > 1.0].any()
    # ... which exclude_fiducials removes without denting the skin beneath
    clean = segment(vol, "skin", exclude_fiducials=True)
    assert clean.mask[clean.bbox_kji].sum() == clean.voxel_count
    assert not clean.mask[sd["skin"] > 1.0].any()
    assert clean.mask[sd["skin"] < -1.0].all()
    for f in small_truth["fiducials"]:
        assert not clean.mask[_voxel(vol, f["center_lps"])]


def test_air_finds_airway_and_sinuses_not_outside_air(vol, sd):
    seg = segment(vol, "air")
    assert seg.level == -400.0 and seg.inside_below
    assert seg.mask[sd["airway"] < -1.0].all()
    assert seg.mask[sd["sinus"] < -1.0].all()
    assert not seg.mask[sd["skin"] > 0].any()  # outside air excluded
    near_cavity = (sd["airway"] < 1.5) | (sd["sinus"] < 1.5)
    assert seg.mask[near_cavity].sum() >= 0.98 * seg.voxel_count


def test_vessels_with_seed_find_the_vessel(vol, sd, small_truth):
    seed = small_truth["structures"]["vessel"]["parts"][20][0]["p0"]  # a centreline point
    seg = segment(vol, "vessels", seed_lps=np.array(seed))
    assert seg.level is None and seg.threshold == (150.0, 500.0)
    np.testing.assert_allclose(seg.seed_lps, seed)
    assert not seg.mask[sd["vessel"] > 2.0].any()
    core = sd["vessel"] < -0.5
    assert seg.mask[core].mean() > 0.9
    # unseeded: every contrast region inside the body, bone rims removed -> still the vessel
    free = segment(vol, "vessels")
    assert free.mask[core].mean() > 0.9
    assert not free.mask[sd["table"] < 0].any()


def test_soft_tissue_keeps_the_brain(vol, sd):
    seg = segment(vol, "soft-tissue")
    assert seg.level is None
    assert seg.mask[_voxel(vol, [0.0, 0.0, 0.0])]
    assert not seg.mask[np.maximum(sd["skull"], -sd["brain"]) < -1.0].any()


def test_explicit_threshold_overrides_and_sets_level(vol):
    seg = segment(vol, "bone", threshold=(500, None))
    assert seg.threshold == (500.0, None) and seg.level == 500.0 and seg.preset == "bone"
    band = segment(vol, threshold=(-100, 100), label_name="tissue")
    assert band.level is None and band.name == "tissue" and band.preset is None
    below = segment(vol, threshold=(None, -400))
    assert below.level == -400.0 and below.inside_below


def test_seed_keeps_its_component():
    a = np.full((10, 12, 30), -1000, np.int16)
    a[2:6, 2:6, 2:6] = 1000  # 64 voxels
    a[2:8, 2:8, 12:20] = 1000  # 288 voxels (largest)
    vol = Volume(a, np.diag([1.0, 1.0, 2.0, 1.0]), modality="CT")
    assert segment(vol, "bone").voxel_count == 288
    seeded = segment(vol, "bone", seed_lps=np.array([3.0, 3.0, 6.0]))  # i=3, j=3, k=3
    assert seeded.voxel_count == 64 and seeded.mask[3, 3, 3]


def test_skin_cuts_a_table_touching_the_head_and_keeps_thin_parts():
    K, J, NI = 40, 48, 40
    k, j, i = np.ogrid[:K, :J, :NI]
    a = np.full((K, J, NI), -1000, np.int16)
    ball = (k - 20) ** 2 + (j - 20) ** 2 + (i - 20) ** 2 <= 14**2
    a[ball] = 40
    a[:, 34:37, :] = 200  # table slab spanning the whole FOV, touching the ball at j = 34
    fin = (k >= 18) & (k <= 22) & (j >= 18) & (j <= 22) & (i >= 34) & (i <= 38)  # thin "ear"
    fin = fin & ~ball
    fin[:, :, :] &= (k == 20)  # one voxel thick
    a[fin] = 40
    vol = Volume(a, np.eye(4), modality="CT")
    seg = segment(vol, "skin")
    assert "separate" in seg.timings
    # the head is kept, except possibly at the contact with the table (ambiguous there)
    assert seg.mask[ball & (j < 31)].all()
    assert seg.mask[ball].sum() > 0.995 * ball.sum()
    assert seg.mask[fin].all()  # the thin part is added back
    table = np.zeros_like(ball)
    table[:, 34:37, :] = True
    # only a sliver of the slab within a few voxels (the erosion box) of the head may remain
    kept = seg.mask & table
    assert kept.sum() < 0.06 * table.sum()
    assert ndi.distance_transform_edt(~ball)[kept].max() <= 5.0
    assert not seg.mask[:, 34:37, :5].any() and not seg.mask[:5, 34:37, :].any()


def test_skin_on_an_oblique_series(oblique_phantom, oblique_truth):
    vol = load_volume(oblique_phantom)
    seg = segment(vol, "skin")
    assert seg.mask[_voxel(vol, [0.0, 0.0, 0.0])]
    for s in oblique_truth["structures"]["airway"]["parts"][::4]:
        assert seg.mask[_voxel(vol, s[0]["p0"])]


def test_iso_field_level_set_is_the_mask(vol):
    for preset in ("skin", "air"):
        seg = segment(vol, preset)
        f = iso_field(vol, seg)
        inside = f <= seg.level if seg.inside_below else f >= seg.level
        np.testing.assert_array_equal(inside, seg.mask)
    with pytest.raises(SegmentationError, match="no iso level"):
        iso_field(vol, segment(vol, "soft-tissue"))


def test_presets_refuse_mr_and_non_hu_volumes():
    a = np.zeros((4, 5, 6), np.int16)
    a[1:3, 1:3, 1:3] = 800
    with pytest.raises(SegmentationError, match="MR volume.*--threshold"):
        segment(Volume(a, np.eye(4), modality="MR"), "bone")
    with pytest.raises(SegmentationError, match="not HU-like"):
        segment(Volume(a, np.eye(4), modality=""), "bone")
    # an explicit threshold works on MR
    assert segment(Volume(a, np.eye(4), modality="MR"), threshold=(500, None)).voxel_count == 8
    # unknown modality with air-like values is taken as CT
    b = a.copy()
    b[0] = -1000
    assert segment(Volume(b, np.eye(4)), "bone").voxel_count == 8


def test_rejections(vol):
    with pytest.raises(SegmentationError, match="unknown preset 'lung'"):
        segment(vol, "lung")
    with pytest.raises(SegmentationError, match="give a preset"):
        segment(vol)
    with pytest.raises(SegmentationError, match="at least one bound"):
        segment(vol, threshold=(None, None))
    with pytest.raises(SegmentationError, match="lo 10 is above hi 5"):
        segment(vol, threshold=(10, 5))
    with pytest.raises(SegmentationError, match="finite"):
        segment(vol, threshold=(float("nan"), None))
    with pytest.raises(SegmentationError, match="must be a number"):
        segment(vol, threshold=("a", None))
    with pytest.raises(SegmentationError, match=r"\(lo, hi\)"):
        segment(vol, threshold=(1, 2, 3))
    with pytest.raises(SegmentationError, match="no voxel in"):
        segment(vol, threshold=(5000, None))
    with pytest.raises(SegmentationError, match="Volume"):
        segment(vol.array, "bone")  # type: ignore[arg-type]


def test_seed_rejections(vol):
    with pytest.raises(SegmentationError, match=r"seed \(0, 0, 900\).*outside the volume"):
        segment(vol, "bone", seed_lps=np.array([0.0, 0.0, 900.0]))
    # the brain centre is ~35 HU: outside the bone range -> names seed, value and range
    with pytest.raises(SegmentationError,
                       match=r"seed \(0, 0, 0\) LPS mm has voxel value -?\d+.*\[300, \+inf\] HU"
                             r".*not an empty mesh"):
        segment(vol, "bone", seed_lps=np.array([0.0, 0.0, 0.0]))
    with pytest.raises(SegmentationError, match="3 finite"):
        segment(vol, "bone", seed_lps=np.array([0.0, np.nan, 0.0]))
    with pytest.raises(SegmentationError, match="3 finite"):
        segment(vol, "bone", seed_lps=np.array([0.0, 1.0]))


def test_skin_is_equivariant_to_the_acquisition_axes(vol):
    # the same data stored as coronal slices: the S-I axis becomes array axis j, so the
    # per-slice cavity filling runs along j (dense path) and must give the same voxels
    perm = Volume(np.ascontiguousarray(vol.array.transpose(1, 0, 2)), vol.affine[:, [0, 2, 1, 3]],
                  modality="CT")
    a = segment(vol, "skin")
    b = segment(perm, "skin")
    np.testing.assert_array_equal(b.mask, a.mask.transpose(1, 0, 2))


def test_float_volume_gives_the_same_mask(vol):
    as_float = Volume(vol.array.astype(np.float32), vol.affine, modality="CT")
    np.testing.assert_array_equal(segment(as_float, "bone").mask, segment(vol, "bone").mask)


def test_skin_of_a_scan_cut_through_the_neck(vol):
    # a scan ending in the neck (and airway): the body reaches the volume border, so the
    # table separation runs, and the airway, open at that border, must still be filled
    k0 = int(np.rint(vol.lps_to_index(np.array([0.0, 0.0, -100.0]))[2]))
    affine = vol.affine.copy()
    affine[:3, 3] = vol.index_to_lps(np.array([0.0, 0.0, k0]))
    cut = Volume(np.ascontiguousarray(vol.array[k0:]), affine, modality="CT")
    seg = segment(cut, "skin")
    assert "separate" in seg.timings
    np.testing.assert_array_equal(seg.mask, segment(vol, "skin").mask[k0:])
