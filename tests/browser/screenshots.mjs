// Makes the screenshots in docs/img/ (docs/ui.md): an hour of realistic
// history for one persona, a live trickle of events, then the dashboard at
// desktop and phone width, light and dark.
//
//   cd tests/browser && npm ci && node screenshots.mjs
//
// Same environment as the tests (PULSEGATE_BIN, PULSEGATE_REDIS_SERVER).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { Gateway, Persona, REPO, RedisServer, Resp, launchBrowser, until } from './harness.mjs';

const OUT = path.join(REPO, 'docs/img');
const MINUTE = 60000;
const HOOKS = ['Nobody talks about this, but', 'Three things I learned from', 'Hot take:',
  'What happens when you stop', 'The numbers behind', 'A quick story about'];
const TOPICS = ['shipping on Fridays', 'morning routines', 'remote teams', 'pricing experiments',
  'writing every day', 'the first 1,000 users'];
const PATTERNS = ['question_hook', 'contrarian_take', 'listicle', 'personal_story', 'data_reveal'];

let seed = 7;
function rnd() {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
}

async function seedHistory(p) {
  const now = Date.now();
  const variants = [];
  for (let i = 0; i < 16; i++) {
    const predicted = Math.round((0.025 + rnd() * 0.06) * 1000) / 1000;
    const factor = [1.45, 0.5, 1.05, 0.8, 1.25, 0.45, 0.95, 1.6][i % 8];
    const postedAt = now - (58 - i * 3.4) * MINUTE;
    const pattern = i < 6 ? 'question_hook' : PATTERNS[1 + (i % 4)];
    variants.push({ id: `var_${101 + i}`, predicted, trueEr: predicted * factor, postedAt, pattern, views: 0, inter: 0, killed: false });
    await p.ingest({
      type: 'variant_posted', variant_id: `var_${101 + i}`, ts: postedAt, posted_at: postedAt, predicted_er: predicted,
      pattern_used: pattern, content: `${HOOKS[i % HOOKS.length]} ${TOPICS[(i * 5) % TOPICS.length]}`,
    });
  }
  // Minute by minute, oldest first, with a little noise.
  for (let t = now - 58 * MINUTE; t <= now - 5000; t += 30000) {
    const batch = [];
    for (const v of variants) {
      if (v.killed || t < v.postedAt) continue;
      const views = Math.round(40 + rnd() * 120);
      const wobble = 1 + Math.sin(t / (7 * MINUTE) + v.predicted * 100) * 0.25;
      let inter = 0;
      for (let k = 0; k < views; k++) if (rnd() < v.trueEr * wobble) inter++;
      v.views += views;
      v.inter += inter;
      batch.push({ type: 'performance_update', variant_id: v.id, view_count: v.views, interaction_count: v.inter, ts: Math.round(t) });
      const er = v.inter / v.views;
      if (v.views > 900 && er < v.predicted * 0.6 && !v.killed && batch.length < 40) {
        v.killed = true;
        batch.push({ type: 'early_kill', variant_id: v.id, reason: 'low_engagement', final_engagement_rate: Math.round(er * 1e6) / 1e6, sample_size: v.views, ts: Math.round(t) + 1 });
      }
    }
    if (batch.length) await p.ingestMany(batch);
  }
  return variants;
}

async function trickle(p, variants, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const live = variants.filter((v) => !v.killed);
    const v = live[Math.floor(rnd() * live.length)];
    const views = Math.round(20 + rnd() * 60);
    let inter = 0;
    for (let k = 0; k < views; k++) if (rnd() < v.trueEr) inter++;
    v.views += views;
    v.inter += inter;
    await p.ingest({ type: 'performance_update', variant_id: v.id, view_count: v.views, interaction_count: v.inter });
    await sleep(120);
  }
}

const redis = await RedisServer.start();
const gateway = await Gateway.start(redis.port);
const resp = await Resp.connect(redis.port);
const browser = await launchBrowser();
try {
  const p = new Persona(resp, 'persona_alpha');
  const variants = await seedHistory(p);
  fs.mkdirSync(OUT, { recursive: true });
  const shots = [
    { name: 'dashboard-desktop.png', viewport: { width: 1440, height: 900 }, scheme: 'light' },
    { name: 'dashboard-phone.png', viewport: { width: 390, height: 844 }, scheme: 'light', scale: 1.5 },
    { name: 'dashboard-dark.png', viewport: { width: 1280, height: 800 }, scheme: 'dark' },
  ];
  for (const s of shots) {
    const context = await browser.newContext({ viewport: s.viewport, colorScheme: s.scheme, deviceScaleFactor: s.scale || 1 });
    const page = await context.newPage();
    await page.goto(`${gateway.base}/dashboard/${p.id}`);
    await until('live', async () => (await page.locator('#conn-text').textContent()) === 'Live');
    await trickle(p, variants, 4000);
    await page.evaluate(() => window.pulsegate.refresh());
    await sleep(800);
    const file = path.join(OUT, s.name);
    await page.screenshot({ path: file });
    // Smaller files for the docs when pngquant is installed (apt-get install pngquant).
    try {
      execFileSync('pngquant', ['--force', '--skip-if-larger', '--quality=70-95', '--output', file, file]);
    } catch {
      // keep Chromium's PNG
    }
    console.log(`wrote docs/img/${s.name} (${Math.round(fs.statSync(file).size / 1024)} KiB)`);
    await context.close();
  }
} finally {
  await browser.close();
  resp.close();
  await gateway.stop();
  await redis.stop();
}
