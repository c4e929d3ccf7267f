// Helpers of the client library's tests.

import crypto from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

/** mulberry32: a seeded random in [0, 1), so jitter is reproducible. */
export function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT signed with `secret`. */
export function jwt(claims, secret) {
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${head}.${crypto.createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** A JWT-shaped token whose signature nobody checks. */
export const fakeJwt = (claims) => jwt(claims, 'not checked');

/**
 * Records every event of a client, in order, as {type, arg, meta, at}:
 * `log.of(type)` gives the first arguments of one type, `log.offsets()` the
 * offsets of the `message` events.
 */
export function record(client) {
  const all = [];
  for (const type of ['open', 'close', 'state', 'initial_data', 'message', 'status', 'error',
    'subscribed', 'unsubscribed', 'authenticated', 'pong']) {
    client.on(type, (arg, meta) => all.push({ type, arg, meta, at: Date.now() }));
  }
  return {
    all,
    of: (type) => all.filter((e) => e.type === type).map((e) => e.arg),
    first: (type) => all.find((e) => e.type === type),
    offsets: () => all.filter((e) => e.type === 'message').map((e) => e.meta.offset),
  };
}

/** Polls `fn` until it returns something truthy. */
export async function until(what, fn, { timeout = 15000, every = 20 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(every);
  }
}
