"""The mentor page's pure modules run in a real headless Chromium against independent truth.

- project.js vs OpenCV's ``cv2.projectPoints`` on the same pose, intrinsics and distortion;
- strip.js reading canvases drawn from mentor/strip.py's pattern (the station's writer);
- meta.js keeping >= 2 s of per-frame metadata;
- session.js's outbox surviving a page reload (localStorage) and superseding updates.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from scrubin.mentor.strip import STRIP_HEIGHT, crc8, with_strip
from tests.mentor.browser import new_page


@pytest.fixture(scope="module")
def page(chromium, static_origin):
    p = new_page(chromium)
    p.goto(f"{static_origin}/blank")
    yield p
    assert p.errors == []
    p.context.close()


def _pose(rvec_deg: np.ndarray, t_mm: np.ndarray) -> np.ndarray:
    r, _ = cv2.Rodrigues(np.deg2rad(rvec_deg).reshape(3, 1))
    t = np.eye(4)
    t[:3, :3] = r
    t[:3, 3] = t_mm
    return t


@pytest.mark.parametrize("dist", [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [-0.28, 0.11, 0.0012, -0.0008, -0.02],
    [0.35, -0.4, -0.003, 0.002, 0.25],
])
def test_projection_matches_opencv(page, dist) -> None:
    rng = np.random.default_rng(7)
    # REF-frame points (mm) in front of a camera 400 mm away, spread over the whole image
    points_ref_mm = rng.uniform([-120, -70, -40], [120, 70, 40], size=(200, 3))
    t_camera_ref = _pose(np.array([12.0, -20.0, 5.0]), np.array([8.0, -15.0, 420.0]))
    k = np.array([[905.0, 0, 641.3], [0, 902.5, 358.9], [0, 0, 1]])
    expected, _ = cv2.projectPoints(
        points_ref_mm, cv2.Rodrigues(t_camera_ref[:3, :3])[0], t_camera_ref[:3, 3], k,
        np.array(dist))
    got = page.evaluate(
        """async ([pts, T, K, dist]) => {
             const m = await import('/static/project.js');
             return m.projectPointsRef(pts, T, K, dist);
           }""",
        [points_ref_mm.tolist(), t_camera_ref.ravel().tolist(),
         [k[0, 0], k[1, 1], k[0, 2], k[1, 2]], dist])
    assert np.abs(np.array(got) - expected.reshape(-1, 2)).max() < 1e-6


def test_projection_behind_camera_and_missing_points(page) -> None:
    got = page.evaluate(
        """async () => {
             const m = await import('/static/project.js');
             const T = [1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1];
             return m.projectPointsRef([[0, 0, 100], null, [0, 0, -100]], T,
                                       [1000, 1000, 640, 360], [0, 0, 0, 0, 0]);
           }""")
    assert got[0] == [640, 360]
    assert got[1] is None and got[2] is None


def test_norm_pixel_convention(page) -> None:
    # DESIGN: pixel = (x*width - 0.5, y*height - 0.5); the centre of pixel (0, 0) is (0.5/W, 0.5/H)
    got = page.evaluate(
        """async () => {
             const m = await import('/static/project.js');
             return [m.normToPixel(0.5 / 1280, 0.5 / 720, 1280, 720),
                     m.pixelToNorm(639, 359, 1280, 720)];
           }""")
    assert got[0] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert got[1] == pytest.approx([639.5 / 1280, 359.5 / 720], abs=1e-12)


def _strip_rgba(frame_id: int, width: int) -> bytes:
    view = np.full((4, width, 3), 90, np.uint8)
    img = with_strip(view, frame_id)[-STRIP_HEIGHT:]
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return rgba.tobytes()


READ_ON_CANVAS = """async ([b64, width, noise]) => {
  const m = await import('/static/strip.js');
  const bytes = Uint8ClampedArray.from(atob(b64), (c) => c.charCodeAt(0));
  const c = document.createElement('canvas');
  c.width = width; c.height = 16;
  const g = c.getContext('2d', { willReadFrequently: true });
  g.putImageData(new ImageData(bytes, width, 16), 0, 0);
  if (noise) {   // soften the cell edges as a video codec would
    g.filter = 'blur(1px)';
    g.drawImage(c, 0, 0);
  }
  return m.readStrip(g.getImageData(0, 0, width, 16).data, width, 16);
}"""


@pytest.mark.parametrize("frame_id", [1, 123, 0x80000001, 2**32 - 1, 3_141_592_653])
@pytest.mark.parametrize("width", [1280, 640])
def test_strip_read_from_station_pattern(page, frame_id, width) -> None:
    b64 = base64.b64encode(_strip_rgba(frame_id, width)).decode()
    assert page.evaluate(READ_ON_CANVAS, [b64, width, False]) == frame_id
    assert page.evaluate(READ_ON_CANVAS, [b64, width, True]) == frame_id


def test_strip_crc_mismatch_dropped(page) -> None:
    rgba = np.frombuffer(_strip_rgba(123456, 1280), np.uint8).reshape(16, 1280, 4).copy()
    rgba[:, 31 * 32: 32 * 32, :3] = 255 - rgba[:, 31 * 32: 32 * 32, :3]   # flip the id's LSB
    b64 = base64.b64encode(rgba.tobytes()).decode()
    assert page.evaluate(READ_ON_CANVAS, [b64, 1280, False]) is None


def test_black_strip_is_not_id_zero_in_js(page) -> None:
    """A black frame's strip (all cells 0) carries a valid CRC-8 for id 0 (crc8 of 4 zero
    bytes is 0): the page must not take it for a frame id (id 0 is reserved, mentor/strip.py)."""
    assert crc8(bytes(4)) == 0
    b64 = base64.b64encode(np.full((16, 1280, 4), [0, 0, 0, 255], np.uint8).tobytes()).decode()
    assert page.evaluate(READ_ON_CANVAS, [b64, 1280, False]) is None


def test_crc8_check_value_in_js(page) -> None:
    # CRC-8/SMBUS catalogue check value for "123456789"
    assert page.evaluate("""async () => {
        const m = await import('/static/strip.js');
        return m.crc8(Array.from('123456789', (c) => c.charCodeAt(0)));
    }""") == 0xF4


def test_meta_ring_keeps_two_seconds(page) -> None:
    got = page.evaluate("""async () => {
        const { MetaRing } = await import('/static/meta.js');
        const r = new MetaRing(3.0);
        const t0 = 1764680000.0;
        for (let i = 0; i < 300; i++) {
            r.add({ type: 'frame', frame_id: 1000 + i, capture_time: t0 + i / 30 });
        }
        return { span: r.spanSeconds(), oldestKept: r.get(1000 + 299 - 60) !== null,
                 evicted: r.get(1000) === null, newest: r.get(1299).frame_id };
    }""")
    assert got["span"] >= 2.0
    assert got["oldestKept"] and got["evicted"] and got["newest"] == 1299


def test_outbox_survives_reload_and_supersedes_updates(page, static_origin) -> None:
    page.evaluate("""async () => {
        const { Outbox } = await import('/static/session.js');
        localStorage.clear();
        const o = new Outbox('scrubin.outbox.test');
        o.push({ event_id: 'e1', op: 'create', annotation_id: 'a', points: [[0.1, 0.1]] });
        o.push({ event_id: 'e2', op: 'update', annotation_id: 'a',
                 points: [[0.1, 0.1], [0.2, 0.2]] });
        o.push({ event_id: 'e3', op: 'update', annotation_id: 'a',
                 points: [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]] });
        o.push({ event_id: 'e4', op: 'create', annotation_id: 'b', points: [[0.5, 0.5]] });
        o.ack('e4');
    }""")
    page.reload()
    got = page.evaluate("""async () => {
        const { Outbox } = await import('/static/session.js');
        const o = new Outbox('scrubin.outbox.test');
        const ids = o.events.map((e) => e.event_id);
        localStorage.clear();
        return { ids, last: o.events[o.events.length - 1].points.length };
    }""")
    assert got == {"ids": ["e1", "e3"], "last": 3}


DRAW = """async ([events, meta]) => {
  const { AnnotationModel, drawAnnotations } = await import('/static/annotations.js');
  const c = document.createElement('canvas');
  c.width = 1280; c.height = 720;
  const g = c.getContext('2d', { willReadFrequently: true });
  const m = new AnnotationModel();
  for (const e of events) m.apply(e);
  const n = drawAnnotations(g, m, meta, performance.now() / 1000);
  const d = g.getImageData(0, 0, 1280, 720).data;
  // weighted centroid of pure-green pixels (the stroke) and their count
  let sx = 0, sy = 0, sw = 0, count = 0;
  for (let y = 0; y < 720; y++) for (let x = 0; x < 1280; x++) {
    const o = (y * 1280 + x) * 4;
    if (d[o + 1] > 0 && d[o] === 0 && d[o + 2] === 0) {
      const w = d[o + 3]; sx += w * x; sy += w * y; sw += w; count++;
    }
  }
  // pixel index x covers OpenCV coordinates [x - 0.5, x + 0.5]: the index is the coordinate
  return { drawn: n, count, cx: sw ? sx / sw : null, cy: sw ? sy / sw : null };
}"""


def _anchored_events(p_ref_mm: np.ndarray) -> list[dict]:
    return [
        {"op": "create", "annotation_id": "a", "kind": "freehand", "color": "#00ff00",
         "author": "", "points": [[0.1, 0.1], [0.1001, 0.1]]},
        {"op": "anchor", "annotation_id": "a", "anchor_state": "anchored",
         "anchors_ref_mm": [p_ref_mm.tolist(), p_ref_mm.tolist()]},
    ]


def test_anchored_annotation_drawn_at_cv2_projection_and_gated(page) -> None:
    # an anchored point (REF mm) is drawn where cv2.projectPoints puts it for this frame's pose
    t = _pose(np.array([10.0, -25.0, 4.0]), np.array([20.0, -10.0, 450.0]))
    k = np.array([[910.0, 0, 640.0], [0, 905.0, 361.0], [0, 0, 1]])
    dist = [-0.25, 0.09, 0.001, -0.0007, -0.015]
    p_ref = np.array([35.0, -40.0, 12.0])
    uv, _ = cv2.projectPoints(p_ref[None], cv2.Rodrigues(t[:3, :3])[0], t[:3, 3], k,
                              np.array(dist))
    meta = {"frame_id": 5, "capture_time": 1.0, "width": 1280, "height": 720,
            "K": [k[0, 0], k[1, 1], k[0, 2], k[1, 2]], "dist": dist,
            "T_camera_ref": t.ravel().tolist(), "tracking": "LIVE"}
    got = page.evaluate(DRAW, [_anchored_events(p_ref), meta])
    assert got["drawn"] == 1 and got["count"] > 4
    assert np.hypot(got["cx"] - uv[0, 0, 0], got["cy"] - uv[0, 0, 1]) < 0.5
    for state in ("STALE", "LOST"):       # hidden with the model
        assert page.evaluate(DRAW, [_anchored_events(p_ref), {**meta, "tracking": state}])[
            "count"] == 0
    hidden = [*_anchored_events(p_ref), {"op": "hide_all"}]
    assert page.evaluate(DRAW, [hidden, meta])["count"] == 0
    shown = [*hidden, {"op": "show_all"}]
    assert page.evaluate(DRAW, [shown, meta])["count"] > 4
    cleared = [*shown, {"op": "clear_all"}]
    assert page.evaluate(DRAW, [cleared, meta])["drawn"] == 0


def test_2d_annotation_dashed_in_screen_space(page) -> None:
    events = [{"op": "create", "annotation_id": "b", "kind": "freehand", "color": "#00ff00",
               "author": "", "points": [[0.1, 0.5], [0.6, 0.5]]},
              {"op": "anchor", "annotation_id": "b", "anchor_state": "2d",
               "anchors_ref_mm": [None, None]}]
    row = page.evaluate("""async ([events]) => {
        const { AnnotationModel, drawAnnotations } = await import('/static/annotations.js');
        const c = document.createElement('canvas'); c.width = 1280; c.height = 720;
        const g = c.getContext('2d', { willReadFrequently: true });
        const m = new AnnotationModel();
        for (const e of events) m.apply(e);
        drawAnnotations(g, m, { tracking: 'LOST' }, 0);
        // the stroke's row: pixel centre y = 0.5 * 720 - 0.5
        return Array.from(g.getImageData(0, 359, 1280, 1).data.filter((_, i) => i % 4 === 1));
    }""", [events])
    row = np.array(row)
    on = row[150:750] > 128
    assert on.any() and (~on).any()           # dashes and gaps, also while tracking is lost
    assert row[:120].max() == 0 and row[780:].max() == 0
