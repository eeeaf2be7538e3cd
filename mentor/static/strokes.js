// Drawing input of the mentor page (mentor/DESIGN.md "Annotations"): pointer strokes, text,
// undo and clear, turned into annotation events sent through the session (its outbox first).
//
// A stroke's first move is sent at once, later moves coalesced to <= 16 ms. Chromium dispatches
// pointermove aligned to animation frames (up to a frame after the input arrived) and
// pointerrawupdate (secure contexts: the page is HTTPS) as soon as the input arrives: where the
// browser has it, points and sends come from pointerrawupdate; pointermove then only redraws
// the page's own stroke, and does everything where pointerrawupdate does not exist. The first
// pointermove's event timestamp (the input's time) is kept in state.firstMoveWall: the start of
// the annotation latency the bench measures, whichever event sent the move.

import { uuid } from './session.js';

const COALESCE_MS = 16;
const wallNow = () => (performance.timeOrigin + performance.now()) / 1000;
const wallAt = (t) => (performance.timeOrigin + t) / 1000;

/**
 * Bind the drawing tools to the overlay canvas.
 * @param {object} page
 * @param {object} page.state  the page state (tool, colour, role, stroke, displayed frame, ...)
 * @param {object} page.model  the AnnotationModel
 * @param {HTMLCanvasElement} page.canvas  the overlay canvas (1280x720 view)
 * @param {function} page.session  returns the current Session
 * @param {function} page.redraw  redraw the overlay now
 * @param {function} page.queueRedraw  redraw on the next animation frame
 * @returns {{undo: function, clearMine: function}}
 */
