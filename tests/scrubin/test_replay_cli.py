"""``scrubin replay``: a real recording to MP4 and a report; one-line errors, exit 2, no output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2

from scrubin.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "mentor"))
from recording_stream import LOST, N_FRAMES, record


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_replay_cli(tmp_path: Path, capsys) -> None:
    rec = tmp_path / "s.mcap"
    record(rec)
    out, rep = tmp_path / "v.mp4", tmp_path / "r.json"
    rc, so, err = _run(capsys, "replay", rec, "--out", out, "--json", rep)
    assert rc == 0 and err == ""
    assert f"{N_FRAMES} frames" in so and "3 annotation events (drawn)" in so
    cap = cv2.VideoCapture(str(out), cv2.CAP_FFMPEG)
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == N_FRAMES
    r = json.loads(rep.read_text())
    assert r["frames"] == N_FRAMES and r["tracking"]["LOST"] == len(LOST)
    assert r["tre_mm_median"] == 0.87 and r["stages_ms_median"]["encode"] == 3.0


def test_replay_cli_errors(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.mcap"
    bad.write_text("x")
    for argv, msg in (
            (("replay", bad, "--out", tmp_path / "o.mp4"), "bad.mcap: not an MCAP file"),
            (("replay", tmp_path / "none.mcap", "--out", tmp_path / "o.mp4"), "no such file"),
            (("replay", bad, "--out", tmp_path / "no" / "o.mp4"), "--out"),
    ):
        rc, so, err = _run(capsys, *argv)
        assert rc == 2 and err.startswith("scrubin: error: ") and msg in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert [f.name for f in tmp_path.iterdir()] == ["bad.mcap"]
