// The client against the real gateway binary and a real redis-server on free
// ports (tests/browser/harness.mjs), events ingested with FCALL pulse_ingest.
//
// PULSEGATE_BIN selects the gateway (default target/debug/pulsegate),
// PULSEGATE_REDIS_SERVER the redis-server.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import WebSocket from 'ws';

import { Gateway, Persona, REPO, RedisServer, Resp } from '../../../tests/browser/harness.mjs';
import { Client } from '../pulsegate.js';
import { jwt, record, until } from './util.mjs';

const run = `${process.pid}`;
const fast = { baseDelayMs: 50, maxDelayMs: 200 };
/** Over `ws.max_message_bytes` (64 KiB): the gateway closes the socket with 1009. */
const TOO_BIG = { type: 'ping', pad: 'x'.repeat(70000) };

let redis;
let gateway;
let resp;

/** A `ws` WebSocket that records the URLs it opened and the messages it sent. */
function recordingWebSocket() {
  const urls = [];
  const sent = [];
  class Recording extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      urls.push(url);
    }

    send(data, ...rest) {
      sent.push(JSON.parse(data));
      super.send(data, ...rest);
    }
  }
  return { urls, sent, Recording };
}

before(async () => {
  redis = await RedisServer.start();
  resp = await Resp.connect(redis.port);
});

after(async () => {
  resp?.close();
  await redis?.stop();
});

