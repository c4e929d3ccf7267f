// The gateway's runtime page (/system) in headless Chromium: a real
// redis-server and the gateway binary (runtime.interval 250 ms), a steady
// trickle of publications, then a gateway restart on the same port.
//
//   scripts/browser-test.sh --test-name-pattern=runtime

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  ARTIFACTS, Gateway, RedisServer, Resp, chromiumAvailable, launchBrowser, until,
} from './harness.mjs';

const skip = chromiumAvailable() ? false : 'Chromium is not installed (scripts/ensure-chromium.sh)';
const CHARTS = ['chart-cpu', 'chart-throughput', 'chart-depth', 'chart-errors'];

let redis;
let gateway;
let resp;
let browser;
let publisher;
const requests = [];
const consoleErrors = [];

/** Per chart: samples held, the newest sample's time, and its drawn lines. */
function readCharts(page) {
  return page.evaluate((ids) => Object.fromEntries(ids.map((id) => {
    const f = document.getElementById(id);
    return [id, {
      points: Number(f.dataset.points ?? 0),
      last: Number(f.dataset.last ?? 0),
      lines: [...f.querySelectorAll('path.line')].map((p) => p.getAttribute('d')),
    }];
  })), CHARTS);
}

const connText = (page) => page.locator('#conn-text').textContent();

describe('runtime page', { skip }, () => {
  before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    redis = await RedisServer.start();
    gateway = await Gateway.start(redis.port, { PULSEGATE_RUNTIME_INTERVAL: '250ms' });
    resp = await Resp.connect(redis.port);
    browser = await launchBrowser();
    // Publications on a channel the page does not watch still count as messages in,
    // once someone subscribes to it: a second page on the persona's dashboard does.
    let n = 0;
    publisher = setInterval(() => {
      resp.command('PUBLISH', 'pulse:{rt_page}:events', JSON.stringify({ type: 'x', n: n++ })).catch(() => {});
    }, 50);
  });

  after(async () => {
    clearInterval(publisher);
    await browser?.close();
    resp?.close();
    await gateway?.stop();
    await redis?.stop();
  });

  test('four charts update live and recover after a gateway restart', async () => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    context.on('request', (r) => requests.push(r.url()));
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    // A subscriber for the published channel, so the gateway receives it.
    const dash = await context.newPage();
    await dash.goto(`${gateway.base}/dashboard/rt_page`);

    await page.goto(`${gateway.base}/system`);
    await until('live', async () => (await connText(page)) === 'Live', { timeout: 20000 });
    await until('every chart holding 4 samples', async () => {
      const c = await readCharts(page);
      return CHARTS.every((id) => c[id].points >= 4 && c[id].lines.length === 2);
    }, { timeout: 20000 });
    const first = await readCharts(page);
    await until('every chart moved on', async () => {
      const c = await readCharts(page);
      return CHARTS.every((id) => c[id].last > first[id].last && c[id].lines.join() !== first[id].lines.join());
    }, { timeout: 20000 });
    await until('messages in and deliveries shown', async () => {
      const v = await page.evaluate(() => window.pulsegate.points.at(-1)?.d);
      return v && v.messages_in_per_s > 0 && v.deliveries_per_s > 0 && v.connections >= 2;
    }, { timeout: 20000 });
    const cards = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('[data-card]')]
      .map((c) => [c.dataset.card, c.querySelector('[data-value]').textContent])));
    assert.match(cards.cpu, /^\d[\d,]*\.\d %$/);
    assert.match(cards.memory, /^\d[\d,]*\.\d MB$/);
    assert.match(cards.connections, /^\d+$/);
    assert.equal(cards.backends, 'up \u00b7 off');
    await page.screenshot({ path: path.join(ARTIFACTS, 'system-live.png') });

    // Restart: the page says so, reconnects with backoff, subscribes again, and the charts go on.
    await gateway.kill('SIGKILL');
    await until('the page notices', async () => /^Reconnecting/.test(await connText(page)), { timeout: 15000 });
    const during = await readCharts(page);
    await gateway.spawn();
    await until('live again', async () => (await connText(page)) === 'Live', { timeout: 30000 });
    await until('samples after the restart in every chart', async () => {
      const c = await readCharts(page);
      return CHARTS.every((id) => c[id].last > during[id].last);
    }, { timeout: 20000 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'system-after-restart.png') });

    const base = new URL(gateway.base);
    const foreign = requests.filter((u) => new URL(u).host !== base.host);
    assert.deepEqual(foreign, [], 'the page requested nothing but the gateway');
    assert.deepEqual(consoleErrors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(e)), []);
    await context.close();
  });
});
