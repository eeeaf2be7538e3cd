"""The command line: discovery, negative option values, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from scrubin.cli import _preprocess, build_parser


def test_negative_values_are_joined_to_their_option():
    argv = ["model", "d", "--seed", "-12.5,30,40", "--threshold", "-1000:-400", "--out", "x"]
    assert _preprocess(argv) == [
        "model", "d", "--seed=-12.5,30,40", "--threshold=-1000:-400", "--out", "x"
    ]
    # A real option after an option is left alone.
    assert _preprocess(["--json", "--verbose"]) == ["--json", "--verbose"]


def test_groups_are_discovered():
    parser = build_parser()
    text = parser.format_help()
    assert "register" in text and "calibrate" in text


def test_python_m_scrubin_help_and_usage_error():
    ok = subprocess.run([sys.executable, "-m", "scrubin", "--help"], capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0 and "usage: scrubin" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "scrubin", "no-such-command"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    assert "Traceback" not in bad.stderr
