"""The synthetic surgical scene as an overlay frame source (simulation, not theatre code).

:class:`SyntheticSource` implements :class:`scrubin.overlay.sources.FrameSource` for a
:class:`~scrubin.samples.synthetic.SyntheticScene`: capture time is ``index / fps`` on the
simulated timeline; the scene is rendered offline at its own pace and ``t0`` is the moment
the rendered frame is handed over (the simulated camera's exposure), so rendering the world
is not counted as pipeline latency. Each frame carries its ground truth
(:class:`~scrubin.samples.synthetic.SceneFrame`) in ``Frame.truth``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from scrubin.overlay.sources import Frame, FrameSource, SourceError, check_frame_count
from scrubin.samples.synthetic import SyntheticScene


class SyntheticSource(FrameSource):
    """Frames of a :class:`~scrubin.samples.synthetic.SyntheticScene`, with their ground truth."""

    def __init__(self, scene: SyntheticScene, max_frames: int | None = None) -> None:
        if not isinstance(scene, SyntheticScene):
            raise SourceError(f"scene must be a SyntheticScene, got {type(scene).__name__}")
        self.scene = scene
        self.name = "synthetic"
        self.camera = scene.camera
        self.nominal_fps = float(scene.fps)
        self.max_frames = check_frame_count(max_frames)

    @classmethod
    def from_phantom(cls, max_frames: int | None = None) -> SyntheticSource:
        """The default scene of ``--source synthetic``: the small phantom, ``max_frames`` frames
        (150 when None), the reference plate occluded from 40 % of the run for ~1/8 of it."""
        n = max_frames or 150
        scene = SyntheticScene.from_phantom(
            "small", n_frames=n, occlusion=(int(0.4 * n), int(0.4 * n) + max(3, n // 8)))
        return cls(scene, max_frames)

    def __iter__(self) -> Iterator[Frame]:
        n = self.scene.n_frames if self.max_frames is None else min(self.max_frames,
                                                                      self.scene.n_frames)
        for i in range(n):
            t = time.perf_counter()
            truth = self.scene.render(i)
            t0 = time.perf_counter()
            yield Frame(i, truth.capture_time_s, truth.image_bgr, t0, (t0 - t) * 1e3, truth)
