// Scrub In mentor / observer page (mentor/DESIGN.md). Plain ES modules, no build step.
//
// Wiring: join (token from the URL fragment -> cookie), the WebSocket session (session.js),
// the station's peer connection (video + audio + "meta" data channel), the frame-id strip
// and per-frame metadata (strip.js, meta.js), drawing tools and the overlay (annotations.js).
// Everything a test or the bench reads is on `window.scrubin`.

import { AnnotationModel, drawAnnotations, LASER_FADE_S } from './annotations.js';
import { MetaRing } from './meta.js';
import { Session } from './session.js';
import { bindStrokes } from './strokes.js';
import { readStrip, STRIP_ROWS } from './strip.js';
import { watchLink } from './link.js';
import { freshIceServers } from './ice.js';
import { SfuPath } from './sfu.js';

const $ = (id) => document.getElementById(id);
const wallAt = (t) => (performance.timeOrigin + t) / 1000;
const OFFER_RETRY_MS = 3000;

function median(a) {
  if (!a.length) return null;
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

function fragmentParams() {
  return new URLSearchParams(location.hash.startsWith('#') ? location.hash.slice(1) : '');
}

const state = {
  sessionId: decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || ''),
  role: null, author: null, canAnnotate: false,
  tool: 'freehand', color: '#ff2d2d',
  stroke: null, flushTimer: null, lastFlush: 0,
  pc: null, dc: null, peerState: 'new', offerTimer: null, videoReceiver: null,
  videoDelayMs: null,
  displayed: null,            // {frame_id, meta, display_wall}
  frameLog: [],               // per displayed frame: {frame_id, display_wall, capture_time, latency_s}
  pendingLatency: new Map(),  // frame_id -> display_wall (meta not yet arrived)
  myAnnotations: [],          // annotation ids this page created, in order
  firstMoveWall: new Map(),   // annotation_id -> wall time of the first pointermove (s)
  firstRawWall: new Map(),    // annotation_id -> wall time of the first pointerrawupdate (s)
  firstMoveHandled: new Map(), // annotation_id -> wall time its first pointermove was handled
  surgeonOnline: false, telemetry: null,
  micStream: null, muted: false, ptt: false, pttHeld: false,
  metaCount: 0,
  linkLost: [],               // wall times (s) the heartbeat declared the link lost
  seqLog: [],                 // seq of every annotation event applied, in order
  errors: [],                 // server error messages
};
const model = new AnnotationModel();
const metaRing = new MetaRing(3.0);
let session = null;

const video = $('video');
const canvas = $('overlay');
const ctx = canvas.getContext('2d');
const stripCanvas = document.createElement('canvas');
const stripCtx = stripCanvas.getContext('2d', { willReadFrequently: true });

// ---------------------------------------------------------------- status line
function setText(id, text) { const el = $(id); if (el) el.textContent = text; }

function updateStatus() {
  const ws = session ? session.state : 'connecting';
  setText('st-conn', `${ws} / video ${state.peerState}`);
  $('st-conn').dataset.state = ws;
  // the displayed frame's metadata, else the server's telemetry (no video yet)
  const m = (state.displayed && state.displayed.meta) || state.telemetry;
  // no frame displayed for 1 s (link lost, station gone): the last frame's LIVE would lie
  // age of the newest frame (ids only grow; a re-presented old frame or one without a valid
  // strip does not count as new video)
  let newest = 0, newestWall = 0;
  for (const f of state.frameLog.slice(-300)) {
    if (f.frame_id > newest) { newest = f.frame_id; newestWall = f.display_wall; }
  }
  const age = newest > 0 ? Date.now() / 1000 - newestWall : 0;
  const noVideo = age > 1.0 || String(state.peerState).startsWith('link lost');
  const track = noVideo ? `NO VIDEO ${Math.floor(age)} s` : (m ? m.tracking : '-');
  setText('st-track', track);
  $('st-track').dataset.state = noVideo ? 'LOST' : (m ? m.tracking : '');
  setText('st-fre', m && m.fre_mm != null ? `${m.fre_mm.toFixed(2)} mm` : '-');
  const recent = state.frameLog.slice(-60).map((f) => f.latency_s).filter((x) => x != null);
  const vl = median(recent);
  setText('st-video', vl == null ? '-' : `${Math.round(vl * 1000)} ms`);
  const rt = session ? median(session.roundTripsMs.slice(-30)) : null;
  setText('st-rtt', rt == null ? '-' : `${rt.toFixed(1)} ms`);
  setText('st-role', state.role ? `${state.author || ''} (${state.role})` : '-');
  setText('st-outbox', session ? String(session.outbox.size) : '0');
}
setInterval(updateStatus, 250);

