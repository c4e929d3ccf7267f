// The dashboard's WebSocket: reconnects by itself with jittered exponential
// backoff and resumes with `?since=<last offset>` so nothing is missed.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
/** A connection that lived this long starts the backoff over. */
const STABLE_MS = 10000;
const CONNECT_TIMEOUT_MS = 10000;
/** Application pings: the gateway's ping frames are invisible to scripts. */
const PING_EVERY_MS = 20000;
/** Silence this long (pong included) means the connection is dead. */
const SILENCE_MS = 50000;
/** Close codes that mean "your token is not accepted": ask for one. */
const AUTH_CODES = new Set([1008, 4001, 4003, 4401]);
/** The gateway draining at shutdown; the reason carries a reconnect hint. */
const SERVICE_RESTART = 1012;
/** The longest hint taken at its word: a bad reason must not park the page. */
const MAX_HINT_MS = 5 * 60 * 1000;

/** Delay before reconnect attempt `n` (0-based): half fixed, half random. */
export function backoff(n, random = Math.random) {
  const cap = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(n, 16));
  return Math.round(cap / 2 + random() * (cap / 2));
}

/**
 * The wait a draining gateway asks for: close 1012 with the reason
 * `{"reconnect_ms":n}` (docs/protocol.md, "Shutdown"), plus a jitter of our
 * own of up to a tenth of it (at least 250 ms, at most 5 s). null for any
 * other close, or a reason that is not such a hint.
 */
export function restartDelay(code, reason, random = Math.random) {
  if (code !== SERVICE_RESTART) return null;
  let ms;
  try {
    ms = JSON.parse(reason)?.reconnect_ms;
  } catch {
    return null;
  }
  if (!Number.isFinite(ms) || ms < 0) return null;
  ms = Math.min(ms, MAX_HINT_MS);
  const jitter = Math.min(5000, Math.max(250, ms / 10));
  return Math.round(ms + random() * jitter);
}

export class Connection {
  /**
   * @param {object} o
   * @param {(since: string|null) => string} o.url  the WebSocket URL to open
   * @param {() => string|null} o.since            the offset to resume from
   * @param {(msg: object) => void} o.onMessage
   * @param {(s: {state: string, attempt: number, retryAt?: number, code?: number}) => void} o.onState
   */
  constructor({ url, since, onMessage, onState }) {
    this.url = url;
    this.since = since;
    this.onMessage = onMessage;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.timer = 0;
    this.pinger = 0;
    this.openedAt = 0;
    this.lastSeen = 0;
    this.stopped = false;
    this.paused = false;
    addEventListener('online', () => this.retryNow());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.retryNow();
    });
  }

  start() {
    this.stopped = false;
    this.paused = false;
    this.open();
  }

  /** Waiting for a token: no reconnects until start() again. */
  pause() {
    this.paused = true;
    clearTimeout(this.timer);
  }

  get isOpen() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Closes the current socket (if any) and connects again at once. */
  reconnect() {
    this.stopped = false;
    this.paused = false;
    this.drop();
    this.attempt = 0;
    this.open();
  }

  retryNow() {
    if (this.stopped || this.paused || this.ws) return;
    clearTimeout(this.timer);
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    const since = this.since();
    let ws;
    try {
      ws = new WebSocket(this.url(since));
    } catch (e) {
      console.error('pulsegate: cannot open the WebSocket', e);
      this.schedule(0);
      return;
    }
    this.ws = ws;
    this.onState({ state: this.attempt ? 'reconnecting' : 'connecting', attempt: this.attempt });
    const connectTimer = setTimeout(() => {
      if (ws.readyState === WebSocket.CONNECTING) this.lost(ws, 0);
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      clearTimeout(connectTimer);
      this.openedAt = Date.now();
      this.lastSeen = Date.now();
      this.onState({ state: 'open', attempt: this.attempt, resumed: since != null });
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.heartbeat(ws), PING_EVERY_MS);
    };
    ws.onmessage = (ev) => {
      this.lastSeen = Date.now();
      if (typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn('pulsegate: a message that is not JSON', ev.data.slice(0, 200));
        return;
      }
      if (msg && typeof msg.type === 'string') this.onMessage(msg);
    };
    ws.onclose = (ev) => {
      clearTimeout(connectTimer);
      this.lost(ws, ev.code, ev.reason);
    };
    ws.onerror = () => {
      // A close event always follows; it decides what to do.
    };
  }

  heartbeat(ws) {
    if (ws !== this.ws) return;
    if (Date.now() - this.lastSeen > SILENCE_MS) {
      this.lost(ws, 4000);
      return;
    }
    this.send({ type: 'ping' });
  }

  /** Detaches `ws` (without waiting for its close handshake). */
  drop() {
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.pinger);
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000, 'reconnecting');
    } catch {
      // already closed
    }
  }

  lost(ws, code, reason = '') {
    if (ws !== this.ws) return;
    const lived = this.openedAt ? Date.now() - this.openedAt : 0;
    this.openedAt = 0;
    this.drop();
    if (this.stopped) return;
    if (AUTH_CODES.has(code)) {
      this.paused = true;
      this.onState({ state: 'auth', attempt: this.attempt, code });
      return;
    }
    // A long-lived connection, or a server going away on purpose: retry soon,
    // or when a draining gateway asks (its hint spreads the reconnects).
    if (lived >= STABLE_MS || code === 1001 || code === SERVICE_RESTART) this.attempt = 0;
    this.schedule(code, restartDelay(code, reason));
  }

  schedule(code, hinted = null) {
    const delay = hinted ?? backoff(this.attempt);
    this.attempt += 1;
    this.onState({ state: 'waiting', attempt: this.attempt, retryAt: Date.now() + delay, code });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (!this.paused && !this.stopped) this.open();
    }, delay);
  }
}
