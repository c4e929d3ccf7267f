// The client against a scripted WebSocket server (the `ws` package): what a
// real gateway does not do on demand, or does not do yet (the 1012 drain
// hint and `/ws` resume, decisions.md D6 and D7).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import WebSocket, { WebSocketServer } from 'ws';

import { Client, backoff } from '../pulsegate.js';
import { record, seeded, until } from './util.mjs';

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

/** A WebSocket server that hands each connection to `script(conn, index)`. */
async function stub(script) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const conns = [];
  wss.on('connection', (sock, req) => {
    const conn = {
      sock,
      url: req.url,
      at: Date.now(),
      received: [],
      send: (msg) => sock.send(JSON.stringify(msg)),
    };
    sock.on('message', (d) => {
      const msg = JSON.parse(d.toString());
      conn.received.push(msg);
      conn.onMessage?.(msg);
    });
    conns.push(conn);
    script(conn, conns.length - 1);
  });
  const s = {
    conns,
    url: `http://127.0.0.1:${wss.address().port}`,
    close: () => new Promise((resolve) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => resolve());
    }),
  };
  servers.push(s);
  return s;
}

const fast = { WebSocket, baseDelayMs: 50, maxDelayMs: 100 };
const update = (offset) => ({ type: 'variant_update', offset, data: { event_type: 'performance_update' } });

describe('reconnecting', () => {
  test('a 1012 close waits the reconnect_ms hint plus jitter, then resumes with since', async () => {
    const s = await stub((c, i) => {
      if (i > 0) return;
      c.send({ type: 'initial_data', offset: '5-0', data: {} });
      c.send(update('6-0'));
      setTimeout(() => c.sock.close(1012, JSON.stringify({ reconnect_ms: 800 })), 50);
    });
    const client = new Client({ ...fast, url: s.url, persona: 'p1', random: () => 0.5 });
    const log = record(client);
    client.connect();
    await until('the second connection', () => s.conns.length === 2);
    client.close();
    const closed = log.first('close');
    assert.equal(closed.arg.code, 1012);
    // Far above the 100 ms backoff cap: the hint decides.
    assert.equal(closed.arg.retryInMs, 800 + 0.5 * 250);
    const gap = s.conns[1].at - closed.at;
    assert.ok(gap >= 915 && gap < 1400, `reconnected ${gap} ms after the close`);
    assert.equal(s.conns[1].url, '/dashboard/ws/p1?since=6-0');
    const waiting = log.of('state').find((st) => st.state === 'waiting');
    assert.equal(waiting.code, 1012);
  });

  test('a 1012 without a usable hint, or any other close, falls back to the backoff', async () => {
    const s = await stub((c) => c.sock.close(1012, 'service restart'));
    const client = new Client({ ...fast, url: s.url, random: () => 0.5 });
    const log = record(client);
    client.connect();
    await until('a close', () => log.of('close').length >= 1);
    client.close();
    assert.equal(log.of('close')[0].retryInMs, backoff(0, () => 0.5, fast));
  });

  test('failures in a row follow the backoff (seeded random)', async () => {
    const s = await stub((c) => c.sock.close(1011, 'internal error'));
    const client = new Client({ ...fast, url: s.url, random: seeded(9) });
    const log = record(client);
    client.connect();
    await until('six closes', () => log.of('close').length >= 6);
    client.close();
    const random = seeded(9);
    const expected = Array.from({ length: 6 }, (_, n) => backoff(n, random, fast));
    assert.deepEqual(log.of('close').slice(0, 6).map((c) => c.retryInMs), expected);
    const attempts = log.of('state').filter((st) => st.state === 'waiting').map((st) => st.attempt);
    assert.deepEqual(attempts.slice(0, 6), [1, 2, 3, 4, 5, 6]);
  });

  test('a refused token (1008, 4001, 4003, 4401) stops the retries until reconnect()', async () => {
    const s = await stub((c, i) => {
      if (i === 0) c.sock.close(4001, 'token expired');
      else c.send({ type: 'initial_data', offset: null, data: {} });
    });
    const client = new Client({ ...fast, url: s.url, persona: 'p1' });
    const log = record(client);
    client.connect();
    await until('the close', () => log.of('close').length === 1);
    assert.deepEqual(
      { code: log.of('close')[0].code, auth: log.of('close')[0].auth, willRetry: log.of('close')[0].willRetry },
      { code: 4001, auth: true, willRetry: false },
    );
    assert.equal(client.state, 'auth');
    await sleep(400);
    assert.equal(s.conns.length, 1, 'no retry');
    client.reconnect();
    await until('initial_data', () => log.of('initial_data').length === 1);
    assert.equal(client.state, 'open');
    client.close();
  });

  test('silence is a dead connection; a handshake that never ends is given up', async () => {
    const s = await stub(() => {}); // answers nothing, not even pings
    const client = new Client({ ...fast, url: s.url, pingEveryMs: 50, silenceMs: 150 });
    const log = record(client);
    client.connect();
    await until('a second connection', () => s.conns.length === 2);
    client.close();
    assert.equal(log.of('close')[0].local, true);
    assert.match(log.of('close')[0].reason, /no message for 150 ms/);
    assert.ok(s.conns[0].received.some((m) => m.type === 'ping'));

    const held = [];
    const mute = net.createServer((sock) => held.push(sock)); // accepts, never answers the upgrade
    mute.listen(0, '127.0.0.1');
    await once(mute, 'listening');
    const c2 = new Client({ ...fast, url: `http://127.0.0.1:${mute.address().port}`, connectTimeoutMs: 200 });
    const log2 = record(c2);
    c2.connect();
    await until('the timeout', () => log2.of('close').length >= 1);
    c2.close();
    for (const sock of held) sock.destroy();
    mute.close();
    assert.deepEqual([log2.of('close')[0].reason, log2.of('close')[0].local], ['connect timeout', true]);
  });

  test('a failing getToken is reported and retried', async () => {
    const s = await stub((c) => c.send({ type: 'initial_data', offset: null, data: {} }));
    let calls = 0;
    const client = new Client({
      ...fast,
      url: s.url,
      persona: 'p1',
      getToken: async () => {
        calls += 1;
        if (calls === 1) throw new Error('identity provider down');
        return 'tok';
      },
    });
    const log = record(client);
    client.connect();
    await until('initial_data', () => log.of('initial_data').length === 1);
    client.close();
    assert.deepEqual(log.of('error').map((e) => [e.code, e.local]), [['token_unavailable', true]]);
    assert.equal(s.conns[0].url, '/dashboard/ws/p1?token=tok');
  });
});

