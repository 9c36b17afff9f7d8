/**
 * The dashboard in cluster mode, in a real browser (Debian's Chromium through playwright-core):
 * two instances share two units; instance a's page shows an Owner column, its own feed owned by
 * "this instance" with Pause, the other's feed `standby` owned by b without buttons, and the
 * cluster's line (lease store ok) in the header.
 */
import type { Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { clusterFixture } from '../helpers/cluster-apps';
import { launchBrowser } from '../helpers/browser';
import { requireService, SERVICES } from '../helpers/services';
import { waitFor } from '../helpers/wait';

let browser: Browser;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  await requireService('redis');
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const POLL = { timeout: 20_000 };

describe('the dashboard in cluster mode', () => {
  it('shows each feed’s owner, standby feeds without buttons, and the lease store', async () => {
    const f = clusterFixture(SERVICES.redis.url, cleanups);
    const a = await f.start('a');
    await f.start('b');
    await waitFor(
      () =>
        a.app
          .status()
          .cluster?.units.map((u) => u.owner)
          .sort()
          .join() === 'a,b',
      'one unit each',
    );
    const units = a.app.status().cluster!.units;
    const mine = units.find((u) => u.mine)!.feeds[0]!;
    const theirs = units.find((u) => !u.mine)!.feeds[0]!;

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    cleanups.push(() => context.close());
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    await page.goto(`${a.url}/`);

    await page.locator('th', { hasText: 'Owner' }).waitFor(POLL);
    const own = page.locator(`tr[data-feed="${mine}"][data-state="streaming"]`);
    await own.locator('td[data-owner="a"][data-mine="true"]').waitFor(POLL);
    expect(await own.locator('td[data-owner]').innerText()).toContain('this instance');
    expect(await own.locator('button', { hasText: 'Pause' }).count()).toBe(1);
    const other = page.locator(`tr[data-feed="${theirs}"][data-state="standby"]`);
    await other.locator('td[data-owner="b"][data-mine="false"]').waitFor(POLL);
    expect(await other.locator('button').count()).toBe(0);
    expect(await page.locator('[data-cluster="ok"]').innerText()).toMatch(
      new RegExp(`cluster ${f.name}, instance a, lease store redis: ok`),
    );
    expect(await other.locator('td[data-owner]').innerText()).toMatch(/^b\s+epoch \d+, since /);
    expect(problems).toEqual([]);
  }, 60_000);
});
