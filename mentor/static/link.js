// The page's link heartbeat and loss guard (mentor/DESIGN.md "Link loss").
//
// Heartbeat: "hb" on the "meta" data channel every 0.25 s (the station holds the page to it);
// no packet at all on the peer connection (transport bytesReceived) for 1 s while connected =
// link lost: recorded in state.linkLost, shown, and a new peer connection (aiortc has no ICE
// restart). Silence counts at most 0.5 s per 0.25 s tick: a stalled page is not a silent link.
// Observers under serve --sfu (sfu.js): no channel to the station (state.dc null), so no "hb";
// loss is judged on the bytes from Janus alone, and reconnect() subscribes again.
//
// Loss guard: under packet loss each lost video packet waits one NACK round trip for its
// retransmission; Chromium's jitter buffer does not wait that long and the picture freezes.
// While NACKs are being sent (the last 5 s) the page asks for a playout delay of 3 RTT + 60 ms
// (at most 800 ms) and drops it 10 s after the last NACK. RTT is the mean of the ICE pair's
// consent-check round trips, and the target is never lowered while lossy: Chromium lowers its
// delay smoothly but raises it at once, a freeze as long as the rise, so a target that follows
// each RTT reading (they swing with the jitter) froze the picture itself. Measured at 5 % loss,
// 80 +- 20 ms (tests/mentor/test_faults_page.py, 10 s windows, 2026-12-02): per-reading
// 2 RTT + 60: 0-12 % of the time frozen; per-reading 3 RTT: freezes in 3 of 16 runs; mean,
// held, 2 RTT: freezes in 3 of 8; mean, held, 3 RTT: 0 freezes in 16 of 16, capture-to-display
// p50 0.58-0.83 s. Setting the same target again every second made it worse (freezes in 4 of 10
// runs, Chromium holding ~0.35 s under a 0.5 s target), so it is set on a change only.
// An explicit delay (fragment delay_ms, setVideoDelay: state.videoDelayMs) wins.

export const HB_MS = 250;
export const LINK_LOST_S = 1.0;
const RTT_MULT = 3;
const TARGET_MAX_MS = 800;

export function watchLink(state, { reconnect, redraw }) {
  const link = { rx: -1, silentS: 0, lastPoll: performance.now() };
  setInterval(async () => {
    const pc = state.pc, dc = state.dc;
    if (dc && dc.readyState === 'open') {
      try { dc.send(JSON.stringify({ type: 'hb', t: Date.now() / 1000 })); } catch (_) { /* closing */ }
    }
    const now = performance.now();
    const step = Math.min((now - link.lastPoll) / 1000, 2 * HB_MS / 1000);
    link.lastPoll = now;
    if (!pc || pc.connectionState !== 'connected') { link.rx = -1; link.silentS = 0; return; }
    let n = 0;
    try {
      (await pc.getStats()).forEach((s) => { if (s.type === 'transport') n += (s.bytesReceived || 0); });
    } catch (_) { return; }
    if (state.pc !== pc) return;
    link.silentS = n !== link.rx ? 0 : link.silentS + step;
    link.rx = n;
    if (link.silentS > LINK_LOST_S) {
      link.silentS = 0;
      state.linkLost.push(Date.now() / 1000);
      reconnect().then(() => { state.peerState = 'link lost, reconnecting'; }).catch(() => {});
      state.peerState = 'link lost, reconnecting';
      redraw();
    }
  }, HB_MS);

  // history: the last 60 s of {t, target, rtt, jb, chromeTarget, chromeMin, freezes} (ms; for
  // the fault tests and a support session: Chromium's own per-frame delays next to the target)
  const guard = { nack: -1, lastNackAt: -1e9, targetMs: null, pc: null, rttMs: 0, history: [],
    prev: null };
  setInterval(async () => {
    const pc = state.pc, recv = state.videoReceiver;
    if (!pc || !recv || state.videoDelayMs !== null || !('jitterBufferTarget' in recv)) return;
    if (guard.pc !== pc) Object.assign(guard, { pc, nack: -1, targetMs: null, rttMs: 0, prev: null });
    let nack = 0, rtt = null, v = null;
    try {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') { v = s; nack = s.nackCount || 0; }
        // the mean of the pair's consent-check round trips: one reading swings with the jitter
        if (s.type === 'candidate-pair' && s.nominated && s.responsesReceived > 0) {
          rtt = s.totalRoundTripTime / s.responsesReceived;
        }
      });
    } catch (_) { return; }
    if (state.pc !== pc) return;
    const now = performance.now();
    if (guard.nack >= 0 && nack > guard.nack) guard.lastNackAt = now;
    guard.nack = nack;
    let target = null;
    if (now - guard.lastNackAt < 5000) {
      // never lowered while lossy: Chromium lowers its delay smoothly but raises it at once
      // (a freeze as long as the rise)
      guard.rttMs = Math.max(guard.rttMs, 1000 * (rtt == null ? 0.2 : rtt));
      target = Math.min(TARGET_MAX_MS, Math.round(RTT_MULT * guard.rttMs + 60));
    } else if (now - guard.lastNackAt < 10000) {
      target = guard.targetMs;
    } else {
      guard.rttMs = 0;
    }
    if (v) noteDelays(guard, v, target, rtt);
    if (target !== guard.targetMs) {
      guard.targetMs = target;
      recv.jitterBufferTarget = target;
    }
  }, 1000);
  return guard;
}

function noteDelays(guard, v, target, rtt) {
  const cur = { n: v.jitterBufferEmittedCount || 0, jb: v.jitterBufferDelay || 0,
    tgt: v.jitterBufferTargetDelay || 0, min: v.jitterBufferMinimumDelay || 0 };
  const p = guard.prev, n = p ? cur.n - p.n : 0;
  guard.prev = cur;
  if (n <= 0) return;
  const per = (k) => Math.round(1000 * (cur[k] - p[k]) / n);
  guard.history.push({ t: Date.now() / 1000, target, rtt: rtt == null ? null : Math.round(1000 * rtt),
    jb: per('jb'), chromeTarget: per('tgt'), chromeMin: per('min'), freezes: v.freezeCount || 0 });
  if (guard.history.length > 60) guard.history.shift();
}
