// WebSocket session with the server (mentor/DESIGN.md "WebSocket /api/ws", "Annotations").
//
// Exactly-once, in-order delivery across drops and reloads:
// - every outgoing annotation event is written to an outbox in localStorage *before* it is
//   sent, and removed when the server acknowledges its event_id (ack, or its own broadcast);
// - on (re)connection the page says hello {after_seq: last seq seen in this page}, the server
//   replays seq > after_seq, and the outbox is resent in order (the server dedupes by event_id);
// - events with seq <= the last seen are dropped, so a replay never applies twice;
// - a later "update" of the same annotation supersedes an unacknowledged earlier one (the
//   points list is complete in each update), so the outbox stays small while drawing.

const BACKOFF_MS = [100, 250, 500, 1000, 2000, 4000];

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class Outbox {
  /** @param {string} key  localStorage key (one per session) */
  constructor(key, storage = globalThis.localStorage) {
    this.key = key;
    this.storage = storage;
    this.events = [];
    try {
      const raw = storage.getItem(key);
      if (raw) this.events = JSON.parse(raw);
    } catch (_) { this.events = []; }
  }

  persist() {
    if (this.events.length) this.storage.setItem(this.key, JSON.stringify(this.events));
    else this.storage.removeItem(this.key);
  }

  /** Queue an event (persisted at once); an "update" replaces unacked updates of its annotation. */
  push(event) {
    if (event.op === 'update') {
      this.events = this.events.filter(
        (e) => !(e.op === 'update' && e.annotation_id === event.annotation_id));
    }
    this.events.push(event);
    this.persist();
  }

  /** Remove an acknowledged event; returns true when it was queued. */
  ack(eventId) {
    const n = this.events.length;
    this.events = this.events.filter((e) => e.event_id !== eventId);
    if (this.events.length !== n) { this.persist(); return true; }
    return false;
  }

  get size() { return this.events.length; }
}

export class Session extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.sessionId
   * @param {string} opts.wsUrl  absolute ws(s):// URL of /api/ws
   */
  constructor({ sessionId, wsUrl }) {
    super();
    this.sessionId = sessionId;
    this.wsUrl = wsUrl;
    this.outbox = new Outbox(`scrubin.outbox.${sessionId}`);
    this.lastSeq = 0;
    this.ws = null;
    this.state = 'connecting';
    this.welcome = null;
    this.attempt = 0;
    this.sentAt = new Map();      // event_id -> performance.now() of the first send
    this.roundTripsMs = [];       // recent annotation round trips (send -> ack), ms
    this.pingMs = [];
    this.outboxWriteMs = [];      // recent outbox writes (localStorage) before a send, ms
    this.closedByUser = false;
    this.stats = { sent: 0, acked: 0, replayedDropped: 0, reconnects: 0 };
  }

  _setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  connect() {
    this.closedByUser = false;
    const ws = new WebSocket(this.wsUrl);
    this.ws = ws;
    this._setState(this.attempt ? 'reconnecting' : 'connecting');
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'hello', after_seq: this.lastSeq }));
    };
    ws.onmessage = (m) => this._onMessage(JSON.parse(m.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      // nothing is sent on the next socket before its welcome: the outbox then goes out in
      // order, so an update never reaches the server ahead of its unacknowledged create
      this.welcome = null;
      if (this.closedByUser) { this._setState('closed'); return; }
      this._setState('reconnecting');
      const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
      this.attempt += 1;
      this.stats.reconnects += 1;
      setTimeout(() => this.connect(), delay);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  /** Close without reconnecting. */
  close() {
    this.closedByUser = true;
    if (this.ws) this.ws.close();
  }

  /** Drop the link as a network failure would (the session reconnects by itself). */
  dropLink() {
    if (this.ws) this.ws.close(4000, 'dropped');
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.welcome !== null;
  }

  _send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  /** Queue an annotation event (persisted first) and send it when the link is up. */
  sendAnnotation(event) {
    const t0 = performance.now();
    this.outbox.push(event);
    this.outboxWriteMs.push(performance.now() - t0);
    if (this.outboxWriteMs.length > 200) this.outboxWriteMs.shift();
    if (!this.sentAt.has(event.event_id)) this.sentAt.set(event.event_id, performance.now());
    if (this.open) { this._send({ type: 'annotation', event }); this.stats.sent += 1; }
  }

  sendSignal(msg) { this._send({ type: 'signal', ...msg }); }

  _flushOutbox() {
    for (const event of this.outbox.events) {
      if (!this.sentAt.has(event.event_id)) this.sentAt.set(event.event_id, performance.now());
      this._send({ type: 'annotation', event });
      this.stats.sent += 1;
    }
  }

  _acked(eventId) {
    if (this.outbox.ack(eventId)) this.stats.acked += 1;
    const t0 = this.sentAt.get(eventId);
    if (t0 !== undefined) {
      this.sentAt.delete(eventId);
      this.roundTripsMs.push(performance.now() - t0);
      if (this.roundTripsMs.length > 200) this.roundTripsMs.shift();
    }
  }

  _onMessage(msg) {
    switch (msg.type) {
      case 'welcome':
        this.welcome = msg;
        this.attempt = 0;
        this._setState('connected');
        this.dispatchEvent(new CustomEvent('welcome', { detail: msg }));
        this._flushOutbox();
        this._pingTimer = this._pingTimer || setInterval(
          () => this._send({ type: 'ping', t: performance.now() }), 2000);
        break;
      case 'event':
        if (msg.seq <= this.lastSeq) { this.stats.replayedDropped += 1; return; }
        this.lastSeq = msg.seq;
        if (msg.event && msg.event.event_id) this._acked(msg.event.event_id);
        this.dispatchEvent(new CustomEvent('annotation', { detail: msg }));
        break;
      case 'ack':
        this._acked(msg.event_id);
        break;
      case 'signal':
        this.dispatchEvent(new CustomEvent('signal', { detail: msg }));
        break;
      case 'telemetry':
        this.dispatchEvent(new CustomEvent('telemetry', { detail: msg }));
        break;
      case 'pong':
        this.pingMs.push(performance.now() - msg.t);
        if (this.pingMs.length > 50) this.pingMs.shift();
        break;
      case 'error':
        // a refused event is never accepted on resend: drop it from the outbox
        if (msg.event_id) { this.outbox.ack(msg.event_id); this.sentAt.delete(msg.event_id); }
        this.dispatchEvent(new CustomEvent('servererror', { detail: msg }));
        break;
      default:
        this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
    }
  }
}
