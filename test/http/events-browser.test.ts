/**
 * The live event stream as a browser uses it, on the management API's own server with a token:
 * a real Chromium opens `EventSource('/api/events?model=…')` (a browser cannot set a header on
 * it, so the token comes as the `evpub_token` cookie or `?token=`), receives every change of
 * its model in order with the event ids, and a new EventSource resuming after an id gets
 * exactly what it missed. Without the token: 401, no stream.
 */
import type { Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import type { MemoryConnector } from '../../src/connectors/memory';
import { launchBrowser } from '../helpers/browser';
import { quietLogger } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';

const TOKEN = `tok-${uniqueName('token')}`;
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

async function setup() {
  const app = evpub({
    logger: quietLogger(),
    brokers: { default: `memory://${uniqueName('b')}` },
    checkpoints: { store: 'memory' },
    http: { port: 0, token: TOKEN },
  });
  cleanups.push(() => app.stop());
  const ds = app.dataSource<MemoryConnector>('local', { connector: 'memory', store: uniqueName('s') });
  app.model('accounts', { dataSource: ds, topic: '{datasource}/{model}/{key}' });
  app.model('orders', { dataSource: ds, topic: '{datasource}/{model}/{key}' });
  await app.start();
  const { url } = await app.listen();
  return { url, connector: ds.connector! };
}

interface Got {
  id: string;
  subject: string;
}

/** The browser side, typed here (the tests compile without the DOM library). */
interface SseMessage {
  data: string;
  lastEventId: string;
}
interface BrowserEventSource {
  onopen: (() => void) | null;
  addEventListener(type: 'change', listener: (e: SseMessage) => void): void;
  close(): void;
}
interface Page {
  EventSource: new (url: string) => BrowserEventSource;
  got: Got[];
  source: BrowserEventSource;
  opened: boolean;
}

describe('live events in a browser', () => {
  it('without the token: 401 and no stream; with ?token=: the stream', async () => {
    const { url } = await setup();
    const refused = await fetch(`${url}/api/events`);
    expect(refused.status).toBe(401);
    expect(await refused.text()).not.toContain(TOKEN);
    const ws = await fetch(`${url}/api/events/ws`);
    expect(ws.status).toBe(401);
    const abort = new AbortController();
    const ok = await fetch(`${url}/api/events?token=${encodeURIComponent(TOKEN)}`, { signal: abort.signal });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toMatch(/^text\/event-stream/);
    abort.abort();
  });

  it("Chromium's EventSource gets every change of its model in order, and resumes after an id", async () => {
    const { url, connector } = await setup();
    const context = await browser.newContext();
    cleanups.push(() => context.close());
    const { hostname } = new URL(url);
    await context.addCookies([{ name: 'evpub_token', value: TOKEN, domain: hostname, path: '/' }]);
    const page = await context.newPage();
    await page.goto(`${url}/health`); // same origin as the stream; needs no token
    await page.evaluate(() => {
      const w = globalThis as unknown as Page;
      w.got = [];
      w.opened = false;
      w.source = new w.EventSource('/api/events?model=accounts');
      w.source.onopen = () => (w.opened = true);
      w.source.addEventListener('change', (m) => {
        w.got.push({ id: m.lastEventId, subject: (JSON.parse(m.data) as { subject: string }).subject });
      });
    });
    await page.waitForFunction(() => (globalThis as unknown as Page).opened, undefined, {
      timeout: 10_000,
    });
    for (let i = 0; i < 20; i++) {
      connector.create('accounts', `a${i}`, { i });
      connector.create('orders', `o${i}`, { i }); // another model: filtered out
    }
    await page.waitForFunction(() => (globalThis as unknown as Page).got.length >= 20, undefined, {
      timeout: 10_000,
    });
    const got = await page.evaluate(() => (globalThis as unknown as Page).got);
    expect(got.map((g) => g.subject)).toEqual(Array.from({ length: 20 }, (_, i) => `a${i}`));
    expect(new Set(got.map((g) => g.id)).size).toBe(20);

    // Resuming after the tenth: a new EventSource gets the ten after it, from the ring.
    const after = got[9]!.id;
    const resumed = await page.evaluate(async (lastEventId) => {
      const seen: string[] = [];
      const w = globalThis as unknown as Page;
      const source = new w.EventSource(
        `/api/events?model=accounts&lastEventId=${encodeURIComponent(lastEventId)}`,
      );
      await new Promise<void>((resolve) => {
        source.addEventListener('change', (m) => {
          seen.push((JSON.parse(m.data) as { subject: string }).subject);
          if (seen.length === 10) resolve();
        });
      });
      source.close();
      return seen;
    }, after);
    expect(resumed).toEqual(Array.from({ length: 10 }, (_, i) => `a${i + 10}`));
  });
});
