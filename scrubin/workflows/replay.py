"""``scrubin replay``: a session recording (MCAP) to an MP4 file, with a summary report.

The rendering is :func:`scrubin.mentor.replay.replay_to_mp4` (frames matched to their
metadata by strip id, annotations as the station's board held them on each frame, recorded
capture times). The report (``--json``) holds counts, the tracking states seen, the last FRE
and the median predicted TRE (never FRE as accuracy), the median stage latencies (ms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scrubin.imaging.fileio import write_json_atomic


def run_replay(recording: Path, out: Path, annotations: str = "auto",
               report_json: Path | None = None, voices: bool = True) -> dict[str, Any]:
    """Render ``recording`` into ``out``; write the report to ``report_json`` if given."""
    from scrubin.mentor.replay import replay_to_mp4

    rep = replay_to_mp4(recording, out, annotations=annotations, voices=voices).to_json()
    rep["recording"], rep["out"] = str(recording), str(out)
    if report_json is not None:
        write_json_atomic(report_json, rep)
    return rep
