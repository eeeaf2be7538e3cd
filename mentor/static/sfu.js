// Observers watch through Janus when the server runs with --sfu (mentor/DESIGN.md "Large
// audiences"); mentors keep the direct connection to the station (lowest latency, their
// voice goes to the station, the station holds them to the heartbeat).
//
// Exchange over the page's WebSocket (mentor/sfu_bridge.py PageSfu), the reverse of the
// direct path: the page asks {type: "sfu", sdp_type: "sfu-subscribe"}, the server answers
// with Janus's offer ("sfu-offer"), the page answers ("sfu-answer", every candidate in it:
// the server forwards no trickle), the server says "sfu-started". {type: "sfu", feed: bool}
// says whether the station's stream is in the room; each new feed (the station published
// again after a reconnect) is subscribed again.
//
// Per-frame metadata: the station's publisher data channel "meta", relayed by Janus to every
// subscriber (on a channel Janus labels with the publisher's id), feeds the same onMeta as the
// direct path (frame id from
// the strip, pose and intrinsics from the meta ring): anchoring and projection are unchanged.
// Nothing holds the page to the "hb" heartbeat here (Janus drops a subscriber's data), so
// state.dc stays null; link.js still watches the peer connection's received bytes.

import { freshIceServers } from './ice.js';

const OFFER_WAIT_MS = 5000;
const RETRY_MS = 1000;

export class SfuPath {
  /**
   * @param {object} state  the page's state (mentor.js)
   * @param {{closePeer: Function, onMeta: Function}} hooks
   */
  constructor(state, { closePeer, onMeta }) {
    this.state = state;
    this.closePeer = closePeer;
    this.onMeta = onMeta;
    this.session = null;
    this.req = 0;               // number of the last subscribe (the server echoes it)
    this.timer = null;
    Object.assign(state, {
      sfu: false, sfuFeed: null, sfuSubscribes: 0, sfuStarted: 0, sfuMetaCount: 0,
      sfuErrors: [],
    });
    state.sfuPath = this;
  }

  /** Follow the session's welcome and sfu messages (before mentor.js's own listeners). */
  attach(session) {
    this.session = session;
    session.addEventListener('welcome', (e) => {   // a new socket: its feed message follows
      this.state.sfu = !!e.detail.sfu;
      this.state.sfuFeed = null;
    });
    session.addEventListener('sfu', (e) => this.onMessage(e.detail));
  }

  /** Whether this page watches through Janus. */
  wanted() {
    return this.state.sfu && this.state.role === 'observer';
  }

  /** (Re)subscribe: mentor.js's startPeer comes here on the Janus path. */
  start() {
    const st = this.state;
    this.closePeer();
    clearTimeout(this.timer);
    if (!st.sfuFeed) { st.peerState = 'waiting for the station stream'; return; }
    st.peerState = 'subscribing';
    st.sfuSubscribes += 1;
    this.req += 1;
    this.session._send({ type: 'sfu', sdp_type: 'sfu-subscribe', req: this.req });
    const n = st.sfuSubscribes;
    this.timer = setTimeout(() => {   // no offer: ask again while the feed is there
      if (st.sfuSubscribes === n && !st.pc && st.sfuFeed) this.start();
    }, OFFER_WAIT_MS);
  }

  onMessage(msg) {
    const st = this.state;
    if ('feed' in msg) {
      st.sfuFeed = !!msg.feed;
      if (!this.wanted()) return;
      if (st.sfuFeed) this.start();    // a new feed: the old subscription has no stream
      else { this.closePeer(); st.peerState = 'waiting for the station stream'; }
      return;
    }
    if (msg.req !== this.req) return;   // the answer to an earlier subscribe: a newer one is out
    if (msg.sdp_type === 'sfu-offer') {
      this.answer(msg.sdp, msg.req)
        .catch((err) => { st.sfuErrors.push(String(err)); this.retry(); });
    } else if (msg.sdp_type === 'sfu-started') {
      st.sfuStarted += 1;
      if (st.peerState === 'answering') st.peerState = 'subscribed';
    } else if (msg.sdp_type === 'sfu-error') {
      st.sfuErrors.push(msg.message);
      this.retry();
    }
  }

  retry() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { if (this.wanted() && this.state.sfuFeed) this.start(); },
      RETRY_MS);
  }

  async answer(offerSdp, req) {
    const st = this.state;
    clearTimeout(this.timer);
    this.closePeer();
    // TURN credentials issued now (ice.js), as for the direct path's peer connections
    const iceServers = await freshIceServers(
      (this.session.welcome && this.session.welcome.ice_servers) || []);
    if (req !== this.req || st.pc) return;   // asked again meanwhile
    const pc = new RTCPeerConnection({ iceServers });
    st.pc = pc;
    st.dc = null;
    st.peerState = 'answering';
    pc.ontrack = (e) => {
      const el = document.getElementById(e.track.kind === 'video' ? 'video' : 'audio');
      el.srcObject = new MediaStream([e.track]);
      el.play().catch(() => {
        if (e.track.kind === 'audio') document.getElementById('audio-unlock').hidden = false;
      });
    };
    pc.ondatachannel = (e) => {   // Janus labels a relayed channel with the publisher's id
      if (e.channel.label === 'ready') return;
      e.channel.onmessage = (m) => { st.sfuMetaCount += 1; this.onMeta(m.data); };
    };
    pc.onconnectionstatechange = () => {
      if (st.pc !== pc) return;
      st.peerState = pc.connectionState;
      if (pc.connectionState === 'failed') setTimeout(() => { if (st.pc === pc) this.start(); }, 500);
      if (pc.connectionState === 'disconnected') {
        setTimeout(() => { if (st.pc === pc && pc.connectionState !== 'connected') this.start(); }, 3000);
      }
    };
    await pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
    // Janus relays data to a subscriber only once a data channel of that subscriber is open
    // ("data ready", janus_videoroom.c; janus.js opens one as the answerer too): this one
    // carries nothing; Janus then opens its own channel towards the page, labelled with the
    // publisher's id (janus_videoroom_relay_data_packet), with the station's "meta" messages.
    pc.createDataChannel('ready');
    const recv = pc.getReceivers().find((r) => r.track && r.track.kind === 'video') || null;
    st.videoReceiver = recv;
    if (recv && st.videoDelayMs !== null && 'jitterBufferTarget' in recv) {
      recv.jitterBufferTarget = st.videoDelayMs;
    }
    await pc.setLocalDescription(await pc.createAnswer());
    if (pc.iceGatheringState !== 'complete') {
      await new Promise((resolve) => {
        const t = setTimeout(resolve, 2000);
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
        });
      });
    }
    if (st.pc !== pc) return;
    this.session._send({ type: 'sfu', sdp_type: 'sfu-answer', sdp: pc.localDescription.sdp,
      req: this.req });
  }
}
