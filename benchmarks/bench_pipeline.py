"""AR overlay frame loop on the synthetic scene (1280x720, lens distortion, marker plate 2x2
supersampled).

Reports per-stage medians / p95 (ms) of the pipeline (track, render + composite, HUD, sink =
H.264 encode), the latency (output time - capture time on the pipeline clock), the tracking
states through the marker-occlusion gap, and the accuracy: reprojection error of the
ground-truth fiducials and target measured on the overlay's output pixels (px, and mm at each
point's depth), for frames whose pose was measured in that frame and for all frames shown.

Peer: OpenCV's standard tracking path on the same frames -- ``ArucoDetector.detectMarkers``
(CORNER_REFINE_SUBPIX) + ``cv2.solvePnP`` (IPPE on all plate corners) -- timed interleaved
with our tracker (``MarkerTracker.update``), and its pose pushed through the same registration
and accuracy probe, so both the speed ratio and the accuracy difference are like for like.

Pointer: the scene's tracked pointer rests its tip on a fiducial in frames 5..21; the landmark
distance shown on the HUD (truth 0 mm) and the tip error against the true tip are reported,
with the ``tool`` stage (second tracker). Start-up: building the overlay renderer's lens map
(``overlay.distortion.render_geometry``) cold (cache cleared) and warm (the cached map).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import interleaved, ratio_line
from scrubin.overlay.distortion import clear_geometry_cache
from scrubin.overlay.pipeline import AccuracyProbe, OverlayPipeline, Registration, summarize
from scrubin.overlay.pointer import Landmark, PointerTracking
from scrubin.overlay.renderer import OverlayRenderer, Structure
from scrubin.overlay.sinks import VideoFileSink
from scrubin.overlay.sources import Frame, FrameSource
from scrubin.registration.frames import CAMERA, REF, Transform
from scrubin.registration.tracker import MarkerTracker
from scrubin.samples.synthetic import (
    POINTER_LANDMARK,
    SyntheticScene,
    default_camera,
    phantom_models,
)

N_FRAMES = 60
GAP = (25, 45)  # 0.67 s without the marker: STALE then LOST, then re-acquisition
TOUCH = (5, 22)  # pointer tip resting on the fiducial


class _Replay(FrameSource):
    """Pre-rendered frames (rendering is the simulated world, not pipeline work)."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames

    def __iter__(self) -> Iterator[Frame]:
        for f in self.frames:
            f.t0 = time.perf_counter()
            yield f


