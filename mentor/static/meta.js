// Per-frame metadata from the station's "meta" data channel, keyed by frame id.
//
// requestVideoFrameCallback skips frames and the video lags the data channel by the jitter
// buffer, so the page keeps every frame's metadata for at least `keepSeconds` of capture
// time (mentor/DESIGN.md: >= 2 s) and looks the displayed frame up by the id in its strip.

export class MetaRing {
  /** @param {number} keepSeconds  capture-time span kept behind the newest frame (s) */
  constructor(keepSeconds = 3.0) {
    this.keepSeconds = keepSeconds;
    this.byId = new Map();      // frame_id -> meta (insertion order = arrival order)
    this.newestCapture = -Infinity;
  }

  /** Add one "frame" message; evicts entries older than keepSeconds behind the newest. */
  add(meta) {
    if (!meta || typeof meta.frame_id !== 'number') return;
    this.byId.set(meta.frame_id, meta);
    if (meta.capture_time > this.newestCapture) this.newestCapture = meta.capture_time;
    const horizon = this.newestCapture - this.keepSeconds;
    for (const [id, m] of this.byId) {
      if (m.capture_time >= horizon) break;
      this.byId.delete(id);
    }
  }

  /** Metadata of frame `frameId`, or null when it is unknown (too old or not yet arrived). */
  get(frameId) {
    return this.byId.get(frameId) ?? null;
  }

  /** Capture-time span held, in seconds. */
  spanSeconds() {
    let oldest = Infinity;
    for (const m of this.byId.values()) { oldest = m.capture_time; break; }
    return this.byId.size ? this.newestCapture - oldest : 0;
  }

  get size() { return this.byId.size; }
}
