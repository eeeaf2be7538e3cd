"""Workflow of ``scrubin overlay``: a frame source through the AR overlay pipeline to an MP4.

``--source synthetic`` needs nothing else: the synthetic scene (:mod:`scrubin.samples.synthetic`)
brings its camera, its models (skin and skull of the small sample phantom, built by the imaging
pipeline and cached), its marker plate body, the exact registration ``T_REF_CT``, the ground
truth for the per-frame reprojection error, and a tracked pointer (its body, exact tip offset
and the fiducial it touches as the planned landmark) for the landmark check. Other sources
(``camera:N``, a video file) need ``--camera``, ``--registration``, at least one ``--model``
and the tracked target (``--marker-size`` [``--dictionary``] or ``--body``).

Pointer (:mod:`~overlay.pointer`): ``--tool-body`` with ``--tool-tip`` (``X,Y,Z`` TOOL mm or a
pivot JSON) and ``--landmark NAME=X,Y,Z`` (CT LPS mm, repeatable). ``--scene OUT.glb`` writes the
models in REF with the last live transforms (:mod:`scrubin.overlay.scene_export`) at the end.

Models (``--model``) must be CT-frame models (LPS mm of the scan): a file that declares
another frame (a scene GLB, already in REF) is refused. A model of unknown provenance (no
declared frame, or no FrameOfReferenceUID: any STL, files from other software) would
silently bypass the Frame-of-Reference guard, so it is refused unless
``--allow-unknown-provenance`` is given, and then a warning on stderr says the guard is off
for it.

Outputs are written to temporary names and renamed into place only when the whole run
succeeded: a failure leaves no partial video or report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scrubin.imaging.fileio import temp_path
from scrubin.overlay.errors import OverlayError


class OverlayArgumentError(OverlayError):
    """A ``scrubin overlay`` option is missing, malformed or inconsistent."""


@dataclass
class OverlayRequest:
    """What ``scrubin overlay`` was asked to do (paths as given)."""

    source: str
    out: Path
    camera: Path | None = None
    models: list[Path] = field(default_factory=list)
    registration: Path | None = None
    stereo: Path | None = None
    igtl_port: int | None = None
    json_path: Path | None = None
    frames: int | None = None
    marker_size: float | None = None
    dictionary: str | None = None
    body: Path | None = None
    filter: bool = True
    supersample: int = 1
    width: int = 1280
    height: int = 720
    tool_body: Path | None = None
    tool_tip: str | None = None
    landmarks: list[str] = field(default_factory=list)
    scene: Path | None = None
    allow_unknown_provenance: bool = False


def validate(req: OverlayRequest) -> None:
    """Every check possible before any work (one-line errors naming the option)."""
    from scrubin.overlay.pointer import load_tip, parse_landmark

    if req.out.suffix.lower() != ".mp4":
        raise OverlayArgumentError(f"--out {req.out}: expected an .mp4 file name")
    if req.scene is not None and req.scene.suffix.lower() != ".glb":
        raise OverlayArgumentError(f"--scene {req.scene}: expected a .glb file name")
    for label, p in (("--out", req.out), ("--json", req.json_path), ("--scene", req.scene)):
        if p is not None and not p.parent.is_dir():
            raise OverlayArgumentError(f"{label} {p}: folder {p.parent} does not exist")
    if req.frames is not None and req.frames < 1:
        raise OverlayArgumentError(f"--frames must be >= 1, got {req.frames}")
    if req.igtl_port is not None and not 0 <= req.igtl_port <= 65535:
        raise OverlayArgumentError(f"--igtl-port must be 0..65535, got {req.igtl_port}")
    if req.marker_size is not None and req.body is not None:
        raise OverlayArgumentError("give either --marker-size or --body, not both")
    if req.marker_size is not None and not req.marker_size > 0:
        raise OverlayArgumentError(f"--marker-size must be > 0 mm, got {req.marker_size}")
    if req.source != "synthetic":
        missing = [n for n, v in (("--camera", req.camera), ("--registration", req.registration))
                   if v is None]
        if not req.models:
            missing.append("--model")
        if req.marker_size is None and req.body is None:
            missing.append("--marker-size or --body")
        if missing:
            raise OverlayArgumentError(f"source {req.source!r} needs {', '.join(missing)} "
                                       "(only --source synthetic brings its own)")
    if req.tool_tip is not None and req.tool_body is None:
        raise OverlayArgumentError("--tool-tip needs --tool-body (the pointer's marker body)")
    if req.tool_body is not None and req.tool_tip is None:
        raise OverlayArgumentError("--tool-body needs --tool-tip X,Y,Z or a pivot JSON")
    if req.landmarks and req.tool_body is None and req.source != "synthetic":
        raise OverlayArgumentError("--landmark needs a tracked pointer (--tool-body and "
                                   "--tool-tip)")
    lms = [parse_landmark(t) for t in req.landmarks]
    if len({lm.name for lm in lms}) != len(lms):
        raise OverlayArgumentError(f"--landmark names must be unique, got "
                                   f"{[lm.name for lm in lms]}")
    if req.tool_tip is not None:
        load_tip(req.tool_tip)
    for label, p in ([("--camera", req.camera), ("--registration", req.registration),
                      ("--stereo", req.stereo), ("--body", req.body),
                      ("--tool-body", req.tool_body)]
                     + [("--model", m) for m in req.models]):
        if p is not None and not p.is_file():
            raise OverlayArgumentError(f"{label} {p}: file not found")


def _structures(meshes: list[Any]) -> list[Any]:
    from scrubin.overlay.renderer import Structure

    out, seen = [], set()
    for m in meshes:
        name = m.name or "model"
        while name in seen:
            name += "_"
        seen.add(name)
        out.append(Structure.from_mesh(m, name=name))
    return out


def load_models(paths: list[Path], allow_unknown_provenance: bool = False) -> list[Any]:
    """Load ``--model`` files as CT-frame meshes (LPS mm), guarding frame and provenance.

    A file declaring another frame than CT is refused (``MeshError`` naming file, found and
    expected frame). A model without a declared frame or without a FrameOfReferenceUID is
    refused with an :class:`OverlayArgumentError`, unless ``allow_unknown_provenance``: then
    one warning line per file goes to stderr saying the Frame-of-Reference guard is off.
    """
    from scrubin.imaging.mesh_io import load_meshes
    from scrubin.registration.frames import CT

    out: list[Any] = []
    for p in paths:
        meshes = load_meshes(p, expected_frame=CT, allow_unknown_frame=True)
        missing = []
        if any(not m.frame for m in meshes):
            missing.append("frame")
        if any(not m.provenance.get("frame_of_reference_uid") for m in meshes):
            missing.append("FrameOfReferenceUID")
        if missing:
            what = " and ".join(missing)
            if not allow_unknown_provenance:
                raise OverlayArgumentError(
                    f"--model {p}: unknown provenance (no {what} in the file; STL cannot hold "
                    "UIDs): the Frame-of-Reference guard cannot check it against the "
                    "registration; use the GLB/PLY/OBJ written by 'scrubin model', or pass "
                    "--allow-unknown-provenance")
            print(f"scrubin: warning: --model {p}: unknown provenance (no {what}): the "
                  "Frame-of-Reference guard is OFF for this model; it is taken to be in the "
                  "registration's CT frame (LPS mm)", file=sys.stderr)
        out.extend(meshes)
    return out


def _check_frame_of_reference(meshes: list[Any], registration: Any) -> None:
    """Refuse models whose FrameOfReferenceUID differs from the registration's."""
    from scrubin.overlay.provenance import check_frame_of_reference

    reg_uid = registration.T_ref_ct.source.get("frame_of_reference_uid", "")
    for m in meshes:
        check_frame_of_reference(reg_uid, (m.provenance or {}).get("frame_of_reference_uid", ""),
                                 f"model {m.name!r}'s")


