"""The AR overlay frame loop: source -> marker tracking -> pose -> overlay render -> HUD -> sinks.

Per frame (:meth:`OverlayPipeline.process`)::

    T_CAMERA_REF  = tracker.update(image, capture_time)   (tracking, mm; HELD: predicted)
    T_CAMERA_CT   = T_CAMERA_REF @ T_REF_CT                 (T_REF_CT: the registration)
    status        = gate.status(tracker verdict)            (overlay.safety: LIVE/HELD/STALE/LOST)
    overlay drawn only as the gate allows, then the HUD (state, reg. FRE / pred. TRE, fps, latency)

One state machine: the tracker's (:mod:`scrubin.registration.tracking_state`); the gate only
says what the overlay does with its verdict, so the report holds one ``state`` per frame. A
frame without a measurement within ``stale_after_s`` of the last one is HELD: drawn with the
pose the tracker predicted to the frame's capture time, and the HUD says so with the age.

Clocks: ``T_CAMERA_REF`` is stamped with the frame's capture time on the ``"capture"`` clock;
the registration is static (its own timestamp, if any, is on another clock and is not carried
into the chain). OpenIGTLink messages carry Unix time (as the protocol expects): the capture
clock is mapped to Unix time by one offset fixed at the first frame (``time.time()`` at the
first frame's ``t0``, minus its capture time), so intervals between messages are exactly the
capture intervals; a source whose clock starts again gets a new offset (never going back).

Sinks get, in ``SinkItem.extra`` (a :class:`~scrubin.overlay.sinks.StreamSink` passes them on
in its ``StreamItem``): ``session_frame_id`` (1, 2, ... over every source this pipeline
ran), ``capture_time_unix``, ``intrinsics`` (px), ``T_camera_ref`` (while drawn as current)
and ``T_ref_ct`` -- what a mentoring station publishes per frame (``mentor/DESIGN.md``).

A registration whose FrameOfReferenceUID differs from the models' is refused. Every frame keeps
its id and capture time to the sinks; stage times (ms) are measured with ``perf_counter``:
``capture`` (grab/decode; synthetic: scene render), ``track``, ``render`` (overlay render +
composite), ``probe`` (accuracy instrumentation, excluded from the latency), ``hud``, ``sink``.
Latency = output time - capture time on the pipeline's clock = ``perf_counter()`` after the
sinks - ``Frame.t0`` (see :mod:`scrubin.overlay.sources`), minus the probe time.

Pointer (optional, :mod:`scrubin.overlay.pointer`): a second tracker follows the tool's marker body;
while REF and TOOL are both LIVE and measured in the frame, the tip in CT
(``inverse(T_CAMERA_CT) @ T_CAMERA_TOOL @ tip``) is checked against the planned landmarks,
shown on the HUD (else "pointer not tracked"), reported per frame (stage ``tool``) and
streamed over OpenIGTLink (``StylusToReference``, ``StylusTipToReference``). With the
synthetic source the report also holds the tip's error against the true tip and whether the
pointer truly touches the landmark.

Accuracy (synthetic source): tiny spheres at the ground-truth points (fiducials, target) are
rendered as a separate overlay structure, one unique colour each, by the overlay renderer with
the *tracked* pose and the registration, lens distortion on; their drawn centroids in the output
pixels are compared with ``cv2.projectPoints`` of the truth with the true pose
(:class:`AccuracyProbe`): error in px, and in mm at the point's depth (``px * z / f``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scrubin.imaging.fileio import read_json
from scrubin.overlay import composite
from scrubin.overlay.errors import OverlayError
from scrubin.overlay.hud import FrameRate, HudInfo, draw_hud, draw_landmark
from scrubin.overlay.pointer import PointerTracking, summarize_pointer
from scrubin.overlay.probe import AccuracyProbe
from scrubin.overlay.provenance import check_frame_of_reference
from scrubin.overlay.renderer import OverlayRenderer, Structure
from scrubin.overlay.safety import SafetyConfig, TrackingGate, TrackingState
from scrubin.overlay.sinks import Sink, SinkItem
from scrubin.overlay.sources import Frame, FrameSource
from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import CAMERA, CT, REF, Transform
from scrubin.registration.tracker import MarkerTracker

STAGES = ("capture", "track", "tool", "render", "probe", "hud", "stereo", "sink")


# ---------------------------------------------------------------------- registration
@dataclass(frozen=True)
class Registration:
    """``T_REF_CT`` and the registration's own error figures (None when not known)."""

    T_ref_ct: Transform
    fre_mm: float | None = None
    tre_mm: float | None = None
    target_name: str = "target"


