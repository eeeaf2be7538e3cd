"""Shared file helpers: JSON reading errors, atomic writes leave nothing partial behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scrubin.imaging.errors import ImagingError
from scrubin.imaging.fileio import (
    read_json,
    temp_path,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_read_json_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    write_json_atomic(p, {"x": [1, 2.5], "s": "e"})
    assert read_json(p, ImagingError) == {"x": [1, 2.5], "s": "e"}
    assert p.read_text().endswith("\n")
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_read_json_missing_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.json"
    with pytest.raises(ImagingError, match=r"nope\.json: file not found$"):
        read_json(p, ImagingError)
    with pytest.raises(ImagingError, match=r"nope\.json: body file not found$"):
        read_json(p, ImagingError, missing="body file not found")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00"])
def test_read_json_unreadable_names_the_file_and_reason(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    with pytest.raises(ImagingError, match=r"bad\.json: not a readable JSON file \(.+\)$"):
        read_json(p, ImagingError)
    with pytest.raises(ImagingError, match=r"bad\.json: not a camera \("):
        read_json(p, ImagingError, unreadable="not a camera")


def test_read_json_of_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ImagingError, match="not a readable JSON file"):
        read_json(tmp_path, ImagingError)


def test_write_text_atomic_replaces_and_honours_umask(tmp_path: Path) -> None:
    p = tmp_path / "out.txt"
    p.write_text("old")
    write_text_atomic(p, "new\n")
    assert p.read_text() == "new\n"
    assert p.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [q.name for q in tmp_path.iterdir()] == ["out.txt"]


def test_write_text_atomic_missing_folder(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "out.txt"
    with pytest.raises(FileNotFoundError):
        write_text_atomic(p, "x")
    with pytest.raises(ImagingError, match=r"out\.txt: cannot write \("):
        write_text_atomic(p, "x", error=ImagingError)
    assert not (tmp_path / "sub").exists()
    write_text_atomic(p, "x", error=ImagingError, make_parents=True)
    assert p.read_text() == "x"


def test_write_text_atomic_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ImagingError, match="cannot write"):
        write_text_atomic(tmp_path / "file" / "out.txt", "x", error=ImagingError,
                          make_parents=True)


def test_write_atomic_failure_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "model.glb"
    p.write_text("old")
    seen: list[Path] = []

    def boom(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("partial")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        write_atomic(p, boom, suffix=".glb")
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".model.glb.")
    assert seen[0].suffix == ".glb"
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["model.glb"]


def test_temp_path_is_unique_hidden_and_empty(tmp_path: Path) -> None:
    dst = tmp_path / "x.json"
    a, b = temp_path(dst), temp_path(dst, ".part")
    assert a != b and a.name.startswith(".x.json.") and b.name.endswith(".part")
    assert a.read_bytes() == b"" and b.read_bytes() == b""


def test_write_json_atomic_indent(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    write_json_atomic(p, {"a": 1}, indent=None)
    assert p.read_text() == '{"a": 1}\n'
    write_json_atomic(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1} and p.read_text() == '{\n  "a": 1\n}\n'
