"""Open a session recording with Foxglove Studio's own code in headless Chromium.

``@foxglove/studio-base`` 1.48.0 (npm, installed by ``make install`` into
tests/mentor/foxglove/node_modules) ships Studio's prebuilt web bundle; its MCAP data-source
worker (``McapIterableSourceWorker``: ``McapIndexedReader`` + Studio's ``parseChannel``) is the
code that opens a local ``.mcap`` file in Studio. :func:`open_in_studio` serves that bundle, the
recording and ``check.js`` on 127.0.0.1, runs the worker over comlink as Studio does, decodes
``/station/video`` with WebCodecs as Foxglove's video player does, and returns the report.
:func:`findings` turns a report into the list of what Foxglove would not show (empty = fine),
validating every message against Foxglove's JSON schemas (``@foxglove/schemas`` 2.1.0).

Studio 1.48 predates Foxglove's video panel, so it decodes ``foxglove.CompressedVideo`` messages
as messages (fields, bytes) and the browser's own H.264 decoder (WebCodecs) stands in for the
panel. Nothing here downloads: the packages are installed by ``npm ci`` in ``make install``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import subprocess
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tests.mentor.browser import PageHandler

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
STUDIO_ASSETS = MODULES / "@foxglove" / "studio-base" / "assets"
COMLINK_JS = MODULES / "comlink" / "dist" / "umd" / "comlink.js"
SCHEMAS_JS = MODULES / "@foxglove" / "schemas" / "dist" / "jsonschema" / "index.js"
MCAP_WORKER_MODULE = "__webpack_require__(68790)"  # McapIterableSourceWorker.worker.ts


class StudioMissingError(RuntimeError):
    """The npm packages are not installed (run ``make install``)."""


@functools.cache
def mcap_worker_file() -> str:
    """Name of the bundle's MCAP worker entry (a small webpack worker bootstrap)."""
    if not STUDIO_ASSETS.is_dir() or not COMLINK_JS.exists():
        raise StudioMissingError(f"{STUDIO_ASSETS}: not installed; run `make install` (npm ci in "
                            f"{HERE})")
    for p in sorted(STUDIO_ASSETS.glob("*.js")):
        if p.stat().st_size < 100_000 and MCAP_WORKER_MODULE in p.read_text(errors="replace"):
            return p.name
    raise StudioMissingError(f"{STUDIO_ASSETS}: no MCAP worker entry (is it @foxglove/studio-base "
                        "1.48.0?)")