export function bindStrokes({ state, model, canvas, session, redraw, queueRedraw }) {
  // t: the performance.now() reading the event is stamped with (client_time)
  function eventBase(op, a, t = performance.now()) {
    return {
      event_id: uuid(), op, annotation_id: a.annotation_id, kind: a.kind, color: a.color,
      text: a.text || '', frame_id: a.frame_id, capture_time: a.capture_time,
      points: a.points.map((p) => [p[0], p[1]]), anchor_state: 'pending', client_time: wallAt(t),
    };
  }

  // one clock reading per flush: it is both the coalescing time and the event's client_time
  // (stamped apart, a pause between the two made sends 15.3 ms apart in a CI run)
  function flushStroke() {
    clearTimeout(state.flushTimer);
    state.flushTimer = null;
    const s = state.stroke;
    if (!s || !s.dirty) return;
    s.dirty = false;
    const t = performance.now();
    state.lastFlush = t;
    session().sendAnnotation(eventBase('update', s, t));
  }

  function scheduleFlush() {
    if (state.flushTimer) return;
    const wait = COALESCE_MS - (performance.now() - state.lastFlush);
    if (wait <= 0) flushStroke();
    // a timer may fire a fraction of a millisecond early on the page's clock: check again
    else state.flushTimer = setTimeout(() => { state.flushTimer = null; scheduleFlush(); }, wait);
  }

  function normOf(e) {
    const r = canvas.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)),
      Math.min(1, Math.max(0, (e.clientY - r.top) / r.height))];
  }

  function currentFrame() {
    const d = state.displayed;
    return d ? { frame_id: d.frame_id, capture_time: d.meta ? d.meta.capture_time : null }
      : { frame_id: null, capture_time: null };
  }

  function startAnnotation(kind, p, extra = {}) {
    const f = currentFrame();
    const a = {
      annotation_id: uuid(), kind, color: state.color, text: '', points: [p],
      frame_id: f.frame_id, capture_time: f.capture_time, author: state.author, role: state.role,
      ...extra,
    };
    state.myAnnotations.push(a.annotation_id);
    return a;
  }

  canvas.addEventListener('pointerdown', (e) => {
    if (!state.canAnnotate || e.button !== 0) return;
    e.preventDefault();
    const p = normOf(e);
    if (state.tool === 'text') { openTextInput(e, p); return; }
    canvas.setPointerCapture(e.pointerId);
    const a = startAnnotation(state.tool, p,
      { drawing: true, updatedS: performance.now() / 1000 });
    state.stroke = { ...a, pointerId: e.pointerId, dirty: false, moved: false };
    model.setLocal(a);
    redraw();
    state.lastFlush = performance.now();
    session().sendAnnotation(eventBase('create', a));
  });

  // moves from pointerrawupdate where the browser has it (module comment)
  const RAW_UPDATES = 'onpointerrawupdate' in window;

  function takeMove(s, e) {
    const first = !s.moved;
    s.moved = true;
    const evs = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    const pts = (evs.length ? evs : [e]).map(normOf);
    if (s.kind === 'arrow' || s.kind === 'circle') s.points = [s.points[0], pts[pts.length - 1]];
    else s.points.push(...pts);
    s.dirty = true;
    const local = model.items.get(s.annotation_id);
    if (local) { local.points = s.points; local.updatedS = performance.now() / 1000; }
    if (first) flushStroke();   // the first move goes out at once (it starts the visible stroke)
    else scheduleFlush();       // the rest coalesced to <= 16 ms
  }

  if (RAW_UPDATES) {
    canvas.addEventListener('pointerrawupdate', (e) => {
      const s = state.stroke;
      if (!s || e.pointerId !== s.pointerId) return;
      if (!s.raw) { s.raw = true; state.firstRawWall.set(s.annotation_id, wallAt(e.timeStamp)); }
      takeMove(s, e);
    });
  }

  canvas.addEventListener('pointermove', (e) => {
    const s = state.stroke;
    if (!s || e.pointerId !== s.pointerId) return;
    if (!state.firstMoveWall.has(s.annotation_id)) {
      state.firstMoveWall.set(s.annotation_id, wallAt(e.timeStamp));
      state.firstMoveHandled.set(s.annotation_id, wallNow());
    }
    if (!s.raw) takeMove(s, e);  // no pointerrawupdate came for this stroke: points from here
    redraw();
  });

  function endStroke(e) {
    const s = state.stroke;
    if (!s || (e && e.pointerId !== s.pointerId)) return;
    flushStroke();
    const local = model.items.get(s.annotation_id);
    if (local) local.drawing = false;
    state.stroke = null;
    queueRedraw();
  }
  canvas.addEventListener('pointerup', endStroke);
  canvas.addEventListener('pointercancel', endStroke);
  // a reload mid-stroke: the points drawn so far go to the outbox (localStorage) first
  window.addEventListener('pagehide', () => { if (state.stroke) flushStroke(); });

  function openTextInput(e, p) {
    const input = document.getElementById('text-input');
    const r = canvas.parentElement.getBoundingClientRect();
    input.style.left = `${e.clientX - r.left}px`;
    input.style.top = `${e.clientY - r.top}px`;
    input.hidden = false;
    input.value = '';
    input.focus();
    input.onkeydown = (k) => {
      if (k.key === 'Escape') { input.hidden = true; return; }
      if (k.key !== 'Enter') return;
      input.hidden = true;
      if (!input.value.trim()) return;
      const a = startAnnotation('text', p, { text: input.value });
      model.setLocal(a);
      model.items.get(a.annotation_id).drawing = false;
      redraw();
      session().sendAnnotation(eventBase('create', a));
    };
  }

  function deleteAnnotation(id) {
    const a = model.items.get(id);
    if (!a) return false;
    model.apply({ op: 'delete', annotation_id: id });
    session().sendAnnotation({
      event_id: uuid(), op: 'delete', annotation_id: id, kind: a.kind, color: a.color, text: '',
      frame_id: a.frame_id ?? null, capture_time: a.capture_time ?? null, points: [],
      anchor_state: a.anchor_state, client_time: wallNow(),
    });
    return true;
  }

  function undo() {
    while (state.myAnnotations.length) {
      if (deleteAnnotation(state.myAnnotations.pop())) break;
    }
    redraw();
  }

  function clearMine() {
    for (const a of [...model.items.values()]) {
      if (a.local || (a.author && a.author === state.author)) deleteAnnotation(a.annotation_id);
    }
    state.myAnnotations = [];
    redraw();
  }

  return { undo, clearMine };
}
