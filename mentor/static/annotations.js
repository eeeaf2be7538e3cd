// Annotation model (applies server events in seq order) and drawing on the overlay canvas.
//
// Screen-space annotations hold normalised points (mentor/DESIGN.md "Annotations"); anchored
// ones hold REF-frame points (mm) and are re-projected every displayed frame with that
// frame's T_CAMERA_REF, K and distortion (project.js). "2d" annotations are drawn dashed.
// Anchored annotations are hidden while tracking is STALE or LOST; hide_all hides everything
// until show_all; clear_all removes everything.

import { normToPixel, projectPointsRef } from './project.js';

export const LASER_FADE_S = 1.5;

export class AnnotationModel {
  constructor() {
    this.items = new Map();   // annotation_id -> annotation
    this.hiddenAll = false;
    this.version = 0;
  }

  /**
   * Apply one event. Local strokes being drawn keep their (newer) local points.
   * @param {object} ev  the AnnotationEvent
   * @param {number} nowS  receipt time, s (for the laser's fade)
   */
  apply(ev, nowS = performance.now() / 1000) {
    this.version += 1;
    const id = ev.annotation_id;
    switch (ev.op) {
      case 'create':
      case 'update': {
        const a = this.items.get(id) || {
          annotation_id: id, anchors_ref_mm: null, anchor_state: 'pending', local: false,
        };
        for (const k of ['kind', 'color', 'text', 'author', 'role', 'frame_id', 'capture_time']) {
          if (ev[k] !== undefined && ev[k] !== null && !(a.local && k === 'author' && !ev[k])) a[k] = ev[k];
        }
        if (!a.drawing && Array.isArray(ev.points)) a.points = ev.points;
        if (ev.anchor_state) a.anchor_state = ev.anchor_state;
        a.updatedS = nowS;
        this.items.set(id, a);
        break;
      }
      case 'anchor': {
        const a = this.items.get(id);
        if (!a) break;
        a.anchors_ref_mm = ev.anchors_ref_mm || null;
        const any = (a.anchors_ref_mm || []).some((p) => p !== null);
        a.anchor_state = ev.anchor_state || (any ? 'anchored' : '2d');
        if (Array.isArray(ev.points) && ev.points.length && !a.drawing) a.points = ev.points;
        break;
      }
      case 'delete':
        this.items.delete(id);
        break;
      case 'hide_all': this.hiddenAll = true; break;
      case 'show_all': this.hiddenAll = false; break;
      case 'clear_all': this.items.clear(); break;
      default: break;
    }
  }

  /** Add or replace a local annotation being drawn by this page. */
  setLocal(a) {
    this.version += 1;
    this.items.set(a.annotation_id, { anchor_state: 'pending', anchors_ref_mm: null, ...a, local: true });
  }
}

function pixelPath(a, meta, width, height, tracking) {
  // Returns {pts: [[u,v]|null...], dashed, anchored} or null when it must not be drawn.
  const anchors = a.anchors_ref_mm;
  if (a.anchor_state === 'anchored' && anchors && anchors.some((p) => p !== null)) {
    if (tracking === 'STALE' || tracking === 'LOST') return null;
    if (!meta || !meta.T_camera_ref || !meta.K) return null;
    const sx = width / (meta.width || width), sy = height / (meta.height || height);
    const pts = projectPointsRef(anchors, meta.T_camera_ref, meta.K, meta.dist)
      .map((p) => (p ? [(p[0] + 0.5) * sx - 0.5, (p[1] + 0.5) * sy - 0.5] : null));
    return { pts, dashed: false, anchored: true };
  }
  const pts = (a.points || []).map(([x, y]) => normToPixel(x, y, width, height));
  return { pts, dashed: a.anchor_state === '2d', anchored: false };
}

function strokePolyline(ctx, pts) {
  let pen = false;
  ctx.beginPath();
  for (const p of pts) {
    if (!p) { pen = false; continue; }
    // canvas pixel centres are at i + 0.5, OpenCV's at i
    if (pen) ctx.lineTo(p[0] + 0.5, p[1] + 0.5); else ctx.moveTo(p[0] + 0.5, p[1] + 0.5);
    pen = true;
  }
  ctx.stroke();
}

