// pulsegate's JavaScript client: one WebSocket to a pulsegate gateway that
// reconnects by itself and resumes where it left off, so every event arrives
// once; where WebSockets cannot get through (a proxy that breaks them), the
// same over Server-Sent Events. clients/js/README.md has the API;
// docs/protocol.md the wire contract.
//
// The gateway serves this file at /client/pulsegate.js (embedded at compile
// time: this is the only copy). No dependency, no build step: browsers, and
// Node 18+ with a WebSocket constructor passed in (the `ws` package) or
// Server-Sent Events alone (read with fetch).

export const DEFAULTS = Object.freeze({
  /** Backoff: attempt n waits d/2 + random·d/2, d = min(maxDelayMs, baseDelayMs·2ⁿ). */
  baseDelayMs: 500,
  maxDelayMs: 15000,
  /** A connection that lived this long starts the backoff over. */
  stableMs: 10000,
  connectTimeoutMs: 10000,
  /** Application pings: the gateway's ping frames are invisible to scripts. */
  pingEveryMs: 20000,
  /** Silence this long (pong included) means the connection is dead. */
  silenceMs: 50000,
  /** Renew the token this long before it expires (or halfway, when sooner). */
  renewBeforeMs: 60000,
  /** A server's reconnect hint is capped at this (a guard against a bad reason). */
  maxHintMs: 300000,
  /** Close codes that mean "your token is not accepted": no retry until connect(). */
  authCloseCodes: Object.freeze([1008, 4001, 4003, 4401]),
  /** In a browser: retry at once when it goes back online or the tab becomes visible. */
  retryOnWake: true,
  /** `auto` (WebSocket, falling back to SSE), `websocket` or `sse`. */
  transport: 'auto',
  /** `auto`: this many WebSocket attempts in a row that never opened, none ever having opened, switch to SSE. */
  sseAfterFailures: 2,
});

/** A draining gateway closes with this; its reason is `{"reconnect_ms":n}`. */
export const SERVICE_RESTART = 1012;
const GOING_AWAY = 1001;
const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
/** Messages the gateway itself sends; on /dashboard/ws everything else is a publication. */
const GATEWAY_TYPES = new Set(['initial_data', 'pong', 'status', 'error', 'subscribed', 'unsubscribed', 'authenticated', 'runtime']);
const MAX_TIMER_MS = 2 ** 31 - 1;
const noop = () => {};

/** Delay before reconnect attempt `attempt` (0-based): half fixed, half random. */
export function backoff(attempt, random = Math.random, { baseDelayMs = DEFAULTS.baseDelayMs, maxDelayMs = DEFAULTS.maxDelayMs } = {}) {
  const cap = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(attempt, 30));
  return Math.round(cap / 2 + random() * (cap / 2));
}

/**
 * The wait a draining gateway asks for: close 1012 with the reason
 * `{"reconnect_ms":n}` (decisions.md D7), `n` capped at `maxHintMs`, plus a
 * jitter of our own of up to a tenth of it (at least 250 ms, at most 5 s).
 * null for any other close, or a reason that is not such a hint.
 */
export function restartDelay(code, reason, random = Math.random, { maxHintMs = DEFAULTS.maxHintMs } = {}) {
  if (code !== SERVICE_RESTART || typeof reason !== 'string') return null;
  let ms;
  try {
    ms = JSON.parse(reason)?.reconnect_ms;
  } catch {
    return null;
  }
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return null;
  ms = Math.min(ms, maxHintMs);
  const jitter = Math.min(5000, Math.max(250, ms / 10));
  return Math.round(ms + random() * jitter);
}

