/**
 * The dashboard in a real browser (Debian's Chromium through playwright-core), served by the
 * management API: the feeds table, the lag charts (bytes, seconds) of a PostgreSQL feed (and
 * the line of a feed whose connector reports none), the live tail fed by a PostgreSQL table, Pause / Resume from
 * the feed's buttons (a row inserted while paused does not reach the tail; it does after resume),
 * a failed feed's error, the token prompt, and the page under a prefix of an application's own
 * fastify. `EVPUB_SCREENSHOT=1` saves docs/dashboard.png.
 */
import path from 'node:path';
import Fastify from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import type { MemoryConnector } from '../../src/connectors/memory';
import { evpubApi } from '../../src/http/routes';
import { launchBrowser } from '../helpers/browser';
import { PgFixture, sql } from '../helpers/postgres';
import { quietLogger } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const SCREENSHOT = path.resolve(__dirname, '../../docs/dashboard.png');
let browser: Browser;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A page whose failed requests fail the test, but for the statuses it expects (`expected`). */
async function newPage(expected: number[] = [401]): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  cleanups.push(() => context.close());
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('response', (r) => {
    if (r.status() >= 400 && !expected.includes(r.status())) problems.push(`${r.status()} ${r.url()}`);
  });
  cleanups.push(async () => expect(problems).toEqual([]));
  return page;
}

const feedRow = (page: Page, id: string, state?: string) =>
  page.locator(`tr[data-feed="${id}"]${state ? `[data-state="${state}"]` : ''}`);
const tailRow = (page: Page, text: string) => page.locator('.tail-row', { hasText: text });
/** The page refreshes every 2 s: a loaded machine may take a few rounds. */
const POLL = { timeout: 20_000 };

