// Test harness: a redis-server and the gateway binary on free ports, a tiny
// RESP client to ingest events with FCALL pulse_ingest, and headless Chromium.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ARTIFACTS = path.join(REPO, 'tests/artifacts');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const PREFIX = 'pulse';

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function until(what, fn, { timeout = 15000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(every);
  }
}

function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

// ----- RESP ----------------------------------------------------------------

/** A minimal RESP2 client: one connection, commands answered in order. */
export class Resp {
  static async connect(port) {
    const r = new Resp();
    await new Promise((resolve, reject) => {
      r.sock = net.connect({ port, host: '127.0.0.1' }, resolve);
      r.sock.once('error', reject);
    });
    r.sock.on('data', (d) => r.onData(d));
    r.sock.on('error', (e) => r.failAll(e));
    r.sock.on('close', () => r.failAll(new Error('redis connection closed')));
    return r;
  }

  constructor() {
    this.buf = Buffer.alloc(0);
    this.waiting = [];
  }

  failAll(e) {
    for (const w of this.waiting.splice(0)) w.reject(e);
  }

  /** Sends one command; resolves with its reply (errors reject). */
  command(...args) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.sock.write(Resp.encode(args));
    });
  }

  /** Sends many commands in one write and waits for all replies. */
  pipeline(commands) {
    const replies = commands.map(() => new Promise((resolve, reject) => this.waiting.push({ resolve, reject })));
    this.sock.write(Buffer.concat(commands.map((c) => Resp.encode(c))));
    return Promise.all(replies);
  }

  static encode(args) {
    const parts = [`*${args.length}\r\n`];
    for (const a of args) {
      const s = Buffer.from(String(a));
      parts.push(`$${s.length}\r\n`, s, '\r\n');
    }
    return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
  }

  onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      const r = Resp.parse(this.buf, 0);
      if (!r) return;
      this.buf = this.buf.subarray(r.end);
      const w = this.waiting.shift();
      if (!w) continue;
      if (r.value instanceof Error) w.reject(r.value);
      else w.resolve(r.value);
    }
  }

  static parse(buf, at) {
    const nl = buf.indexOf('\r\n', at);
    if (nl < 0) return null;
    const line = buf.toString('utf8', at + 1, nl);
    const next = nl + 2;
    switch (String.fromCharCode(buf[at])) {
      case '+':
        return { value: line, end: next };
      case '-':
        return { value: new Error(line), end: next };
      case ':':
        return { value: Number(line), end: next };
      case '$': {
        const n = Number(line);
        if (n < 0) return { value: null, end: next };
        if (buf.length < next + n + 2) return null;
        return { value: buf.toString('utf8', next, next + n), end: next + n + 2 };
      }
      case '*': {
        const n = Number(line);
        if (n < 0) return { value: null, end: next };
        const out = [];
        let pos = next;
        for (let i = 0; i < n; i++) {
          const r = Resp.parse(buf, pos);
          if (!r) return null;
          out.push(r.value);
          pos = r.end;
        }
        return { value: out, end: pos };
      }
      default:
        throw new Error(`bad RESP from redis: ${line}`);
    }
  }

  close() {
    this.sock?.destroy();
  }
}

// ----- Redis ---------------------------------------------------------------

export class RedisServer {
  constructor(port, dir) {
    this.port = port;
    this.dir = dir;
    this.child = null;
  }

