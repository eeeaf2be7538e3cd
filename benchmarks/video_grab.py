"""Grab decoded pictures from a page's ``<video>`` without stalling the page (bench_mentor SSIM).

The old grab drew the ``<video>`` into a canvas and PNG-encoded it (``toDataURL``) inside a
``requestVideoFrameCallback`` on the page's main thread: 170-310 ms per grab on the 2-core
machine, during which no other ``requestVideoFrameCallback`` ran. Each grab showed up in the
bench as a display gap (measured: the four largest gaps of a 40 s run, up to 217 ms, each
started within 20 ms of a grab; ``presentedFrames`` advanced by as many frames as the strip
ids did, so Chromium kept presenting video: the page's callbacks, not the video, stopped).

Here a callback on every presented picture wraps the video's current picture as a WebCodecs
``VideoFrame`` (``new VideoFrame(video)``, no pixel copy) when its strip id (read by the page,
``state.displayed``) is a multiple of ``every``, and copies its planes with
``VideoFrame.copyTo`` (the decoder's own I420 / NV12 buffer, ~1.4 MB at 1280x736, no
colour conversion, no encoding). The buffers stay in the page until :meth:`VideoGrab.collect`
reads them after the measured stretch. Python reads the frame id again from the pixels' strip
(:func:`scrubin.mentor.strip.read_strip`: a picture is matched to its source by what it
shows, not by the page's bookkeeping), converts to BGR with BT.601 limited range (the
stream's ``colormatrix=smpte170m``, OpenCV ``COLOR_YUV2BGR_I420``: the inverse of the
station's ``COLOR_BGR2YUV_I420``) and scores it with ``skimage.metrics.structural_similarity``
(Wang et al. 2004, IEEE TIP 13(4), eq. 13; colour, 7x7 window) on the 1280x720 view against
the station's composite of the same id.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

START = """(every) => {
  const v = document.getElementById('video');
  const g = { every, frames: [], errors: [], seen: 0, on: true };
  window._grab = g;
  const cb = () => {
    if (!g.on) return;
    v.requestVideoFrameCallback(cb);
    g.seen += 1;
    const d = window.scrubin.state.displayed;
    if (!d || d.frame_id == null || d.frame_id % every !== 0) return;
    let f = null;
    try {
      f = new VideoFrame(v);
      const rect = f.visibleRect;
      const opts = f.format ? {} : { format: 'RGBX' };
      const buf = new Uint8Array(f.allocationSize(opts));
      const fmt = f.format || 'RGBX';
      f.copyTo(buf, opts).then((layout) => {
        g.frames.push({ fmt, w: rect.width, h: rect.height, layout, buf });
      }).catch((e) => g.errors.push(String(e))).finally(() => f.close());
    } catch (e) {
      g.errors.push(String(e));
      if (f) f.close();
    }
  };
  v.requestVideoFrameCallback(cb);
}"""

STOP = "() => { window._grab.on = false; return window._grab.frames.length; }"

TAKE = """(n) => {
  const g = window._grab;
  return g.frames.splice(0, n).map((x) => {
    let s = '';
    for (let i = 0; i < x.buf.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, x.buf.subarray(i, i + 0x8000));
    }
    return { fmt: x.fmt, w: x.w, h: x.h, layout: x.layout, b64: btoa(s) };
  });
}"""


def to_bgr(fmt: str, w: int, h: int, layout: list[dict[str, int]], data: bytes) -> np.ndarray:
    """A copied ``VideoFrame`` (``copyTo`` planes and their ``PlaneLayout``) as BGR uint8."""
    import cv2

    buf = np.frombuffer(data, np.uint8)

    def plane(k: int, rows: int, cols: int) -> np.ndarray:
        off, stride = layout[k]["offset"], layout[k]["stride"]
        return buf[off:off + stride * rows].reshape(rows, stride)[:, :cols]

    if fmt == "I420":
        yuv = np.concatenate([plane(0, h, w), plane(1, h // 2, w // 2).reshape(h // 4, w),
                              plane(2, h // 2, w // 2).reshape(h // 4, w)])
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
    if fmt == "NV12":
        yuv = np.concatenate([plane(0, h, w), plane(1, h // 2, w)])
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_NV12)
    if fmt in ("RGBX", "RGBA"):
        return cv2.cvtColor(plane(0, h, 4 * w).reshape(h, w, 4), cv2.COLOR_RGBA2BGR)
    raise ValueError(f"VideoFrame format {fmt!r}: expected I420, NV12 or RGBX")


class VideoGrab:
    """Every ``every``-th frame id: the station's composite kept, the page's picture copied.

    ``keep(fid, img)`` is the station's ``on_composite`` hook (frame-loop thread);
    :meth:`start` after the warm-up, :meth:`collect` after the measured stretch.
    """

    def __init__(self, every: int = 10, view_rows: int = 720) -> None:
        self.every, self.view_rows = every, view_rows
        self.sources: dict[int, np.ndarray] = {}
        self.scores: list[tuple[int, float]] = []   # (frame id, SSIM)
        self.unmatched = 0        # copies whose strip id is not a kept source's
        self.unreadable = 0       # copies whose strip failed its CRC
        self.errors: list[str] = []
        self.grabbed = 0

    def keep(self, fid: int, img: np.ndarray) -> None:
        if fid % self.every == 0:
            self.sources[fid] = img

    def start(self, page: Any) -> None:
        page.evaluate(START, self.every)

    def lowest(self, first_id: int, idr_indices: list[int], period: int,
               n: int = 3) -> str:
        """The ``n`` lowest scores, each with what preceded it: an IDR picture within 5
        pictures (``idr_indices``: encode indices, frame id - ``first_id``), or the source's
        loop restarting (a cut every ``period`` pictures)."""
        out = []
        for fid, v in sorted(self.scores, key=lambda t: t[1])[:n]:
            k = fid - first_id
            tags = [f"IDR -{k - i}" for i in idr_indices if 0 <= k - i <= 5]
            tags += [f"cut -{k % period}"] if k % period <= 2 else []
            out.append(f"{v:.3f} ({', '.join(tags) or 'P'})")
        return ", ".join(out)

    def collect(self, page: Any, batch: int = 8) -> list[tuple[int, float]]:
        """Stop grabbing, read the copies back in batches, score each against its source."""
        import cv2
        from skimage.metrics import structural_similarity

        from scrubin.mentor.strip import read_strip

        self.grabbed = page.evaluate(STOP)
        self.errors = page.evaluate("window._grab.errors")
        while True:
            got = page.evaluate(TAKE, batch)
            if not got:
                break
            for g in got:
                shown = to_bgr(g["fmt"], g["w"], g["h"], g["layout"],
                               base64.b64decode(g["b64"]))
                fid = read_strip(cv2.cvtColor(shown, cv2.COLOR_BGR2GRAY))
                if fid is None:
                    self.unreadable += 1
                    continue
                src = self.sources.pop(fid, None)
                if src is None:
                    self.unmatched += 1
                    continue
                r = self.view_rows
                self.scores.append((fid, float(structural_similarity(
                    src[:r], shown[:r], channel_axis=2, data_range=255))))
        self.sources.clear()
        return self.scores
