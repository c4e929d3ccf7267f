// The live dashboard of one persona: /dashboard/{persona_id}.
// Wires the connection (the client library the gateway serves at
// /client/pulsegate.js, clients/js/) to the state (model.js) and the page
// (view.js). docs/ui.md describes what it shows and why it is built this way.

import { Client } from '/client/pulsegate.js';
import { Model } from './model.js';
import { View } from './view.js';
import { History } from './history.js';
import { ChannelAnalytics } from './channels.js';

/** Suggestions and the summary are recomputed only in snapshots: ask for one this often. */
const REFRESH_MS = 15000;
/** ... and this long after a kill or a fatigue warning (at most once per REFRESH_SOON_MIN_GAP_MS). */
const REFRESH_SOON_MS = 1500;
const REFRESH_SOON_MIN_GAP_MS = 5000;
const TOKEN_KEY = 'pulsegate.token';

const persona = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || '');
const model = new Model();
const view = new View(model);
let redisDown = false;
let lastRefresh = 0;
let refreshTimer = 0;
let soonTimer = 0;
let firstSnapshot = true;
let connState = { state: 'connecting' };
/** Set while a past moment is shown: live data is not applied. */
let asOf = false;

document.getElementById('persona-name').textContent = persona;
document.title = `${persona} \u00b7 pulsegate`;

// ----- token (auth) ------------------------------------------------------

function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const t = params.get('token');
  if (t == null) return;
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  // Keep the token out of the address bar, history and screenshots.
  history.replaceState(null, '', location.pathname + location.search);
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

takeTokenFromFragment();

// ----- connection --------------------------------------------------------

// The library keeps the resume point (`?since=`) itself: the newest offset
// it delivered, dropping duplicates before they reach the model.
const conn = new Client({ persona, getToken: () => token() });
conn.on('state', onState);
conn.on('initial_data', onSnapshot);
conn.on('message', onPublication);
conn.on('status', onStatus);
conn.on('error', (e) => console.warn('pulsegate:', e.code, e.message));

function onState(s) {
  connState = s;
  if (s.state === 'open') {
    model.connectionOpened();
    if (s.resumed) model.notice(`Reconnected; resuming after ${model.offset}.`);
    view.feed();
    scheduleRefresh();
  }
  if (s.state === 'waiting' && s.attempt === 1) {
    model.notice('Connection lost; reconnecting.', 'warn');
    view.feed();
  }
  if (s.state === 'auth') openTokenDialog('The gateway refused the token. Enter a valid one.');
  paintState();
}

let countdown = 0;
function paintState() {
  clearTimeout(countdown);
  const s = connState;
  switch (s.state) {
    case 'open':
      if (redisDown) {
        view.connection('redis-down', 'Redis down', 'Redis is unreachable: live updates are paused. Showing the last known data.');
      } else {
        view.connection('live', 'Live', '');
      }
      break;
    case 'connecting':
      view.connection('connecting', 'Connecting\u2026', '');
      break;
    case 'reconnecting':
      view.connection('reconnecting', `Reconnecting (attempt ${s.attempt + 1})\u2026`, 'Connection lost. Showing the last known data; missed events will be replayed.');
      break;
    case 'waiting': {
      const secs = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
      view.connection('reconnecting', secs ? `Reconnecting in ${secs}s` : 'Reconnecting\u2026',
        'Connection lost. Showing the last known data; missed events will be replayed.');
      countdown = setTimeout(paintState, 250);
      break;
    }
    case 'auth':
      view.connection('auth', 'Token needed', 'The gateway did not accept the token.');
      break;
    default:
      break;
  }
}

function onSnapshot(msg) {
  if (asOf) return;
  const ok = model.applySnapshot(msg);
  if (!ok) {
    model.notice('The gateway could not read a snapshot (Redis unreachable); keeping the last known data.', 'warn');
    view.feed();
    return;
  }
  if (msg.recovered === false) {
    model.notice('Missed events could not be replayed; reloaded the snapshot.', 'warn');
  }
  view.everything();
  view.feed();
  if (firstSnapshot) {
    firstSnapshot = false;
    backfillFeed();
  }
}