  static async start() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulsegate-browser-redis-'));
    const r = new RedisServer(await freePort(), dir);
    await r.spawn();
    return r;
  }

  /** Append-only persistence, so a killed and restarted server keeps its data. */
  async spawn() {
    const bin = process.env.PULSEGATE_REDIS_SERVER || 'redis-server';
    this.child = spawn(bin, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '',
      '--appendonly', 'yes', '--appendfsync', 'always', '--dir', this.dir], { stdio: 'ignore' });
    this.child.once('error', (e) => {
      console.error(`cannot start ${bin}: ${e.message}`);
    });
    await until(`redis-server on ${this.port}`, () => portOpen(this.port), { timeout: 10000 });
  }

  async kill() {
    if (!this.child) return;
    const c = this.child;
    this.child = null;
    c.kill('SIGKILL');
    await exited(c);
  }

  async stop() {
    await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ----- the gateway -----------------------------------------------------------

export class Gateway {
  /** `env`: extra settings, e.g. `{ PULSEGATE_AUTH_MODE: 'jwt' }`. */
  constructor(redisPort, port, env = {}) {
    this.redisPort = redisPort;
    this.port = port;
    this.env = env;
    this.child = null;
    this.bin = process.env.PULSEGATE_BIN || path.join(REPO, 'target/debug/pulsegate');
    this.log = path.join(ARTIFACTS, 'gateway.log');
    this.cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'pulsegate-browser-gw-'));
  }

  static async start(redisPort, env = {}) {
    const g = new Gateway(redisPort, await freePort(), env);
    await g.spawn();
    return g;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  async spawn() {
    if (!fs.existsSync(this.bin)) {
      throw new Error(`no gateway binary at ${this.bin}: build it (cargo build --bin pulsegate) or set PULSEGATE_BIN`);
    }
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const env = {};
    for (const [k, v] of Object.entries(process.env)) {
      // The gateway maps PULSEGATE_* onto config keys and rejects unknown ones.
      if (!k.startsWith('PULSEGATE_') && k !== 'REDIS_URL' && k !== 'DATABASE_URL') env[k] = v;
    }
    Object.assign(env, {
      PULSEGATE_REDIS_PROBE_INTERVAL: '200ms',
      PULSEGATE_REDIS_COMMAND_TIMEOUT: '2s',
      PULSEGATE_REDIS_UNRESPONSIVE_TIMEOUT: '3s',
      PULSEGATE_REDIS_RECONNECT_MAX_DELAY: '500ms',
      RUST_LOG: process.env.RUST_LOG || 'info',
    }, this.env);
    const out = fs.openSync(this.log, 'a');
    // The working directory is empty, so config/pulsegate.toml is not read: defaults.
    this.child = spawn(this.bin, ['serve', '--listen', `127.0.0.1:${this.port}`,
      '--redis-url', `redis://127.0.0.1:${this.redisPort}`], { cwd: this.cwd, env, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const child = this.child;
    await until('GET /readyz = 200', async () => {
      if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}; see ${this.log}`);
      const res = await fetch(`${this.base}/readyz`).catch(() => null);
      return res?.status === 200;
    }, { timeout: 20000, every: 100 });
  }

  async kill(signal = 'SIGKILL') {
    if (!this.child) return;
    const c = this.child;
    this.child = null;
    c.kill(signal);
    await exited(c);
  }

  async stop() {
    await this.kill('SIGTERM');
    fs.rmSync(this.cwd, { recursive: true, force: true });
  }
}

// ----- ingest ----------------------------------------------------------------

/** Reports events for one persona through the Lua library, as a monitor would. */
export class Persona {
  constructor(redis, id) {
    this.redis = redis;
    this.id = id;
    this.key = `${PREFIX}:{${id}}`;
  }

  /** FCALL pulse_ingest; resolves with the event's stream offset. */
  ingest(event) {
    return this.redis.command('FCALL', 'pulse_ingest', '1', this.key, JSON.stringify(event));
  }

  ingestMany(events) {
    return this.redis.pipeline(events.map((e) => ['FCALL', 'pulse_ingest', '1', this.key, JSON.stringify(e)]));
  }

  post(variant_id, fields = {}) {
    return this.ingest({ type: 'variant_posted', variant_id, content: `Content of ${variant_id}`, predicted_er: 0.05, ...fields });
  }

  update(variant_id, view_count, interaction_count, fields = {}) {
    return this.ingest({ type: 'performance_update', variant_id, view_count, interaction_count, ...fields });
  }

  kill(variant_id, fields = {}) {
    return this.ingest({ type: 'early_kill', variant_id, reason: 'low_engagement', final_engagement_rate: 0.01, sample_size: 1000, ...fields });
  }
}

// ----- the browser -----------------------------------------------------------

/**
 * Headless Chromium that cannot reach anything but loopback: names other than
 * localhost do not resolve and every proxied request goes to a closed port
 * (docs/decisions.md F11: --disable-background-networking alone still calls out).
 */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  const closed = await freePort();
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
      `--proxy-server=127.0.0.1:${closed}`,
    ],
  });
}

export function chromiumAvailable() {
  try {
    fs.accessSync(CHROMIUM, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