def run_overlay(req: OverlayRequest, scene: Any = None,
                extra_sinks: Any = None) -> dict[str, Any]:
    """Run the pipeline (module docstring); return the report (also written to ``--json``).

    ``extra_sinks(camera, structures, registration) -> [Sink, ...]`` adds sinks placed before
    the video file and the window (``scrubin surgeon``: the mentoring station draws
    annotations into the view); every sink is given to the pipeline when it is built.
    """
    from scrubin.overlay.pipeline import (
        AccuracyProbe,
        OverlayPipeline,
        Registration,
        RunReport,
        load_registration,
    )
    from scrubin.overlay.sinks import VideoFileSink, WindowSink
    from scrubin.overlay.sources import open_source
    from scrubin.registration.bodies import RigidBody
    from scrubin.registration.camera import CameraModel
    from scrubin.registration.tracker import MarkerTracker
    from scrubin.samples.synthetic import SyntheticScene, phantom_models
    from scrubin.samples.synthetic_source import SyntheticSource

    validate(req)
    t_start = time.perf_counter()
    synthetic = req.source == "synthetic"
    probe = None
    if synthetic:
        meshes = (load_models(req.models, req.allow_unknown_provenance) if req.models
                  else phantom_models("small"))
        if req.registration:
            registration = load_registration(req.registration)
            _check_frame_of_reference(meshes, registration)  # before the scene is built
        if scene is None:
            from scrubin.samples.synthetic import default_camera

            n = req.frames or 150
            gap = (int(0.4 * n), int(0.4 * n) + max(3, n // 8)) if n >= 10 else None
            touch = (int(0.1 * n), int(0.35 * n)) if n >= 10 else (0, n)
            scene = SyntheticScene.from_phantom(
                "small", default_camera(req.width, req.height), n_frames=n, occlusion=gap,
                supersample=req.supersample, pointer_touch=touch)
        camera = scene.camera
        if not req.registration:
            registration = Registration(scene.T_ref_ct)
        body = scene.body
        probe = AccuracyProbe(camera, scene.points_ct_mm,
                              frame_of_reference_uid=scene.frame_of_reference_uid)
        source = SyntheticSource(scene, req.frames)
    else:
        camera = CameraModel.load(req.camera)
        meshes = load_models(req.models, req.allow_unknown_provenance)
        registration = load_registration(req.registration)
        _check_frame_of_reference(meshes, registration)  # before any output is opened
        body = RigidBody.load(req.body) if req.body is not None else None
    structures = _structures(meshes)
    if body is not None:
        tracker = MarkerTracker(camera, req.dictionary or body.dictionary or "DICT_4X4_50",
                                body=body, filter=req.filter)
    else:
        tracker = MarkerTracker(camera, req.dictionary or "DICT_4X4_50",
                                marker_size_mm=req.marker_size, filter=req.filter)
    stereo = None
    if req.stereo is not None:
        from scrubin.overlay.stereo import DisplayCalibration, StereoRenderer

        display = DisplayCalibration.load(req.stereo)
        if display.T_display_camera is None:
            raise OverlayArgumentError(f"--stereo {req.stereo}: needs T_DISPLAY_CAMERA to draw "
                                       "the eyes from the tracked camera pose")
        stereo = StereoRenderer(display, structures)
    pointer = _pointer(req, camera, scene if synthetic else None)
    if not synthetic:
        source = open_source(req.source, max_frames=req.frames, camera=camera)
    fps = source.nominal_fps or 30.0
    tmp_out = temp_path(req.out, req.out.suffix)
    igtl = None
    stereo_out = req.out.with_name(req.out.stem + "_stereo.mp4")
    tmp_stereo = tmp_scene = None
    try:
        sinks = [*(extra_sinks(camera, structures, registration) if extra_sinks else []),
                 VideoFileSink(tmp_out, fps), WindowSink()]
        sinks[-1].key_handlers += [s.on_key for s in sinks if getattr(s, "on_key", None)]
        feeders = [s for s in sinks if hasattr(s, "attach_display")]
        if sinks[-1].active and feeders:  # the mentoring station's sink feeds the window itself
            feeders[0].attach_display(sinks[-1])   # (annotations shown between frames too)
        stereo_sinks = []
        if stereo is not None:  # sinks that draw into the headset eyes (mentor annotations)
            stereo.annotators += [s.annotate_eye for s in sinks if hasattr(s, "annotate_eye")]
            tmp_stereo = temp_path(stereo_out, stereo_out.suffix)
            stereo_sinks = [VideoFileSink(tmp_stereo, fps)]
        if req.igtl_port is not None:
            from scrubin.overlay.igtl import IgtlServer

            igtl = IgtlServer(req.igtl_port, models=[(s.name, s.vertices_ct_mm, s.faces)
                                                     for s in structures])
        pipeline = OverlayPipeline(camera, structures, registration, tracker, sinks=sinks,
                                   probe=probe, igtl=igtl, stereo=stereo,
                                   stereo_sinks=stereo_sinks, pointer=pointer)
        records = pipeline.run(source)
        meta = {
            "source": req.source,
            "camera": camera.to_json(),
            "models": [s.name for s in structures],
            "frame_of_reference_uid": pipeline.renderer.frame_of_reference_uid,
            "registration": registration.T_ref_ct.to_json(),
            "registration_fre_mm": registration.fre_mm,
            "registration_predicted_tre_mm": registration.tre_mm,
            "out": str(req.out),
            "stereo_out": str(stereo_out) if stereo is not None else None,
            "igtl_port": igtl.port if igtl is not None else None,
            "tracker_filter": req.filter,
            # the one state machine's limits (the same defaults as scrubin track)
            "tracking_limits": tracker.limits.to_json(),
            "latency_definition": "output time - capture time on the pipeline clock "
                                  "(perf_counter after the sinks - frame t0; probe excluded)",
            "wall_time_s": round(time.perf_counter() - t_start, 3),
        }
        if pointer is not None:
            meta["pointer"] = {
                "tool_body": pointer.tracker.body.to_json(),
                "tip_tool_mm": pointer.tip_tool_mm.tolist(),
                "landmarks": {lm.name: lm.position_ct_mm.tolist() for lm in pointer.landmarks},
                "tolerance_mm": pointer.tolerance_mm,
                "igtl_transforms": ["StylusToReference", "StylusTipToReference"],
            }
        if req.scene is not None:
            from scrubin.overlay.scene_export import export_scene

            tmp_scene = temp_path(req.scene, req.scene.suffix)
            live = pipeline.last_live
            export_scene(tmp_scene, meshes, registration.T_ref_ct, live.get("T_camera_ref"),
                         {"Stylus": live["T_ref_tool"]} if "T_ref_tool" in live else None)
            meta["scene"] = {"path": str(req.scene), "T_CAMERA_REF": "T_camera_ref" in live,
                             "T_REF_TOOL": "T_ref_tool" in live}
        if synthetic:
            meta["truth_points"] = scene.point_names
            meta["occlusion_frames"] = list(scene.occlusion) if scene.occlusion else None
            meta["synthetic_supersample"] = [scene.supersample, scene.plate_supersample]
        report = RunReport(meta, records).to_json()
        tmp_json = None
        if req.json_path is not None:
            tmp_json = temp_path(req.json_path, req.json_path.suffix)
            tmp_json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp_json, req.json_path)
        os.replace(tmp_out, req.out)
        if tmp_scene is not None:
            os.replace(tmp_scene, req.scene)
        if tmp_stereo is not None:
            os.replace(tmp_stereo, stereo_out)
        return report
    finally:
        if igtl is not None:
            igtl.close()
        tmp_out.unlink(missing_ok=True)
        for tmp in (tmp_stereo, tmp_scene):
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def _pointer(req: OverlayRequest, camera: Any, scene: Any) -> Any:
    """The pointer tracking of the run: from the options, else the synthetic scene's pointer."""
    from scrubin.overlay.pointer import Landmark, PointerTracking, load_tip, parse_landmark
    from scrubin.registration.bodies import RigidBody
    from scrubin.registration.tracker import MarkerTracker
    from scrubin.samples.synthetic import POINTER_LANDMARK

    landmarks = [parse_landmark(t) for t in req.landmarks]
    if req.tool_body is not None:
        body, tip = RigidBody.load(req.tool_body), load_tip(req.tool_tip)
    elif scene is not None and scene.pointer is not None:
        body, tip = scene.tool_body, scene.tip_tool_mm
        if POINTER_LANDMARK not in [lm.name for lm in landmarks]:
            landmarks.insert(0, Landmark(POINTER_LANDMARK, scene.pointer.landmark_ct_mm.copy()))
    else:
        return None
    tracker = MarkerTracker(camera, req.dictionary or body.dictionary or "DICT_4X4_50",
                            body=body, filter=req.filter)
    return PointerTracking(tracker, tip, landmarks)


def summary_line(report: dict[str, Any]) -> str:
    """One line for the terminal: frames, states, accuracy, stage medians, latency."""
    s = report["summary"]
    parts = [f"{s['frames']} frames ({', '.join(f'{k} {v}' for k, v in s['states'].items())})"]
    px, mm = s.get("reprojection_error_px"), s.get("reprojection_error_mm")
    if px:
        parts.append(f"reprojection median {px['median']:.2f} px / max {px['max']:.2f} px "
                     f"({mm['median']:.2f} / {mm['max']:.2f} mm at depth)")
    stages = ", ".join(f"{k} {v['median']:.1f}" for k, v in s["stages_ms"].items() if v
                       and v["median"] > 0)
    parts.append(f"median ms: {stages}")
    if s.get("latency_ms"):
        parts.append(f"latency median {s['latency_ms']['median']:.1f} ms")
    lm = (s.get("pointer") or {}).get("landmark_distance_mm")
    if lm:
        parts.append(f"landmark distance median {lm['median']:.2f} mm over {lm['n']} frames")
    return "; ".join(parts)


def run_demo(out_dir: Path) -> dict[str, Any]:
    """``make demo`` hook: synthetic scene at 720p, 150 frames with a marker-loss gap and the
    tracked pointer resting on a fiducial (landmark check) for a stretch of frames.

    Writes ``out_dir/overlay.mp4`` and ``out_dir/overlay_report.json``; returns the accuracy
    (median / max px and mm over frames with a fresh pose) and frame-time figures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    req = OverlayRequest("synthetic", out_dir / "overlay.mp4",
                         json_path=out_dir / "overlay_report.json", frames=150)
    t0 = time.perf_counter()
    rep = run_overlay(req)
    s = rep["summary"]
    px, mm = s.get("reprojection_error_px") or {}, s.get("reprojection_error_mm") or {}
    pointer = s.get("pointer") or {}
    touch = pointer.get("landmark_distance_touching_mm") or {}
    tip = pointer.get("tip_error_mm") or {}
    return {
        "video": str(req.out),
        "report": str(req.json_path),
        "frames": s["frames"],
        "states": s["states"],
        "reprojection_px_median": px.get("median"),
        "reprojection_px_max": px.get("max"),
        "reprojection_mm_median": mm.get("median"),
        "reprojection_mm_max": mm.get("max"),
        "stage_ms_median": {k: v["median"] for k, v in s["stages_ms"].items() if v},
        "latency_ms_median": (s.get("latency_ms") or {}).get("median"),
        "processing_fps": s.get("processing_fps"),
        "wall_s": round(time.perf_counter() - t0, 1),
        # pointer tip resting on the fiducial: distance shown on the HUD (truth: 0 mm)
        "landmark_distance_touching_mm_median": touch.get("median"),
        "landmark_distance_touching_mm_max": touch.get("max"),
        "tip_error_mm_median": tip.get("median"),
    }
