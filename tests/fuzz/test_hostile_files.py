"""Known traps in mesh, pose, transform, image-header and message input: NaN/inf values, a GLB
whose buffer views point outside its buffer, sizes declared past the data, data files outside
the folder, JSON nested thousands deep. Each is refused with the stage's error class naming
the file (or field), never accepted with non-finite numbers and never another exception.

Inputs are the committed seeds (written by the project's writers, fuzz/seeds.py) edited at
the byte/field the trap is about.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from scrubin.imaging.errors import MeshError
from scrubin.imaging.image_files import ImageFileError, read_image_file
from scrubin.imaging.mesh_io import load_meshes
from scrubin.mentor.errors import MentorError
from scrubin.mentor.telemetry import check_frame
from scrubin.protos import mentor_pb2 as pb
from scrubin.registration.bodies import BodyError, RigidBody
from scrubin.registration.camera import CameraModel
from scrubin.registration.errors import RegistrationError
from scrubin.registration.frames import Transform
from scrubin.registration.posefile import PoseFileError, read_pose_file

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"


def seed(target: str, name: str) -> bytes:
    return (CORPUS / target / f"seed-{name}").read_bytes()


# ------------------------------------------------------------------ meshes
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "1e400"])
def test_obj_vertex_nan_inf_is_refused(tmp_path, bad):
    text = seed("obj", "m.obj").decode()
    first_v = next(ln for ln in text.splitlines() if ln.startswith("v "))
    (tmp_path / "m.obj").write_text(text.replace(first_v, f"v {bad} 0 0", 1))
    with pytest.raises(MeshError, match="NaN or infinite"):
        load_meshes(tmp_path / "m.obj")


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_stl_and_ply_vertex_nan_inf_is_refused(tmp_path, value):
    stl = bytearray(seed("stl", "m.stl"))
    struct.pack_into("<f", stl, 80 + 4 + 12 + 4, value)  # facet 0, vertex 0, y
    (tmp_path / "m.stl").write_bytes(stl)
    with pytest.raises(MeshError, match="NaN or infinite"):
        load_meshes(tmp_path / "m.stl")
    ply = bytearray(seed("ply", "m.ply"))
    body = ply.index(b"end_header\n") + len(b"end_header\n")
    # vertex records: x, y, z double, nx, ny, nz float, r, g, b, a uchar = 40 bytes; vertex 1, y
    struct.pack_into("<d", ply, body + 40 + 8, value)
    (tmp_path / "m.ply").write_bytes(ply)
    with pytest.raises(MeshError, match="NaN or infinite"):
        load_meshes(tmp_path / "m.ply")


def _glb_with(tmp_path: Path, edit) -> Path:
    glb = seed("glb", "m.glb")
    jlen = struct.unpack_from("<I", glb, 12)[0]
    doc = json.loads(glb[20:20 + jlen])
    edit(doc)
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    rest = glb[20 + jlen:]
    out = (struct.pack("<III", 0x46546C67, 2, 20 + len(text) + len(rest))
           + struct.pack("<II", len(text), 0x4E4F534A) + text + rest)
    (tmp_path / "m.glb").write_bytes(out)
    return tmp_path / "m.glb"


def test_glb_seed_reads_back(tmp_path):
    # the unedited rewrite loads: the traps below are the edit, not the rewriting
    [mesh] = load_meshes(_glb_with(tmp_path, lambda d: None))
    np.testing.assert_allclose(np.abs(mesh.vertices).max(), 10.0, atol=1e-5)  # octahedron, mm


@pytest.mark.parametrize("edit", [
    lambda d: d["bufferViews"][0].update(byteOffset=10**9),
    lambda d: d["bufferViews"][0].update(byteLength=10**9),
    lambda d: d["bufferViews"][0].update(byteOffset=-8),
    lambda d: d["bufferViews"][2].update(byteOffset=200),  # indices run past 240 bytes
    lambda d: d["bufferViews"][0].update(byteStride=-12),  # would read before the buffer
    lambda d: d["accessors"][0].update(count=10**9),
    lambda d: d["accessors"][0].update(byteOffset=64),
    lambda d: d["accessors"][0].update(count=0),
], ids=["view-offset", "view-length", "view-negative", "indices-past-end", "negative-stride",
        "count", "accessor-offset", "count-zero"])
def test_glb_buffer_views_outside_the_buffer_are_refused(tmp_path, edit):
    with pytest.raises(MeshError, match=r"m.glb.*outside the 240-byte binary buffer"):
        load_meshes(_glb_with(tmp_path, edit))


def test_glb_node_matrix_nan_is_refused(tmp_path):
    def edit(d):
        d["nodes"][0]["matrix"] = [math.nan] * 16
    with pytest.raises(MeshError, match="NaN or infinite"):
        load_meshes(_glb_with(tmp_path, edit))


def test_glb_json_nested_too_deep_is_refused(tmp_path):
    def edit(d):
        d["asset"]["extras"]["deep"] = "@DEEP@"
    path = _glb_with(tmp_path, edit)
    data = path.read_bytes().replace(b'"@DEEP@"', b"[" * 5000 + b"]" * 5000)
    jlen = data.index(b"BIN\x00") - 4 - 20  # BIN chunk header follows the padded JSON
    data = data[:12] + struct.pack("<I", jlen) + data[16:]
    path.write_bytes(data[:8] + struct.pack("<I", len(data)) + data[12:])
    with pytest.raises(MeshError, match="m.glb"):
        load_meshes(path)


# ------------------------------------------------------------------ transforms, poses, camera
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_transform_json_nan_inf_is_refused(tmp_path, value):
    text = seed("transform_json", "T.json").decode()
    doc = json.loads(text)
    doc["matrix"][1][3] = "@"
    (tmp_path / "T.json").write_text(json.dumps(doc).replace('"@"', value))
    with pytest.raises(RegistrationError, match=r"T.json: .*(NaN or infinite)"):
        Transform.load(tmp_path / "T.json")


@pytest.mark.parametrize("line", ["1 0 0 nan 0 1 0 0 0 0 1 0 0 0 0 1",
                                  "1 0 0 0 1 2 inf", "0.5 1 0 0 0 -inf 0 0"])
def test_pose_text_nan_inf_is_refused(tmp_path, line):
    (tmp_path / "p.csv").write_text(line + "\n")
    with pytest.raises(PoseFileError, match=r"p.csv:1: NaN or infinite"):
        read_pose_file(tmp_path / "p.csv")


@pytest.mark.parametrize("field,value", [("matrix", "NaN"), ("timestamp", "NaN"),
                                         ("timestamp", "\"soon\""), ("timestamp", "1e400")])
def test_pose_json_nan_inf_is_refused(tmp_path, field, value):
    doc = json.loads(seed("pose_json", "poses.json"))
    if field == "matrix":
        doc[1]["matrix"][2][2] = "@"
    else:
        doc[1]["timestamp"] = "@"
    (tmp_path / "p.json").write_text(json.dumps(doc).replace('"@"', value))
    with pytest.raises(PoseFileError, match=r"p.json: pose 1: "):
        read_pose_file(tmp_path / "p.json")


@pytest.mark.parametrize("loader,error", [(Transform.load, RegistrationError),
                                          (RigidBody.load, BodyError),
                                          (CameraModel.load, RegistrationError),
                                          (read_pose_file, PoseFileError)])
def test_json_nested_thousands_deep_is_refused(tmp_path, loader, error):
    path = tmp_path / "deep.json"
    path.write_text('{"matrix": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(error, match="deep.json"):
        loader(path)


@pytest.mark.parametrize("edit", [
    lambda d: d.update(image_size=["wide", 720]),
    lambda d: d.update(image_size=[1e400, 720]),
    lambda d: d.update(camera_matrix=[[1, 2], [3]]),
    lambda d: d.update(dist_coeffs=[math.nan] * 5),
])
def test_camera_json_malformed_numbers_are_refused(tmp_path, edit):
    doc = json.loads(seed("camera_json", "camera.json"))
    edit(doc)
    (tmp_path / "camera.json").write_text(json.dumps(doc))
    with pytest.raises(RegistrationError, match="camera.json"):
        CameraModel.load(tmp_path / "camera.json")


# ------------------------------------------------------------------ NRRD / MetaImage headers
def test_metaimage_corrupt_zlib_stream_is_refused_not_spun_on(tmp_path):
    # found by fuzz/: a zlib header ('x ' = 0x78 0x20 passes the FCHECK) followed by text made
    # ITK's MetaImage inflate loop spin for ever
    path = tmp_path / "v.mha"
    path.write_bytes((CORPUS / "mha" / "crash-527e55f7908ceb94.bin").read_bytes())
    with pytest.raises(ImageFileError, match="v.mha: compressed voxel data is corrupt"):
        read_image_file(path)


def test_metaimage_declared_size_past_the_data_is_refused(tmp_path):
    text = seed("mha", "v.mha").replace(b"DimSize = 6 5 4", b"DimSize = 65535 65535 65535")
    (tmp_path / "v.mha").write_bytes(text)
    with pytest.raises(ImageFileError, match=r"v.mha: declared image 65535x65535x65535 .*GiB"):
        read_image_file(tmp_path / "v.mha")
    text = seed("mha", "v.mha").replace(b"DimSize = 6 5 4", b"DimSize = 6 5 40")
    (tmp_path / "v.mha").write_bytes(text)
    with pytest.raises(ImageFileError, match="declares 2400 bytes of voxel data, the file holds"):
        read_image_file(tmp_path / "v.mha")


@pytest.mark.parametrize("name", ["/dev/zero", "../outside.raw", "sub/v.raw", "LIST"])
def test_metaimage_and_nrrd_data_file_outside_the_folder_is_refused(tmp_path, name):
    (tmp_path / "outside.raw").write_bytes(bytes(240))
    folder = tmp_path / "in"
    folder.mkdir()
    mhd = seed("mha", "v.mha")
    header = mhd[:mhd.index(b"ElementDataFile")] + f"ElementDataFile = {name}\n".encode()
    (folder / "v.mhd").write_bytes(header)
    with pytest.raises(ImageFileError, match="v.mhd: ElementDataFile"):
        read_image_file(folder / "v.mhd")
    nrrd = seed("nrrd", "v.nrrd")
    head = nrrd[:nrrd.index(b"\n\n") + 1]
    (folder / "v.nhdr").write_bytes(head + f"data file: {name}\n\n".encode())
    with pytest.raises(ImageFileError, match="v.nhdr: data file"):
        read_image_file(folder / "v.nhdr")


def test_detached_metaimage_next_to_its_header_reads(tmp_path):
    mhd = seed("mha", "v.mha")
    cut = mhd.index(b"ElementDataFile = LOCAL\n")
    (tmp_path / "v.raw").write_bytes(mhd[cut + len(b"ElementDataFile = LOCAL\n"):])
    (tmp_path / "v.mhd").write_bytes(mhd[:cut] + b"ElementDataFile = v.raw\n")
    assert read_image_file(tmp_path / "v.mhd").array.shape == (4, 5, 6)


def test_nrrd_gzip_that_inflates_short_is_refused(tmp_path):
    nrrd = seed("nrrd", "v.nrrd")
    cut = nrrd.index(b"\n\n") + 2
    head = nrrd[:cut].replace(b"encoding: raw", b"encoding: gzip")
    (tmp_path / "v.nrrd").write_bytes(head + zlib.compress(nrrd[cut:][:100]))
    with pytest.raises(ImageFileError, match="inflates to 100 bytes, the header declares 240"):
        read_image_file(tmp_path / "v.nrrd")


# ------------------------------------------------------------------ mentor telemetry
@pytest.mark.parametrize("edit", [
    lambda f: setattr(f, "fre_mm", math.nan),
    lambda f: f.T_ref_ct.m.extend([math.inf] + [0.0] * 15),
    lambda f: f.stages_ms.__setitem__("detect", -math.inf),
    lambda f: setattr(f, "tracking", 77),
])
def test_telemetry_frame_nan_inf_or_unknown_state_is_refused(edit):
    frame = pb.TelemetryFrame(frame_id=5, width=1280, height=720)
    check_frame(frame)  # a plain frame passes
    edit(frame)
    with pytest.raises(MentorError, match="telemetry frame 5: "):
        check_frame(frame)
