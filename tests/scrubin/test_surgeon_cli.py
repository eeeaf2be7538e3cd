"""``scrubin surgeon``: the overlay's options plus the mentoring link; user mistakes are one
line ``scrubin: error: ...``, exit 2, and no output file."""

from __future__ import annotations

from pathlib import Path

import pytest

from scrubin.cli import build_parser, main

TOKEN = "A" * 43


def test_surgeon_has_every_overlay_option() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    overlay = {o for a in sub.choices["overlay"]._actions for o in a.option_strings}
    surgeon = {o for a in sub.choices["surgeon"]._actions for o in a.option_strings}
    assert overlay <= surgeon
    assert {"--mentor", "--token", "--ca-cert", "--ice-host", "--audio-in"} <= surgeon


@pytest.mark.parametrize("extra, msg", [
    (["--mentor", "https://127.0.0.1:8443"], "--mentor 'https://127.0.0.1:8443': expected "
                                            "HOST:PORT"),
    (["--mentor", "127.0.0.1:50051", "--token", "short"], "--token: expected the surgeon "
                                                         "token"),
    (["--mentor", "127.0.0.1:50051"], "server certificate not found"),
    (["--mentor", "127.0.0.1:50051", "--ice-host", "localhost"], "--ice-host 'localhost'"),
    (["--mentor", "127.0.0.1:50051", "--audio-in", "tone:5"], "tone frequency"),
])
def test_user_errors(tmp_path: Path, capsys, extra: list[str], msg: str,
                     monkeypatch) -> None:
    monkeypatch.delenv("SCRUBIN_TOKEN", raising=False)
    cert = tmp_path / "cert.pem"
    if "server certificate not found" not in msg:
        cert.write_text("not checked before the connection\n")
    args = ["surgeon", "--source", "synthetic", "--out", str(tmp_path / "v.mp4"),
            "--ca-cert", str(cert), "--frames", "3"]
    if "--token" not in extra:
        args += ["--token", TOKEN]
    status = main(args + extra)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("scrubin: error: ") and "\n" not in err and msg in err
    assert not (tmp_path / "v.mp4").exists()


def test_token_from_environment_or_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("SCRUBIN_TOKEN", raising=False)
    status = main(["surgeon", "--source", "synthetic", "--out", str(tmp_path / "v.mp4"),
                   "--mentor", "127.0.0.1:1"])
    assert status == 2 and "set SCRUBIN_TOKEN" in capsys.readouterr().err

