"""``scrubin sample NAME --out DIR``."""

from __future__ import annotations

from pathlib import Path

import pytest

from scrubin.cli import main
from scrubin.samples.phantom import SampleError, _umask, export_sample


def test_cli_writes_a_copy(small_phantom: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "series"
    assert main(["sample", "small", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in
                                                            small_phantom.iterdir())
    assert (out / "truth.json").read_bytes() == (small_phantom / "truth.json").read_bytes()
    assert out.stat().st_mode & 0o055 == 0o055 & ~_umask()  # not left at mkdtemp's 0700
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["sample", "small", "--out", str(empty)]) == 0
    assert len(list(empty.glob("*.dcm"))) == len(list(small_phantom.glob("*.dcm")))


@pytest.mark.parametrize(
    ("name", "out", "message"),
    [
        ("huge", "new", "unknown sample 'huge'"),
        ("small", "nonempty", "not an empty folder"),
        ("small", "file/below", "output folder"),  # checked by the CLI before any work
    ],
)
def test_cli_one_line_errors(name: str, out: str, message: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "x.txt").write_text("keep")
    (tmp_path / "file").write_text("x")
    assert main(["sample", name, "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scrubin: error:") and message in err[0]
    assert (tmp_path / "nonempty" / "x.txt").read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # nothing left behind


def test_export_rejects_a_file_as_output(tmp_path: Path) -> None:
    f = tmp_path / "f.dcm"
    f.write_text("x")
    with pytest.raises(SampleError, match="not an empty folder"):
        export_sample("small", f)
