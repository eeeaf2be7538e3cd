// Opens a recording the way Foxglove Studio does, in a real browser, and reports what it saw.
//
// 1. Studio's own MCAP data source: the web worker of @foxglove/studio-base 1.48.0's prebuilt
//    bundle (McapIterableSourceWorker: McapIndexedReader + Studio's parseChannel for every
//    channel), driven over comlink exactly as Studio's WorkerIterableSource drives it:
//    initialize({file}) -> source.initialize() -> source.messageIterator({topics}).
// 2. foxglove.CompressedVideo through WebCodecs the way Foxglove's video player feeds it
//    (foxglove.CompressedVideo schema text, @foxglove/schemas 2.1.0: Annex B, one frame per
//    message, SPS in every keyframe message; the player configures the VideoDecoder from the
//    keyframe's SPS with optimizeForLatency, marks a chunk "key" when it holds an IDR NAL unit,
//    time-stamps it in microseconds from the first frame, and waits for each picture before the
//    next message). This file is ours: H.264 parsing per ITU-T H.264 sections 7.3.1 / 7.3.2.1.1.
//
// window.studioCheck(mcapUrl, workerUrl, stripRows) resolves to a JSON-able report.

"use strict";

const NAL_IDR = 5;
const NAL_SPS = 7;

/** NAL units of an Annex B access unit (ITU-T H.264 Annex B.1): [{type, body}] */
function nalUnits(data) {
  const out = [];
  const starts = [];
  for (let i = 0; i + 2 < data.length; i++) {
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) {
      starts.push(i + 3);
      i += 2;
    }
  }
  for (let k = 0; k < starts.length; k++) {
    let end = k + 1 < starts.length ? starts[k + 1] - 3 : data.length;
    while (end > starts[k] && data[end - 1] === 0) end--; // zero_byte of a 4-byte start code
    out.push({ type: data[starts[k]] & 0x1f, body: data.subarray(starts[k], end) });
  }
  return out;
}

/** RBSP bit reader: emulation prevention bytes removed (H.264 7.4.1), Exp-Golomb (9.1). */
class Bits {
  constructor(nal) {
    const rbsp = [];
    for (let i = 0; i < nal.length; i++) {
      if (i >= 2 && nal[i] === 3 && nal[i - 1] === 0 && nal[i - 2] === 0) continue;
      rbsp.push(nal[i]);
    }
    this.b = rbsp;
    this.pos = 0;
  }
  u(n) {
    let v = 0;
    for (let k = 0; k < n; k++) {
      const byte = this.b[this.pos >> 3];
      if (byte === undefined) throw new Error("SPS truncated");
      v = v * 2 + ((byte >> (7 - (this.pos & 7))) & 1);
      this.pos++;
    }
    return v;
  }
  ue() {
    let zeros = 0;
    while (this.u(1) === 0) zeros++;
    return 2 ** zeros - 1 + this.u(zeros);
  }
  se() {
    const k = this.ue();
    return k % 2 ? (k + 1) / 2 : -k / 2;
  }
}

/** seq_parameter_set_data (H.264 7.3.2.1.1): codec string and picture size after cropping. */
function parseSps(body) {
  const r = new Bits(body);
  r.u(8); // forbidden_zero_bit, nal_ref_idc, nal_unit_type
  const profile = r.u(8);
  const constraints = r.u(8);
  const level = r.u(8);
  r.ue(); // seq_parameter_set_id
  let chroma = 1;
  if ([100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].includes(profile)) {
    chroma = r.ue();
    if (chroma === 3) r.u(1);
    r.ue();
    r.ue();
    r.u(1);
    if (r.u(1)) {
      for (let i = 0; i < (chroma !== 3 ? 8 : 12); i++) {
        if (r.u(1)) {
          let last = 8;
          let next = 8;
          for (let j = 0; j < (i < 6 ? 16 : 64); j++) {
            if (next !== 0) next = (last + r.se() + 256) % 256;
            last = next === 0 ? last : next;
          }
        }
      }
    }
  }
  r.ue(); // log2_max_frame_num_minus4
  const pocType = r.ue();
  if (pocType === 0) r.ue();
  else if (pocType === 1) {
    r.u(1);
    r.se();
    r.se();
    const n = r.ue();
    for (let i = 0; i < n; i++) r.se();
  }
  r.ue(); // max_num_ref_frames
  r.u(1);
  const wMbs = r.ue() + 1;
  const hMapUnits = r.ue() + 1;
  const frameMbsOnly = r.u(1);
  if (!frameMbsOnly) r.u(1);
  r.u(1); // direct_8x8_inference_flag
  let crop = [0, 0, 0, 0];
  if (r.u(1)) crop = [r.ue(), r.ue(), r.ue(), r.ue()];
  const cropX = chroma === 0 || chroma === 3 ? 1 : 2;
  const cropY = (chroma === 1 ? 2 : 1) * (2 - frameMbsOnly);
  const hex = (v) => v.toString(16).padStart(2, "0");
  return {
    codec: `avc1.${hex(profile)}${hex(constraints)}${hex(level)}`,
    profile,
    level,
    width: wMbs * 16 - cropX * (crop[0] + crop[1]),
    height: (2 - frameMbsOnly) * hMapUnits * 16 - cropY * (crop[2] + crop[3]),
  };
}

function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** A Studio-decoded message as JSON: bytes as base64 (the JSON-schema form of `bytes`). */
function jsonable(v) {
  if (v instanceof Uint8Array) return b64(v);
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return Array.from(v, jsonable);
  if (v && typeof v === "object") {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = jsonable(x);
    return o;
  }
  return v;
}

