"""Generate the Python modules of the mentoring protocol from the ``.proto`` files.

``python -m scrubin.protos.build`` (or ``make protos``) runs ``grpc_tools.protoc`` on
``protos/scrubin/mentor/v1/mentor.proto`` (proto path ``protos/``, so the descriptor's file
name is ``scrubin/mentor/v1/mentor.proto``, the name clients such as ``grpcurl`` see through
reflection) and writes ``mentor_pb2.py`` and ``mentor_pb2_grpc.py`` next to this file, where
they import as :mod:`scrubin.protos.mentor_pb2`. protoc would make the gRPC module import
``scrubin.mentor.v1.mentor_pb2``, which is not a module of this project, so that one import
is rewritten. The output is a pure function of the ``.proto`` files and the installed
``grpcio-tools``; ``tests/mentor/test_protos.py`` regenerates into a temporary folder and
fails when the committed modules differ.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILES = ("scrubin/mentor/v1/mentor.proto",)
GENERATED = ("mentor_pb2.py", "mentor_pb2_grpc.py")


def _fix_imports(text: str) -> str:
    """Rewrite protoc's ``from scrubin.mentor.v1 import X_pb2`` to ``scrubin.protos``."""
    return text.replace("from scrubin.mentor.v1 import ", "from scrubin.protos import ")


def generate(out_dir: str | Path) -> list[Path]:
    """Generate the modules into ``out_dir`` (created if missing); return their paths."""
    from grpc_tools import protoc  # build-time dependency (grpcio-tools)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={include}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTO_FILES,
        ]
        status = protoc.main(args)
        if status != 0:
            raise RuntimeError(f"protoc failed with status {status}: {' '.join(args)}")
        written: list[Path] = []
        for proto in PROTO_FILES:
            folder = Path(tmp) / Path(proto).parent
            for name in GENERATED:
                src = folder / name
                dst = out / name
                dst.write_text(_fix_imports(src.read_text()))
                written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m scrubin.protos.build [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m scrubin.protos.build",
                                     description="Regenerate the mentoring protocol modules.")
    parser.add_argument("--out", type=Path, default=PROTO_ROOT,
                        help="output folder (default: the protos package itself)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
