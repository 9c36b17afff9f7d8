/**
 * Live events (issue 12): a browser that does not read never slows a feed. A client whose
 * socket is paused fills its bound and is disconnected with the reason, while the feed keeps
 * publishing and a client that reads gets everything. Real sockets, the app with the memory
 * connector and the memory broker, a fastify server of the test's own on port 0.
 */
import Fastify from 'fastify';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import { memoryStore } from '../../src/connectors/memory';
import { EventStream, eventsRoutes } from '../../src/http/events';
import { openSse, openWs, type SseClient } from '../helpers/events-clients';
import { quietLogger } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const BLOB = 'x'.repeat(4096);

async function setup() {
  const storeName = uniqueName('store');
  const app: App = evpub({
    logger: quietLogger(),
    brokers: { default: `memory://${uniqueName('b')}` },
    checkpoints: { store: 'memory' },
  });
  app.dataSource('local', { connector: 'memory', store: storeName });
  app.model('orders', { dataSource: 'local', topic: '{model}/{op}/{key}' });
  const stream = new EventStream({
    source: app.events(),
    // Bounds above a burst (100 events, ~430 kB, written in one turn): the reader reads in
    // this same process, only between turns of the loop.
    clientQueue: { messages: 500, bytes: 1024 * 1024 },
    logger: quietLogger(),
  });
  cleanups.push(() => stream.close());
  const server = Fastify();
  await server.register(eventsRoutes, { stream, logger: quietLogger() });
  await server.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  cleanups.push(() => app.stop());
  await app.start();
  const { port } = server.server.address() as AddressInfo;
  const store = memoryStore(storeName);
  let written = 0;
  const published = (): number => app.status().feeds['local/orders']?.published ?? 0;
  return {
    stream,
    base: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}`,
    published,
    written: () => written,
    /** Writes `n` events and waits until the broker confirmed every one: the feed is not held. */
    async burst(n: number): Promise<void> {
      for (let i = 0; i < n; i++) {
        const key = `k${written++}`;
        store.write('local', 'orders', 'create', key, { key, blob: BLOB });
      }
      await waitFor(() => published() >= written, `${written} published`);
    },
  };
}

/** Publishes in bursts until the stream disconnected a client for reading too slowly. */
async function untilOverflow(s: Awaited<ReturnType<typeof setup>>): Promise<number[]> {
  const counts: number[] = [];
  const started = Date.now();
  while (s.stream.stats().overflows === 0) {
    if (s.written() >= 40_000) throw new Error(`no overflow after ${s.written()} events`);
    await s.burst(100);
    counts.push(s.published());
  }
  console.log(
    `overflow after ${s.written()} events of ~4.3 kB (${Date.now() - started} ms); published counts rose: ${counts.length} bursts`,
  );
  return counts;
}

function changes(client: SseClient) {
  return client.messages.filter((m) => m.event === 'change');
}

describe('live events: a client that does not read', () => {
  it('SSE: is disconnected with `event: overflow` and its reason; the feed and the reader go on', async () => {
    const s = await setup();
    const slow = await openSse(`${s.base}/api/events?model=orders`);
    cleanups.push(() => slow.close());
    slow.res.pause(); // never reads: the kernel buffers fill, then its bound
    const fast = await openSse(`${s.base}/api/events?model=orders`);
    cleanups.push(() => fast.close());

    const counts = await untilOverflow(s);
    for (let i = 1; i < counts.length; i++) expect(counts[i]!).toBeGreaterThan(counts[i - 1]!);
    expect(s.stream.stats().clients).toBe(1); // the reader stays
    await s.burst(500); // and the feed goes on at full speed after it
    const total = s.written();
    expect(s.published()).toBe(total);
    await waitFor(() => changes(fast).length === total, `the reader got all ${total}`);
    const keys = changes(fast).map((m) => (JSON.parse(m.data) as { data: { key: string } }).data.key);
    expect(keys).toEqual(Array.from({ length: total }, (_, i) => `k${i}`));

    slow.res.resume();
    await slow.ended;
    const last = slow.messages.at(-1)!;
    expect(last.event).toBe('overflow');
    const body = JSON.parse(last.data) as { reason: string; lastEventId: string };
    expect(body.reason).toMatch(/this client reads too slowly: \d+ events waiting \(limit 500/);
    const got = changes(slow);
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThan(total);
    expect(got.map((m) => m.id)).toEqual(
      changes(fast)
        .slice(0, got.length)
        .map((m) => m.id),
    );
    expect(body.lastEventId).toBe(got.at(-1)!.id);
    console.log(`the slow SSE client got ${got.length} of ${total} events before its overflow`);
  });

  it('WebSocket: is closed with 1008 after an overflow message; the feed and the reader go on', async () => {
    const s = await setup();
    const slow = await openWs(`${s.ws}/api/events/ws`);
    cleanups.push(() => slow.socket.terminate());
    slow.socket.pause();
    const fast = await openWs(`${s.ws}/api/events/ws`);
    cleanups.push(() => fast.socket.terminate());

    await untilOverflow(s);
    await s.burst(500);
    const total = s.written();
    await waitFor(() => fast.messages.length === total, `the reader got all ${total}`);
    expect(fast.messages.map((m) => m.topic)).toEqual(
      Array.from({ length: total }, (_, i) => `orders/create/k${i}`),
    );
    expect(fast.isClosed()).toBe(false);

    slow.socket.resume();
    const closed = await slow.closed;
    expect(closed.code).toBe(1008);
    expect(closed.reason).toMatch(/overflow/);
    const last = slow.messages.at(-1)!;
    expect(last.type).toBe('overflow');
    expect(last.reason).toMatch(/reads too slowly/);
    const events = slow.messages.filter((m) => m.type === 'event');
    expect(events.map((m) => m.id)).toEqual(fast.messages.slice(0, events.length).map((m) => m.id));
    console.log(`the slow WebSocket client got ${events.length} of ${total} events before its overflow`);
  });
});
