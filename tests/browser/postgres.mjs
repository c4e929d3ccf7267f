// A throwaway PostgreSQL cluster for the browser tests that need the audit
// trail: initdb into a temporary directory, a free port, removed on stop.
// Run as the `postgres` user when the tests run as root (initdb and
// postgres refuse root), as tests/integration/pg.rs does.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { freePort } from './harness.mjs';

function pgBin() {
  if (process.env.PULSEGATE_PG_BIN) return process.env.PULSEGATE_PG_BIN;
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).sort((a, b) => Number(a) - Number(b)) : [];
  return versions.length ? path.join(root, versions[versions.length - 1], 'bin') : null;
}

export function postgresAvailable() {
  const bin = pgBin();
  return !!bin && fs.existsSync(path.join(bin, 'initdb'));
}

const isRoot = () => process.getuid?.() === 0;

function run(tool, args) {
  const bin = path.join(pgBin(), tool);
  const [cmd, argv] = isRoot() ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  execFileSync(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export class PgServer {
  static async start() {
    const s = new PgServer();
    s.port = await freePort();
    s.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulsegate-browser-pg-'));
    if (isRoot()) execFileSync('chown', ['postgres', s.dir]);
    const data = path.join(s.dir, 'data');
    run('initdb', ['-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '-D', data]);
    run('pg_ctl', ['-w', '-D', data, '-o', `-p ${s.port} -k ${s.dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
      '-l', path.join(s.dir, 'log'), 'start']);
    run('createdb', ['-h', '127.0.0.1', '-p', String(s.port), '-U', 'postgres', 'pulsegate']);
    return s;
  }

  get url() {
    return `postgres://postgres@127.0.0.1:${this.port}/pulsegate`;
  }

  stop() {
    try {
      run('pg_ctl', ['-D', path.join(this.dir, 'data'), '-m', 'immediate', 'stop']);
    } catch {
      // already stopped
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
