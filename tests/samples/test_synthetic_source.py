"""The synthetic scene as an overlay FrameSource (samples/synthetic_source.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from scrubin.overlay.sources import FrameSource, SourceError
from scrubin.samples.synthetic import SyntheticScene, default_camera
from scrubin.samples.synthetic_source import SyntheticSource


def test_synthetic_source_carries_truth() -> None:
    v = np.array([[0, 0, 600], [40, 0, 600], [0, 40, 600.0]])
    scene = SyntheticScene(default_camera(64, 48), v, np.array([[0, 1, 2]]),
                           np.array([[1.0, 2.0, 3.0]]), ["p"], n_frames=4, fps=20.0,
                           supersample=1)
    src = SyntheticSource(scene, max_frames=3)
    frames = list(src)
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert [f.capture_time_s for f in frames] == [0.0, 0.05, 0.1]
    assert all(f.truth is not None and f.truth.index == f.frame_id for f in frames)
    assert src.camera is scene.camera and src.nominal_fps == 20.0
    with pytest.raises(SourceError, match="SyntheticScene"):
        SyntheticSource("scene")


def test_synthetic_source_is_an_overlay_frame_source() -> None:
    assert issubclass(SyntheticSource, FrameSource)
    with pytest.raises(SourceError, match="frame count"):
        SyntheticSource.from_phantom(max_frames=0)


def test_theatre_source_module_does_not_load_the_simulator() -> None:
    code = ("import sys, scrubin.overlay.sources, scrubin.overlay.pipeline; "
            "print(sorted(m for m in sys.modules if m.startswith('scrubin.samples')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
