// The dashboard page's look back at the audit trail, in headless Chromium:
// the analytics panel loads only when opened and draws its charts from the
// analytics API; the "as of" control shows a past moment (live updates
// paused) and returns to live; the channel analytics panel draws a `task`
// namespace's messages by type. A real redis-server, Postgres and gateway.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  ARTIFACTS, Gateway, Persona, RedisServer, Resp, chromiumAvailable, launchBrowser, until,
} from './harness.mjs';
import { PgServer, postgresAvailable } from './postgres.mjs';

const skip = !chromiumAvailable()
  ? 'Chromium is not installed (scripts/ensure-chromium.sh)'
  : !postgresAvailable() ? 'PostgreSQL is not installed (scripts/ensure-postgres.sh)' : false;

let redis;
let pg;
let gateway;
let resp;
let browser;
const consoleErrors = [];

describe('analytics and as of', { skip }, () => {
  before(async () => {
    redis = await RedisServer.start();
    pg = await PgServer.start();
    gateway = await Gateway.start(redis.port, {
      PULSEGATE_DATABASE_URL: pg.url,
      PULSEGATE_AUDIT_DISCOVER_INTERVAL: '200ms',
      PULSEGATE_AUDIT_POLL_INTERVAL: '50ms',
    });
    resp = await Resp.connect(redis.port);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    resp?.close();
    await gateway?.stop();
    pg?.stop();
    await redis?.stop();
  });

  /** Waits until the audit holds `n` events of `persona`. */
  async function audited(persona, n) {
    await until(`${n} audited events`, async () => {
      const res = await fetch(`${gateway.base}/api/analytics/${persona}/summary`);
      const body = await res.json();
      return body.events?.total === n;
    }, { timeout: 30000, every: 200 });
  }

  test('the panel loads on demand; as of shows a past moment and returns to live', async () => {
    const p = new Persona(resp, 'hist');
    // Before T: a1 and a2, a2 updated. After T: b1 posted, a1 killed.
    await p.post('a1');
    await p.post('a2');
    await p.update('a2', 200, 9);
    await sleep(1200);
    const t = Math.floor(Date.now() / 1000) * 1000;
    await sleep(1200);
    await p.post('b1');
    await p.kill('a1');
    await audited('hist', 5);

    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    const api = [];
    page.on('request', (r) => { if (r.url().includes('/api/analytics/') || r.url().includes('/api/snapshot/')) api.push(r.url()); });
    await page.goto(`${gateway.base}/dashboard/hist`);
    await until('live', async () => (await page.locator('#conn-text').textContent()) === 'Live');
    const rows = () => page.evaluate(() => [...document.querySelectorAll('#variants tbody tr[data-variant-id]')]
      .filter((tr) => !tr.classList.contains('killed')).map((tr) => tr.dataset.variantId).sort());
    await until('the live table', async () => JSON.stringify(await rows()) === '["a2","b1"]');
    assert.deepEqual(api, [], 'nothing is asked of the audit before the panel opens');

    // The panel: figures and four charts, drawn from the API's numbers.
    await page.click('#analytics > summary');
    await page.waitForSelector('#analytics[data-state=loaded]', { timeout: 20000 });
    assert.equal(api.filter((u) => u.includes('/summary')).length, 1);
    const drawn = await page.evaluate(() => {
      const sum = (id) => [...document.querySelectorAll(`#${id} rect.bar`)].reduce((s, r) => s + Number(r.dataset.value), 0);
      const bars = (id) => document.querySelectorAll(`#${id} rect.bar`).length;
      return {
        figures: document.getElementById('analytics-figures').textContent,
        events: sum('chart-events'), posts: sum('chart-posts'), kills: sum('chart-kills'), er: sum('chart-er'),
        hourBars: bars('chart-events'), erBars: bars('chart-er'),
      };
    });
    assert.deepEqual([drawn.events, drawn.posts, drawn.kills, drawn.er], [5, 3, 1, 1]);
    assert.ok(drawn.hourBars >= 24 && drawn.hourBars <= 25, `${drawn.hourBars} hour buckets`);
    assert.equal(drawn.erBars, 21);
    assert.match(drawn.figures, /Variants posted3/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'analytics-panel.png'), fullPage: true });

    // As of T: a1 active again, b1 not posted yet.
    const local = await page.evaluate((ms) => {
      const d = new Date(ms);
      const z = (n) => String(n).padStart(2, '0');
      return `${d.getFullYear()}-${z(d.getMonth() + 1)}-${z(d.getDate())}T${z(d.getHours())}:${z(d.getMinutes())}:${z(d.getSeconds())}`;
    }, t);
    await page.fill('#asof-input', local);
    await page.click('#asof-show');
    await until('the past table', async () => JSON.stringify(await rows()) === '["a1","a2"]');
    assert.ok(await page.evaluate(() => document.body.classList.contains('asof')));
    assert.ok(await page.isVisible('#asof-live'));
    // Live events are not applied while a past moment is shown.
    await p.post('c1');
    await sleep(500);
    assert.deepEqual(await rows(), ['a1', 'a2']);
    await page.screenshot({ path: path.join(ARTIFACTS, 'analytics-asof.png'), fullPage: true });

    // Back to live: a fresh snapshot, c1 included.
    await page.click('#asof-live');
    await until('the live table again', async () => JSON.stringify(await rows()) === '["a2","b1","c1"]');
    assert.ok(!(await page.evaluate(() => document.body.classList.contains('asof'))));
    assert.deepEqual(consoleErrors, []);
    await context.close();
  });

  test('the channel analytics panel draws a namespace\'s messages by type', async () => {
    // 7 task_output lines and 2 task_status on two `task` channels (the
    // default namespace, with history), published as any backend would.
    const sent = [['1', 'task_output', 4], ['1', 'task_status', 1], ['2', 'task_output', 3], ['2', 'task_status', 1]];
    for (const [id, type, n] of sent) {
      for (let i = 0; i < n; i++) {
        await resp.command('FCALL', 'pulse_publish', '1', `pulse:{task:${id}}`, JSON.stringify({ type, data: { task_id: id, i } }));
      }
    }
    await until('9 audited messages', async () => {
      const res = await fetch(`${gateway.base}/api/analytics/channels/task/summary`);
      return (await res.json()).messages?.total === 9;
    }, { timeout: 30000, every: 200 });

    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    const api = [];
    page.on('request', (r) => { if (r.url().includes('/api/analytics/channels')) api.push(r.url()); });
    await page.goto(`${gateway.base}/dashboard/hist`);
    await until('live', async () => (await page.locator('#conn-text').textContent()) === 'Live');
    assert.deepEqual(api, [], 'nothing is asked of the audit before the panel opens');

    await page.click('#channel-analytics > summary');
    await page.waitForSelector('#channel-analytics[data-state=loaded]', { timeout: 20000 });
    const drawn = await page.evaluate(() => {
      const bars = (sel) => [...document.querySelectorAll(`${sel} rect.bar`)].map((r) => Number(r.dataset.value));
      const sum = (sel) => bars(sel).reduce((s, v) => s + v, 0);
      return {
        namespaces: [...document.querySelectorAll('#channel-ns option')].map((o) => o.value),
        figures: document.getElementById('channel-figures').textContent,
        messages: sum('#chart-ns-messages'), hourBars: bars('#chart-ns-messages').length,
        byType: bars('#chart-ns-types'),
        perType: [...document.querySelectorAll('[id^=chart-ns-type-]')].map((f) => [f.dataset.type, f.querySelector('figcaption').textContent, sum(`#${f.id}`)]),
      };
    });
    assert.deepEqual(drawn.namespaces, ['task']);
    assert.match(drawn.figures, /Messages9/);
    assert.match(drawn.figures, /Channels2/);
    assert.equal(drawn.messages, 9);
    assert.ok(drawn.hourBars >= 24 && drawn.hourBars <= 25, `${drawn.hourBars} hour buckets`);
    assert.deepEqual(drawn.byType.sort(), [2, 7]);
    assert.deepEqual(drawn.perType, [['task_output', 'task_output', 7], ['task_status', 'task_status', 2]]);
    assert.equal(api.filter((u) => u.includes('/summary')).length, 1);
    await page.screenshot({ path: path.join(ARTIFACTS, 'analytics-channels.png'), fullPage: true });

    // 30 days by day: the same messages in the last bucket.
    await page.selectOption('#channel-range', '30d');
    await until('day buckets', async () => page.evaluate(() => {
      const bars = [...document.querySelectorAll('#chart-ns-messages rect.bar')];
      return document.getElementById('channel-analytics').dataset.state === 'loaded' && bars.length >= 30
        && Number(bars[bars.length - 1].dataset.value) === 9;
    }));
    assert.deepEqual(consoleErrors, []);
    await context.close();
  });
});