/** A publication on the persona's channel: `variant_update`, or a type this page does not know. */
function onPublication(msg) {
  if (msg.type !== 'variant_update' || asOf) return;
  const change = model.applyEvent(msg);
  if (!change) return;
  if (change.type === 'pattern_fatigue') view.side();
  else view.variant(change.id, change.structural);
  if (change.type === 'early_kill' || change.type === 'pattern_fatigue') refreshSoon();
  view.feed();
}

function onStatus(msg) {
  if (msg.redis === 'down') {
    redisDown = true;
    model.notice('Redis is down: live updates are paused.', 'warn');
  } else if (msg.redis === 'up') {
    const was = redisDown;
    redisDown = false;
    if (was) model.notice('Redis is back; reloading the snapshot.');
    refresh();
  }
  if (msg.resync) {
    model.notice('The gateway dropped some events; reloading the snapshot.', 'warn');
    refresh();
  }
  view.feed();
  paintState();
}

function refresh() {
  if (!conn.refresh()) return;
  model.beginRefresh();
  lastRefresh = Date.now();
  scheduleRefresh();
}

/** The next periodic refresh; slower with many variants (a snapshot grows with them). */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const every = REFRESH_MS * Math.max(1, Math.ceil(model.variants.size / 250));
  refreshTimer = setTimeout(() => {
    if (asOf) return;
    if (document.visibilityState === 'visible' && !redisDown) refresh();
    else scheduleRefresh();
  }, every);
}

function refreshSoon() {
  if (soonTimer) return;
  const wait = Math.max(REFRESH_SOON_MS, lastRefresh + REFRESH_SOON_MIN_GAP_MS - Date.now());
  soonTimer = setTimeout(() => {
    soonTimer = 0;
    refresh();
  }, wait);
}

/** Older events for the feed, so it is not empty until the next event. */
async function backfillFeed() {
  try {
    const res = await fetch(`/api/metrics/${encodeURIComponent(persona)}${query({ token: token() })}`,
      { headers: { Accept: 'application/json' } });
    if (!res.ok) return;
    const body = await res.json();
    if (Array.isArray(body.real_time_feed)) {
      model.backfillFeed(body.real_time_feed);
      view.feed();
    }
  } catch {
    // The feed fills from live events anyway.
  }
}

// ----- token dialog ------------------------------------------------------

const dialog = document.getElementById('token-dialog');
const tokenInput = document.getElementById('token-input');
const tokenHint = document.getElementById('token-hint');

function openTokenDialog(hint) {
  tokenInput.value = token();
  if (hint) tokenHint.textContent = hint;
  if (!dialog.open) dialog.showModal();
}

document.getElementById('token-button').addEventListener('click', () => openTokenDialog(''));
dialog.addEventListener('close', () => {
  if (dialog.returnValue === 'save') {
    const t = tokenInput.value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } else if (dialog.returnValue === 'clear') {
    sessionStorage.removeItem(TOKEN_KEY);
  } else {
    return; // after a refused token the client stays stopped until reconnect()
  }
  conn.reconnect();
});

addEventListener('hashchange', () => {
  if (new URLSearchParams(location.hash.slice(1)).has('token')) {
    takeTokenFromFragment();
    conn.reconnect();
  }
});

// ----- looking back (history.js) ---------------------------------------

const history_ = new History({
  persona,
  query: (params) => query({ ...params, token: token() }),
  // A past snapshot replaces the page's state; the live events that arrive
  // meanwhile are dropped, and a fresh snapshot is asked for on return.
  onPast(body) {
    asOf = true;
    clearTimeout(refreshTimer);
    model.variants = new Map();
    model.applySnapshot({ type: 'initial_data', offset: body.offset, data: body.data });
    view.everything();
  },
  onLive() {
    asOf = false;
    model.variants = new Map();
    refresh();
  },
});

const channels = new ChannelAnalytics({ query: (params) => query({ ...params, token: token() }) });

// For the browser tests and for debugging from the console.
window.pulsegate = { model, view, conn, refresh, history: history_, channels };

conn.connect();
