// End-to-end tests of the dashboard page: a real redis-server, the gateway
// binary, events ingested with FCALL pulse_ingest, headless Chromium.
//
//   cd tests/browser && npm ci && node --test
//   (or scripts/browser-test.sh, which also installs Chromium)
//
// PULSEGATE_BIN selects the gateway binary (default target/debug/pulsegate).
// Screenshots go to tests/artifacts/.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  ARTIFACTS, Gateway, Persona, RedisServer, Resp, chromiumAvailable, launchBrowser, until,
} from './harness.mjs';

const MINUTE = 60000;
const run = `${process.pid}`;
const skip = chromiumAvailable() ? false : 'Chromium is not installed (scripts/ensure-chromium.sh)';

let redis;
let gateway;
let resp;
let browser;
let context;
/** Every request the pages made, and every console error. */
const requests = [];
const consoleErrors = [];

async function openPage(persona, { hash = '', viewport } = {}) {
  const page = await context.newPage();
  if (viewport) await page.setViewportSize(viewport);
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(`${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`${page.url()}: ${e.message}`));
  page.sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), frames: [] };
    requests.push(ws.url());
    ws.on('framereceived', (f) => {
      try {
        s.frames.push(JSON.parse(f.payload));
      } catch {
        s.frames.push(f.payload);
      }
    });
    page.sockets.push(s);
  });
  await page.goto(`${gateway.base}/dashboard/${persona}${hash}`);
  return page;
}

const connText = (page) => page.locator('#conn-text').textContent();

async function waitLive(page, timeout = 20000) {
  await until('the page to be live', async () => (await connText(page)) === 'Live', { timeout });
}

/** The table as text, keyed by variant id. */
function readTable(page) {
  return page.evaluate(() => {
    const out = {};
    for (const tr of document.querySelectorAll('#variants tbody tr[data-variant-id]')) {
      const t = (sel) => tr.querySelector(sel)?.textContent ?? null;
      out[tr.dataset.variantId] = {
        content: t('.content'),
        pattern: t('.pattern'),
        predicted: t('[data-col=predicted]'),
        actual: t('.er'),
        ci: t('.ci'),
        delta: t('.delta'),
        deltaClass: tr.querySelector('.delta').className,
        verdict: t('.verdict'),
        views: t('[data-col=views]'),
        interactions: t('[data-col=interactions]'),
        posted: t('[data-col=posted]'),
        status: t('[data-col=status]'),
        spark: tr.querySelector('.spark-line').getAttribute('d'),
      };
    }
    return out;
  });
}

function readCards(page) {
  return page.evaluate(() => {
    const c = (id) => ({
      value: document.querySelector(`#${id} [data-value]`).textContent,
      sub: document.querySelector(`#${id} [data-sub]`).textContent,
    });
    return { active: c('card-active'), avg: c('card-avg'), kills: c('card-kills'), ttk: c('card-ttk') };
  });
}

function readSide(page) {
  return page.evaluate(() => ({
    suggestions: [...document.querySelectorAll('#suggestions li.suggestion')].map((li) => ({
      type: li.dataset.type,
      priority: li.querySelector('.prio').textContent,
      title: li.querySelector('.suggestion-title').textContent,
      description: li.querySelector('.suggestion-desc').textContent,
      action: li.querySelector('.suggestion-action').textContent,
    })),
    warnings: [...document.querySelectorAll('#warnings li.warning')].map((li) => ({
      pattern: li.dataset.pattern,
      text: li.querySelector('.warning-text').textContent,
    })),
    feed: [...document.querySelectorAll('#feed li')].map((li) => ({
      kind: li.querySelector('.ev-kind').textContent,
      text: li.querySelector('.ev-text').textContent,
      offset: li.dataset.offset ?? null,
    })),
  }));
}

async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false });
}

async function api(pathname) {
  const res = await fetch(`${gateway.base}${pathname}`, { headers: { Accept: 'application/json' } });
  assert.equal(res.status, 200, `GET ${pathname}`);
  return res.json();
}

