/**
 * Live events for browsers (issue 12): the app (memory connector → memory broker) tapped into
 * the event stream's ring, served as SSE and WebSocket by a fastify server of the test's own on
 * port 0, read over real sockets.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import type { PublishedEvent } from '../../src/app/published-events';
import { memoryStore, type MemoryStore } from '../../src/connectors/memory';
import type { ChangeEvent } from '../../src/events/change-event';
import { EventStream, eventsRoutes, type EventsRoutesOptions } from '../../src/http/events';
import { openSse, openWs, type SseClient } from '../helpers/events-clients';
import { quietLogger } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup {
  app: App;
  server: FastifyInstance;
  base: string;
  ws: string;
  store: MemoryStore;
  write(model: 'orders' | 'customers', key: string, data?: Record<string, unknown>): ChangeEvent;
}

async function setup(
  routes: Omit<EventsRoutesOptions, 'app'> = {},
  options: {
    publisher?: Record<string, unknown>;
    logger?: pino.Logger;
    envelope?: 'cloudevents' | 'cloudevents-binary';
  } = {},
): Promise<Setup> {
  const broker = `memory://${uniqueName('b')}`;
  const storeName = uniqueName('store');
  const app = evpub({
    logger: options.logger ?? quietLogger(),
    brokers: { default: broker },
    checkpoints: { store: 'memory' },
    publisher: options.publisher,
  });
  app.dataSource('local', { connector: 'memory', store: storeName });
  app.model('orders', { dataSource: 'local', topic: '{model}/{op}/{key}', envelope: options.envelope });
  app.model('customers', { dataSource: 'local', topic: '{model}/{op}/{key}' });
  const server = Fastify();
  await server.register(eventsRoutes, { app, logger: quietLogger(), ...routes });
  await server.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  cleanups.push(() => app.stop());
  await app.start();
  const { port } = server.server.address() as AddressInfo;
  const store = memoryStore(storeName);
  return {
    app,
    server,
    base: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}`,
    store,
    write: (model, key, data = {}) => store.write('local', model, 'create', key, { key, ...data }),
  };
}

async function sse(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  const client = await openSse(url, headers);
  cleanups.push(() => client.close());
  return client;
}

function changes(client: SseClient) {
  return client.messages.filter((m) => m.event === 'change');
}

function keyOf(data: string): string {
  return (JSON.parse(data) as { data: { key: string } }).data.key;
}

describe('live events: Server-Sent Events', () => {
  it('streams every published event in order, id = the event id, data = the CloudEvent', async () => {
    const s = await setup();
    const client = await sse(`${s.base}/api/events`);
    expect(client.status).toBe(200);
    expect(client.res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    for (let i = 0; i < 20; i++) s.write('orders', `o${i}`, { n: i });
    await waitFor(() => changes(client).length === 20, '20 events');
    const got = changes(client);
    expect(got.map((m) => keyOf(m.data))).toEqual(Array.from({ length: 20 }, (_, i) => `o${i}`));
    for (const m of got) {
      const ce = JSON.parse(m.data) as { id: string; type: string; specversion: string };
      expect(m.id).toBe(ce.id);
      expect(ce.type).toBe('evpub.orders.create');
      expect(ce.specversion).toBe('1.0');
    }
    expect(new Set(got.map((m) => m.id)).size).toBe(20);
  });

  it('filters by model (exact) and by topic (an MQTT-style pattern), and refuses a bad pattern', async () => {
    const s = await setup();
    const orders = await sse(`${s.base}/api/events?model=orders`);
    const customers = await sse(`${s.base}/api/events?topic=${encodeURIComponent('customers/+/c1')}`);
    const all = await sse(`${s.base}/api/events`);
    s.write('orders', 'o1');
    s.write('customers', 'c1');
    s.write('customers', 'c2');
    s.write('orders', 'o2');
    await waitFor(() => changes(all).length === 4, 'all four');
    await waitFor(() => changes(orders).length === 2, 'two orders');
    await waitFor(() => changes(customers).length === 1, 'customer c1');
    expect(changes(orders).map((m) => keyOf(m.data))).toEqual(['o1', 'o2']);
    expect(changes(customers).map((m) => keyOf(m.data))).toEqual(['c1']);
    expect(changes(all).map((m) => keyOf(m.data))).toEqual(['o1', 'c1', 'c2', 'o2']);

    const bad = await fetch(`${s.base}/api/events?topic=${encodeURIComponent('a/#/b')}`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toMatch(/^querystring\/topic: .*"#"/);
  });

  it('the ring records while a client watches and keepMs after; a reconnect later gets a gap', async () => {
    const s = await setup({ keepMs: 300 });
    s.write('orders', 'o0'); // nobody watching: not recorded
    const a = await sse(`${s.base}/api/events`);
    s.write('orders', 'o1');
    await waitFor(() => changes(a).length === 1, 'o1');
    const o1 = changes(a)[0]!.id ?? '';
    a.close();
    s.write('orders', 'o2'); // within keepMs of the last client: recorded
    const b = await sse(`${s.base}/api/events`, { 'last-event-id': o1 });
    await waitFor(() => changes(b).length === 1, 'o2 replayed');
    expect(changes(b).map((m) => keyOf(m.data))).toEqual(['o2']);
    const o2 = changes(b)[0]!.id ?? '';
    b.close();
    await new Promise((r) => setTimeout(r, 600)); // past keepMs: the ring lets its events go
    s.write('orders', 'o3');
    const c = await sse(`${s.base}/api/events`, { 'last-event-id': o2 });
    await waitFor(() => c.messages.some((m) => m.event === 'gap'), 'a gap');
    s.write('orders', 'o4');
    await waitFor(() => changes(c).length === 1, 'o4 live');
    expect(changes(c).map((m) => keyOf(m.data))).toEqual(['o4']);
  });

  it('a reconnect with Last-Event-ID gets exactly the events it missed, then live ones', async () => {
    const s = await setup();
    const first = await sse(`${s.base}/api/events?model=orders`);
    for (let i = 0; i < 3; i++) s.write('orders', `o${i}`);
    await waitFor(() => changes(first).length === 3, 'three events');
    const lastId = changes(first)[2]!.id!;
    first.close();
    await waitFor(() => first.isEnded(), 'the first client gone');
    for (let i = 3; i < 7; i++) s.write('orders', `o${i}`);
    s.write('customers', 'c1'); // filtered out on replay too
    await waitFor(() => s.app.status().feeds['local/orders']?.published === 7, 'seven published');

    const again = await sse(`${s.base}/api/events?model=orders`, { 'last-event-id': lastId });
    await waitFor(() => changes(again).length === 4, 'the four missed');
    s.write('orders', 'o7');
    await waitFor(() => changes(again).length === 5, 'then live');
    expect(changes(again).map((m) => keyOf(m.data))).toEqual(['o3', 'o4', 'o5', 'o6', 'o7']);
    expect(again.messages.filter((m) => m.event === 'gap')).toEqual([]);

    // The query parameter works the same (for clients that cannot set the header).
    const byQuery = await sse(`${s.base}/api/events?model=orders&lastEventId=${encodeURIComponent(lastId)}`);
    await waitFor(() => changes(byQuery).length === 5, 'the five after the id');
  });

  it('an id the ring no longer holds gets `event: gap` first, then live events only', async () => {
    const s = await setup({ ringSize: 5 });
    const first = await sse(`${s.base}/api/events`);
    s.write('orders', 'old');
    await waitFor(() => changes(first).length === 1, 'one event');
    const oldId = changes(first)[0]!.id!;
    first.close();
    for (let i = 0; i < 10; i++) s.write('orders', `o${i}`);
    await waitFor(() => s.app.status().feeds['local/orders']?.published === 11, 'eleven published');

    const again = await sse(`${s.base}/api/events`, { 'last-event-id': oldId });
    await waitFor(() => again.messages.length >= 1, 'the gap message');
    const gap = again.messages[0]!;
    expect(gap.event).toBe('gap');
    const body = JSON.parse(gap.data) as { lastEventId: string; reason: string; oldest: string };
    expect(body.lastEventId).toBe(oldId);
    expect(body.reason).toMatch(/not in the ring \(it holds the last 5 events/);
    s.write('orders', 'live');
    await waitFor(() => changes(again).length === 1, 'a live event');
    expect(keyOf(changes(again)[0]!.data)).toBe('live');
    expect(again.messages.map((m) => m.event)).toEqual(['gap', 'change']);

    const unknown = await sse(`${s.base}/api/events`, { 'last-event-id': 'no-such-id' });
    await waitFor(() => unknown.messages.length === 1, 'a gap for an unknown id');
    expect(unknown.messages[0]!.event).toBe('gap');
  });

  it('with binary-mode CloudEvents, data is the event data alone and id: still the event id', async () => {
    const s = await setup({}, { envelope: 'cloudevents-binary' });
    const client = await sse(`${s.base}/api/events`);
    const event = s.write('orders', 'b1', { n: 1 });
    await waitFor(() => changes(client).length === 1, 'one event');
    const [m] = changes(client);
    expect(m!.id).toBe(event.id);
    const data = JSON.parse(m!.data) as Record<string, unknown>;
    expect(data).toMatchObject({ op: 'create', key: 'b1', after: { key: 'b1', n: 1 } });
    expect(data.specversion).toBeUndefined();
  });

  it('sends heartbeat comments so proxies keep the stream open', async () => {
    const s = await setup({ heartbeatMs: 50 });
    const client = await sse(`${s.base}/api/events`);
    await waitFor(() => client.comments.filter((c) => c === 'heartbeat').length >= 2, 'two heartbeats');
    expect(changes(client)).toEqual([]);
  });

  it('ends the streams when the server closes', async () => {
    const s = await setup();
    const client = await sse(`${s.base}/api/events`);
    const socket = await openWs(`${s.ws}/api/events/ws`);
    await s.server.close();
    await client.ended;
    expect((await socket.closed).code).toBe(1001);
  });
});

describe('live events: WebSocket', () => {
  it('sends { type, id, model, topic, event } in order, with the filters', async () => {
    const s = await setup();
    const all = await openWs(`${s.ws}/api/events/ws`);
    const orders = await openWs(`${s.ws}/api/events/ws?model=orders`);
    cleanups.push(
      () => all.socket.terminate(),
      () => orders.socket.terminate(),
    );
    s.write('orders', 'o1', { n: 1 });
    s.write('customers', 'c1');
    s.write('orders', 'o2', { n: 2 });
    await waitFor(() => all.messages.length === 3, 'three messages');
    await waitFor(() => orders.messages.length === 2, 'two orders');
    const [m] = all.messages;
    expect(m).toMatchObject({ type: 'event', model: 'orders', topic: 'orders/create/o1' });
    expect((m!.event as { id: string }).id).toBe(m!.id);
    expect((m!.event as { data: { after: unknown } }).data.after).toEqual({ key: 'o1', n: 1 });
    expect(all.messages.map((x) => x.model)).toEqual(['orders', 'customers', 'orders']);
    expect(orders.messages.map((x) => x.topic)).toEqual(['orders/create/o1', 'orders/create/o2']);

    await expect(openWs(`${s.ws}/api/events/ws?topic=${encodeURIComponent('#/x')}`)).rejects.toThrow(
      /Unexpected server response: 400/,
    );
  });

  it('replays after ?lastEventId= from the ring, and says gap when the ring lost it', async () => {
    const s = await setup({ ringSize: 4 });
    const first = await openWs(`${s.ws}/api/events/ws`);
    s.write('orders', 'o0');
    s.write('orders', 'o1');
    await waitFor(() => first.messages.length === 2, 'two');
    first.socket.close();
    s.write('orders', 'o2');
    s.write('orders', 'o3');
    await waitFor(() => s.app.status().feeds['local/orders']?.published === 4, 'four published');
    const again = await openWs(`${s.ws}/api/events/ws?lastEventId=${first.messages[1]!.id!}`);
    cleanups.push(() => again.socket.terminate());
    await waitFor(() => again.messages.length === 2, 'the two missed');
    expect(again.messages.map((x) => x.topic)).toEqual(['orders/create/o2', 'orders/create/o3']);

    for (let i = 4; i < 10; i++) s.write('orders', `o${i}`);
    await waitFor(() => again.messages.length === 8, 'live ones');
    const late = await openWs(`${s.ws}/api/events/ws?lastEventId=${first.messages[0]!.id!}`);
    cleanups.push(() => late.socket.terminate());
    await waitFor(() => late.messages.length === 1, 'the gap');
    expect(late.messages[0]).toMatchObject({ type: 'gap', lastEventId: first.messages[0]!.id });
    s.write('orders', 'o10');
    await waitFor(() => late.messages.length === 2, 'then live');
    expect(late.messages[1]).toMatchObject({ type: 'event', topic: 'orders/create/o10' });
  });
});

describe('the event stream options', () => {
  it('refuses a bad ring size or client bound, naming the config key', () => {
    const app = evpub({ logger: quietLogger() });
    const source = app.events();
    const make = (o: Partial<ConstructorParameters<typeof EventStream>[0]>) => () =>
      new EventStream({ source, logger: quietLogger(), ...o }).close();
    expect(make({ ringSize: 0 })).toThrow(
      /^http\.events\.ring: must be a whole number of at least 1 \(got 0\)/,
    );
    expect(make({ clientQueue: { bytes: 1.5 } })).toThrow(/^http\.events\.clientQueue\.bytes: /);
    expect(make({ clientQueue: { messages: -1 } })).toThrow(/^http\.events\.clientQueue\.messages: /);
    expect(make({ ringSize: 10, clientQueue: { messages: 50 } })).not.toThrow();
  });
});

describe('the onPublished tap', () => {
  it('passes each confirmed event once, not dead letters; off() stops it; a throwing listener is logged', async () => {
    const lines: string[] = [];
    const logger = pino(
      { level: 'error' },
      new Writable({
        write(chunk: Buffer, _enc, done) {
          lines.push(chunk.toString('utf8'));
          done();
        },
      }),
    );
    const s = await setup({}, { publisher: { maxEventBytes: 2000 }, logger });
    const seen: PublishedEvent[] = [];
    const listener = (e: PublishedEvent): void => void seen.push(e);
    const thrower = (): void => {
      throw new Error('listener bug');
    };
    s.app.events().on('event', thrower).on('event', listener);
    s.write('orders', 'small');
    s.write('orders', 'big', { blob: 'x'.repeat(5000) }); // over maxEventBytes: dead-lettered
    s.write('orders', 'after');
    await waitFor(() => s.app.status().feeds['local/orders']?.published === 2, 'two published');
    await waitFor(() => s.app.status().feeds['local/orders']?.deadLettered === 1, 'one dead letter');
    expect(seen.map((e) => e.key)).toEqual(['small', 'after']);
    expect(seen[0]).toMatchObject({
      feed: 'local/orders',
      model: 'orders',
      datasource: 'local',
      topic: 'orders/create/small',
    });
    const ce = JSON.parse(seen[0]!.payload.toString('utf8')) as { id: string };
    expect(seen[0]!.eventId).toBe(ce.id);
    expect(lines.filter((l) => l.includes('a published-event listener threw'))).toHaveLength(2);

    s.app.events().off('event', listener).off('event', thrower);
    s.write('orders', 'unheard');
    await waitFor(() => s.app.status().feeds['local/orders']?.published === 3, 'three published');
    expect(seen).toHaveLength(2);
  });
});