@functools.cache
def foxglove_json_schemas() -> dict[str, dict[str, Any]]:
    """Foxglove's JSON schemas by title (``foxglove.CompressedVideo`` ...), from
    ``@foxglove/schemas`` read by node (the package's own CommonJS export)."""
    if not SCHEMAS_JS.exists():
        raise StudioMissingError(f"{SCHEMAS_JS}: not installed; run `make install`")
    out = subprocess.run(["node", "-e", "process.stdout.write(JSON.stringify(require("
                          f"{json.dumps(str(SCHEMAS_JS))})))"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return {s["title"]: s for s in json.loads(out).values()}


class _Handler(PageHandler):
    routes: dict[str, Path] = {}
    index_html = (b"<!doctype html><html><head><link rel='icon' href='data:,'>"
                  b"<script src='/comlink.js'></script><script src='/check.js'></script>"
                  b"</head><body></body></html>")
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".wasm": "application/wasm",
                      ".html": "text/html", ".mcap": "application/octet-stream"}

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, target in self.routes.items():
            if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                rest = path[len(prefix):]
                p = (target / rest) if rest else target
                if ".." in Path(rest).parts:
                    break
                return str(p)
        return str(HERE / "__none__")


@contextmanager
def serve(recordings: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving the page, comlink, Studio's bundle under /studio/ and
    the files of folder ``recordings`` under /rec/."""
    mcap_worker_file()
    routes = {"/check.js": HERE / "check.js", "/comlink.js": COMLINK_JS,
              "/studio/": STUDIO_ASSETS, "/rec/": recordings}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def open_in_studio(page: Any, origin: str, name: str, video_topic: str,
                   strip_rows: int, wait_ms: int = 2000) -> dict[str, Any]:
    """Run ``check.js`` on recording ``/rec/NAME`` in a Playwright page; the report dict."""
    if page.url != f"{origin}/":
        page.goto(f"{origin}/")
    return page.evaluate(
        "([u, w, r, t, ms]) => window.studioCheck(u, w, r, t, ms)",
        [f"/rec/{name}", f"/studio/{mcap_worker_file()}", strip_rows, video_topic, wait_ms])


# ---------------------------------------------------------------------------------- checks
def _tf_findings(tfs: list[dict[str, Any]]) -> list[str]:
    """Foxglove's transform tree: unit quaternions, one parent per child, no cycles."""
    out = []
    parent: dict[str, str] = {}
    for m in tfs:
        for t in m["transforms"]:
            q = np.array([t["rotation"][k] for k in "xyzw"], float)
            if abs(np.linalg.norm(q) - 1.0) > 1e-6:
                out.append(f"/tf {t['parent_frame_id']}->{t['child_frame_id']}: quaternion "
                           f"norm {np.linalg.norm(q):.6f}, expected 1")
            c, p = t["child_frame_id"], t["parent_frame_id"]
            if not c or not p or c == p:
                out.append(f"/tf: bad frame ids parent {p!r} child {c!r}")
            elif parent.setdefault(c, p) != p:
                out.append(f"/tf: frame {c!r} has two parents {parent[c]!r} and {p!r}")
    for start in parent:
        seen, f = {start}, start
        while f in parent:
            f = parent[f]
            if f in seen:
                out.append(f"/tf: cycle through {f!r}")
                break
            seen.add(f)
    return out


def findings(report: dict[str, Any], want_topics: dict[str, str],
             want_counts: dict[str, int], video_topic: str) -> list[str]:
    """Everything Foxglove would refuse or mis-show in a report of :func:`open_in_studio`."""
    import jsonschema

    schemas = foxglove_json_schemas()
    out = [f"Studio problem: {p}" for p in report["problems"]]
    got_topics = {t["name"]: t["schemaName"] for t in report["topics"]}
    for topic, schema in want_topics.items():
        if got_topics.get(topic) != schema:
            out.append(f"topic {topic}: Studio lists schema {got_topics.get(topic)!r}, expected "
                       f"{schema!r}")
    counts = Counter(m["topic"] for m in report["messages"])
    for topic, n in want_counts.items():
        if counts.get(topic, 0) != n:
            out.append(f"topic {topic}: Studio decoded {counts.get(topic, 0)} messages, "
                       f"expected {n}")
        if report["topic_counts"].get(topic) != n:
            out.append(f"topic {topic}: the file's statistics say "
                       f"{report['topic_counts'].get(topic)} messages, expected {n}")
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in report["messages"]:
        msg = m["message"] if m["topic"] != video_topic else None
        by_topic[m["topic"]].append(msg)
        schema = schemas.get(m["schemaName"])
        if schema is not None and msg is not None:
            for e in jsonschema.Draft7Validator(schema).iter_errors(msg):
                out.append(f"{m['topic']} {m['schemaName']}: {'.'.join(map(str, e.path))}: "
                           f"{e.message[:120]}")
    for msg in report["video_messages"]:
        for e in jsonschema.Draft7Validator(schemas["foxglove.CompressedVideo"]).iter_errors(msg):
            out.append(f"{video_topic}: {'.'.join(map(str, e.path))}: {e.message[:120]}")
    out += _tf_findings([m for m in by_topic.get("/tf", []) if m is not None])
    # frames the image panel and the 3-D panel join on
    tf_frames = {f for m in by_topic.get("/tf", []) if m for t in m["transforms"]
                 for f in (t["parent_frame_id"], t["child_frame_id"])}
    for topic in (video_topic, "/station/calibration"):
        msgs = report["video_messages"] if topic == video_topic else by_topic.get(topic, [])
        for fid in sorted({m["frame_id"] for m in msgs if m}):
            if fid not in tf_frames:
                out.append(f"{topic}: frame_id {fid!r} is not in the /tf tree {sorted(tf_frames)}")
    # the image panel shows annotations (and uses the calibration) whose timestamp equals the
    # picture's when its annotations are synchronised; pictures in increasing time
    video_t = _stamps(report["video_messages"])
    if any(b <= a for a, b in zip(video_t, video_t[1:], strict=False)):
        out.append(f"{video_topic}: timestamps not increasing")
    for topic in ("/station/annotations", "/station/calibration"):
        other = _stamps(by_topic.get(topic, []))
        if other != video_t:
            n = len(set(video_t) - set(other))
            out.append(f"{topic}: no message at the timestamp of {n} of {len(video_t)} "
                       "video frames")
    out += video_findings(report, by_topic.get("/station/calibration", []))
    return out


def _stamps(msgs: list[dict[str, Any] | None]) -> list[tuple[int, int]]:
    return [(m["timestamp"]["sec"], m["timestamp"]["nsec"]) for m in msgs if m]


def video_findings(report: dict[str, Any], calibrations: list[dict[str, Any]]) -> list[str]:
    """The CompressedVideo rules of Foxglove's schema text and what its decoder needs."""
    v = report["video"]
    out = [f"WebCodecs error: {e}" for e in v["errors"]]
    if not report.get("secure_context"):
        out.append("page is not a secure context (Foxglove's video player needs one)")
    if v["config"] is None:
        out.append("no keyframe message with an SPS: Foxglove's decoder is never configured")
    elif v["supported"] is not True:
        out.append(f"VideoDecoder does not support {v['config']}")
    for f in v["frames"]:
        where = f"video message {f['index']}"
        if f["format"] != "h264":
            out.append(f"{where}: format {f['format']!r}, expected 'h264'")
        if not f["annexB"]:
            out.append(f"{where}: data does not start with an Annex B start code")
        if f["key"] and not f["sps"]:
            out.append(f"{where}: keyframe (IDR) without an SPS NAL unit")
        if not f["decoded"]:
            out.append(f"{where}: no picture from the decoder (NAL types {f['nal_types']})")
        elif f["timestamp"] != f["chunk_timestamp"]:
            out.append(f"{where}: picture time {f['timestamp']} us for chunk "
                       f"{f['chunk_timestamp']} us (reordered)")
    cfg = v["config"] or {}
    for c in calibrations:
        if c and (c["width"], c["height"]) != (cfg.get("codedWidth"), cfg.get("codedHeight")):
            out.append(f"calibration {c['width']}x{c['height']} px but the video's SPS says "
                       f"{cfg.get('codedWidth')}x{cfg.get('codedHeight')}")
            break
    return out


def strip_luma(frame: dict[str, Any], strip_rows: int) -> np.ndarray:
    """The decoded picture's last ``strip_rows`` rows (grey) as an image of just those rows."""
    gray = np.frombuffer(base64.b64decode(frame["strip"]), np.uint8)
    return gray.reshape(strip_rows, frame["width"])
