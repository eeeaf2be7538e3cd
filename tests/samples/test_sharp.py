"""The sharp-kernel sample option: preset geometry, kernel, and a small rendered block whose
noise and edge width match the kernel."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.samples import phantom
from scrubin.samples.model import SampleError, phantom_model


def test_sharp_preset_geometry_and_kernel_without_generating() -> None:
    truth = phantom.truth_dict("sharp")
    assert truth["shape_ijk"] == [512, 512, 300]
    assert truth["pixel_spacing"] == [0.48, 0.48] and truth["slice_spacing"] == 0.48
    assert (truth["psf_sigma_mm"], truth["noise_hu"]) == (0.15, 20.0)
    # the standard presets keep their kernel (and so their cached files)
    assert (phantom.truth_dict("full")["psf_sigma_mm"], phantom.truth_dict("full")["noise_hu"]) \
        == (0.6, 15.0)
    custom = phantom.truth_dict("custom:0.96,0.96,0.96:sharp")
    assert (custom["psf_sigma_mm"], custom["noise_hu"]) == (0.15, 20.0)
    assert custom["pixel_spacing"] == [0.96, 0.96]
    assert phantom.spec_hash("custom:0.96,0.96,0.96:sharp") != phantom.spec_hash(
        "custom:0.96,0.96,0.96")


@pytest.mark.parametrize("name", ["sharp:sharp", "custom:1,1,1:sharp:sharp", "custom:1,1:sharp"])
def test_bad_sharp_names_are_refused(name: str) -> None:
    with pytest.raises(SampleError, match="sample"):
        phantom.truth_dict(name)


def test_block_noise_and_edge_width_match_the_sharp_kernel() -> None:
    """Away from boundaries the voxels are the structure's HU plus 20 HU white noise; across
    the skull's outer table the 10-90 % rise is about one voxel (partial volume of a
    0.48 mm voxel and a 0.15 mm PSF), not the ~2.6 voxels of the standard 0.6 mm PSF."""
    vol, truth = phantom.phantom_block((55.0, 0.0, 10.0), 30.0)
    model = phantom_model(truth)
    n = vol.array.shape[0]
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    lps = ijk @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    values = vol.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]].astype(np.float64)
    far = np.ones(len(lps), bool)
    for name in ("skin", "skull", "brain"):
        far &= np.abs(model.signed_distance(name, lps)) > 1.5
    resid = values[far] - model.hu_at(lps[far])
    assert abs(resid.mean()) < 1.0 and resid.std() == pytest.approx(20.0, abs=1.0)
    # mean profile across the outer table, binned by signed distance (mm)
    sd = model.signed_distance("skull", lps)
    near = (np.abs(sd) < 1.5) & (model.signed_distance("brain", lps) > 2.0)
    bins = np.linspace(-1.5, 1.5, 31)
    which = np.digitize(sd[near], bins)
    prof = np.array([values[near][which == b].mean() for b in range(1, 31)])
    x = 0.5 * (bins[1:] + bins[:-1])
    lo, hi = 40.0 + 0.1 * 1160.0, 40.0 + 0.9 * 1160.0
    rise = np.interp(lo, prof[::-1], x[::-1]) - np.interp(hi, prof[::-1], x[::-1])
    assert 0.3 < rise < 0.7  # mm; one 0.48 mm voxel of partial volume, barely blurred


def test_block_rejections() -> None:
    with pytest.raises(SampleError, match="kernel"):
        phantom.phantom_block((0.0, 0.0, 0.0), 10.0, kernel_name="soft")
    with pytest.raises(SampleError, match="out of range"):
        phantom.phantom_block((0.0, 0.0, 0.0), 0.5)