describe('delivering each event once', () => {
  test('/dashboard/ws: publications at or before the newest offset are dropped; a failed resume starts over', async () => {
    const s = await stub((c) => {
      c.send({ type: 'initial_data', offset: '5-0', data: {} });
      for (const o of ['4-0', '5-0', '6-0', '6-0', '7-0']) c.send(update(o));
      c.send({ type: 'custom', note: 'no offset: always passes' });
      c.send({ type: 'initial_data', offset: '6-0', data: {} }); // a refresh overtaken by 7-0
      c.send(update('7-0'));
      c.send(update('8-0'));
      c.send({ type: 'status', redis: 'down' });
      c.send({ type: 'pong' });
      c.send({ type: 'error', code: 'rate_limited', message: 'slow down' });
      c.send({ type: 'initial_data', offset: '3-0', recovered: false, data: {} }); // Redis was wiped
      c.send(update('4-0'));
    });
    const client = new Client({ ...fast, url: s.url, persona: 'p1' });
    const log = record(client);
    client.connect();
    await until('the last update', () => log.of('message').length === 5);
    await sleep(50);
    client.close();
    assert.deepEqual(log.offsets(), ['6-0', '7-0', null, '8-0', '4-0']);
    assert.equal(log.of('message')[2].type, 'custom');
    assert.deepEqual(log.all.find((e) => e.type === 'message').meta, { channel: 'persona:p1', offset: '6-0' });
    assert.equal(log.of('initial_data').length, 3);
    assert.deepEqual(log.of('status'), [{ type: 'status', redis: 'down' }]);
    assert.equal(log.of('pong').length, 1);
    assert.deepEqual(log.of('error').map((e) => e.code), ['rate_limited']);
    assert.equal(client.offset(), '4-0');
  });

  test('/ws: resubscribes after a reconnect with since, and a resume (decisions.md D6) delivers each message once', async () => {
    const msg = (channel, offset) => ({ type: 'message', channel, offset, data: { type: 'variant_update', offset } });
    const s = await stub((c, i) => {
      c.onMessage = (m) => {
        if (m.type === 'unsubscribe') c.send({ type: 'unsubscribed', channel: m.channel });
        if (m.type !== 'subscribe') return;
        if (i === 0) {
          c.send({ type: 'subscribed', channel: m.channel, offset: '10-0', recovered: true });
          c.send(msg('persona:a', '11-0'));
          c.send(msg('persona:b', '50-0')); // not subscribed
          setTimeout(() => c.sock.close(1012, '{"reconnect_ms":0}'), 30);
        } else {
          c.send({ type: 'subscribed', channel: m.channel, offset: m.since, recovered: true });
          for (const o of ['11-0', '12-0', '13-0', '14-0']) c.send(msg('persona:a', o));
        }
      };
    });
    const client = new Client({ ...fast, url: s.url });
    const log = record(client);
    client.subscribe('persona:a');
    client.connect();
    await until('the live message after the resume', () => log.offsets().includes('14-0'));
    assert.deepEqual(log.offsets(), ['11-0', '12-0', '13-0', '14-0']);
    assert.deepEqual(s.conns[0].received.filter((m) => m.type === 'subscribe'), [{ type: 'subscribe', channel: 'persona:a' }]);
    assert.deepEqual(s.conns[1].received.filter((m) => m.type === 'subscribe'),
      [{ type: 'subscribe', channel: 'persona:a', since: '11-0' }]);
    assert.equal(log.of('subscribed').length, 2);
    assert.deepEqual(log.all.filter((e) => e.type === 'message').map((e) => e.meta.channel), Array(4).fill('persona:a'));
    assert.equal(client.offset('persona:a'), '14-0');

    assert.equal(client.unsubscribe('persona:a'), true);
    await until('unsubscribed', () => log.of('unsubscribed').length === 1);
    s.conns[1].send(msg('persona:a', '15-0')); // in flight while leaving: dropped
    await sleep(50);
    assert.equal(log.offsets().length, 4);
    assert.deepEqual(client.offsets, {});
    client.close();
  });

  test('/ws: a failed resume (recovered:false) moves the floor to the ack offset', async () => {
    const s = await stub((c) => {
      c.onMessage = (m) => {
        if (m.type !== 'subscribe') return;
        c.send({ type: 'subscribed', channel: m.channel, offset: '20-0', recovered: false });
        c.send({ type: 'message', channel: m.channel, offset: '20-0', data: {} });
        c.send({ type: 'message', channel: m.channel, offset: '21-0', data: {} });
      };
    });
    const client = new Client({ ...fast, url: s.url });
    const log = record(client);
    client.subscribe('persona:a', { since: '99-0' });
    client.connect();
    await until('21-0', () => log.offsets().includes('21-0'));
    client.close();
    assert.equal(s.conns[0].received[0].since, '99-0');
    assert.deepEqual(log.offsets(), ['21-0']);
  });
});