describe('the dashboard', () => {
  it('tails a PostgreSQL table live; Pause holds a row back, Resume delivers it', async () => {
    await requireService('postgres');
    const fixture = new PgFixture();
    cleanups.push(() => fixture.drop());
    const table = await fixture.table('id text PRIMARY KEY, city text');
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
      http: { port: 0 },
    });
    cleanups.push(() => app.stop());
    app.dataSource('pg', {
      connector: 'postgres',
      url: fixture.url,
      slot: fixture.slot,
      publication: fixture.publication,
      statusInterval: 200,
      heartbeatInterval: 200,
    });
    app.model({ name: 'orders' }, { dataSource: 'pg', topic: 'shop/{model}/{key}', settings: { table } });
    const local = app.dataSource<MemoryConnector>('local', { connector: 'memory', store: uniqueName('s') });
    app.model('accounts', { dataSource: local, topic: 'shop/{model}/{key}' });
    await app.start();
    const { url } = await app.listen();
    const feed = () => app.status().feeds['pg/orders']!;

    const page = await newPage();
    await page.goto(`${url}/`);
    await feedRow(page, 'pg/orders', 'streaming').waitFor();
    await feedRow(page, 'local/accounts', 'streaming').waitFor();
    await page.locator('[data-tail-status]', { hasText: 'connected' }).waitFor();
    await page.locator('tr[data-broker="default"]', { hasText: 'connected' }).waitFor();

    // The lag chart: the PostgreSQL feed's slot lag in bytes (reported every statusInterval);
    // the memory connector reports none, and the page says so instead of charting nothing.
    const lagChart = page.locator('[data-chart="lag-bytes"]');
    await lagChart.locator('canvas').waitFor(POLL);
    await lagChart.locator('.u-legend', { hasText: 'pg/orders' }).waitFor(POLL);
    expect(await lagChart.locator('.u-legend').textContent()).not.toContain('local/accounts');
    await expect
      .poll(() => page.locator('[data-lag="pg/orders"]').textContent(), POLL)
      .toMatch(/\d B behind|\d\.?\d* [KMG]iB behind/);
    expect(await page.locator('[data-lag="local/accounts"]').textContent()).toContain(
      'no lag reported by this connector',
    );
    // And its lag in seconds (0 or so: caught up), charted on its own.
    const secondsChart = page.locator('[data-chart="lag-seconds"]');
    await secondsChart.locator('.u-legend', { hasText: 'pg/orders' }).waitFor(POLL);
    expect(await secondsChart.locator('.u-legend').textContent()).not.toContain('local/accounts');
    await expect
      .poll(() => page.locator('[data-lag="pg/orders"]').textContent(), POLL)
      .toMatch(/ · \d+(\.\d)? s/);

    await sql(`INSERT INTO ${table} VALUES ('order-before', 'Lisbon')`);
    for (let i = 0; i < 5; i++) local.connector!.create('accounts', `agent-${i}`, { n: i });
    await tailRow(page, 'order-before').waitFor();
    // A click shows the envelope pretty-printed: the row's values are in it.
    await tailRow(page, 'order-before').click();
    const envelope = tailRow(page, 'order-before').locator('pre.envelope');
    await expect.poll(() => envelope.textContent(), POLL).toContain('"city": "Lisbon"');
    // The model filter (server side) and the text filter (in the page).
    await page.locator('input[name="filter"]').fill('agent-3');
    await expect.poll(() => page.locator('.tail-row').count(), POLL).toBe(1);
    await page.locator('input[name="filter"]').fill('');
    await expect.poll(() => page.locator('.tail-row').count(), POLL).toBe(6);
    await waitFor(() => feed().inFlight === 0 && feed().committed !== null, 'the first row committed');

    await feedRow(page, 'pg/orders').getByRole('button', { name: 'Pause' }).click();
    await feedRow(page, 'pg/orders', 'paused').waitFor();
    expect(feed().state).toBe('paused');
    const received = feed().received ?? 0;
    await sql(`INSERT INTO ${table} VALUES ('order-while-paused', 'Porto')`);
    // Proving an absence takes a window: 2 s is ten status intervals of the connector.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(await tailRow(page, 'order-while-paused').count()).toBe(0);
    expect(feed().published).toBe(1);
    expect(feed().received).toBeLessThanOrEqual(received + 1); // at most held, unpublished

    await feedRow(page, 'pg/orders').getByRole('button', { name: 'Resume' }).click();
    await tailRow(page, 'order-while-paused').waitFor();
    await feedRow(page, 'pg/orders', 'streaming').waitFor();
    // Newest first.
    expect(await page.locator('.tail-row').first().textContent()).toContain('order-while-paused');
    await expect
      .poll(() => feedRow(page, 'pg/orders').locator('td.num').nth(1).textContent(), POLL)
      .toBe('2');

    if (process.env.EVPUB_SCREENSHOT === '1') {
      for (let i = 0; i < 3; i++) {
        await sql(`INSERT INTO ${table} VALUES ('order-${i}', 'Faro')`);
        await new Promise((resolve) => setTimeout(resolve, 2500)); // a few chart points
      }
      await tailRow(page, 'order-2').waitFor();
      await tailRow(page, 'order-2').click();
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    }
  });

  it('asks for the token, then shows a failed feed with its error', async () => {
    const token = `tok-${uniqueName('t')}`;
    // Two events too large in a row with a dead-letter limit of 1: the feed fails, on purpose.
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
      publisher: { maxEventBytes: 300, deadLetterLimit: 1 },
      http: { port: 0, token },
    });
    cleanups.push(() => app.stop());
    const ds = app.dataSource<MemoryConnector>('local', { connector: 'memory', store: uniqueName('s') });
    app.model('accounts', { dataSource: ds, topic: '{datasource}/{model}/{key}' });
    await app.start();
    const { url } = await app.listen();

    const page = await newPage();
    await page.goto(`${url}/`);
    const input = page.locator('input[name="token"]');
    await input.fill('wrong');
    await input.press('Enter');
    await page.getByText('That token was refused').waitFor();
    await input.fill(token);
    await input.press('Enter');
    await feedRow(page, 'local/accounts', 'streaming').waitFor();
    await page.locator('[data-tail-status]', { hasText: 'connected' }).waitFor();

    ds.connector!.create('accounts', 'small', { n: 1 });
    await tailRow(page, 'small').waitFor(); // the stream works with the token (as a cookie)
    ds.connector!.create('accounts', 'big1', { text: 'x'.repeat(1000) });
    ds.connector!.create('accounts', 'big2', { text: 'x'.repeat(1000) });
    await feedRow(page, 'local/accounts', 'failed').waitFor();
    const error = await feedRow(page, 'local/accounts').locator('[data-error]').textContent();
    expect(error).toContain('EVPUB_PAYLOAD_TOO_LARGE');
    expect(error).toContain('dead-letter topic');
    // A reload keeps the token (localStorage): no prompt.
    await page.reload();
    await feedRow(page, 'local/accounts', 'failed').waitFor();
    expect(await page.locator('input[name="token"]').count()).toBe(0);
  });

  it('serves its files without the token, and the vendored libraries from the installed packages', async () => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
      http: { port: 0, token: 'secret-token' },
    });
    cleanups.push(() => app.stop());
    await app.start();
    const { url } = await app.listen();
    for (const [file, type] of [
      ['/', 'text/html'],
      ['/dashboard/app.js', 'text/javascript'],
      ['/dashboard/style.css', 'text/css'],
      ['/dashboard/vendor/htm/preact/standalone.module.js', 'text/javascript'],
      ['/dashboard/vendor/uplot/dist/uPlot.esm.js', 'text/javascript'],
      ['/dashboard/vendor/uplot/dist/uPlot.min.css', 'text/css'],
    ] as const) {
      const res = await fetch(url + file);
      expect(res.status, file).toBe(200);
      expect(res.headers.get('content-type'), file).toContain(type);
      expect((await res.text()).length, file).toBeGreaterThan(100);
    }
    expect((await fetch(`${url}/dashboard/../package.json`)).status).toBe(404);
    expect((await fetch(`${url}/api/feeds`)).status).toBe(401); // the data still wants it
    const openapi = (await (
      await fetch(`${url}/openapi.json`, { headers: { authorization: 'Bearer secret-token' } })
    ).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(openapi.paths).filter((p) => p === '/' || p.startsWith('/dashboard'))).toEqual([]);
  });

  it("works under a prefix in an application's own fastify server", async () => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    const ds = app.dataSource<MemoryConnector>('local', { connector: 'memory', store: uniqueName('s') });
    app.model('accounts', { dataSource: ds, topic: '{model}/{key}' });
    app.model('orders', { dataSource: ds, topic: '{model}/{key}' });
    await app.start();
    const server = Fastify();
    cleanups.push(() => server.close());
    await server.register(evpubApi, { app, prefix: '/evpub' });
    const url = await server.listen({ host: '127.0.0.1', port: 0 });

    const bare = await fetch(`${url}/evpub`, { redirect: 'manual' });
    expect(bare.status).toBe(302);
    expect(bare.headers.get('location')).toBe('/evpub/');
    const page = await newPage([400]); // the bad topic pattern below
    await page.goto(`${url}/evpub`);
    await feedRow(page, 'local/accounts', 'streaming').waitFor();
    await page.locator('[data-tail-status]', { hasText: 'connected' }).waitFor();
    ds.connector!.create('accounts', 'prefixed', { n: 1 });
    await tailRow(page, 'prefixed').waitFor();

    // The topic filter (an MQTT-style pattern, applied by the server).
    const topic = page.locator('input[name="topic"]');
    await topic.fill('orders/#');
    await topic.press('Enter');
    // The new stream's own "connected" (the old one's stays on screen until the page reopens).
    await page.locator('[data-tail-status][data-tail-topic="orders/#"]', { hasText: 'connected' }).waitFor();
    ds.connector!.create('accounts', 'account-1', { n: 2 });
    ds.connector!.create('orders', 'order-1', { n: 3 });
    await tailRow(page, 'order-1').waitFor();
    // One datasource delivers in order: the account, created first, would be here by now.
    expect(await page.locator('.tail-row').count()).toBe(1);
    // A bad pattern: the stream is refused, and the page says why.
    await topic.fill('orders/#/more');
    await topic.press('Enter');
    await page.locator('[data-tail-status]', { hasText: 'closed: 400' }).waitFor();
  });
});