// ---------------------------------------------------------------- drawing
let redrawQueued = false;
function redraw() {
  const meta = state.displayed ? state.displayed.meta : null;
  drawAnnotations(ctx, model, meta, performance.now() / 1000);
}
function queueRedraw() {
  if (redrawQueued) return;
  redrawQueued = true;
  requestAnimationFrame(() => { redrawQueued = false; redraw(); });
}
// lasers fade even when no frame arrives
setInterval(() => {
  for (const a of model.items.values()) {
    if (a.kind === 'laser' && performance.now() / 1000 - a.updatedS < LASER_FADE_S + 0.1) {
      queueRedraw(); break;
    }
  }
}, 50);

// ---------------------------------------------------------------- annotations out (strokes.js)
const strokes = bindStrokes({ state, model, canvas, session: () => session, redraw, queueRedraw });
const { undo, clearMine } = strokes;

// ---------------------------------------------------------------- annotations in
function onAnnotationEvent(msg) {
  const ev = msg.event || {};
  state.seqLog.push(msg.seq);
  model.apply(ev, performance.now() / 1000);
  queueRedraw();
}

// ---------------------------------------------------------------- video, strip, metadata
function onMeta(raw) {
  let m;
  try { m = JSON.parse(raw); } catch (_) { return; }
  if (m.type !== 'frame') return;
  state.metaCount += 1;
  metaRing.add(m);
  const dw = state.pendingLatency.get(m.frame_id);
  if (dw !== undefined) {
    state.pendingLatency.delete(m.frame_id);
    const rec = state.frameLog.find((f) => f.frame_id === m.frame_id && f.latency_s == null);
    if (rec) { rec.capture_time = m.capture_time; rec.latency_s = dw - m.capture_time; }
  }
}

function readFrameId() {
  const vw = video.videoWidth, vh = video.videoHeight;
  if (!vw || vh <= STRIP_ROWS) return null;
  if (stripCanvas.width !== vw) { stripCanvas.width = vw; stripCanvas.height = STRIP_ROWS; }
  stripCtx.drawImage(video, 0, vh - STRIP_ROWS, vw, STRIP_ROWS, 0, 0, vw, STRIP_ROWS);
  return readStrip(stripCtx.getImageData(0, 0, vw, STRIP_ROWS).data, vw, STRIP_ROWS);
}

function onVideoFrame(_now, md) {
  video.requestVideoFrameCallback(onVideoFrame);
  const fid = readFrameId();
  if (fid === null) return;
  const displayWall = wallAt(md.expectedDisplayTime);
  const meta = metaRing.get(fid);
  const viewH = video.videoHeight - STRIP_ROWS;
  if (canvas.width !== video.videoWidth || canvas.height !== viewH) {
    canvas.width = video.videoWidth; canvas.height = viewH;
  }
  state.displayed = { frame_id: fid, meta, display_wall: displayWall,
    presented: md.presentedFrames, rtp: md.rtpTimestamp };
  const rec = { frame_id: fid, display_wall: displayWall, presented: md.presentedFrames,
    capture_time: meta ? meta.capture_time : null,
    latency_s: meta ? displayWall - meta.capture_time : null };
  if (!meta) state.pendingLatency.set(fid, displayWall);
  state.frameLog.push(rec);
  if (state.frameLog.length > 20000) state.frameLog.splice(0, 10000);
  if (state.pendingLatency.size > 300) state.pendingLatency.clear();
  redraw();                 // anchored annotations re-projected with this frame's pose
}
video.requestVideoFrameCallback(onVideoFrame);

function applyVideoDelay() {
  if (state.videoReceiver && state.videoDelayMs !== null
      && 'jitterBufferTarget' in state.videoReceiver) {
    state.videoReceiver.jitterBufferTarget = state.videoDelayMs;
  }
}

