// The library's pure functions: backoff (with a seeded random), the server's
// reconnect hint, offsets, token expiry, URLs; the SSE reader over a scripted fetch.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  Client, DEFAULTS, backoff, compareOffsets, parseOffset, restartDelay, tokenExpiry,
  EventStreamSocket,
} from '../pulsegate.js';
import { fakeJwt, seeded } from './util.mjs';

describe('backoff', () => {
  test('attempt n waits between d/2 and d, d = min(15 s, 0.5 s · 2ⁿ)', () => {
    const random = seeded(42);
    for (let n = 0; n < 40; n++) {
      const d = Math.min(15000, 500 * 2 ** n);
      for (let i = 0; i < 200; i++) {
        const wait = backoff(n, random);
        assert.ok(wait >= d / 2 && wait <= d, `attempt ${n}: ${wait} outside [${d / 2}, ${d}]`);
      }
    }
    assert.equal(backoff(0, () => 0), 250);
    assert.equal(backoff(0, () => 0.999999), 500);
    assert.equal(backoff(4, () => 0), 4000);
    assert.equal(backoff(5, () => 0), 7500, 'capped at 15 s from attempt 5');
    assert.equal(backoff(1e6, () => 0.999999), 15000, 'no overflow for huge attempts');
  });

  test('the same seed gives the same delays, and the jitter spreads them', () => {
    const a = Array.from({ length: 50 }, (_, i) => backoff(i % 6, seeded(7 + i)));
    const b = Array.from({ length: 50 }, (_, i) => backoff(i % 6, seeded(7 + i)));
    assert.deepEqual(a, b);
    const firsts = new Set(Array.from({ length: 100 }, (_, i) => backoff(3, seeded(i))));
    assert.ok(firsts.size > 50, `100 clients at attempt 3 should not retry together (${firsts.size} distinct delays)`);
  });

  test('base and cap are options', () => {
    const random = seeded(1);
    for (let n = 0; n < 10; n++) {
      const wait = backoff(n, random, { baseDelayMs: 100, maxDelayMs: 1000 });
      const d = Math.min(1000, 100 * 2 ** n);
      assert.ok(wait >= d / 2 && wait <= d, `${n}: ${wait}`);
    }
    assert.equal(DEFAULTS.baseDelayMs, 500);
    assert.equal(DEFAULTS.maxDelayMs, 15000);
  });
});

describe('the reconnect hint (close 1012)', () => {
  test('a drain close is waited out, with a jitter of our own of up to a tenth (0.25 s to 5 s)', () => {
    const hint = '{"reconnect_ms":10000}';
    assert.equal(restartDelay(1012, hint, () => 0), 10000);
    assert.equal(restartDelay(1012, hint, () => 0.5), 10500);
    assert.equal(restartDelay(1012, '{"reconnect_ms":0}', () => 1), 250);
    assert.equal(restartDelay(1012, '{"reconnect_ms":120000}', () => 1), 125000, 'at most 5 s of jitter');
    assert.equal(restartDelay(1012, ' {"reconnect_ms": 7, "other": true} ', () => 0), 7, 'other fields are ignored');
    assert.equal(restartDelay(1012, '{"reconnect_ms":3600000}', () => 0), DEFAULTS.maxHintMs, 'capped');
    assert.equal(restartDelay(1012, '{"reconnect_ms":9000}', () => 0, { maxHintMs: 5000 }), 5000);
    const random = seeded(3);
    for (const ms of [0, 100, 2000, 10000, 60000]) {
      const jitter = Math.min(5000, Math.max(250, ms / 10));
      const seen = new Set();
      for (let i = 0; i < 200; i++) {
        const wait = restartDelay(1012, JSON.stringify({ reconnect_ms: ms }), random);
        assert.ok(wait >= ms && wait <= ms + jitter, `hint ${ms}: ${wait}`);
        seen.add(wait);
      }
      assert.ok(seen.size > 20, `hint ${ms}: jittered`);
    }
  });

  test('anything else falls back to the backoff', () => {
    assert.equal(restartDelay(1001, '{"reconnect_ms":10000}'), null);
    for (const bad of ['', 'server shutting down', '{"reconnect_ms":-5}', '{"reconnect_ms":"soon"}',
      '{"reconnect_ms":null}', '[1]', 'null', '{}', '{"reconnect_ms":1e999}', undefined]) {
      assert.equal(restartDelay(1012, bad), null, JSON.stringify(bad));
    }
  });
});

describe('offsets', () => {
  test('compare as (ms, seq) integer pairs, never as strings', () => {
    assert.ok(compareOffsets('999-0', '1000-0') < 0);
    assert.ok(compareOffsets('1000-10', '1000-9') > 0);
    assert.equal(compareOffsets('5-1', '5-1'), 0);
    assert.ok(compareOffsets(null, '0-0') < 0);
    assert.ok(compareOffsets('1-0', 'junk') > 0);
    assert.deepEqual(parseOffset('1795317600123-4'), [1795317600123, 4]);
    assert.equal(parseOffset('1-2-3'), null);
    assert.equal(parseOffset(12), null);
  });
});

describe('tokens', () => {
  test('the expiry of a JWT, none for anything else', () => {
    assert.equal(tokenExpiry(fakeJwt({ sub: 'ä', exp: 1795318800 })), 1795318800000);
    assert.equal(tokenExpiry(fakeJwt({ sub: 'x' })), null);
    assert.equal(tokenExpiry('s3cret'), null);
    assert.equal(tokenExpiry('a.!!!.c'), null);
    assert.equal(tokenExpiry(null), null);
  });
});

