/**
 * The publisher against real Redis: the shared server for the happy path, a private
 * redis-server (stopped and started by the test) for a stop while it is down. (A restart
 * mid-stream, with its backpressure and retries, is a case of the fault matrix:
 * test/faults/broker-restart-redis.test.ts.)
 */
import { HTTP, type CloudEvent } from 'cloudevents';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { memoryStore } from '../../src/connectors/memory';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { requireService, uniqueName } from '../helpers/services';
import { startRedisServer } from '../helpers/redis-server';
import { quietLogger, subscriber } from '../helpers/publisher';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe('publisher → Redis', () => {
  it('app.start() publishes CloudEvents through the shared Redis; app.stop() drains and closes', async () => {
    const url = await requireService('redis');
    const root = uniqueName('evpub');
    const sub = await subscriber(url, `${root}/#`);
    cleanups.push(() => sub.client.end());
    const storeName = uniqueName('s');
    const checkpoints = new MemoryCheckpointStore();
    const app = evpub({ logger: quietLogger(), brokers: { default: url }, checkpoints });
    cleanups.push(() => app.stop());
    const ds = app.dataSource('db', { connector: 'memory', store: storeName });
    app.model('accounts', { dataSource: ds, topic: `${root}/{model}/{op}` });
    await app.start();
    for (let i = 0; i < 50; i++) ds.connector!.create('accounts', `k${i}`, { i });
    await waitFor(() => sub.got.length === 50, '50 messages through Redis');
    const parsed = sub.got.map(
      (m) =>
        HTTP.toEvent({
          headers: { 'content-type': 'application/cloudevents+json' },
          body: m.text,
        }) as CloudEvent,
    );
    expect(parsed.every((e) => e.validate())).toBe(true);
    expect(parsed.map((e) => e.subject)).toEqual(Array.from({ length: 50 }, (_, i) => `k${i}`));
    expect(app.status().brokers.default).toMatchObject({ adapter: 'redis', state: 'connected' });
    await app.stop();
    expect(await checkpoints.load('db/accounts')).toBe(String(memoryStore(storeName).head));
    expect(ds.connector).toBeUndefined();
  });

  it('stop with the broker down gives up after stopTimeout; the unconfirmed events are published after a restart', async () => {
    const server = await startRedisServer();
    cleanups.push(() => server.close());
    const streams = { redis: { mode: 'streams' } };
    const topic = `${uniqueName('evpub')}/m`;
    const storeName = uniqueName('s');
    const store = memoryStore(storeName);
    const checkpoints = new MemoryCheckpointStore();
    const make = () => {
      const app = evpub({
        logger: quietLogger(),
        brokers: {
          default: {
            url: server.url,
            options: { ...streams, publishTimeout: 300, reconnect: { initialDelay: 50, maxDelay: 200 } },
          },
        },
        checkpoints,
        stopTimeout: 500,
        retry: { initialDelay: 50, maxDelay: 200 },
      });
      cleanups.push(() => app.stop());
      const ds = app.dataSource('db', { connector: 'memory', store: storeName });
      app.model('m', { dataSource: ds, topic, from: 'beginning' });
      return app;
    };
    const first = make();
    await first.start();
    store.write('db', 'm', 'create', 'a', { n: 1 });
    await waitFor(async () => (await checkpoints.load('db/m')) === '1', 'the first checkpoint');
    await server.stop();
    store.write('db', 'm', 'create', 'b', { n: 2 });
    store.write('db', 'm', 'create', 'c', { n: 3 });
    await first.stop(); // gives up on b and c after stopTimeout
    expect(await checkpoints.load('db/m')).toBe('1');

    await server.start();
    const sub = await subscriber(server.url, topic, streams);
    cleanups.push(() => sub.client.end());
    await sub.client.unsubscribe(topic);
    await sub.client.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
    const second = make();
    await second.start();
    await waitFor(
      async () => (await checkpoints.load('db/m')) === '3',
      'b and c committed after the restart',
    );
    await waitFor(
      () => ['a', 'b', 'c'].every((k) => sub.got.some((m) => (m.json.data as { key: string }).key === k)),
      'a, b and c',
    );
    await second.stop();
  });
});
