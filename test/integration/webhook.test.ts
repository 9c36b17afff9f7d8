/**
 * The webhook connector through a real evpub app publishing to Redis (streams mode, so what
 * the broker accepted can be read afterwards): real HTTP requests with fetch.
 */
import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { WebhookConnector } from '../../src/connectors/webhook';
import { quietLogger, subscriber, type Received } from '../helpers/publisher';
import { startRedisServer } from '../helpers/redis-server';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const SECRET = 'wh-secret-value';
const streams = { redis: { mode: 'streams' } };

function sign(body: string): string {
  return `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;
}

async function webhookApp(brokerUrl: string, extra: { ackTimeout?: number; maxInFlight?: number } = {}) {
  const topic = `${uniqueName('evpub')}/orders`;
  const app = evpub({
    logger: quietLogger(),
    brokers: {
      default: {
        url: brokerUrl,
        options: { ...streams, publishTimeout: 400, reconnect: { initialDelay: 50, maxDelay: 200 } },
      },
    },
    checkpoints: new MemoryCheckpointStore(),
    publisher: { maxInFlight: extra.maxInFlight ?? 100 },
    retry: { initialDelay: 50, maxDelay: 200 },
    stopTimeout: 1000,
  });
  cleanups.push(() => app.stop());
  const ds = app.dataSource<WebhookConnector>('hooks', {
    connector: 'webhook',
    port: 0,
    basePath: '/hooks',
    ackTimeout: extra.ackTimeout ?? 10_000,
    bodyLimit: 2048,
    signature: { header: 'X-Signature', secret: SECRET, prefix: 'sha256=' },
  });
  app.model('orders', {
    dataSource: ds,
    topic,
    settings: {
      keyPath: 'data.id',
      opPath: 'type',
      opMap: { 'order.created': 'create', 'order.changed': 'update', 'order.removed': 'delete' },
      dataPath: 'data',
      idHeader: 'X-Event-Id',
    },
  });
  await app.start();
  const url = `${ds.connector!.url}/hooks/orders`;
  return { app, ds, topic, url };
}

function post(url: string, body: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', 'x-signature': sign(body), ...headers },
  });
}

/** Everything in the stream `topic` from the start (what the broker accepted). */
async function readAll(brokerUrl: string, topic: string): Promise<Received[]> {
  const sub = await subscriber(brokerUrl, topic, streams);
  cleanups.push(() => sub.client.end());
  await sub.client.unsubscribe(topic);
  await sub.client.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
  return sub.got;
}

const data = (m: Received) =>
  m.json.data as { key: string; op: string; after: { id: string; total?: number } | null };

describe('webhook connector → Redis', () => {
  it('answers 202 only once the broker holds the event; maps key, op and record', async () => {
    const redis = await requireService('redis');
    const { app, topic, url, ds } = await webhookApp(redis);
    expect(app.status().datasources.hooks?.health.detail).toMatch(/^listening on http:\/\/127\.0\.0\.1:\d+$/);
    const body = JSON.stringify({ type: 'order.created', data: { id: 'o1', total: 5 } });
    const res = await post(url, body, { 'x-event-id': 'evt-1' });
    expect(res.status).toBe(202);
    const answer = (await res.json()) as { id: string; position: string };
    // Subscribed only after the 202: the event is already in the stream.
    const got = await readAll(redis, topic);
    await waitFor(() => got.length === 1, 'the event in the stream');
    expect(data(got[0]!)).toMatchObject({ key: 'o1', op: 'create', after: { id: 'o1', total: 5 } });
    expect(got[0]!.json.id).toBe(answer.id);

    const removed = JSON.stringify({ type: 'order.removed', data: { id: 'o1' } });
    expect((await post(url, removed)).status).toBe(202);
    await waitFor(() => got.length === 2, 'the delete');
    expect(data(got[1]!)).toMatchObject({ key: 'o1', op: 'delete', after: null });
    expect(ds.connector!.health().positions?.orders).toBe('2');
  });

  it('refuses bad signatures (401), oversized bodies (413), malformed JSON and missing keys (400): none published', async () => {
    const redis = await requireService('redis');
    const { topic, url } = await webhookApp(redis);
    const good = JSON.stringify({ type: 'order.created', data: { id: 'ok' } });
    const tampered = JSON.stringify({ type: 'order.created', data: { id: 'evil' } });
    expect((await post(url, tampered, { 'x-signature': sign(good) })).status).toBe(401);
    const unsigned = await fetch(url, {
      method: 'POST',
      body: good,
      headers: { 'content-type': 'application/json' },
    });
    expect(unsigned.status).toBe(401);
    expect((await post(url, good, { 'x-signature': 'sha256=zz' })).status).toBe(401);
    const big = JSON.stringify({ type: 'order.created', data: { id: 'big', pad: 'x'.repeat(4096) } });
    expect((await post(url, big)).status).toBe(413);
    expect((await post(url, '{"type": "order.created", "data": {')).status).toBe(400);
    expect((await post(url, JSON.stringify({ type: 'order.created', data: {} }))).status).toBe(400);
    expect((await post(`${url}-nope`, good)).status).toBe(404);
    // Only the valid one reaches the broker.
    expect((await post(url, good)).status).toBe(202);
    const got = await readAll(redis, topic);
    await waitFor(() => got.length >= 1, 'the valid event');
    expect(got.map((m) => data(m).key)).toEqual(['ok']);
  });

  it('broker down: the sender gets 503 (and 503 Retry-After while the window is full); its retry succeeds once the broker is back', async () => {
    const server = await startRedisServer();
    cleanups.push(() => server.close());
    const { topic, url } = await webhookApp(server.url, { ackTimeout: 1500, maxInFlight: 1 });
    const first = JSON.stringify({ type: 'order.created', data: { id: 'a1' } });
    expect((await post(url, first, { 'x-event-id': 'e1' })).status).toBe(202);

    await server.stop();
    const second = JSON.stringify({ type: 'order.changed', data: { id: 'a1', total: 9 } });
    const pending = post(url, second, { 'x-event-id': 'e2' });
    // While e2 waits, the window (1 event) is full: another request is turned away at once.
    await waitFor(async () => {
      const busy = await post(url, JSON.stringify({ type: 'order.created', data: { id: 'b1' } }));
      if (busy.status === 202) throw new Error('accepted while the broker is down');
      return busy.status === 503 && busy.headers.get('retry-after') === '1';
    }, 'a 503 for a request made while the window is full');
    const failed = await pending;
    expect(failed.status).toBe(503);
    expect(failed.headers.get('retry-after')).toBe('1');

    await server.start();
    // The sender retries e2 until it is accepted.
    await waitFor(
      async () => (await post(url, second, { 'x-event-id': 'e2' })).status === 202,
      'a 202 for the retry',
    );
    const got = await readAll(server.url, topic);
    await waitFor(() => got.some((m) => data(m).op === 'update'), 'e2 in the stream');
    const ids = got.map((m) => m.json.id as string);
    // At least once: e2 may be there twice (the pipeline republished the timed-out copy), with one id.
    const updates = got.filter((m) => data(m).op === 'update');
    expect(new Set(updates.map((m) => m.json.id)).size).toBe(1);
    expect(data(got[0]!).key).toBe('a1');
    expect(ids[0]).not.toBe(updates[0]!.json.id);
    expect(got.every((m) => data(m).key === 'a1')).toBe(true);
  });
});