describe('dashboard page', { skip }, () => {
  before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    redis = await RedisServer.start();
    gateway = await Gateway.start(redis.port);
    resp = await Resp.connect(redis.port);
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
    context.on('request', (r) => requests.push(r.url()));
  });

  after(async () => {
    await browser?.close().catch(() => {});
    resp?.close();
    await gateway?.stop();
    await redis?.stop();
  });

  const p1 = new Persona(null, `e2e_main_${run}`);

  test('renders the snapshot: cards, table, warnings, suggestions, feed', async () => {
    p1.redis = resp;
    const postedAt = Date.now() - 20 * MINUTE;
    for (let i = 1; i <= 6; i++) {
      await p1.post(`a${i}`, { content: `Ever wondered why number ${i} works?`, predicted_er: 0.05, pattern_used: 'question_hook', posted_at: postedAt });
    }
    await p1.post('b1', { content: 'Three things I learned from shipping on Fridays', predicted_er: 0.04, pattern_used: 'listicle', posted_at: postedAt });
    for (const [id, v, i] of [['a1', 1000, 10], ['a2', 1000, 12], ['a3', 900, 9], ['a4', 800, 8],
      ['a5', 2000, 150], ['a6', 500, 20], ['b1', 1200, 24]]) {
      await p1.update(id, v, i);
    }
    for (const id of ['a1', 'a2', 'a3', 'a4']) await p1.kill(id);

    const page = await openPage(p1.id);
    await waitLive(page);
    await until('three rows', async () => Object.keys(await readTable(page)).length === 3);
    const rows = await readTable(page);
    assert.deepEqual(Object.keys(rows).sort(), ['a5', 'a6', 'b1']);
    assert.equal(rows.a5.content, 'Ever wondered why number 5 works?');
    assert.equal(rows.a5.pattern, 'question_hook');
    assert.equal(rows.a5.predicted, '5.0%');
    assert.equal(rows.a5.actual, '7.50%');
    assert.equal(rows.a5.delta, '+50.0%');
    assert.match(rows.a5.deltaClass, /\bup\b.*\bstrong\b/);
    assert.equal(rows.a5.verdict, 'Above prediction');
    assert.equal(rows.a5.views, '2,000');
    assert.equal(rows.a5.interactions, '150');
    assert.equal(rows.a5.status, 'Active');
    assert.match(rows.a5.posted, /^(19|20)m$/);
    assert.match(rows.a5.spark, /^M[\d.]+,[\d.]+/, 'the sparkline has a point for this minute');
    assert.equal(rows.a6.delta, '\u221220.0%');
    assert.equal(rows.a6.verdict, 'As predicted');
    assert.equal(rows.b1.actual, '2.00%');
    assert.equal(rows.b1.delta, '\u221250.0%');
    assert.match(rows.b1.deltaClass, /\bdown\b.*\bstrong\b/);
    assert.equal(rows.b1.verdict, 'Below prediction');

    // Intervals: the same as the gateway's (REST API).
    const rest = await api(`/api/variants/${p1.id}/active`);
    for (const v of rest.variants) {
      const [lo, hi] = v.live_metrics.er_interval;
      assert.equal(rows[v.id].ci, `${(lo * 100).toFixed(1)}%\u2013${(hi * 100).toFixed(1)}%`);
    }

    const cards = await readCards(page);
    assert.equal(cards.active.value, '3');
    assert.equal(cards.active.sub, '7 posted in total');
    assert.equal(cards.avg.value, '4.50%'); // (7.5 + 4 + 2) / 3
    assert.equal(cards.kills.value, '4');
    assert.equal(cards.kills.sub, 'kill rate 57% (24 h)');
    assert.match(cards.ttk.value, /^(20|21) min$/);

    const side = await readSide(page);
    assert.deepEqual(side.warnings, [{ pattern: 'question_hook', text: 'used 6\u00d7 in 24 h (threshold 5)' }]);
    const suggestions = (await api(`/api/optimization/${p1.id}`)).suggestions;
    assert.ok(suggestions.length >= 2);
    assert.deepEqual(side.suggestions, suggestions);
    assert.deepEqual(side.suggestions.map((s) => s.type).sort(), ['pattern_fatigue', 'prediction_calibration']);
    // The feed starts with the newest events (GET /api/metrics real_time_feed).
    assert.ok(side.feed.length >= 15, `feed has ${side.feed.length} entries`);
    assert.deepEqual(side.feed.slice(0, 4).map((e) => e.kind), ['Killed', 'Killed', 'Killed', 'Killed']);
    assert.match(side.feed[0].text, /^a4: low_engagement, final ER 1\.00%/);
    await screenshot(page, 'dashboard-snapshot');
    await page.close();
  });

  test('applies live events in place', async () => {
    const page = await openPage(p1.id);
    await waitLive(page);
    await until('rows', async () => Object.keys(await readTable(page)).length === 3);

    await p1.update('b1', 1500, 45);
    await until('b1 updated', async () => (await readTable(page)).b1.views === '1,500');
    let rows = await readTable(page);
    assert.equal(rows.b1.interactions, '45');
    assert.equal(rows.b1.actual, '3.00%');
    assert.equal(rows.b1.delta, '\u221225.0%');

    await p1.post('c1', { content: 'Live post', predicted_er: 0.06, pattern_used: 'data_reveal' });
    await until('c1 shown', async () => (await readTable(page)).c1);
    rows = await readTable(page);
    assert.equal(rows.c1.content, 'Live post');
    assert.equal(rows.c1.views, '0');
    assert.equal(rows.c1.status, 'Active');
    assert.match(rows.c1.posted, /^\ds$/);

    await p1.kill('a6');
    await until('a6 killed', async () => (await readTable(page)).a6.status === 'Killed');
    let cards = await readCards(page);
    assert.equal(cards.kills.value, '5');
    assert.equal(cards.active.value, '3');

    for (let i = 1; i <= 6; i++) await p1.post(`d${i}`, { predicted_er: 0.03, pattern_used: 'personal_story' });
    await until('a live fatigue warning', async () => (await readSide(page)).warnings.some((w) => w.pattern === 'personal_story'));
    const side = await readSide(page);
    assert.equal(side.feed[0].kind, 'Fatigue');
    assert.match(side.feed[0].text, /^'personal_story' used 6\u00d7 in 24h \(threshold 5\)$/);
    assert.equal(side.feed[1].kind, 'Posted');
    assert.match(side.feed[1].text, /^d6 /);

    cards = await readCards(page);
    assert.equal(cards.active.value, '9');
    const metrics = await api(`/api/metrics/${p1.id}`);
    assert.equal(metrics.summary.active_variants, 9);
    assert.equal(cards.avg.value, `${(metrics.summary.avg_engagement_rate * 100).toFixed(2)}%`);
    assert.equal(cards.avg.value, '1.17%'); // (7.5 + 3) / 9
    assert.equal(cards.kills.value, String(metrics.early_kills_today.kills_today));

    // Suggestions are recomputed in snapshots: the page asks for one after kills.
    const expected = (await api(`/api/optimization/${p1.id}`)).suggestions;
    await until('suggestions like the REST API', async () => {
      assert.deepEqual((await readSide(page)).suggestions, expected);
      return true;
    }, { timeout: 20000 });
    assert.ok(expected.some((s) => s.type === 'pattern_fatigue' && s.title.includes('personal_story')));
    await screenshot(page, 'dashboard-live');
    await page.close();
  });

  test('sorts by a column header (aria-sort)', async () => {
    const page = await openPage(p1.id);
    await waitLive(page);
    await until('rows', async () => Object.keys(await readTable(page)).length >= 9);
    const views = async () => page.evaluate(() => [...document.querySelectorAll('#variants tbody [data-col=views]')]
      .map((td) => Number(td.textContent.replace(/,/g, ''))));
    const header = page.locator('#variants th[data-key=view_count]');
    assert.equal(await header.getAttribute('aria-sort'), 'none');
    assert.equal(await page.locator('#variants th[data-key=posted_at]').getAttribute('aria-sort'), 'descending');
    await header.locator('button').click();
    assert.equal(await header.getAttribute('aria-sort'), 'descending');
    await until('sorted descending', async () => {
      const v = await views();
      return v.every((x, i) => i === 0 || v[i - 1] >= x) && v[0] === 2000;
    });
    await header.locator('button').click();
    assert.equal(await header.getAttribute('aria-sort'), 'ascending');
    await until('sorted ascending', async () => {
      const v = await views();
      return v.every((x, i) => i === 0 || v[i - 1] <= x) && v.at(-1) === 2000;
    });
    assert.equal(await page.locator('#variants th[data-key=posted_at]').getAttribute('aria-sort'), 'none');
    // A live update re-sorts (throttled to once a second).
    await p1.update('c1', 5000, 100);
    await until('c1 last when ascending by views', async () => {
      const ids = await page.evaluate(() => [...document.querySelectorAll('#variants tbody tr[data-variant-id]')].map((tr) => tr.dataset.variantId));
      return ids.at(-1) === 'c1';
    });
    await page.close();
  });

  test('reconnects after the gateway is killed and shows the events published meanwhile', async () => {
    const p = new Persona(resp, `e2e_restart_${run}`);
    await p.post('r1', { content: 'Before the outage', predicted_er: 0.05, pattern_used: 'listicle' });
    await p.post('r2', { content: 'Killed during the outage', predicted_er: 0.05 });
    await p.update('r1', 1000, 50);
    const page = await openPage(p.id);
    await waitLive(page);
    await until('rows', async () => Object.keys(await readTable(page)).length === 2);
    const before = await page.evaluate(() => window.pulsegate.model.offset);
    assert.ok(before);

    await gateway.kill('SIGKILL');
    await until('the page notices', async () => /^Reconnecting/.test(await connText(page)), { timeout: 10000 });
    const outage = [];
    outage.push(await p.update('r1', 3000, 300));
    outage.push(await p.post('r3', { content: 'Posted during the outage', predicted_er: 0.04 }));
    outage.push(await p.kill('r2'));
    outage.push(await p.update('r3', 200, 10));
    await screenshot(page, 'reconnect-outage');
    assert.equal((await readTable(page)).r1.views, '1,000', 'nothing new while the gateway is down');

    await gateway.spawn();
    await waitLive(page, 30000);
    await until('the outage events', async () => {
      const rows = await readTable(page);
      return rows.r1?.views === '3,000' && rows.r3?.views === '200' && rows.r2?.status === 'Killed';
    });
    const rows = await readTable(page);
    assert.equal(rows.r1.actual, '10.00%');
    assert.equal(rows.r3.content, 'Posted during the outage');
    assert.equal(rows.r3.actual, '5.00%');

    // It resumed from its last offset: the new connection replayed exactly the missed events.
    const last = page.sockets.at(-1);
    assert.ok(page.sockets.length >= 2);
    assert.equal(new URL(last.url).searchParams.get('since'), before);
    await until('the replay', async () => last.frames.filter((f) => f.type === 'variant_update').length >= outage.length);
    const replayed = last.frames.filter((f) => f.type === 'variant_update').slice(0, outage.length).map((f) => f.offset);
    assert.deepEqual(replayed, outage);
    assert.ok(!last.frames.some((f) => f.type === 'initial_data' && f.recovered === false));
    const side = await readSide(page);
    for (const offset of outage) assert.ok(side.feed.some((e) => e.offset === offset), `feed shows ${offset}`);
    assert.ok(side.feed.some((e) => /^Reconnected; resuming after/.test(e.text)));
    const cards = await readCards(page);
    assert.equal(cards.active.value, '2');
    assert.equal(cards.kills.value, '1');
    await screenshot(page, 'reconnect-after');
    await page.close();
  });

  test('reloads the snapshot when the missed events were trimmed (recovered:false)', async () => {
    const p = new Persona(resp, `e2e_trim_${run}`);
    await p.post('t1', { predicted_er: 0.05 });
    await p.update('t1', 100, 5);
    const page = await openPage(p.id);
    await waitLive(page);
    await until('t1', async () => (await readTable(page)).t1?.views === '100');
    await page.evaluate(() => window.pulsegate.conn.pause());
    // More updates than the gateway keeps in memory per channel
    // (`ws.recent_entries`, 32), so the resume must go to the stream,
    // where the trim has removed them.
    for (let i = 1; i <= 40; i++) await p.update('t1', 100 + i * 10, 5 + i);
    await p.post('t2', { predicted_er: 0.05 });
    await p.update('t2', 100, 1);
    await resp.command('XTRIM', `${p.key}:stream`, 'MAXLEN', '1');
    await page.evaluate(() => window.pulsegate.conn.connect());
    await until('the reloaded snapshot', async () => {
      const rows = await readTable(page);
      return rows.t1?.views === '500' && rows.t2?.views === '100';
    });
    const last = page.sockets.at(-1);
    assert.ok(new URL(last.url).searchParams.get('since'));
    assert.equal(last.frames[0].type, 'initial_data');
    assert.equal(last.frames[0].recovered, false);
    const side = await readSide(page);
    assert.ok(side.feed.some((e) => e.text === 'Missed events could not be replayed; reloaded the snapshot.'));
    await page.close();
  });

  test('shows when Redis is down, and recovers', async () => {
    const p = new Persona(resp, `e2e_redis_${run}`);
    await p.post('x1', { predicted_er: 0.05 });
    const page = await openPage(p.id);
    await waitLive(page);
    await redis.kill();
    await until('Redis down shown', async () => (await connText(page)) === 'Redis down', { timeout: 15000 });
    assert.equal(await page.locator('#conn').getAttribute('data-state'), 'redis-down');
    assert.match(await page.locator('#banner').textContent(), /Redis is unreachable/);
    await screenshot(page, 'redis-down');
    await redis.spawn();
    resp.close();
    resp = await Resp.connect(redis.port);
    p.redis = resp;
    p1.redis = resp;
    await waitLive(page, 20000);
    await until('gateway ready again', async () => (await fetch(`${gateway.base}/readyz`)).status === 200);
    await p.update('x1', 300, 30);
    await until('x1 updated after Redis came back', async () => (await readTable(page)).x1?.views === '300');
    await page.close();
  });

  test('takes a token from the fragment or the login field and sends it as ?token=', async () => {
    const page = await openPage(p1.id, { hash: '#token=s3cret' });
    await waitLive(page);
    assert.equal(new URL(page.sockets[0].url).searchParams.get('token'), 's3cret');
    assert.equal(await page.evaluate(() => location.hash), '', 'the token leaves the address bar');
    await until('the feed backfill', () => requests.some((u) => u.includes(`/api/metrics/${p1.id}?token=s3cret`)));
    await page.locator('#token-button').click();
    assert.equal(await page.locator('#token-input').inputValue(), 's3cret');
    await page.locator('#token-input').fill('other token');
    await page.locator('button[value=save]').click();
    await until('a new connection with the new token', async () =>
      page.sockets.some((s) => new URL(s.url).searchParams.get('token') === 'other token'));
    await waitLive(page);
    await page.close();
  });

  test('GET / gives browsers the personas and everyone else the health JSON', async () => {
    const json = await fetch(`${gateway.base}/`);
    assert.equal(json.status, 200);
    assert.deepEqual(await json.json(), { status: 'healthy', service: 'pulsegate' });
    const asJson = await fetch(`${gateway.base}/`, { headers: { Accept: 'application/json, text/html' } });
    assert.match(asJson.headers.get('content-type'), /application\/json/);

    const page = await context.newPage();
    await page.goto(`${gateway.base}/`);
    const names = await page.locator('.persona-name').allTextContents();
    for (const id of [p1.id, `e2e_restart_${run}`, `e2e_trim_${run}`]) assert.ok(names.includes(id), `${id} listed`);
    assert.equal(names[0], p1.id, 'most active variants first');
    await screenshot(page, 'index');
    await page.locator(`a[href="/dashboard/${p1.id}"]`).click();
    await page.waitForURL(`${gateway.base}/dashboard/${p1.id}`);
    await until('the dashboard', async () => (await connText(page)) === 'Live');
    await page.close();

    const bad = await fetch(`${gateway.base}/dashboard/a%7Bb%7D`, { headers: { Accept: 'text/html' } });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, 'invalid_persona_id');
    const html = await fetch(`${gateway.base}/dashboard/${p1.id}`);
    assert.match(html.headers.get('content-type'), /^text\/html/);
    assert.match(html.headers.get('content-security-policy'), /default-src 'self'; connect-src 'self'/);
    const js = await fetch(`${gateway.base}/ui/app.js`);
    assert.match(js.headers.get('content-type'), /^text\/javascript/);
    const tag = js.headers.get('etag');
    const again = await fetch(`${gateway.base}/ui/app.js`, { headers: { 'If-None-Match': tag } });
    assert.equal(again.status, 304);
  });

  test('stays smooth with 1,000 active variants under a burst of updates', async (t) => {
    const p = new Persona(resp, `e2e_load_${run}`);
    const patterns = ['question_hook', 'listicle', 'personal_story', 'data_reveal', 'contrarian_take'];
    const n = 1000;
    const now = Date.now();
    const posts = [];
    for (let i = 0; i < n; i++) {
      posts.push({ type: 'variant_posted', variant_id: `v${i}`, content: `Variant number ${i} of the load test`, predicted_er: 0.02 + (i % 7) / 100, pattern_used: patterns[i % 5], posted_at: now - (n - i) * 1000 });
    }
    for (let i = 0; i < posts.length; i += 200) await p.ingestMany(posts.slice(i, i + 200));
    const started = Date.now();
    const page = await openPage(p.id);
    await waitLive(page);
    await until('1,000 variants', () => page.evaluate(() =>
      window.pulsegate.view.table.order.length === 1000 && document.querySelectorAll('#variants tbody tr[data-variant-id]').length > 10), { timeout: 30000 });
    const firstRender = Date.now() - started;

    await page.evaluate(() => {
      window.__frames = [];
      window.__long = [];
      let last = performance.now();
      const loop = (ts) => {
        window.__frames.push(ts - last);
        last = ts;
        if (!window.__stop) requestAnimationFrame(loop);
      };
      requestAnimationFrame(loop);
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__long.push(e.duration);
      }).observe({ type: 'longtask', buffered: false });
    });
    // 5,000 updates in about 5 s: 1,000 events/s, 50 times the demo's default rate.
    const rounds = 5;
    const t0 = Date.now();
    for (let r = 1; r <= rounds; r++) {
      for (let i = 0; i < n; i += 50) {
        const batch = [];
        for (let j = i; j < i + 50; j++) {
          batch.push({ type: 'performance_update', variant_id: `v${j}`, view_count: r * 100 + j, interaction_count: r * 3 + (j % 5) });
        }
        await p.ingestMany(batch);
        await sleep(45);
      }
    }
    const sent = Date.now() - t0;
    // Every variant has its final value, and the rows in view show it.
    const finalViews = (j) => (rounds * 100 + j).toLocaleString('en-US');
    const shownRight = () => page.evaluate(() => [...document.querySelectorAll('#variants tbody tr[data-variant-id]')]
      .map((tr) => [Number(tr.dataset.variantId.slice(1)), tr.querySelector('[data-col=views]').textContent]));
    await until('every final value', () => page.evaluate((last) => {
      let ok = 0;
      for (const v of window.pulsegate.model.variants.values()) ok += v.view_count === last * 100 + Number(v.variant_id.slice(1));
      return ok === 1000;
    }, rounds), { timeout: 30000 });
    await until('the rows in view', async () => (await shownRight()).every(([j, text]) => text === finalViews(j)));
    const stats = await page.evaluate(() => {
      window.__stop = true;
      const f = window.__frames.slice(1).sort((a, b) => a - b);
      const q = (x) => f[Math.min(f.length - 1, Math.floor(x * f.length))];
      return { frames: f.length, p50: q(0.5), p95: q(0.95), max: f.at(-1), longTasks: window.__long.length, longest: Math.max(0, ...window.__long) };
    });
    const msg = `1,000 rows rendered ${firstRender} ms after navigation; ${rounds * n} updates in ${sent} ms; ` +
      `frames: ${stats.frames}, p50 ${stats.p50.toFixed(1)} ms, p95 ${stats.p95.toFixed(1)} ms, max ${stats.max.toFixed(1)} ms; ` +
      `long tasks: ${stats.longTasks}, longest ${stats.longest.toFixed(0)} ms`;
    t.diagnostic(msg);
    fs.writeFileSync(path.join(ARTIFACTS, 'load-stats.json'), JSON.stringify({ firstRender, sent, ...stats }, null, 2));
    // Smooth: the typical frame at 30-60 fps, none stuck for long. (Before the
    // table was windowed, p50 was ~130 ms here.) Loose bounds: the machine also
    // runs Redis, the gateway and this test on two cores.
    assert.ok(stats.frames > (sent / 1000) * 15, `only ${stats.frames} frames in ${sent} ms`);
    assert.ok(stats.p50 <= 34, `median frame ${stats.p50} ms`);
    assert.ok(stats.p95 < 200, `p95 frame ${stats.p95} ms`);
    assert.ok(stats.max < 1000, `longest frame ${stats.max} ms`);
    const cards = await readCards(page);
    assert.equal(cards.active.value, '1,000');
    await screenshot(page, 'load-1000');
    // Only the rows in view are in the DOM; scrolling brings the others, up to date.
    const inDom = await page.evaluate(() => document.querySelectorAll('#variants tbody tr[data-variant-id]').length);
    assert.ok(inDom < 100, `${inDom} rows in the DOM`);
    assert.equal(await page.locator('#variants').getAttribute('aria-rowcount'), '1001');
    await page.locator('.table-wrap').evaluate((el) => { el.scrollTop = el.scrollHeight; });
    await until('the last rows', async () => {
      const rows = await shownRight();
      return rows.some(([j]) => j === 0) && rows.every(([j, text]) => text === finalViews(j));
    });
    const lastIndex = await page.evaluate(() => [...document.querySelectorAll('#variants tbody tr[data-variant-id]')].at(-1).getAttribute('aria-rowindex'));
    assert.equal(lastIndex, '1001');
    await page.close();
  });

  test('phone width: readable, table scrolls sideways', async () => {
    const page = await openPage(p1.id, { viewport: { width: 390, height: 844 } });
    await waitLive(page);
    await until('rows', async () => Object.keys(await readTable(page)).length >= 3);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
    const wrap = await page.evaluate(() => {
      const w = document.querySelector('.table-wrap');
      return { scroll: w.scrollWidth, client: w.clientWidth };
    });
    assert.ok(wrap.scroll > wrap.client, 'the table scrolls inside its box');
    await screenshot(page, 'dashboard-phone');
    await page.close();
  });

  test('dark colour scheme', async () => {
    const page = await openPage(p1.id);
    await page.emulateMedia({ colorScheme: 'dark' });
    await waitLive(page);
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, 'rgb(14, 17, 23)');
    await screenshot(page, 'dashboard-dark');
    await page.close();
  });

  test('the pages made no request beyond the gateway and logged no error', () => {
    const origin = new URL(gateway.base).host;
    const foreign = requests.filter((u) => new URL(u).host !== origin);
    assert.deepEqual(foreign, []);
    assert.ok(requests.some((u) => u.startsWith('ws://')), 'the WebSocket was recorded');
    // Failed reconnect attempts during the outage are logged by Chromium itself.
    const errors = consoleErrors.filter((e) => !/WebSocket connection to .* failed/.test(e));
    assert.deepEqual(errors, []);
  });
});