function problemText(p) {
  const e = p.error ? `: ${p.error.message ?? p.error}` : "";
  return `${p.severity}: ${p.message}${e}`;
}

async function openWithStudio(mcapUrl, workerUrl) {
  const blob = await (await fetch(mcapUrl)).blob();
  const file = new File([blob], "session.mcap");
  const worker = new Worker(workerUrl);
  const workerErrors = [];
  worker.onerror = (e) => workerErrors.push(String(e.message));
  try {
    const initialize = Comlink.wrap(worker);
    const source = await initialize({ file });
    const init = await source.initialize();
    const topics = init.topics.map((t) => t.name);
    const cursor = await source.messageIterator({ topics });
    const events = [];
    const problems = init.problems.map(problemText);
    for (;;) {
      const r = await cursor.next();
      if (r.done) break;
      if (r.value.type === "message-event") events.push(r.value.msgEvent);
      else if (r.value.type === "problem") problems.push(problemText(r.value.problem));
    }
    return { init, topics, events, problems: problems.concat(workerErrors) };
  } finally {
    worker.terminate();
  }
}

/** Feed CompressedVideo messages to WebCodecs as Foxglove's player does (header comment). */
async function decodeVideo(videoEvents, stripRows, waitMs) {
  const out = { config: null, supported: null, frames: [], errors: [], skipped: 0 };
  let pending = null;
  const decoder = new VideoDecoder({
    output: (frame) => {
      if (pending) pending(frame);
      else frame.close();
    },
    error: (e) => out.errors.push(String(e.message ?? e)),
  });
  const t0 = videoEvents.length ? videoEvents[0].message.timestamp : null;
  for (const [k, ev] of videoEvents.entries()) {
    const msg = ev.message;
    const nals = nalUnits(msg.data);
    const key = nals.some((n) => n.type === NAL_IDR);
    const sps = nals.find((n) => n.type === NAL_SPS);
    const info = {
      index: k,
      format: msg.format,
      annexB: msg.data[0] === 0 && msg.data[1] === 0 &&
        (msg.data[2] === 1 || (msg.data[2] === 0 && msg.data[3] === 1)),
      key,
      sps: sps !== undefined,
      nal_types: nals.map((n) => n.type),
    };
    if (decoder.state !== "configured") {
      if (!key || !sps) {
        out.skipped++;
        out.frames.push({ ...info, decoded: false });
        continue;
      }
      const p = parseSps(sps.body);
      const config = { codec: p.codec, codedWidth: p.width, codedHeight: p.height,
                       optimizeForLatency: true };
      out.supported = (await VideoDecoder.isConfigSupported(config)).supported;
      out.config = config;
      if (!out.supported) break;
      decoder.configure(config);
    }
    const ts = (msg.timestamp.sec - t0.sec) * 1e6 + (msg.timestamp.nsec - t0.nsec) / 1e3;
    const t = performance.now();
    const frame = await new Promise((resolve) => {
      const timer = setTimeout(() => { pending = null; resolve(null); }, waitMs);
      pending = (f) => { clearTimeout(timer); pending = null; resolve(f); };
      try {
        decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta",
                                               timestamp: Math.round(ts), data: msg.data }));
      } catch (e) {
        out.errors.push(String(e.message ?? e));
        clearTimeout(timer);
        pending = null;
        resolve(null);
      }
    });
    if (!frame) {
      out.frames.push({ ...info, decoded: false });
      continue;
    }
    const w = frame.displayWidth;
    const h = frame.displayHeight;
    const canvas = new OffscreenCanvas(w, h);
    const g = canvas.getContext("2d");
    g.drawImage(frame, 0, 0);
    const px = g.getImageData(0, h - stripRows, w, stripRows).data;
    const gray = new Uint8Array(w * stripRows);
    for (let i = 0; i < gray.length; i++) {
      gray[i] = Math.round((px[4 * i] + px[4 * i + 1] + px[4 * i + 2]) / 3);
    }
    out.frames.push({ ...info, decoded: true, ms: performance.now() - t, width: w, height: h,
                      coded: [frame.codedWidth, frame.codedHeight], timestamp: frame.timestamp,
                      chunk_timestamp: Math.round(ts), strip: b64(gray) });
    frame.close();
  }
  if (decoder.state !== "closed") decoder.close();
  return out;
}

window.studioCheck = async (mcapUrl, workerUrl, stripRows, videoTopic, waitMs) => {
  const t = performance.now();
  const { init, topics, events, problems } = await openWithStudio(mcapUrl, workerUrl);
  const tOpen = performance.now() - t;
  const video = events.filter((e) => e.topic === videoTopic);
  const decoded = await decodeVideo(video, stripRows, waitMs);
  return {
    open_ms: tOpen,
    decode_ms: performance.now() - t - tOpen,
    profile: init.profile,
    start: init.start,
    end: init.end,
    topics: init.topics.map((x) => ({ name: x.name, schemaName: x.schemaName ?? null })),
    topic_counts: Object.fromEntries([...init.topicStats].map(([k, v]) => [k, v.numMessages])),
    datatypes: [...init.datatypes.keys()],
    problems,
    messages: events.map((e) => ({
      topic: e.topic,
      schemaName: e.schemaName,
      receiveTime: e.receiveTime,
      message: e.topic === videoTopic ? null : jsonable(e.message),
    })),
    video_messages: video.map((e) => jsonable(e.message)),
    video: decoded,
    secure_context: self.isSecureContext,
  };
};