// ---------------------------------------------------------------- link heartbeat, loss guard
const lossGuard = watchLink(state, { reconnect: () => startPeer(), redraw: () => updateStatus() });
state.lossGuard = lossGuard;
const sfu = new SfuPath(state, { closePeer: () => closePeer(), onMeta: (d) => onMeta(d) });

function closePeer() {
  clearTimeout(state.offerTimer);
  if (state.pc) { try { state.pc.close(); } catch (_) { /* closed */ } }
  state.pc = null; state.dc = null; state.videoReceiver = null;
}

async function startPeer() {
  if (sfu.wanted()) { sfu.start(); return; }   // observer under serve --sfu: from Janus
  closePeer();
  // a TURN credential issued now: the welcome's may have expired (DESIGN "Renewal")
  const iceServers = await freshIceServers((session.welcome && session.welcome.ice_servers) || []);
  closePeer();   // another startPeer may have run while this one waited
  const pc = new RTCPeerConnection({ iceServers });
  state.pc = pc;
  state.peerState = 'offering';
  const dc = pc.createDataChannel('meta');
  dc.onmessage = (e) => onMeta(e.data);
  state.dc = dc;
  const vt = pc.addTransceiver('video', { direction: 'recvonly' });
  try {
    const caps = RTCRtpReceiver.getCapabilities('video').codecs;
    const h264 = caps.filter((c) => c.mimeType === 'video/H264');
    if (h264.length) vt.setCodecPreferences([...h264, ...caps.filter((c) => c.mimeType !== 'video/H264')]);
  } catch (_) { /* keep Chromium's order */ }
  state.videoReceiver = vt.receiver;
  applyVideoDelay();
  const mic = state.micStream && state.micStream.getAudioTracks()[0];
  if (mic) pc.addTransceiver(mic, { direction: 'sendrecv', streams: [state.micStream] });
  else pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.ontrack = (e) => {
    if (e.track.kind === 'video') {
      video.srcObject = new MediaStream([e.track]);
      video.play().catch(() => {});
    } else {
      const au = $('audio');
      au.srcObject = new MediaStream([e.track]);
      au.play().catch(() => { $('audio-unlock').hidden = false; });
    }
  };
  pc.onconnectionstatechange = () => {
    if (state.pc !== pc) return;
    state.peerState = pc.connectionState;
    if (pc.connectionState === 'failed') setTimeout(() => { if (state.pc === pc) startPeer(); }, 500);
    if (pc.connectionState === 'disconnected') {
      setTimeout(() => { if (state.pc === pc && pc.connectionState !== 'connected') startPeer(); }, 3000);
    }
  };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  if (pc.iceGatheringState !== 'complete') {   // aiortc has no trickle ICE
    await new Promise((resolve) => {
      const t = setTimeout(resolve, 2000);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
      });
    });
  }
  if (state.pc !== pc) return;
  session.sendSignal({ sdp: pc.localDescription.sdp, sdp_type: 'offer' });
  state.offerTimer = setTimeout(() => {   // no answer: offer again while the station is there
    if (state.pc === pc && !pc.remoteDescription && state.surgeonOnline) startPeer();
  }, OFFER_RETRY_MS);
}

async function onSignal(msg) {
  const pc = state.pc;
  if (!pc || msg.sdp_type !== 'answer' || pc.signalingState !== 'have-local-offer') return;
  clearTimeout(state.offerTimer);
  state.peerId = msg.peer_id;
  await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
  state.peerState = 'answered';
}

// ---------------------------------------------------------------- voice
async function startMic() {
  try {
    state.micStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  } catch (_) {
    state.micStream = null;
    $('mic-state').textContent = 'no microphone';
  }
  applyMic();
}

function applyMic() {
  const track = state.micStream && state.micStream.getAudioTracks()[0];
  const live = !!track && !state.muted && (!state.ptt || state.pttHeld);
  if (track) track.enabled = live;
  $('btn-mute').setAttribute('aria-pressed', String(state.muted));
  $('btn-ptt').setAttribute('aria-pressed', String(state.ptt));
  if (track) $('mic-state').textContent = live ? 'mic live' : 'mic off';
}

