// The gateway's runtime page: /system. Watches the `system:runtime` channel
// on /ws through the client library (/client/pulsegate.js, which reconnects
// with backoff and subscribes again after every reconnect) and draws the
// newest figures as cards and the last 60 s as four charts (chart.js).
// docs/ui.md describes it.

import { Client } from '/client/pulsegate.js';
import { Chart } from './chart.js';

const CHANNEL = 'system:runtime';
const WINDOW_MS = 60000;
/** Samples kept: a minute at the fastest interval the gateway allows (100 ms), plus slack. */
const MAX_POINTS = 700;
const TOKEN_KEY = 'pulsegate.token';

const $ = (id) => document.getElementById(id);
const points = [];
let frame = 0;
let connState = 'connecting';
let forbidden = false;

const charts = [
  new Chart($('chart-cpu'), [
    { key: 'cpu_percent', label: 'CPU', unit: ' %' },
    { key: 'memory_mb', label: 'Memory', unit: ' MB', axis: 'right' },
  ], WINDOW_MS),
  new Chart($('chart-throughput'), [
    { key: 'messages_in_per_s', label: 'Messages in', unit: '/s' },
    { key: 'deliveries_per_s', label: 'Deliveries', unit: '/s', axis: 'right' },
  ], WINDOW_MS),
  new Chart($('chart-depth'), [
    { key: 'outbox_depth_max', label: 'Largest', unit: '' },
    { key: 'outbox_depth_mean', label: 'Mean', unit: '' },
  ], WINDOW_MS),
  new Chart($('chart-errors'), [
    { key: 'errors_per_s', label: 'Errors', unit: '/s' },
    { key: 'rate_limited_per_s', label: 'Rate-limited', unit: '/s' },
  ], WINDOW_MS),
];

// ----- token (auth) ------------------------------------------------------

function takeTokenFromFragment() {
  const t = new URLSearchParams(location.hash.slice(1)).get('token');
  if (t == null) return;
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  history.replaceState(null, '', location.pathname + location.search);
}

const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
takeTokenFromFragment();

// ----- connection --------------------------------------------------------

const conn = new Client({ getToken: () => token() });
conn.subscribe(CHANNEL);
conn.on('runtime', onSample);
conn.on('state', (s) => {
  connState = s.state;
  if (s.state === 'open') forbidden = false;
  paintState(s);
});
conn.on('error', (e) => {
  if (e.code === 'forbidden') {
    forbidden = true;
    banner('This token cannot see the runtime metrics: they need the admin role.');
    paintState({ state: 'auth' });
    openTokenDialog();
  } else {
    console.warn('pulsegate:', e.code, e.message);
  }
});

function paintState(s) {
  const c = $('conn');
  const set = (state, text) => {
    c.dataset.state = state;
    $('conn-text').textContent = text;
  };
  switch (s.state) {
    case 'open':
      if (!forbidden) {
        set('live', 'Live');
        banner('');
      }
      break;
    case 'connecting':
      set('connecting', 'Connecting\u2026');
      break;
    case 'reconnecting':
    case 'waiting':
      set('reconnecting', 'Reconnecting\u2026');
      banner('Connection lost; reconnecting. The charts resume when the gateway is back.');
      break;
    case 'auth':
      set('auth', 'Token needed');
      break;
    default:
      break;
  }
}

function banner(text) {
  const b = $('banner');
  b.textContent = text;
  b.hidden = !text;
}

function onSample(msg) {
  if (!msg || typeof msg.data !== 'object' || msg.data === null) return;
  const t = Date.parse(msg.timestamp);
  const p = { t: Number.isFinite(t) ? t : Date.now(), d: msg.data };
  // A sample older than the newest (a gateway whose clock stepped back, or
  // one restarted elsewhere): start the window over rather than draw backwards.
  if (points.length && p.t < points[points.length - 1].t) points.length = 0;
  points.push(p);
  if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
  if (!frame) frame = requestAnimationFrame(draw);
}

// ----- drawing -----------------------------------------------------------

const num = (v, digits = 0) => (typeof v === 'number' && Number.isFinite(v)
  ? v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '\u2014');

function card(name, value, sub, state) {
  const c = document.querySelector(`[data-card="${name}"]`);
  const v = c.querySelector('[data-value]');
  v.textContent = value;
  if (state) v.dataset.state = state;
  else delete v.dataset.state;
  c.querySelector('[data-sub]').textContent = sub;
}

function draw() {
  frame = 0;
  const last = points[points.length - 1];
  if (!last) return;
  const d = last.d;
  card('cpu', `${num(d.cpu_percent, 1)} %`, `${num(d.thread_count)} threads`);
  card('memory', `${num(d.memory_mb, 1)} MB`, `${num(d.memory_percent, 2)} % of the machine`);
  card('connections', num(d.connections), `${num(d.subscriptions)} subscriptions`);
  card('messages', `${num(d.messages_in_per_s, 1)}/s`, 'from Redis');
  card('deliveries', `${num(d.deliveries_per_s, 1)}/s`, 'frames to clients');
  card('depth', num(d.outbox_depth_max), `mean ${num(d.outbox_depth_mean, 2)} \u00b7 ${num(d.slow_disconnects)} slow disconnects`);
  card('errors', `${num(d.errors_per_s, 1)}/s`, `${num(d.rate_limited_per_s, 1)}/s rate-limited`);
  const down = d.redis !== 'up' || d.postgres === 'down';
  const lag = typeof d.audit_lag_seconds === 'number' ? `audit lag ${num(d.audit_lag_seconds, 1)} s` : 'no audit here';
  card('backends', `${d.redis ?? '\u2014'} \u00b7 ${d.postgres ?? '\u2014'}`, lag, down ? 'down' : 'up');
  $('sample-time').textContent = new Date(last.t).toLocaleTimeString();
  for (const c of charts) c.draw(points);
}

// ----- token dialog ------------------------------------------------------

const dialog = $('token-dialog');
const tokenInput = $('token-input');

function openTokenDialog() {
  tokenInput.value = token();
  if (!dialog.open) dialog.showModal();
}

$('token-button').addEventListener('click', openTokenDialog);
dialog.addEventListener('close', () => {
  if (dialog.returnValue === 'save') {
    const t = tokenInput.value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } else if (dialog.returnValue === 'clear') {
    sessionStorage.removeItem(TOKEN_KEY);
  } else {
    return;
  }
  conn.reconnect();
});

addEventListener('hashchange', () => {
  if (new URLSearchParams(location.hash.slice(1)).has('token')) {
    takeTokenFromFragment();
    conn.reconnect();
  }
});

// For the browser tests and for debugging from the console.
window.pulsegate = { conn, points, charts, state: () => connState };

conn.connect();
