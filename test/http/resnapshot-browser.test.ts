/**
 * The dashboard's Re-snapshot button in a real browser (Debian's Chromium through
 * playwright-core): shown only for a feed whose connector can re-snapshot (PostgreSQL, not the
 * memory connector); a dismissed confirm sends nothing; an accepted one re-reads the table, and
 * its rows reach the live tail as snapshot events.
 */
import type { Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { launchBrowser } from '../helpers/browser';
import { PgFixture, sql } from '../helpers/postgres';
import { quietLogger } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';

let browser: Browser;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  await requireService('postgres');
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('the dashboard Re-snapshot button', () => {
  it('asks first, then the rows come again as snapshot events in the live tail', async () => {
    const fixture = new PgFixture();
    cleanups.push(() => fixture.drop());
    const table = await fixture.table('id text PRIMARY KEY, city text');
    await sql(`INSERT INTO ${table} VALUES ('row-1', 'Lisbon'), ('row-2', 'Porto'), ('row-3', 'Faro')`);
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
    });
    app.model({ name: 'orders' }, { dataSource: 'pg', topic: 'shop/{model}/{key}', settings: { table } });
    app.dataSource('local', { connector: 'memory', store: uniqueName('s') });
    app.model('accounts', { dataSource: 'local', topic: 'shop/{model}/{key}' });
    await app.start();
    const { url } = await app.listen();

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    cleanups.push(() => context.close());
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`);
    });
    const posts: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') posts.push(new URL(r.url()).pathname);
    });
    await page.goto(`${url}/`);
    const pgRow = page.locator('tr[data-feed="pg/orders"]');
    await page.locator('tr[data-feed="pg/orders"][data-state="streaming"]').waitFor();
    await page.locator('[data-tail-status]', { hasText: 'connected' }).waitFor();
    const button = pgRow.getByRole('button', { name: 'Re-snapshot' });
    expect(await button.count()).toBe(1);
    const localRow = page.locator('tr[data-feed="local/accounts"][data-state="streaming"]');
    await localRow.waitFor();
    expect(await localRow.getByRole('button', { name: 'Re-snapshot' }).count()).toBe(0);

    // Dismissed: nothing is sent.
    const asked: string[] = [];
    page.once('dialog', (dialog) => {
      asked.push(dialog.message());
      void dialog.dismiss();
    });
    await button.click();
    expect(asked).toHaveLength(1);
    expect(asked[0]).toContain('Re-snapshot pg/orders?');
    await pgRow.getByRole('button', { name: 'Pause' }).waitFor(); // the page is still live
    expect(posts).toEqual([]);
    expect(await page.locator('.tail-row').count()).toBe(0); // no initial snapshot: from 'now'

    // Accepted: the table's rows come again.
    page.once('dialog', (dialog) => void dialog.accept());
    await button.click();
    for (const key of ['row-1', 'row-2', 'row-3']) {
      await page.locator('.tail-row', { hasText: `evpub.orders.snapshot  ${key}` }).waitFor();
    }
    expect(posts).toEqual(['/api/feeds/pg/orders/snapshot']);
    await page.locator('.tail-row', { hasText: 'row-2' }).click();
    await expect
      .poll(() => page.locator('.tail-row', { hasText: 'row-2' }).locator('pre.envelope').textContent())
      .toContain('"city": "Porto"');
    expect(app.status().feeds['pg/orders']!.published).toBe(3);
    expect(problems).toEqual([]);
  });
});