def load_registration(path: str | Path) -> Registration:
    """Read a registration JSON: a bare transform or a ``scrubin register`` report.

    The transform must map ``CT`` to ``REF``. ``fre_mm`` and the largest
    ``targets[].predicted_tre_mm`` are taken when present.
    """
    p = Path(path)
    data = read_json(p, OverlayError, "registration file not found",
                     "not a readable registration JSON")
    try:
        tr = Transform.from_json(data["transform"] if isinstance(data, dict) and "transform"
                                 in data else data)
    except (RegistrationError, TypeError) as exc:
        raise OverlayError(f"{p}: {exc}") from None
    if tr.src != CT or tr.dst != REF:
        raise OverlayError(f"{p}: registration must map {CT} to {REF}, got T_{tr.dst}_{tr.src}")
    fre = tre = None
    if isinstance(data, dict):
        if isinstance(data.get("fre_mm"), int | float):
            fre = float(data["fre_mm"])
        tres = [t.get("predicted_tre_mm") for t in data.get("targets") or []
                if isinstance(t, dict) and isinstance(t.get("predicted_tre_mm"), int | float)]
        if tres:
            tre = float(max(tres))
    return Registration(tr, fre, tre)


# ---------------------------------------------------------------------- records
@dataclass
class FrameRecord:
    """What the pipeline did with one frame (JSON via :meth:`to_json`)."""

    frame_id: int
    capture_time_s: float
    state: str
    pose_age_s: float | None
    detected: bool
    stages_ms: dict[str, float]
    latency_ms: float
    n_markers: int = 0
    tracker_reproj_rms_px: float | None = None
    marker_occluded: bool | None = None
    reproj_px: list[float | None] | None = None
    reproj_mm: list[float | None] | None = None
    T_camera_ct: dict[str, Any] | None = None
    pointer: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (times in s, stage times and latency in ms)."""
        d = {
            "frame_id": self.frame_id,
            "capture_time_s": round(self.capture_time_s, 6),
            "output_time_s": round(self.capture_time_s + self.latency_ms / 1e3, 6),
            "state": self.state,
            "pose_age_s": None if self.pose_age_s is None else round(self.pose_age_s, 6),
            "detected": self.detected,
            "n_markers": self.n_markers,
            "tracker_reproj_rms_px": self.tracker_reproj_rms_px,
            "stages_ms": {k: round(v, 3) for k, v in self.stages_ms.items()},
            "latency_ms": round(self.latency_ms, 3),
        }
        if self.marker_occluded is not None:
            d["marker_occluded"] = self.marker_occluded
        if self.reproj_px is not None:
            d["reprojection_error_px"] = self.reproj_px
            d["reprojection_error_mm"] = self.reproj_mm
        if self.pointer is not None:
            d["pointer"] = self.pointer
        return d


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return None
    return {"median": round(float(np.median(v)), 4), "p95": round(float(np.percentile(v, 95)), 4),
            "max": round(float(v.max()), 4), "mean": round(float(v.mean()), 4), "n": int(v.size)}


def summarize(records: Sequence[FrameRecord]) -> dict[str, Any]:
    """Per-stage and latency statistics (ms), state counts and reprojection error figures."""
    out: dict[str, Any] = {"frames": len(records)}
    out["stages_ms"] = {s: _stats([r.stages_ms.get(s, 0.0) for r in records]) for s in STAGES}
    out["latency_ms"] = _stats([r.latency_ms for r in records])
    out["states"] = {s.value: sum(r.state == s.value for r in records) for s in TrackingState}
    out["detected_frames"] = sum(r.detected for r in records)
    # accuracy of the overlay drawn with a pose measured in that very frame, over the HELD
    # frames (pose predicted to the frame's time) and over every frame the overlay was shown
    for key, keep in (("", lambda r: r.detected),
                      ("_held", lambda r: r.state == TrackingState.HELD.value),
                      ("_all_shown", lambda r: True)):
        px = [e for r in records if r.reproj_px and keep(r) for e in r.reproj_px
              if e is not None]
        mm = [e for r in records if r.reproj_mm and keep(r) for e in r.reproj_mm
              if e is not None]
        out[f"reprojection_error_px{key}"] = _stats(px)
        out[f"reprojection_error_mm{key}"] = _stats(mm)
    work = [sum(v for k, v in r.stages_ms.items() if k not in ("capture", "probe"))
            for r in records]
    out["processing_fps"] = round(1e3 / float(np.median(work)), 2) if work else None
    pointer = summarize_pointer([r.pointer for r in records], _stats)
    if pointer is not None:
        out["pointer"] = pointer
    return out


# ---------------------------------------------------------------------- pipeline
class OverlayPipeline:
    """The frame loop (module docstring).

    Parameters
    ----------
    camera
        Camera model of the frames.
    structures
        Meshes to overlay (CT mm).
    registration
        ``T_REF_CT`` with FRE / predicted TRE (shown on the HUD as registration-only numbers).
    tracker
        Tracker of the reference body; its pose ``T_CAMERA_<body>`` is taken as ``T_CAMERA_REF``.
    sinks
        Output sinks.
    safety
        What the gate draws while STALE (``stale_policy``); its limits must be the tracker's
        (default: the tracker's limits, i.e. the shared defaults 0.02 / 0.1 / 0.5 s).
    probe
        Accuracy probe (synthetic source), or None.
    draw_probe
        Blend the probe spheres onto the output too (they are then visible in the video).
    igtl
        An :class:`scrubin.overlay.igtl.IgtlServer` to stream the poses to, or None.
    stereo, stereo_sinks
        An :class:`scrubin.overlay.stereo.StereoRenderer` (its display calibration must hold
        ``T_DISPLAY_CAMERA``) and the sinks receiving both eyes side by side (black =
        see-through) per frame, or None.
    pointer
        A :class:`scrubin.overlay.pointer.PointerTracking` (tool tracker, tip, landmarks), or None.
    """

    def __init__(
        self,
        camera: CameraModel,
        structures: Sequence[Structure],
        registration: Registration,
        tracker: MarkerTracker,
        sinks: Iterable[Sink] = (),
        safety: SafetyConfig | None = None,
        probe: AccuracyProbe | None = None,
        draw_probe: bool = True,
        igtl: Any = None,
        stereo: Any = None,
        stereo_sinks: Iterable[Sink] = (),
        pointer: PointerTracking | None = None,
    ) -> None:
        if not isinstance(registration, Registration):
            raise OverlayError(f"registration must be a Registration, got "
                               f"{type(registration).__name__}")
        t = registration.T_ref_ct
        if t.src != CT or t.dst != REF:
            raise OverlayError(f"registration must map {CT} to {REF}, got T_{t.dst}_{t.src}")
        self.renderer = OverlayRenderer(camera, structures)
        check_frame_of_reference(t.source.get("frame_of_reference_uid", ""),
                                 self.renderer.frame_of_reference_uid)
        if tracker.camera.size != camera.size:
            raise OverlayError(f"tracker camera is {tracker.camera.size}, overlay camera "
                               f"{camera.size}")
        self.camera = camera
        self.registration = registration
        self.tracker = tracker
        self.sinks = list(sinks)
        if safety is not None and safety.limits != tracker.limits:
            raise OverlayError(f"safety limits {safety.limits} differ from the tracker's "
                               f"{tracker.limits}: one state machine decides the frame's state")
        self.gate = TrackingGate(safety or SafetyConfig(tracker.limits))
        # static: a timestamp of the registration is not a time on the capture clock
        self._T_ref_ct = Transform(t.matrix, CT, REF, source=dict(t.source))
        self._unix_offset: float | None = None
        self._last_unix: float | None = None
        #: frames processed by this pipeline over all its sources (the session frame id)
        self.frames_processed = 0
        k = camera.matrix
        self._intrinsics = {"width": camera.width, "height": camera.height,
                            "K": [float(k[0, 0]), float(k[1, 1]), float(k[0, 2]),
                                  float(k[1, 2])],
                            "dist": [float(d) for d in np.ravel(camera.dist)]}
        self.probe = probe
        self.draw_probe = bool(draw_probe)
        self.igtl = igtl
        self.stereo = stereo
        self.stereo_sinks = list(stereo_sinks)
        if pointer is not None:
            if not isinstance(pointer, PointerTracking):
                raise OverlayError(f"pointer must be a PointerTracking, got "
                                   f"{type(pointer).__name__}")
            if pointer.tracker.camera.size != camera.size:
                raise OverlayError(f"pointer tracker camera is {pointer.tracker.camera.size}, "
                                   f"overlay camera {camera.size}")
        self.pointer = pointer
        #: the newest transforms measured while LIVE: T_CAMERA_REF, T_REF_TOOL (scene export)
        self.last_live: dict[str, Transform] = {}
        self.rate = FrameRate(30)
        self.records: list[FrameRecord] = []
        self._last_latency: float | None = None
        self._f = 0.5 * (camera.matrix[0, 0] + camera.matrix[1, 1])

    def process(self, frame: Frame) -> FrameRecord:
        """Run one frame through tracking, overlay, HUD and sinks (module docstring)."""
        if frame.image_bgr.shape[:2] != (self.camera.height, self.camera.width):
            raise OverlayError(
                f"frame {frame.frame_id} is {frame.image_bgr.shape[1]}x"
                f"{frame.image_bgr.shape[0]} but the camera model is {self.camera.width}x"
                f"{self.camera.height}")
        st: dict[str, float] = {"capture": frame.capture_ms}
        t = time.perf_counter()
        tr = self.tracker.update(frame.image_bgr, frame.capture_time_s)
        assert tr.verdict is not None
        status = self.gate.status(tr.verdict, tr.detected, tr.predicted)
        t_cam_ct = t_cam_ref = None
        if tr.pose is not None:
            t_cam_ref = Transform(tr.pose.matrix, REF, CAMERA, timestamp=tr.timestamp_s,
                                  clock="capture")
            t_cam_ct = t_cam_ref @ self._T_ref_ct
        t2 = time.perf_counter()
        st["track"] = (t2 - t) * 1e3
        pr = None
        if status.show_overlay and t_cam_ref is not None:
            self.last_live["T_camera_ref"] = t_cam_ref
        if self.pointer is not None:
            pr = self.pointer.update(frame.image_bgr, frame.capture_time_s, t_cam_ref,
                                     status.show_overlay and tr.detected,
                                     self.registration.T_ref_ct)
            if pr.live:
                self.last_live["T_ref_tool"] = pr.T_ref_tool
            t2b = time.perf_counter()
            st["tool"] = (t2b - t2) * 1e3
            t2 = t2b
        img = frame.image_bgr.copy()
        if (status.show_overlay or status.warn_overlay) and t_cam_ct is not None:
            self.renderer.draw(img, t_cam_ct, warning=not status.show_overlay)
            if pr is not None and pr.live and pr.check is not None:
                draw_landmark(img, self.camera, t_cam_ct, pr.check)
        t3 = time.perf_counter()
        st["render"] = (t3 - t2) * 1e3
        reproj_px = reproj_mm = None
        if self.probe is not None and frame.truth is not None:
            reproj_px, reproj_mm = [None] * len(frame.truth.points_px), None
            reproj_mm = [None] * len(frame.truth.points_px)
            if status.show_overlay and t_cam_ct is not None:
                cen, ov = self.probe.measure(t_cam_ct)
                err = np.linalg.norm(cen - frame.truth.points_px, axis=1)
                for k, e in enumerate(err):
                    if np.isfinite(e):
                        reproj_px[k] = round(float(e), 4)
                        reproj_mm[k] = round(float(e * frame.truth.points_depth_mm[k] / self._f),
                                             4)
                if self.draw_probe and not ov.empty:
                    composite.blend_premultiplied(img, ov.bgra, ov.x0, ov.y0)
        t4 = time.perf_counter()
        st["probe"] = (t4 - t3) * 1e3
        fps = self.rate.update(frame.capture_time_s)
        draw_hud(img, status, HudInfo(self.registration.fre_mm, self.registration.tre_mm,
                                      self.registration.target_name, fps, self._last_latency,
                                      pr.check if pr is not None else None))
        t5 = time.perf_counter()
        st["hud"] = (t5 - t4) * 1e3
        if self.stereo is not None:
            self._stereo(frame, status.show_overlay, t_cam_ct)
            t6 = time.perf_counter()
            st["stereo"] = (t6 - t5) * 1e3
            t5 = t6
        pose_json = t_cam_ct.to_json() if (status.show_overlay and t_cam_ct is not None) else None
        unix = self._unix_time(frame)
        self.frames_processed += 1
        shown_ref = t_cam_ref if status.show_overlay else None
        extra = {"session_frame_id": self.frames_processed, "capture_time_unix": unix,
                 "intrinsics": self._intrinsics,
                 "T_camera_ref": shown_ref.to_json() if shown_ref is not None else None,
                 "T_ref_ct": self.registration.T_ref_ct.to_json()}
        item = SinkItem(frame.frame_id, frame.capture_time_s, img, status.state.value, pose_json,
                        extra)
        for s in self.sinks:
            s.write(item)
        if self.igtl is not None:
            # the server itself drops tracking-dependent transforms unless LIVE / HELD
            self.igtl.send_poses(shown_ref, self.registration.T_ref_ct, status.state.value,
                                 unix,
                                 tools=pr.igtl_tools() if pr is not None else None)
        t6 = time.perf_counter()
        st["sink"] = (t6 - t5) * 1e3
        latency = (t6 - frame.t0) * 1e3 - st["probe"]
        self._last_latency = latency
        rec = FrameRecord(frame.frame_id, frame.capture_time_s, status.state.value,
                          status.age_s, tr.detected, st, latency, tr.n_markers, tr.reproj_rms_px,
                          frame.truth.marker_occluded if frame.truth is not None else None,
                          reproj_px, reproj_mm, pose_json,
                          self._pointer_json(pr, frame) if pr is not None else None)
        self.records.append(rec)
        return rec

    def _unix_time(self, frame: Frame) -> float:
        """The frame's capture time on the Unix clock (module docstring, "Clocks").

        The offset is fixed at the first frame; a source whose capture clock starts again
        (a new source, a replay) gets a new offset, so Unix times never go back.
        """
        now = time.time() - (time.perf_counter() - frame.t0)
        if self._unix_offset is None:
            self._unix_offset = now - frame.capture_time_s
        elif self._last_unix is not None and \
                frame.capture_time_s + self._unix_offset <= self._last_unix:
            # a simulated clock may run ahead of the wall clock: never before the last frame
            self._unix_offset = max(now, self._last_unix + 1e-3) - frame.capture_time_s
        self._last_unix = frame.capture_time_s + self._unix_offset
        return self._last_unix

    @staticmethod
    def _pointer_json(pr: Any, frame: Frame) -> dict[str, Any]:
        """Per-frame pointer fields; with the synthetic truth also the tip error (mm)."""
        d = pr.to_json()
        truth = frame.truth.extra if frame.truth is not None else {}
        if "tip_ct_mm" in truth:
            d["tip_truth_ct_mm"] = np.round(truth["tip_ct_mm"], 4).tolist()
            d["touching_truth"] = bool(truth["pointer_touching"])
            d["tip_error_mm"] = (round(float(np.linalg.norm(pr.tip_ct_mm - truth["tip_ct_mm"])),
                                       4) if pr.tip_ct_mm is not None else None)
            if pr.check is not None:
                d["landmark_distance_truth_mm"] = round(float(np.linalg.norm(
                    truth["tip_ct_mm"] - pr.check.landmark_ct_mm)), 4)
        return d

    def _stereo(self, frame: Frame, show: bool, t_cam_ct: Transform | None) -> None:
        """Both eyes side by side (premultiplied RGBA on black -> BGR) to the stereo sinks."""
        d = self.stereo.display
        h, w = d.left.height, d.left.width + d.right.width
        if show and t_cam_ct is not None:
            rgba = self.stereo.render_from_camera(t_cam_ct).side_by_side()
            img = np.ascontiguousarray(rgba[:, :, 2::-1])
        else:
            img = np.zeros((h, w, 3), np.uint8)
        item = SinkItem(frame.frame_id, frame.capture_time_s, img, "")
        for s in self.stereo_sinks:
            s.write(item)

    def run(self, source: FrameSource) -> list[FrameRecord]:
        """Process every frame of ``source``; sinks are closed (or aborted on failure)."""
        ok = False
        try:
            for frame in source:
                self.process(frame)
            ok = True
        finally:
            source.close()
            for s in self.sinks + self.stereo_sinks:
                if ok:
                    s.close()
                else:
                    s.abort()
        return self.records


@dataclass
class RunReport:
    """Everything the JSON report holds."""

    meta: dict[str, Any]
    records: list[FrameRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``{"meta", "summary", "frames"}``."""
        return {"meta": self.meta, "summary": summarize(self.records),
                "frames": [r.to_json() for r in self.records]}
