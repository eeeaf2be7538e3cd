"""Point CSV reading/writing: formats accepted and one-line errors naming file and line."""

from __future__ import annotations

import numpy as np
import pytest

from scrubin.registration.pointsets import (
    PointFileError,
    is_number,
    read_points_csv,
    write_points_csv,
)


def test_roundtrip(tmp_path):
    pts = np.array([[1.5, -2.25, 3.0], [100.125, 0.0, -50.5]])
    path = tmp_path / "p.csv"
    write_points_csv(path, pts)
    assert path.read_text().splitlines()[0] == "x_mm,y_mm,z_mm"
    np.testing.assert_allclose(read_points_csv(path), pts)
    write_points_csv(path, pts, header=None)
    np.testing.assert_allclose(read_points_csv(path), pts)
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left


def test_header_comments_blank_lines_and_spaces(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("# tracked fiducials, REF frame\n\nx, y, z\n 1, 2, 3 \n\n4,5,6\r\n# end\n")
    np.testing.assert_allclose(read_points_csv(path), [[1, 2, 3], [4, 5, 6]])


def test_no_header(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("1e1,2,3\n-4,5.5,6\n")
    np.testing.assert_allclose(read_points_csv(path), [[10, 2, 3], [-4, 5.5, 6]])


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("x,y,z\n1,2,3\n4,5\n", 3, "expected 3 comma-separated values"),
        ("1,2,3\n4,5,6,7\n", 2, "got 4"),
        ("1,2,3\n1,abc,3\n", 2, "y value 'abc' is not a number"),
        ("1,2,3\n1,2,nan\n", 2, "z value 'nan' is not finite"),
        ("1,2,abc\n", 1, "z value 'abc'"),
        ("1;2;3\n", 1, "expected 3 comma-separated values"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(PointFileError) as exc:
        read_points_csv(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}: ")
    assert what in msg
    assert "\n" not in msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PointFileError, match="file not found"):
        read_points_csv(tmp_path / "nope.csv")
    with pytest.raises(PointFileError, match="is a directory"):
        read_points_csv(tmp_path)


def test_binary_file(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x82")
    with pytest.raises(PointFileError, match="cannot read as text"):
        read_points_csv(path)


def test_too_few_points(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("x,y,z\n1,2,3\n")
    with pytest.raises(PointFileError, match="at least 3 points"):
        read_points_csv(path, min_points=3)
    path.write_text("")
    with pytest.raises(PointFileError, match="found 0"):
        read_points_csv(path)


def test_write_rejects_bad_arrays(tmp_path):
    with pytest.raises(PointFileError, match=r"shape \(N, 3\)"):
        write_points_csv(tmp_path / "a.csv", np.zeros((3, 2)))
    with pytest.raises(PointFileError, match="NaN"):
        write_points_csv(tmp_path / "a.csv", np.array([[1.0, np.nan, 2.0]]))
    assert not (tmp_path / "a.csv").exists()


def test_write_into_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PointFileError, match="cannot write"):
        write_points_csv(blocker / "sub" / "a.csv", np.zeros((1, 3)))


def test_is_number():
    assert all(is_number(t) for t in ("1", "-2.5", "1e-3", " 4 ", "nan", "inf"))
    assert not any(is_number(t) for t in ("", "x", "1,2", "mm", "1.2.3"))
