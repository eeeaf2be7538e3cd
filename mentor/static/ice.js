// Fresh ICE servers for every new peer connection (mentor/DESIGN.md "Renewal").
//
// The TURN credential in the welcome was issued when the WebSocket (re)connected, possibly
// hours before a peer connection that follows a blackout; a credential past its expiry
// cannot start a TURN allocation (coturn answers 401). So each new RTCPeerConnection asks the
// server for ICE servers issued now (POST /api/ice-servers, cookie, same origin); if the
// server does not answer within ASK_MS (its link is down too), the welcome's are used.

export const ASK_MS = 1500;

export async function freshIceServers(fallback) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ASK_MS);
  try {
    const r = await fetch('/api/ice-servers',
      { method: 'POST', credentials: 'same-origin', signal: abort.signal });
    if (r.ok) {
      const body = await r.json();
      if (Array.isArray(body.ice_servers)) return body.ice_servers;
    }
  } catch (_) { /* server unreachable or slow: the welcome's servers */
  } finally {
    clearTimeout(timer);
  }
  return fallback;
}