/**
 * Draw every visible annotation.
 * @param {CanvasRenderingContext2D} ctx  canvas of the 1280x720 view (strip excluded)
 * @param {AnnotationModel} model
 * @param {object|null} meta  the displayed frame's metadata (null: screen-space only)
 * @param {number} nowS  performance.now() / 1000
 * @returns {number} how many annotations were drawn
 */
export function drawAnnotations(ctx, model, meta, nowS) {
  const { width, height } = ctx.canvas;
  ctx.clearRect(0, 0, width, height);
  if (model.hiddenAll) return 0;
  const tracking = meta ? meta.tracking : null;
  const lw = Math.max(2, width / 320);
  let drawn = 0;
  for (const a of model.items.values()) {
    let alpha = 1;
    if (a.kind === 'laser') {
      alpha = 1 - (nowS - (a.updatedS ?? nowS)) / LASER_FADE_S;
      if (alpha <= 0 && !a.drawing) continue;
      alpha = Math.max(alpha, a.drawing ? 1 : 0);
    }
    const path = pixelPath(a, meta, width, height, tracking);
    if (!path) continue;
    const pts = path.pts;
    if (!pts.length || pts.every((p) => p === null)) continue;
    ctx.save();
    ctx.globalAlpha = alpha;
    ctx.strokeStyle = a.color || '#ff0000';
    ctx.fillStyle = a.color || '#ff0000';
    ctx.lineWidth = lw;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.setLineDash(path.dashed ? [4 * lw, 3 * lw] : []);
    const p0 = pts.find((p) => p) || [0, 0];
    const plast = [...pts].reverse().find((p) => p) || p0;
    if (a.kind === 'arrow' && pts.length >= 2 && pts[0] && plast) {
      strokePolyline(ctx, [pts[0], plast]);
      const ang = Math.atan2(plast[1] - pts[0][1], plast[0] - pts[0][0]);
      const h = 6 * lw;
      ctx.setLineDash([]);
      ctx.beginPath();
      ctx.moveTo(plast[0] + 0.5, plast[1] + 0.5);
      ctx.lineTo(plast[0] + 0.5 - h * Math.cos(ang - 0.45), plast[1] + 0.5 - h * Math.sin(ang - 0.45));
      ctx.lineTo(plast[0] + 0.5 - h * Math.cos(ang + 0.45), plast[1] + 0.5 - h * Math.sin(ang + 0.45));
      ctx.closePath();
      ctx.fill();
    } else if (a.kind === 'circle' && pts.length >= 2 && pts[0] && plast) {
      const r = Math.hypot(plast[0] - pts[0][0], plast[1] - pts[0][1]);
      ctx.beginPath();
      ctx.arc(pts[0][0] + 0.5, pts[0][1] + 0.5, r, 0, 2 * Math.PI);
      ctx.stroke();
    } else if (a.kind === 'text') {
      ctx.font = `${Math.round(12 * lw)}px sans-serif`;
      ctx.textBaseline = 'middle';
      ctx.fillText(a.text || '', p0[0] + 0.5, p0[1] + 0.5);
    } else if (a.kind === 'laser') {
      strokePolyline(ctx, pts.slice(-8));
      ctx.beginPath();
      ctx.arc(plast[0] + 0.5, plast[1] + 0.5, 3 * lw, 0, 2 * Math.PI);
      ctx.fill();
    } else if (pts.length === 1 || pts.every((p) => !p || Math.hypot(p[0] - p0[0], p[1] - p0[1]) < 0.5)) {
      // a tap (or a stroke that re-projects to one pixel): a dot, not a degenerate line
      ctx.beginPath();
      ctx.arc(p0[0] + 0.5, p0[1] + 0.5, lw, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      strokePolyline(ctx, pts);
    }
    if (a.author && a.kind !== 'laser') {
      ctx.setLineDash([]);
      ctx.globalAlpha = 0.85 * alpha;
      ctx.font = `${Math.round(6 * lw)}px sans-serif`;
      ctx.textBaseline = 'bottom';
      ctx.fillText(a.author, plast[0] + 0.5 + 2 * lw, plast[1] + 0.5 - 2 * lw);
    }
    ctx.restore();
    drawn += 1;
  }
  return drawn;
}