describe('the client against the gateway', () => {
  before(async () => {
    gateway = await Gateway.start(redis.port);
  });

  after(async () => {
    await gateway?.stop();
  });

  test('GET /client/pulsegate.js serves clients/js/pulsegate.js, revalidated like the page assets', async () => {
    const res = await fetch(`${gateway.base}/client/pulsegate.js`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(await res.text(), fs.readFileSync(path.join(REPO, 'clients/js/pulsegate.js'), 'utf8'),
      'the gateway embeds the package source itself (rebuild the gateway after editing it)');
    const again = await fetch(`${gateway.base}/client/pulsegate.js`, { headers: { 'If-None-Match': res.headers.get('etag') } });
    assert.equal(again.status, 304);
    assert.equal((await fetch(`${gateway.base}/ui/connection.js`)).status, 404, 'the page has no copy of its own');
  });

  test('/dashboard/ws: initial_data, then live messages', async () => {
    const p = new Persona(resp, `client_live_${run}`);
    await p.post('v1', { content: 'Hello' });
    const snap = await p.update('v1', 100, 5);
    const client = new Client({ ...fast, url: gateway.base, persona: p.id, WebSocket });
    const log = record(client);
    client.connect();
    await until('initial_data', () => log.of('initial_data').length === 1);
    const initial = log.of('initial_data')[0];
    assert.equal(initial.offset, snap);
    assert.equal(initial.data.active_variants[0].variant_id, 'v1');
    assert.equal(log.first('open').arg.resumed, false);
    const live = await p.update('v1', 200, 10);
    await until('the live update', () => log.offsets().includes(live));
    const { arg, meta } = log.all.find((e) => e.type === 'message');
    assert.deepEqual(meta, { channel: `persona:${p.id}`, offset: live });
    assert.equal(arg.type, 'variant_update');
    assert.equal(arg.data.view_count, 200);
    assert.equal(client.offset(), live);
    client.close();
    assert.equal(client.state, 'closed');
  });

  test('/dashboard/ws: the server closes the socket; the client resumes with ?since= and gets every event once', async () => {
    const p = new Persona(resp, `client_close_${run}`);
    await p.post('c0');
    const { urls, Recording } = recordingWebSocket();
    // The first retry waits 300 ms: events are published while disconnected.
    const client = new Client({ url: gateway.base, persona: p.id, WebSocket: Recording, baseDelayMs: 600, random: () => 0 });
    const log = record(client);
    const published = [];
    client.on('close', () => {
      for (let i = 1; i <= 3; i++) published.push(p.post(`gap${i}`));
    });
    client.connect();
    await until('initial_data', () => log.of('initial_data').length === 1);
    published.push(p.post('c1'), p.post('c2'));
    await until('two live posts', () => log.offsets().length === 2);
    const before = client.offset();
    client.send(TOO_BIG);
    await until('the resumed connection', () => log.of('open').length === 2);
    published.push(p.post('c3'), p.post('c4'));
    const offsets = await Promise.all(published);
    await until('every post', () => log.offsets().length >= offsets.length);
    await sleep(100);
    assert.equal(log.of('close')[0].code, 1009);
    assert.equal(new URL(urls[1]).searchParams.get('since'), before);
    assert.equal(log.of('open')[1].resumed, true);
    assert.deepEqual(log.offsets(), offsets, 'each event once, in order');
    assert.equal(log.of('initial_data').length, 1, 'a complete resume sends no snapshot');
    client.close();
  });

  test('/dashboard/ws: the gateway is killed and restarted while events stream in; each arrives once', async () => {
    const p = new Persona(resp, `client_restart_${run}`);
    await p.post('r0');
    const client = new Client({ ...fast, url: gateway.base, persona: p.id, WebSocket });
    const log = record(client);
    client.connect();
    await until('initial_data', () => log.of('initial_data').length === 1);
    // Posts are never conflated, so a lagging client still gets each one.
    const offsets = [];
    let pumping = true;
    const pump = (async () => {
      for (let i = 0; pumping; i++) {
        offsets.push(await p.post(`r${i + 1}`));
        await sleep(10);
      }
    })();
    await until('live posts', () => log.offsets().length >= 5);
    await gateway.kill('SIGKILL');
    await until('the client notices', () => log.of('close').length >= 1);
    await sleep(300);
    await gateway.spawn();
    await until('the resumed connection', () => log.of('open').length === 2, { timeout: 30000 });
    const atResume = offsets.length;
    await until('live posts after the restart', () => log.offsets().length > atResume + 5);
    pumping = false;
    await pump;
    await until('every post', () => log.offsets().length >= offsets.length);
    await sleep(100);
    assert.ok(offsets.length > 20, `${offsets.length} posts`);
    assert.deepEqual(log.offsets(), offsets, 'each event once, in order');
    assert.equal(log.of('initial_data').length, 1);
    assert.equal(log.of('open')[1].resumed, true);
    client.close();
  });

  test('/ws: subscribe (with since), refresh, live messages, resubscribe after a close, unsubscribe', async (t) => {
    const p = new Persona(resp, `client_multi_${run}`);
    const channel = `persona:${p.id}`;
    const first = await p.post('w1');
    const { sent, Recording } = recordingWebSocket();
    const client = new Client({ url: gateway.base, WebSocket: Recording, baseDelayMs: 600, random: () => 0 });
    const log = record(client);
    client.subscribe(channel, { since: first });
    client.connect();
    await until('subscribed', () => log.of('subscribed').length === 1);
    assert.deepEqual(sent[0], { type: 'subscribe', channel, since: first }, 'sending since does not break subscribing');
    assert.equal(log.of('subscribed')[0].channel, channel);
    assert.ok(client.refresh());
    await until('initial_data', () => log.of('initial_data').length === 1);
    assert.equal(log.of('initial_data')[0].channel, channel);
    assert.equal(log.of('initial_data')[0].offset, first);
    const live = await p.post('w2');
    await until('a live message', () => log.offsets().includes(live));
    const m = log.all.find((e) => e.type === 'message');
    assert.deepEqual(m.meta, { channel, offset: live });
    assert.equal(m.arg.type, 'variant_update');
    assert.equal(m.arg.data.variant_id, 'w2');

    // The server closes the socket: the client subscribes again, resuming after w2.
    const gap = [];
    client.on('close', () => gap.push(p.post('gap1'), p.post('gap2')));
    client.send(TOO_BIG);
    await until('subscribed again', () => log.of('subscribed').length === 2);
    assert.deepEqual(sent.filter((s) => s.type === 'subscribe').at(-1), { type: 'subscribe', channel, since: live });
    const missed = await Promise.all(gap);
    const after1 = await p.post('w3');
    await until('a live message after the resubscribe', () => log.offsets().includes(after1));
    const seen = log.offsets();
    assert.equal(new Set(seen).size, seen.length, 'no duplicates');
    if (log.of('subscribed')[1].recovered === undefined) {
      t.diagnostic('this gateway does not resume /ws subscriptions yet (no `recovered` in the ack, decisions.md D6): '
        + 'events published while disconnected are not checked');
    } else {
      assert.deepEqual(seen, [live, ...missed, after1], 'the resume replays what was missed, once');
    }

    assert.equal(client.unsubscribe(channel), true);
    await until('unsubscribed', () => log.of('unsubscribed').length === 1);
    await p.post('w4');
    await sleep(300);
    assert.equal(log.offsets().at(-1), after1, 'nothing after unsubscribing');
    client.close();
  });
});

/** True when the gateway drains with 1012 and a hint (it has `shutdown.drain_window`, decisions.md D7). */
function gatewayDrains(bin) {
  const out = spawnSync(bin, ['config'], { cwd: os.tmpdir(), encoding: 'utf8' });
  try {
    return JSON.parse(out.stdout).shutdown?.drain_window !== undefined;
  } catch {
    return false;
  }
}

describe('a gateway shutting down', () => {
  test('the client waits the 1012 reconnect hint (1001 before the drain existed), then resumes with ?since=', async (t) => {
    const drains = gatewayDrains(new Gateway(0, 0).bin);
    const g = await Gateway.start(redis.port, drains
      ? { PULSEGATE_SHUTDOWN_LB_GRACE: '0s', PULSEGATE_SHUTDOWN_DRAIN_WINDOW: '1s', PULSEGATE_SHUTDOWN_DRAIN_TIMEOUT: '3s' }
      : {});
    const p = new Persona(resp, `client_drain_${run}`);
    await p.post('d0');
    const client = new Client({ ...fast, url: g.base, persona: p.id, WebSocket });
    try {
      const log = record(client);
      client.connect();
      await until('initial_data', () => log.of('initial_data').length === 1);
      const offsets = [await p.post('d1')];
      await until('a live post', () => log.offsets().length === 1);
      const exited = g.kill('SIGTERM');
      await until('the close', () => log.of('close').length === 1);
      const closed = log.first('close');
      if (drains) {
        assert.equal(closed.arg.code, 1012);
        const hint = JSON.parse(closed.arg.reason).reconnect_ms;
        const jitter = Math.min(5000, Math.max(250, hint / 10));
        assert.ok(closed.arg.retryInMs >= hint && closed.arg.retryInMs <= hint + jitter,
          `waits ${closed.arg.retryInMs} ms for a hint of ${hint} ms`);
      } else {
        assert.equal(closed.arg.code, 1001);
        t.diagnostic('this gateway closes with 1001 at shutdown (no drain hint yet, decisions.md D7)');
      }
      await exited;
      offsets.push(await p.post('d2'), await p.post('d3'));
      await g.spawn();
      await until('the resumed connection', () => log.of('open').length === 2, { timeout: 30000 });
      const reopened = log.all.filter((e) => e.type === 'open')[1];
      assert.ok(reopened.at - closed.at >= closed.arg.retryInMs, 'not before the wait');
      assert.equal(reopened.arg.since, offsets[0]);
      offsets.push(await p.post('d4'));
      await until('every post', () => log.offsets().length >= offsets.length);
      await sleep(100);
      assert.deepEqual(log.offsets(), offsets, 'each event once, in order');
      assert.equal(log.of('initial_data').length, 1);
    } finally {
      client.close();
      await g.stop();
    }
  });
});

describe('token renewal against a gateway with JWT auth', () => {
  const secret = 'client-library-test-secret-0123456789';
  let jg;
  const token = (secs) => jwt({ sub: 'tester', personas: '*', role: 'viewer', exp: Math.floor(Date.now() / 1000) + secs }, secret);

  before(async () => {
    jg = await Gateway.start(redis.port, {
      PULSEGATE_AUTH_MODE: 'jwt',
      PULSEGATE_AUTH_SECRET: secret,
      PULSEGATE_AUTH_LEEWAY: '0s',
    });
  });

  after(async () => {
    await jg?.stop();
  });

  test('getToken renews the token before it expires, with {"type":"auth"}; the connection lives on', async () => {
    let calls = 0;
    const client = new Client({
      ...fast,
      url: jg.base,
      persona: `client_auth_${run}`,
      WebSocket,
      renewBeforeMs: 1500,
      getToken: async () => {
        calls += 1;
        return calls === 1 ? token(3) : token(60);
      },
    });
    const log = record(client);
    client.connect();
    await until('initial_data', () => log.of('initial_data').length === 1);
    await until('authenticated', () => log.of('authenticated').length === 1, { timeout: 5000 });
    const expires = log.of('authenticated')[0].expires_at * 1000 - Date.now();
    assert.ok(expires > 50000, `renewed until ${expires} ms from now`);
    await sleep(3500); // past the first token's expiry
    assert.equal(client.state, 'open');
    assert.deepEqual(log.of('close'), []);
    assert.equal(calls, 2);
    client.close();
  });

  test('a token that is not renewed ends with 4001, and the client waits for reconnect()', async () => {
    const short = token(2);
    const client = new Client({ ...fast, url: jg.base, persona: `client_auth_${run}`, WebSocket, getToken: () => short });
    const log = record(client);
    client.connect();
    await until('open', () => log.of('open').length === 1);
    await until('the close', () => log.of('close').length === 1, { timeout: 6000 });
    const closed = log.of('close')[0];
    assert.deepEqual([closed.code, closed.auth, closed.willRetry], [4001, true, false]);
    assert.equal(client.state, 'auth');
    await sleep(400);
    assert.equal(log.of('open').length, 1, 'no retry with a refused token');
    client.close();
  });
});