def _peer_pose(gray: np.ndarray, det: cv2.aruco.ArucoDetector, scene: SyntheticScene
               ) -> Transform | None:
    corners, ids, _ = det.detectMarkers(gray)
    if ids is None:
        return None
    obj = [scene.body.markers[int(i)] for i in ids.ravel() if int(i) in scene.body.markers]
    img = [c.reshape(4, 2) for c, i in zip(corners, ids.ravel(), strict=True)
           if int(i) in scene.body.markers]
    if not obj:
        return None
    ok, rvec, tvec = cv2.solvePnP(np.concatenate(obj), np.concatenate(img), scene.camera.matrix,
                                  scene.camera.dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    m = np.eye(4)
    m[:3, :3] = cv2.Rodrigues(rvec)[0]
    m[:3, 3] = tvec.ravel()
    return Transform(m, REF, CAMERA)


def _fmt(s: dict | None, unit: str) -> str:
    if not s:
        return "n/a"
    return f"median {s['median']:.3f} {unit}, p95 {s['p95']:.3f}, max {s['max']:.3f} (n={s['n']})"


def main() -> None:
    """Print the benchmark lines."""
    t0 = time.perf_counter()
    scene = SyntheticScene.from_phantom("small", default_camera(1280, 720), n_frames=N_FRAMES,
                                        occlusion=GAP, pointer_touch=TOUCH)
    frames, render_ms = [], []
    for i in range(N_FRAMES):
        t = time.perf_counter()
        truth = scene.render(i)
        render_ms.append((time.perf_counter() - t) * 1e3)
        frames.append(Frame(i, truth.capture_time_s, truth.image_bgr, 0.0, render_ms[-1], truth))
    print(f"synthetic scene 1280x720 ray casting (plate 2x2 supersampled): median "
          f"{np.median(render_ms):.0f} ms/frame (offline, not pipeline work); setup + render "
          f"{time.perf_counter() - t0:.1f} s")
    structures = [Structure.from_mesh(m) for m in phantom_models("small")]
    cold, warm = [], []
    for _ in range(3):
        clear_geometry_cache()
        t = time.perf_counter()
        OverlayRenderer(scene.camera, structures)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        OverlayRenderer(scene.camera, structures)
        warm.append(time.perf_counter() - t)
    print(f"overlay renderer start-up at 1280x720 (lens map): cold {np.median(cold):.2f} s, "
          f"cached {np.median(warm):.3f} s; a pipeline builds 2 (overlay + probe): "
          f"{2 * np.median(cold):.2f} s uncached -> {np.median(cold) + np.median(warm):.2f} s")
    tracker = MarkerTracker(scene.camera, "DICT_4X4_50", body=scene.body, filter=False)
    probe = AccuracyProbe(scene.camera, scene.points_ct_mm,
                          frame_of_reference_uid=scene.frame_of_reference_uid)
    tool = MarkerTracker(scene.camera, "DICT_4X4_50", body=scene.tool_body, filter=False)
    pointer = PointerTracking(tool, scene.tip_tool_mm,
                              [Landmark(POINTER_LANDMARK, scene.pointer.landmark_ct_mm)])
    reg = Registration(scene.T_ref_ct)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = OverlayPipeline(scene.camera, structures, reg, tracker,
                               [VideoFileSink(Path(tmp) / "bench.mp4", scene.fps)], probe=probe,
                               pointer=pointer)
        records = pipe.run(_Replay(frames))
    s = summarize(records)
    print(f"frames {s['frames']}: states {s['states']}, detected {s['detected_frames']}")
    for stage in ("track", "tool", "render", "hud", "sink", "probe"):
        st = s["stages_ms"][stage]
        print(f"stage {stage:6s}: median {st['median']:.2f} ms, p95 {st['p95']:.2f} ms"
              + ("  (accuracy instrumentation, not in latency)" if stage == "probe" else ""))
    lat = s["latency_ms"]
    print(f"latency (output - capture, pipeline clock): median {lat['median']:.1f} ms, "
          f"p95 {lat['p95']:.1f} ms; processing rate {s['processing_fps']:.1f} fps "
          f"(30 Hz budget 33.3 ms)")
    print(f"accuracy, pose from the same frame: {_fmt(s['reprojection_error_px'], 'px')}; "
          f"{_fmt(s['reprojection_error_mm'], 'mm')} at the point's depth")
    print(f"accuracy, all frames shown (held poses up to 0.1 s): "
          f"{_fmt(s['reprojection_error_px_all_shown'], 'px')}")
    ps = s.get("pointer") or {}
    print(f"landmark check, tip resting on the fiducial (truth 0 mm): "
          f"{_fmt(ps.get('landmark_distance_touching_mm'), 'mm')}; tip error vs true tip, all "
          f"checked frames: {_fmt(ps.get('tip_error_mm'), 'mm')}")

    # peer: OpenCV standard detect + solvePnP, same frames, same probe
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    det = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50),
                                  params)
    visible = [f for f in frames if not f.truth.marker_occluded]
    grays = [cv2.cvtColor(f.image_bgr, cv2.COLOR_BGR2GRAY) for f in visible]
    peer_err = []
    for f, g in zip(visible, grays, strict=True):
        pose = _peer_pose(g, det, scene)
        if pose is None:
            continue
        cen, _ = probe.measure(pose @ scene.T_ref_ct)
        e = np.linalg.norm(cen - f.truth.points_px, axis=1)
        peer_err.extend(e[np.isfinite(e)].tolist())
    if peer_err:
        print(f"peer accuracy (OpenCV detectMarkers SUBPIX + solvePnP IPPE): median "
              f"{np.median(peer_err):.3f} px, p95 {np.percentile(peer_err, 95):.3f}, max "
              f"{np.max(peer_err):.3f} px")
    sub = list(range(0, len(visible), max(1, len(visible) // 10)))
    state = {"k": 0}
    ours_tracker = MarkerTracker(scene.camera, "DICT_4X4_50", body=scene.body, filter=False)

    def ours() -> None:
        k = sub[state["k"] % len(sub)]
        ours_tracker.reset()  # full-frame search each time, like the peer
        ours_tracker.update(grays[k], 0.0)

    def peer() -> None:
        _peer_pose(grays[sub[state["k"] % len(sub)]], det, scene)
        state["k"] += 1

    times = interleaved({"ours": ours, "peer": peer}, runs=max(5, len(sub)))
    print(ratio_line("tracking, full-frame search at 720p", times["ours"], times["peer"],
                     "OpenCV detect+solvePnP"))


if __name__ == "__main__":
    main()