// ---------------------------------------------------------------- UI
function bindUi() {
  for (const b of document.querySelectorAll('[data-tool]')) {
    b.addEventListener('click', () => {
      state.tool = b.dataset.tool;
      for (const o of document.querySelectorAll('[data-tool]')) {
        o.setAttribute('aria-pressed', String(o === b));
      }
    });
  }
  $('color').addEventListener('input', (e) => { state.color = e.target.value; });
  $('btn-undo').addEventListener('click', undo);
  $('btn-clear').addEventListener('click', clearMine);
  $('btn-mute').addEventListener('click', () => { state.muted = !state.muted; applyMic(); });
  $('btn-ptt').addEventListener('click', () => { state.ptt = !state.ptt; applyMic(); });
  const talk = (held) => { state.pttHeld = held; applyMic(); };
  $('btn-talk').addEventListener('pointerdown', () => talk(true));
  $('btn-talk').addEventListener('pointerup', () => talk(false));
  $('btn-talk').addEventListener('pointerleave', () => talk(false));
  window.addEventListener('keydown', (e) => {
    if (e.code === 'Space' && state.ptt && e.target === document.body) { e.preventDefault(); talk(true); }
    if ((e.ctrlKey || e.metaKey) && e.key === 'z') undo();
  });
  window.addEventListener('keyup', (e) => { if (e.code === 'Space' && state.ptt) talk(false); });
  $('audio-unlock').addEventListener('click', () => {
    $('audio').play().then(() => { $('audio-unlock').hidden = true; }).catch(() => {});
  });
}

function setRole(role, author) {
  state.role = role;
  state.author = author;
  state.canAnnotate = role === 'mentor' || role === 'surgeon';
  document.body.dataset.role = role;
  $('tools').hidden = !state.canAnnotate;
  $('voice').hidden = role === 'observer';
}

// ---------------------------------------------------------------- start
async function join() {
  const params = fragmentParams();
  const token = params.get('token');
  if (params.has('delay_ms')) state.videoDelayMs = Number(params.get('delay_ms'));
  if (token) {
    const r = await fetch('/api/join', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }),
    });
    if (!r.ok) throw new Error(`join refused (${r.status})`);
    params.delete('token');          // the token leaves the address bar and the history
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `#${rest}` : ''));
  }
}

async function main() {
  bindUi();
  try {
    await join();
  } catch (err) {
    setText('st-conn', String(err.message || err));
    $('st-conn').dataset.state = 'error';
    window.scrubin.error = String(err.message || err);
    return;
  }
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  session = new Session({ sessionId: state.sessionId, wsUrl: `${proto}//${location.host}/api/ws` });
  window.scrubin.session = session;
  sfu.attach(session);
  session.addEventListener('welcome', async (e) => {
    setRole(e.detail.role, e.detail.author);
    if (state.role !== 'observer' && !state.micStream) await startMic();
    state.surgeonOnline = !!e.detail.surgeon_online;
    const live = state.pc && ['connected', 'answered', 'connecting'].includes(state.peerState);
    if (state.surgeonOnline && !live) startPeer();
    if (!state.surgeonOnline) state.peerState = 'surgeon offline';
  });
  session.addEventListener('annotation', (e) => onAnnotationEvent(e.detail));
  session.addEventListener('signal', (e) => onSignal(e.detail));
  session.addEventListener('telemetry', (e) => { state.telemetry = e.detail; });
  session.addEventListener('state', updateStatus);
  session.addEventListener('presence', (e) => {
    const online = !!e.detail.surgeon_online;
    if (online && !state.surgeonOnline) startPeer();     // the station (re)joined
    if (!online) { closePeer(); state.peerState = 'surgeon offline'; }
    state.surgeonOnline = online;
  });
  session.addEventListener('servererror', (e) => {
    state.errors.push(e.detail.message);
    setText('st-error', e.detail.message);
  });
  session.connect();
}

window.scrubin = {
  state, model, metaRing, get session() { return session; }, set session(s) { session = s; },
  setVideoDelay(ms) { state.videoDelayMs = ms; applyVideoDelay(); },
  restartPeer() { return startPeer(); },
  undo, clearMine, redraw,
  frameLog: state.frameLog,
  error: null,
};
main();
