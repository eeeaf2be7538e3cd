"""Write the seed corpus (``fuzz/corpus/<target>/seed-*``) from real files.

DICOM seeds are real files: one slice of the small head-CT phantom
(:func:`scrubin.samples.phantom.ensure_sample`) and pydicom's test files fetched by name
(explicit/implicit VR, big endian, deflated, RLE, JPEG 2000, JPEG-LS, multi-frame, a DICOMDIR,
nested private sequences). The other seeds are written by the project's own writers, so each
seed is an input the loaders accept. Run ``python -m fuzz.seeds`` to regenerate (the corpus is
committed; regenerating changes the phantom slice only if the phantom changes).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"

PYDICOM_FILES = {
    "dicom": ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
              "image_dfl.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "JPEG2000.dcm",
              "SC_rgb_small_odd.dcm", "emri_small.dcm", "nested_priv_SQ.dcm", "rtplan.dcm"],
    "dicom_folder": ["CT_small.dcm", "MR_small_implicit.dcm"],
    "dicomdir": ["DICOMDIR"],
}


def _put(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def _dicom() -> None:
    from pydicom.data import get_testdata_file

    from scrubin.samples.phantom import ensure_sample

    for target, names in PYDICOM_FILES.items():
        for name in names:
            _put(target, name, Path(get_testdata_file(name)).read_bytes())  # type: ignore[arg-type]
    folder = ensure_sample("small")
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix == ".dcm")
    slice_ = files[len(files) // 2].read_bytes()
    _put("dicom", "phantom-slice.dcm", slice_)
    _put("dicom_folder", "phantom-slice.dcm", slice_)
    # multi-frame (Legacy Converted Enhanced CT, highdicom) of 3 phantom slices, native and RLE
    import pydicom
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom.uid import RLELossless

    by_z = sorted(files, key=lambda f: float(pydicom.dcmread(
        f, stop_before_pixels=True).ImagePositionPatient[2]))
    mid = len(by_z) // 2
    legacy = [pydicom.dcmread(f) for f in by_z[mid - 1: mid + 2]]  # 3 adjacent slices
    for name, ts in (("phantom-enhanced.dcm", None), ("phantom-enhanced-rle.dcm", RLELossless)):
        kw = {"transfer_syntax_uid": ts} if ts else {}
        image = LegacyConvertedEnhancedCTImage(
            legacy_datasets=legacy, series_instance_uid="1.2.826.0.1.3680043.8.498.77",
            series_number=2, sop_instance_uid="1.2.826.0.1.3680043.8.498.78", instance_number=1,
            **kw)
        out = Path(tempfile.mkdtemp()) / name
        image.save_as(out)
        _put("dicom", name, out.read_bytes())
        shutil.rmtree(out.parent)


def _volumes(tmp: Path) -> None:
    import SimpleITK as sitk  # noqa: N813

    from scrubin.imaging.image_files import save_nifti
    from scrubin.imaging.volume import Volume

    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, size=(4, 5, 6), dtype=np.int16)  # [k, j, i]
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 30.0]
    save_nifti(Volume(array=array, affine=affine), tmp / "v.nii")
    _put("nifti", "v.nii", (tmp / "v.nii").read_bytes())
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.0, 30.0))
    for suffix, target in ((".nrrd", "nrrd"), (".mha", "mha")):
        sitk.WriteImage(image, str(tmp / f"v{suffix}"), False)  # uncompressed
        _put(target, f"v{suffix}", (tmp / f"v{suffix}").read_bytes())
        sitk.WriteImage(image, str(tmp / f"z{suffix}"), True)  # compressed
        _put(target, f"z{suffix}", (tmp / f"z{suffix}").read_bytes())


def _meshes(tmp: Path) -> None:
    from scrubin.imaging.mesh import Mesh
    from scrubin.imaging.mesh_io import save_mesh

    # a closed octahedron, LPS mm, outward counter-clockwise faces
    v = np.array([[10, 0, 0], [-10, 0, 0], [0, 10, 0], [0, -10, 0], [0, 0, 10], [0, 0, -10]],
                 dtype=np.float64)
    f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                  [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]], dtype=np.int64)
    mesh = Mesh(vertices=v, faces=f, name="octa",
                provenance={"series_instance_uid": "1.2.3", "frame_of_reference_uid": "1.2.4"})
    for suffix in (".stl", ".ply", ".obj", ".glb"):
        save_mesh(mesh, tmp / f"m{suffix}")
        _put(suffix[1:], f"m{suffix}", (tmp / f"m{suffix}").read_bytes())


def _registration(tmp: Path) -> None:
    from scipy.spatial.transform import Rotation

    from scrubin.registration.bodies import RigidBody
    from scrubin.registration.camera import CameraModel
    from scrubin.registration.frames import Transform
    from scrubin.registration.pointsets import write_points_csv
    from scrubin.registration.posefile import write_pose_file

    write_points_csv(tmp / "p.csv", np.array([[1.5, -2.0, 3.25], [10.0, 20.0, 30.0],
                                              [-5.0, 7.5, 0.0]]))
    _put("points_csv", "p.csv", (tmp / "p.csv").read_bytes())
    mats = np.repeat(np.eye(4)[None], 3, axis=0)
    for n in range(3):
        mats[n, :3, :3] = Rotation.from_euler("xyz", [10 * n, 5, -3 * n], degrees=True).as_matrix()
        mats[n, :3, 3] = [n, 2.0 * n, -4.5]
    write_pose_file(tmp / "poses.csv", mats, np.array([0.0, 0.033, 0.066]))
    _put("pose_csv", "poses.csv", (tmp / "poses.csv").read_bytes())
    write_pose_file(tmp / "q.csv", mats, quaternion=True)
    _put("pose_csv", "quaternions.csv", (tmp / "q.csv").read_bytes())
    T = Transform(mats[1], "CT", "REF", timestamp=12.5, source={"frame_of_reference_uid": "1.2"})
    T.save(tmp / "T.json")
    _put("transform_json", "T.json", (tmp / "T.json").read_bytes())
    _put("pose_json", "poses.json", json.dumps(
        [Transform(m, "TOOL", "TRACKER", timestamp=0.1 * i).to_json()
         for i, m in enumerate(mats)], indent=1).encode())
    CameraModel(np.array([[900.0, 0, 640], [0, 905.0, 360], [0, 0, 1]]),
                np.array([0.1, -0.05, 0.001, 0.002, 0.01]), 1280, 720, 0.31).save(tmp / "c.json")
    _put("camera_json", "camera.json", (tmp / "c.json").read_bytes())
    RigidBody.grid_2x2((1, 2, 3, 4), 40.0, 10.0, "REF").save(tmp / "b.json")
    _put("body_json", "body.json", (tmp / "b.json").read_bytes())


def _igtl() -> None:
    import pyigtl

    m = np.eye(4)
    m[:3, 3] = [1.0, 2.0, 3.0]
    _put("igtl", "transform.bin", bytes(pyigtl.TransformMessage(
        m, timestamp=1.5, device_name="Probe").pack()))
    _put("igtl", "string.bin", bytes(pyigtl.StringMessage(
        "GET_STATUS", timestamp=1.5, device_name="CMD").pack()))


def _mentor() -> None:
    from scrubin.mentor.events import event_to_pb
    from scrubin.protos import mentor_pb2 as pb

    event = {"event_id": "e-1", "op": "create", "annotation_id": "a-1", "kind": "arrow",
             "color": "#00ff00", "text": "here", "frame_id": 42, "capture_time": 1.25,
             "points": [[0.25, 0.5], [0.3, 0.55]], "anchors_ref_mm": [[1.0, 2.0, 3.0], None],
             "anchor_state": "anchored", "client_time": 3.5}
    _put("mentor_ws", "annotation.json",
         json.dumps({"type": "annotation", "event": event}).encode())
    _put("mentor_ws", "hello.json", b'{"type": "hello", "after_seq": 3}')
    full = dict(event, author="m", role="mentor")
    _put("mentor_pb", "event.bin",
         pb.AnnotationClientMessage(event=event_to_pb(full)).SerializeToString())
    _put("mentor_pb", "hello.bin",
         pb.AnnotationClientMessage(hello=pb.Hello(after_seq=7)).SerializeToString())
    frame = pb.TelemetryFrame(frame_id=9, capture_time=2.0, width=1280, height=720,
                              latency_ms=41.0, tracking=pb.TRACKING_LIVE, fre_mm=0.4, tre_mm=1.1)
    frame.intrinsics.CopyFrom(pb.Intrinsics(fx=900, fy=900, cx=640, cy=360, dist=[0.1] * 5))
    frame.T_camera_ref.m.extend(np.eye(4).ravel().tolist())
    frame.T_ref_ct.m.extend(np.eye(4).ravel().tolist())
    frame.stages_ms["detect"] = 3.5
    _put("telemetry_pb", "frame.bin", frame.SerializeToString())


def main() -> None:
    """Regenerate every seed."""
    for folder in CORPUS.glob("*"):
        for seed in folder.glob("seed-*"):
            seed.unlink()
    tmp = Path(tempfile.mkdtemp(prefix="scrubin-seeds-"))
    try:
        _dicom()
        _volumes(tmp)
        _meshes(tmp)
        _registration(tmp)
        _igtl()
        _mentor()
    finally:
        shutil.rmtree(tmp)
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"{sum(1 for _ in CORPUS.rglob('seed-*'))} seeds, {total / 1024:.0f} KiB in {CORPUS}")


if __name__ == "__main__":
    main()
