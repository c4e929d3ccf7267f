// The client over Server-Sent Events, against the real gateway binary and a
// real redis-server (tests/browser/harness.mjs): chosen with
// `transport: 'sse'`, and fallen back to when WebSockets cannot be opened.
// Read with fetch (Node has no EventSource before v22): no package needed.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import WebSocket from 'ws';

import { Gateway, Persona, RedisServer, Resp } from '../../../tests/browser/harness.mjs';
import { Client } from '../pulsegate.js';
import { record, until } from './util.mjs';

const run = `sse${process.pid}`;
const fast = { baseDelayMs: 50, maxDelayMs: 200 };

let redis;
let resp;
let gateway;

before(async () => {
  redis = await RedisServer.start();
  resp = await Resp.connect(redis.port);
  gateway = await Gateway.start(redis.port, { PULSEGATE_SSE_KEEPALIVE_INTERVAL: '200ms' });
});

after(async () => {
  await gateway?.stop();
  resp?.close();
  await redis?.stop();
});

/** A WebSocket that never gets through (a proxy that breaks the upgrade). */
class Blocked extends WebSocket {
  constructor(url, ...rest) {
    super(url.replace(/\/(dashboard\/ws|ws)\b/, '/nowhere'), ...rest);
  }
}

describe('the client over Server-Sent Events', () => {
  test("transport: 'sse': initial_data, live messages, a resume with ?since= that gets every event once, refresh()", async () => {
    const p = new Persona(resp, `live_${run}`);
    await p.post('s0');
    const client = new Client({ ...fast, url: gateway.base, persona: p.id, transport: 'sse' });
    assert.equal(client.transport, 'sse');
    const log = record(client);
    client.connect();
    await until('initial_data', () => log.of('initial_data').length === 1);
    const offsets = [await p.post('s1'), await p.update('s1', 100, 5)];
    await until('two live messages', () => log.offsets().length === 2);
    assert.equal(log.of('message')[1].data.view_count, 100);
    assert.equal(client.send({ type: 'ping' }), false, 'one-way');
    client.pause();
    offsets.push(await p.post('s2'), await p.post('s3'));
    client.connect();
    await until('the resumed stream', () => log.of('open').length === 2);
    assert.equal(log.of('open')[1].resumed, true);
    offsets.push(await p.post('s4'));
    await until('every event', () => log.offsets().length >= offsets.length);
    await sleep(300); // keep-alives meanwhile; nothing else
    assert.deepEqual(log.offsets(), offsets, 'each event once, in order');
    assert.equal(log.of('initial_data').length, 1, 'a complete resume sends no snapshot');
    assert.equal(client.refresh(), true, 'over SSE: the stream again, without since');
    await until('a fresh snapshot', () => log.of('initial_data').length === 2);
    assert.equal(log.of('initial_data')[1].offset, offsets.at(-1));
    client.close();
  });

  test('auto: two WebSocket opens that fail switch to SSE; /ws channels go in the stream URL', async () => {
    const a = new Persona(resp, `a_${run}`);
    const b = new Persona(resp, `b_${run}`);
    await a.post('a0');
    await b.post('b0');
    const client = new Client({ ...fast, url: gateway.base, WebSocket: Blocked });
    const log = record(client);
    const switched = [];
    client.on('transport', (t) => switched.push(t));
    client.subscribe(`persona:${a.id}`);
    client.connect();
    await until('the switch', () => switched.length === 1);
    assert.deepEqual(switched[0], { transport: 'sse', failures: 2 });
    assert.equal(client.transport, 'sse');
    await until('subscribed', () => log.of('subscribed').length === 1);
    const first = await a.post('a1');
    await until('a message', () => log.offsets().includes(first));
    // A second channel reopens the stream, resuming the first.
    client.subscribe(`persona:${b.id}`);
    await until('both subscribed', () => log.of('subscribed').length === 3);
    const resumed = log.of('subscribed').find((m, i) => i > 0 && m.channel === `persona:${a.id}`);
    assert.equal(resumed.recovered, true);
    const second = [await a.post('a2'), await b.post('b1')];
    await until('both channels', () => second.every((o) => log.offsets().includes(o)));
    assert.deepEqual(log.offsets().filter((o) => o === first), [first], 'not twice');
    client.close();
  });

  test('auto: a WebSocket that opened once is never given up for SSE', async () => {
    const p = new Persona(resp, `ws_${run}`);
    await p.post('w0');
    const client = new Client({ ...fast, url: gateway.base, persona: p.id, WebSocket });
    const log = record(client);
    client.connect();
    await until('initial_data', () => log.of('initial_data').length === 1);
    assert.equal(client.transport, 'websocket');
    client.close();
  });
});