/** "1732240000000-3" as [ms, seq]; null for anything else. */
export function parseOffset(s) {
  if (typeof s !== 'string') return null;
  const m = /^(\d+)-(\d+)$/.exec(s);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** Compares two offsets as (ms, seq) integer pairs; null/invalid sorts first. */
export function compareOffsets(a, b) {
  const x = parseOffset(a);
  const y = parseOffset(b);
  if (!x || !y) return (x ? 1 : 0) - (y ? 1 : 0);
  return x[0] - y[0] || x[1] - y[1];
}

/** The `exp` of a JWT in ms since the epoch; null when `token` is not a JWT with one. */
export function tokenExpiry(token) {
  const part = typeof token === 'string' ? token.split('.')[1] : null;
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const exp = JSON.parse(new TextDecoder().decode(bytes))?.exp;
    return Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** `http(s)://` or `ws(s)://` base (path prefix kept, query dropped) as a `ws(s)://` prefix. */
function wsBase(url) {
  const here = globalThis.location?.href;
  if (url == null && !here) throw new TypeError('pulsegate: options.url is required outside a browser');
  const u = new URL(url ?? '/', here);
  const scheme = { 'http:': 'ws:', 'https:': 'wss:', 'ws:': 'ws:', 'wss:': 'wss:' }[u.protocol];
  if (!scheme) throw new TypeError(`pulsegate: unsupported URL scheme ${u.protocol}`);
  return `${scheme}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
}

/**
 * A Server-Sent Events stream (`/sse/...`) that looks like the part of a
 * WebSocket the client uses: `readyState`, `onopen`, `onmessage({data})`,
 * `onclose({code, reason})`, `close()`. Read with fetch rather than
 * EventSource: fetch gives the HTTP status of a refusal (401, 403, 503),
 * which EventSource hides, and exists in Node 18+. The stream's last event
 * becomes the close a WebSocket would have had: `event: reconnect` is 1012
 * with the same `{"reconnect_ms":n}` reason, `event: close` its `code` and
 * `reason`; a refusal maps 401 → 4401 and 403 → 4003 (stop until connect()),
 * 400 → 1008, anything else → 1013 or 1006 (retry). Comments (keep-alives)
 * reach `onmessage` with `data: null`: traffic for the silence check.
 */
export class EventStreamSocket {
  readyState = CONNECTING;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  #abort = new AbortController();

  constructor(url, { fetch: f = globalThis.fetch } = {}) {
    if (typeof f !== 'function') throw new TypeError('pulsegate: no fetch here for Server-Sent Events');
    this.url = url;
    this.#run(f);
  }

  send() {
    return false;
  }

  close() {
    this.readyState = CLOSED;
    this.#abort.abort();
  }

  async #run(f) {
    let res;
    try {
      res = await f(this.url, { headers: { accept: 'text/event-stream' }, cache: 'no-store', signal: this.#abort.signal });
    } catch (e) {
      this.#end(1006, `cannot open the event stream: ${e?.message ?? e}`);
      return;
    }
    if (this.readyState === CLOSED) return;
    if (res.status !== 200 || !res.body) {
      let reason = `HTTP ${res.status}`;
      try {
        reason = (await res.json())?.error?.code ?? reason;
      } catch {
        // not the gateway's JSON
      }
      const code = { 400: 1008, 401: 4401, 403: 4003, 429: 1013, 503: 1013 }[res.status] ?? 1006;
      this.#end(code, reason);
      return;
    }
    this.readyState = OPEN;
    this.onopen?.();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let rest = '';
    const event = { type: null, data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.readyState === CLOSED) break;
        const lines = (rest + value).split('\n');
        rest = lines.pop();
        for (const raw of lines) {
          if (this.#line(raw.endsWith('\r') ? raw.slice(0, -1) : raw, event)) return;
        }
      }
    } catch {
      // aborted, or the connection broke: the close below says so
    }
    this.#end(1006, 'the event stream ended');
  }

  /** One line of the stream; true once the stream's last event was handled. */
  #line(line, event) {
    if (line === '') {
      const { type, data } = event;
      event.type = null;
      event.data = [];
      if (!data.length) return false;
      const text = data.join('\n');
      if (type === 'reconnect') return this.#end(SERVICE_RESTART, text);
      if (type === 'close') {
        let c = {};
        try {
          c = JSON.parse(text) ?? {};
        } catch {
          // keep the defaults
        }
        return this.#end(Number.isInteger(c.code) ? c.code : 1006, typeof c.reason === 'string' ? c.reason : '');
      }
      this.onmessage?.({ data: text });
      return this.readyState === CLOSED;
    }
    if (line.startsWith(':')) {
      this.onmessage?.({ data: null });
      return false;
    }
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') event.data.push(value);
    else if (field === 'event') event.type = value;
    return false;
  }

  #end(code, reason) {
    if (this.readyState === CLOSED) return true;
    this.readyState = CLOSED;
    this.#abort.abort();
    this.onclose?.({ code, reason });
    return true;
  }
}

export class Client {
  /** The options merged over DEFAULTS. */
  #o;
  #WebSocket;
  #base;
  /** Set: /dashboard/ws/{persona}; unset: /ws with subscribe/unsubscribe. */
  #persona;
  /** The channel of #persona (`persona:<id>`), the key of its offset. */
  #own;
  #getToken;
  #random;
  /** The current socket; handlers of an older one check this and do nothing. */
  #ws = null;
  #state = 'idle';
  /** Failed attempts in a row: the backoff exponent. */
  #attempt = 0;
  /** connect() called and not undone by pause(), close() or an auth close. */
  #running = false;
  /** Counts open attempts, so a slow getToken of an abandoned one is ignored. */
  #generation = 0;
  #retryTimer = null;
  #connectTimer = null;
  #pinger = null;
  #renewTimer = null;
  #openedAt = 0;
  #lastSeen = 0;
  /** channel → newest offset delivered (the resume point and the duplicate floor). */
  #offsets = new Map();
  /** /ws channels wanted, subscribed again after every reconnect. */
  #channels = new Set();
  /** /ws channels with an `unsubscribe` in flight: their ack is ours, not a revocation. */
  #leaving = new Map();
  /** Expiry (ms) of the token in use; renewal is scheduled from it. */
  #tokenExp = null;
  #listeners = new Map();
  /** Removes the browser's online/visibility listeners. */
  #unwake = null;
  /** Server-Sent Events instead of a WebSocket (chosen, or fallen back to). */
  #sse = false;
  /** `auto`: WebSocket attempts in a row that never opened. */
  #wsFailures = 0;
  /** `auto`: a WebSocket opened once, so it works here: never fall back. */
  #wsOpened = false;
  #fetch;

  /**
   * @param {object} [options]
   * @param {string} [options.url]  the gateway, `http(s)://` or `ws(s)://`; default: the page's origin
   * @param {string} [options.persona]  follow one persona on /dashboard/ws/{persona}; without it, /ws
   * @param {string} [options.since]  with `persona`: resume after this offset on the first connection
   * @param {() => (string|null|Promise<string|null>)} [options.getToken]  a token for each connection and renewal
   * @param {typeof WebSocket} [options.WebSocket]  default globalThis.WebSocket (Node 18–21: the `ws` package)
   * @param {'auto'|'websocket'|'sse'} [options.transport]  default `auto`: WebSocket, Server-Sent Events after `sseAfterFailures`
   * @param {typeof fetch} [options.fetch]  what reads Server-Sent Events; default globalThis.fetch
   * @param {() => number} [options.random]  the jitter's source (tests seed it); default Math.random
   */
  constructor(options = {}) {
    this.#o = { ...DEFAULTS, ...options };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#fetch = options.fetch ?? globalThis.fetch;
    const transport = this.#o.transport;
    if (!['auto', 'websocket', 'sse'].includes(transport)) throw new TypeError(`pulsegate: unknown transport ${transport}`);
    // `auto` without a WebSocket constructor (Node before 22, no `ws`): SSE from the start.
    this.#sse = transport === 'sse' || (transport === 'auto' && typeof this.#WebSocket !== 'function' && typeof this.#fetch === 'function');
    if (!this.#sse && typeof this.#WebSocket !== 'function') {
      throw new TypeError('pulsegate: no WebSocket here; pass options.WebSocket (in Node: the `ws` package)');
    }
    this.#base = wsBase(options.url);
    this.#persona = options.persona ?? null;
    this.#own = this.#persona == null ? null : `persona:${this.#persona}`;
    this.#getToken = options.getToken ?? null;
    this.#random = options.random ?? Math.random;
    if (options.since != null && this.#own) this.#offsets.set(this.#own, checkedOffset(options.since));
  }

  /** `idle`, `connecting`, `reconnecting`, `open`, `waiting`, `auth`, `paused` or `closed`. */
  get state() {
    return this.#state;
  }

  get isOpen() {
    return this.#ws?.readyState === OPEN;
  }

  /** `websocket` or `sse`: what the client uses now. */
  get transport() {
    return this.#sse ? 'sse' : 'websocket';
  }

  /** The newest offset delivered on `channel` (default: the persona's). */
  offset(channel = this.#own) {
    return this.#offsets.get(channel) ?? null;
  }

  /** Every channel's newest offset, e.g. to keep across restarts. */
  get offsets() {
    return Object.fromEntries(this.#offsets);
  }

  /** Subscribes `fn` to an event; returns a function that unsubscribes it. */
  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
  }

  /** Connects (and keeps reconnecting) unless already running. */
  connect() {
    if (this.#running) return this;
    this.#running = true;
    this.#attempt = 0;
    this.#watchWake();
    this.#open();
    return this;
  }

  /** Closes the socket and connects again at once, the backoff started over. */
  reconnect() {
    this.#detach('reconnecting');
    this.#running = true;
    this.#attempt = 0;
    this.#watchWake();
    this.#open();
    return this;
  }

  /** While waiting to reconnect: try now (a browser back online does this by itself). */
  retryNow() {
    if (!this.#running || this.#retryTimer == null) return;
    this.#open();
  }

  /** Closes the socket, no reconnects until connect(); offsets and channels are kept. */
  pause() {
    this.#running = false;
    this.#detach('paused');
    this.#setState('paused');
  }

  /** Closes for good (connect() would start again, resuming from the offsets). */
  close() {
    this.#running = false;
    this.#detach('client closed');
    this.#unwake?.();
    this.#unwake = null;
    this.#setState('closed');
  }

  /** Sends a client message; false when not connected (always over SSE, which is one-way). */
  send(msg) {
    if (!this.isOpen || this.#sse) return false;
    this.#ws.send(JSON.stringify(msg));
    return true;
  }

  /** Asks for `initial_data` (on /ws: one per subscription). Over SSE: the stream again, without `since`. */
  refresh() {
    if (!this.#sse) return this.send({ type: 'refresh' });
    if (!this.#running) return false;
    // Fresh snapshots: the server drops what they cover, so no duplicate.
    this.#offsets.clear();
    this.#reopen();
    return true;
  }

  /** /ws: follows `channel` (`persona:<id>`), now and after every reconnect, resuming after `since`. */
  subscribe(channel, { since } = {}) {
    if (this.#persona != null) throw new Error('pulsegate: subscribe is for /ws (a client without `persona`)');
    if (typeof channel !== 'string' || !channel) throw new TypeError('pulsegate: a channel such as persona:<id>');
    if (since != null) this.#offsets.set(channel, checkedOffset(since));
    const added = !this.#channels.has(channel);
    this.#channels.add(channel);
    if (this.#sse) {
      // An event stream's channels are in its URL: open it again with them.
      if (added && this.#running) this.#reopen();
    } else if (this.isOpen) this.#subscribe(channel);
    return this;
  }

  /** /ws: stops following `channel`; its messages still in flight are dropped. */
  unsubscribe(channel) {
    if (!this.#channels.delete(channel)) return false;
    this.#offsets.delete(channel);
    if (this.#sse) {
      if (this.#running) this.#reopen();
    } else if (this.send({ type: 'unsubscribe', channel })) this.#leaving.set(channel, (this.#leaving.get(channel) ?? 0) + 1);
    return true;
  }

  /** Over SSE: the stream again, at once, resuming every channel (its channels or token changed). */
  #reopen() {
    this.#detach('reopening');
    this.#open();
  }

  // ----- the connection ------------------------------------------------------

  async #open() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const generation = ++this.#generation;
    this.#setState(this.#attempt ? 'reconnecting' : 'connecting', { attempt: this.#attempt });
    let token = null;
    if (this.#getToken) {
      try {
        token = await this.#getToken();
      } catch (e) {
        if (generation !== this.#generation || !this.#running) return;
        this.#localError('token_unavailable', `getToken failed: ${e?.message ?? e}`);
        this.#retry(null);
        return;
      }
      if (generation !== this.#generation || !this.#running) return;
    }
    const since = this.#own ? this.offset() : null;
    const query = new URLSearchParams();
    if (since) query.set('since', since);
    let path = this.#persona == null ? '/ws' : `/dashboard/ws/${encodeURIComponent(this.#persona)}`;
    if (this.#sse) {
      path = this.#persona == null ? '/sse' : `/sse/${encodeURIComponent(this.#persona)}`;
      if (this.#persona == null) {
        if (!this.#channels.size) {
          // /sse needs a channel: wait for subscribe().
          this.#setState('waiting', { attempt: this.#attempt });
          return;
        }
        for (const channel of this.#channels) {
          query.append('channel', channel);
          const at = this.#offsets.get(channel);
          if (at != null) query.append('since', `${channel}@${at}`);
        }
      }
    }
    if (token) query.set('token', token);
    const q = query.toString();
    let ws;
    try {
      const url = `${this.#sse ? this.#base.replace(/^ws/, 'http') : this.#base}${path}${q ? `?${q}` : ''}`;
      ws = this.#sse ? new EventStreamSocket(url, { fetch: this.#fetch }) : new this.#WebSocket(url);
    } catch (e) {
      this.#localError('cannot_connect', `cannot open the WebSocket: ${e?.message ?? e}`);
      this.#retry(null);
      return;
    }
    this.#ws = ws;
    this.#tokenExp = tokenExpiry(token);
    this.#leaving.clear();
    this.#connectTimer = setTimeout(() => {
      if (ws.readyState === CONNECTING) this.#lost(ws, 1006, 'connect timeout', true);
    }, this.#o.connectTimeoutMs);
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      clearTimeout(this.#connectTimer);
      this.#openedAt = this.#lastSeen = Date.now();
      if (!this.#sse) this.#wsOpened = true;
      this.#pinger = setInterval(() => this.#heartbeat(ws), this.#o.pingEveryMs);
      for (const channel of this.#channels) this.#subscribe(channel);
      this.#scheduleRenewal();
      const resumed = since != null;
      this.#emit('open', { resumed, since, attempt: this.#attempt });
      this.#setState('open', { attempt: this.#attempt, resumed });
    };
    ws.onmessage = (ev) => {
      if (ws !== this.#ws) return;
      this.#lastSeen = Date.now();
      if (typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        this.#localError('invalid_json', `a message that is not JSON: ${ev.data.slice(0, 200)}`);
        return;
      }
      if (msg && typeof msg === 'object' && typeof msg.type === 'string') this.#dispatch(msg);
    };
    ws.onclose = (ev) => this.#lost(ws, ev.code, ev.reason ?? '', false);
    // A close event always follows an error; it decides. (The `ws` package
    // throws an error event nobody listens to, so keep a listener.)
    ws.onerror = noop;
  }

  #subscribe(channel) {
    const msg = { type: 'subscribe', channel };
    const since = this.#offsets.get(channel);
    if (since != null) msg.since = since;
    this.send(msg);
  }

  #heartbeat(ws) {
    if (ws !== this.#ws) return;
    if (Date.now() - this.#lastSeen > this.#o.silenceMs) {
      this.#lost(ws, 1006, `no message for ${this.#o.silenceMs} ms`, true);
      return;
    }
    // Over SSE the gateway's keep-alive comments are the traffic.
    this.send({ type: 'ping' });
  }

  /** Forgets the current socket (closing it without waiting) and its timers. */
  #detach(reason) {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    clearTimeout(this.#connectTimer);
    clearInterval(this.#pinger);
    clearTimeout(this.#renewTimer);
    this.#generation += 1;
    this.#openedAt = 0;
    const ws = this.#ws;
    this.#ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close(1000, reason);
    } catch {
      // already closed
    }
  }

  /** `ws` ended (closed by the server, failed, or given up on here): retry, or stop for a token. */
  #lost(ws, code, reason, local) {
    if (ws !== this.#ws) return;
    const lived = this.#openedAt ? Date.now() - this.#openedAt : 0;
    const neverOpened = !this.#openedAt;
    this.#detach(local ? reason : '');
    if (!this.#sse && this.#o.transport === 'auto' && !this.#wsOpened && neverOpened) {
      this.#wsFailures += 1;
      if (this.#wsFailures >= this.#o.sseAfterFailures && typeof this.#fetch === 'function') {
        // WebSockets do not get through from here: Server-Sent Events from now on.
        this.#sse = true;
        this.#attempt = 0;
        this.#emit('transport', { transport: 'sse', failures: this.#wsFailures });
      }
    }
    const auth = this.#o.authCloseCodes.includes(code);
    const hinted = restartDelay(code, reason, this.#random, this.#o);
    // A long-lived connection, or a server going away on purpose (with or
    // without a usable hint): start over.
    if (lived >= this.#o.stableMs || code === GOING_AWAY || code === SERVICE_RESTART) this.#attempt = 0;
    const delay = auth ? null : hinted ?? backoff(this.#attempt, this.#random, this.#o);
    this.#emit('close', { code, reason, local, auth, willRetry: !auth, retryInMs: delay });
    if (auth) {
      this.#running = false;
      this.#setState('auth', { attempt: this.#attempt, code });
      return;
    }
    this.#retry(delay, code);
  }

  #retry(delay, code) {
    if (!this.#running) return;
    const wait = delay ?? backoff(this.#attempt, this.#random, this.#o);
    this.#attempt += 1;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#open(), wait);
    this.#setState('waiting', { attempt: this.#attempt, retryAt: Date.now() + wait, code });
  }

  // ----- messages ------------------------------------------------------------

  #dispatch(msg) {
    const multiplex = this.#persona == null;
    if (multiplex ? msg.type === 'message' : !GATEWAY_TYPES.has(msg.type)) {
      if (!multiplex) {
        this.#publication(this.#own, msg, msg.offset);
      } else if (this.#channels.has(msg.channel)) {
        this.#publication(msg.channel, msg.data, msg.offset ?? msg.data?.offset);
      }
      return;
    }
    switch (msg.type) {
      case 'initial_data': {
        const channel = multiplex ? msg.channel : this.#own;
        if (multiplex && !this.#channels.has(channel)) return;
        const last = this.#offsets.get(channel);
        // A failed resume starts over; otherwise the floor never moves back.
        if (parseOffset(msg.offset) && (msg.recovered === false || compareOffsets(msg.offset, last) > 0)) {
          this.#offsets.set(channel, msg.offset);
        }
        break;
      }
      case 'subscribed':
        if (msg.recovered === false && parseOffset(msg.offset)) this.#offsets.set(msg.channel, msg.offset);
        break;
      case 'unsubscribed': {
        const n = this.#leaving.get(msg.channel) ?? 0;
        if (n > 1) this.#leaving.set(msg.channel, n - 1);
        else if (n === 1) this.#leaving.delete(msg.channel);
        else {
          // The server ended it (a renewed token no longer grants it): do not come back.
          this.#channels.delete(msg.channel);
          this.#offsets.delete(msg.channel);
        }
        break;
      }
      case 'authenticated':
        if (Number.isFinite(msg.expires_at)) this.#tokenExp = msg.expires_at * 1000;
        this.#scheduleRenewal();
        break;
      default:
        break;
    }
    this.#emit(msg.type, msg);
  }

  /** Delivers a publication once: at or before the channel's newest offset is a duplicate. */
  #publication(channel, data, offset) {
    if (parseOffset(offset)) {
      const last = this.#offsets.get(channel);
      if (last != null && compareOffsets(offset, last) <= 0) return;
      this.#offsets.set(channel, offset);
    }
    this.#emit('message', data, { channel, offset: offset ?? null });
  }

  // ----- tokens --------------------------------------------------------------

  #scheduleRenewal() {
    clearTimeout(this.#renewTimer);
    if (!this.#getToken || this.#tokenExp == null || !this.isOpen) return;
    const left = this.#tokenExp - Date.now();
    const wait = Math.max(1000, Math.min(left - this.#o.renewBeforeMs, left / 2));
    this.#renewTimer = setTimeout(() => this.#renew(), Math.min(wait, MAX_TIMER_MS));
  }

  async #renew() {
    const ws = this.#ws;
    let token;
    try {
      token = await this.#getToken();
    } catch (e) {
      if (ws !== this.#ws) return;
      this.#localError('token_unavailable', `getToken failed: ${e?.message ?? e}`);
      this.#scheduleRenewal();
      return;
    }
    if (ws !== this.#ws || !token) return;
    const exp = tokenExpiry(token);
    if (exp != null && this.#tokenExp != null && exp <= this.#tokenExp) {
      this.#scheduleRenewal(); // the same token again: ask later
      return;
    }
    if (this.#sse) {
      // No `auth` message over SSE: the stream again with the new token
      // (#open asks getToken once more), resuming where it was.
      this.#reopen();
      return;
    }
    // The new expiry comes with `authenticated`.
    this.send({ type: 'auth', token });
  }

  // ----- events --------------------------------------------------------------

  #setState(state, extra = {}) {
    this.#state = state;
    this.#emit('state', { state, ...extra });
  }

  #localError(code, message) {
    this.#emit('error', { type: 'error', code, message, local: true });
  }

  /** A listener that throws is reported (uncaught), and the others still run. */
  #emit(type, ...args) {
    for (const fn of [...(this.#listeners.get(type) ?? [])]) {
      try {
        fn(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  #watchWake() {
    const g = globalThis;
    if (this.#unwake || !this.#o.retryOnWake || typeof g.addEventListener !== 'function') return;
    const online = () => this.retryNow();
    const visible = () => {
      if (g.document?.visibilityState === 'visible') this.retryNow();
    };
    g.addEventListener('online', online);
    g.document?.addEventListener('visibilitychange', visible);
    this.#unwake = () => {
      g.removeEventListener('online', online);
      g.document?.removeEventListener('visibilitychange', visible);
    };
  }
}

function checkedOffset(since) {
  if (!parseOffset(since)) throw new TypeError(`pulsegate: since must be an offset such as 1732240000000-0, not ${since}`);
  return since;
}