describe('the client', () => {
  /** A WebSocket that records its URL and never connects. */
  function recorder() {
    const urls = [];
    class Fake {
      constructor(url) {
        urls.push(url);
        this.readyState = 0;
      }
      close() {
        this.readyState = 3;
      }
    }
    return { urls, Fake };
  }

  test('builds the endpoint URL from an http(s) or ws(s) base, with since and token', async () => {
    const { urls, Fake } = recorder();
    const a = new Client({ url: 'http://gw.example:8080/prefix/', persona: 'persona_alpha', since: '17-2', WebSocket: Fake });
    a.connect();
    const b = new Client({ url: 'https://gw.example', WebSocket: Fake, getToken: async () => 'tok en' });
    b.connect();
    await new Promise((r) => setTimeout(r, 10));
    const c = new Client({ url: 'ws://127.0.0.1:1?x=1', WebSocket: Fake });
    c.connect();
    for (const x of [a, b, c]) x.close();
    assert.deepEqual(urls, [
      'ws://gw.example:8080/prefix/dashboard/ws/persona_alpha?since=17-2',
      'wss://gw.example/ws?token=tok+en',
      'ws://127.0.0.1:1/ws',
    ]);
    assert.equal(a.offset(), '17-2');
    assert.equal(a.offset('persona:persona_alpha'), '17-2');
  });

  test('refuses what it cannot use', () => {
    const { Fake } = recorder();
    assert.throws(() => new Client({ url: 'ftp://x', WebSocket: Fake }), /scheme/);
    assert.throws(() => new Client({ persona: 'p', WebSocket: Fake }), /url is required/);
    assert.throws(() => new Client({ url: 'http://x', persona: 'p', since: 'yesterday', WebSocket: Fake }), /offset/);
    const multi = new Client({ url: 'http://x', WebSocket: Fake });
    assert.throws(() => multi.subscribe('persona:a', { since: '12' }), /offset/);
    const one = new Client({ url: 'http://x', persona: 'p', WebSocket: Fake });
    assert.throws(() => one.subscribe('persona:a'), /\/ws/);
    if (typeof globalThis.WebSocket === 'undefined') {
      assert.throws(() => new Client({ url: 'http://x', transport: 'websocket' }), /options\.WebSocket/);
      // `auto` with no WebSocket: Server-Sent Events from the start.
      assert.equal(new Client({ url: 'http://x' }).transport, 'sse');
    }
    assert.throws(() => new Client({ url: 'http://x', WebSocket: Fake, transport: 'carrier-pigeon' }), /transport/);
  });
});

/** A fetch answering `status` with `chunks` as the body, one read each. */
function fakeFetch(status, chunks, seen = []) {
  return async (url, init) => {
    seen.push({ url, init });
    const body = new ReadableStream({
      start(c) {
        for (const chunk of chunks) c.enqueue(new TextEncoder().encode(chunk));
        c.close();
      },
    });
    return new Response(body, { status, headers: { 'content-type': status === 200 ? 'text/event-stream' : 'application/json' } });
  };
}

/** Runs an EventStreamSocket to its close; resolves with what it reported. */
function drive(fetch) {
  return new Promise((resolve) => {
    const got = { open: 0, messages: [], activity: 0 };
    const s = new EventStreamSocket('http://x/sse/p', { fetch });
    s.onopen = () => (got.open += 1);
    s.onmessage = (ev) => (ev.data == null ? (got.activity += 1) : got.messages.push(ev.data));
    s.onclose = (ev) => resolve({ ...got, close: ev });
  });
}

describe('EventStreamSocket', () => {
  test('events split anywhere across reads, multi-line data, comments, and the drain hint as a 1012 close', async () => {
    const r = await drive(fakeFetch(200, [
      ': pulsegate\n\nid: 1-0\nevent: initial_',
      'data\ndata: {"type":"initial_data",\r\ndata: "offset":"1-0"}\n\n: keep-alive\n\n',
      'data: {"type":"x"}\n\nevent: reconnect\ndata: {"reconnect_ms":1500}\nretry: 1500\n\ndata: {"late":1}\n\n',
    ]));
    assert.equal(r.open, 1);
    assert.deepEqual(r.messages, ['{"type":"initial_data",\n"offset":"1-0"}', '{"type":"x"}']);
    assert.equal(r.activity, 2);
    assert.deepEqual(r.close, { code: 1012, reason: '{"reconnect_ms":1500}' });
  });

  test('event: close carries the code; refusals map to close codes; an end without a last event is 1006', async () => {
    const closed = await drive(fakeFetch(200, ['event: close\ndata: {"code":4008,"reason":"slow consumer"}\n\n']));
    assert.deepEqual(closed.close, { code: 4008, reason: 'slow consumer' });
    for (const [status, code] of [[401, 4401], [403, 4003], [400, 1008], [503, 1013], [500, 1006]]) {
      const r = await drive(fakeFetch(status, ['{"error":{"code":"nope","message":"no"}}']));
      assert.deepEqual([r.open, r.close.code, r.close.reason], [0, code, 'nope'], `HTTP ${status}`);
    }
    const ended = await drive(fakeFetch(200, ['data: {}\n\n']));
    assert.deepEqual([ended.messages, ended.close.code], [['{}'], 1006]);
  });
});
