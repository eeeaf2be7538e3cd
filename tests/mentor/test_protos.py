"""The generated protocol modules are reproducible from protos/ (fails when stale)."""

from __future__ import annotations

from pathlib import Path

from scrubin.protos import build
from scrubin.protos import mentor_pb2 as pb

PROTOS = Path(build.__file__).resolve().parent


def test_generated_modules_match_the_proto_files(tmp_path):
    written = build.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(build.GENERATED)
    for path in written:
        committed = PROTOS / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is stale: run `python -m scrubin.protos.build`")


def test_generated_grpc_module_imports_the_project_namespace():
    text = (PROTOS / "mentor_pb2_grpc.py").read_text()
    assert "from scrubin.protos import mentor_pb2" in text
    assert "from scrubin.mentor.v1" not in text


def test_descriptor_names_follow_the_proto_text():
    proto = (PROTOS / "scrubin" / "mentor" / "v1" / "mentor.proto").read_text()
    assert "package scrubin.mentor.v1;" in proto
    assert pb.DESCRIPTOR.package == "scrubin.mentor.v1"
    assert pb.DESCRIPTOR.name == "scrubin/mentor/v1/mentor.proto"
    service = pb.DESCRIPTOR.services_by_name["Mentor"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {"Join": (False, False), "Annotations": (True, True),
                       "PublishTelemetry": (True, False), "WatchTelemetry": (False, True),
                       "Signal": (True, True), "Renew": (False, False),
                       "IceServers": (False, False)}
    for name in methods:
        assert f"rpc {name}(" in proto
