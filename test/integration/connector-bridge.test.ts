/**
 * The bridge connector between real brokers: a private Mosquitto to the shared Redis, the shared
 * Redis (streams, durable consumer group) to the shared NATS. (A bridge process killed before it
 * acknowledged anything is a case of the fault matrix: test/faults/kill-publisher-bridge.test.ts.)
 */
import amqplib from 'amqplib';
import { Redis } from 'ioredis';
import { connect as natsConnect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { ModelFeed } from '../../src/connectors/contract';
import { initialize, type BridgeConnector } from '../../src/connectors/bridge';
import { ErrorCode } from '../../src/errors';
import { createClient } from '../../src/pubsub/registry';
import { RecordingSink } from '../conformance/connector.suite';
import { startMosquitto } from '../helpers/mosquitto';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const STREAMS = { redis: { mode: 'streams' } };

/** Entries of the group not acknowledged yet (XPENDING summary). */
async function pending(redisUrl: string, stream: string, group: string): Promise<number> {
  const redis = new Redis(redisUrl);
  try {
    const reply = (await redis.xpending(stream, group)) as [number, ...unknown[]];
    return Number(reply[0]);
  } finally {
    redis.disconnect();
  }
}

describe('bridge connector', () => {
  it('bridges a private Mosquitto to the shared Redis, with the model topic template', async () => {
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.close());
    const redisUrl = await requireService('redis');
    const root = uniqueName('br');
    const sub = await subscriber(redisUrl, `${root}/#`);
    cleanups.push(() => sub.client.end());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: redisUrl },
      checkpoints: new MemoryCheckpointStore(),
      publisher: { deadLetterTopic: `${root}/dead-letter` },
    });
    cleanups.push(() => app.stop());
    app.dataSource('mqtt', { connector: 'bridge', url: mosquitto.url });
    app.model('orders', {
      dataSource: 'mqtt',
      topic: `${root}/{model}/{op}/{key}`,
      settings: {
        topics: ['shop/+/orders'],
        keyPath: 'id',
        opPath: 'event',
        opMap: { created: 'create', cancelled: 'delete' },
      },
    });
    await app.start();
    expect(app.status().datasources.mqtt).toMatchObject({ connector: 'bridge', resumable: false });
    const producer = createClient(mosquitto.url, { logger: quietLogger() });
    cleanups.push(() => producer.end());
    const n = 30;
    for (let i = 0; i < n; i++) {
      const event = i % 10 === 9 ? 'cancelled' : 'created';
      await producer.publish(`shop/s${i % 3}/orders`, JSON.stringify({ id: `o${i}`, event, total: i }));
      if (i === 5) await producer.publish('shop/s1/orders', '{"not json'); // dead-lettered, counted
      if (i === 6) await producer.publish('shop/s1/other', JSON.stringify({ id: 'x' })); // not subscribed
    }
    await waitFor(() => sub.got.length === n + 1, `${n} messages and a dead letter on Redis`);
    const topics = Array.from(
      { length: n },
      (_, i) => `${root}/orders/${i % 10 === 9 ? 'delete' : 'create'}/o${i}`,
    );
    topics.splice(6, 0, `${root}/dead-letter`);
    expect(sub.got.map((m) => m.topic)).toEqual(topics);
    expect(sub.got[6]!.json).toMatchObject({
      code: ErrorCode.MALFORMED_INPUT,
      reason: expect.stringMatching(/^malformed message: not JSON/) as string,
      input: { datasource: 'mqtt', model: 'orders', source: { topic: 'shop/s1/orders' } },
      original: '{"not json',
    });
    const first = sub.got[0]!.json as { type: string; subject: string; data: { after: unknown } };
    expect(first).toMatchObject({ type: 'evpub.orders.create', subject: 'o0' });
    expect(first.data.after).toEqual({ id: 'o0', event: 'created', total: 0 });
    expect(app.status().datasources.mqtt!.health.detail).toBe('orders: 1 malformed');
  });

  it('bridges Redis streams (durable group, CloudEvents in) to NATS, and acks only what was published', async () => {
    const redisUrl = await requireService('redis');
    const natsUrl = await requireService('nats');
    const root = uniqueName('br');
    const stream = `${root}/in`;
    const durable = uniqueName('g');
    const sub = await subscriber(natsUrl, `${root}/#`);
    cleanups.push(() => sub.client.end());
    const producer = createClient(redisUrl, { ...STREAMS, logger: quietLogger() });
    cleanups.push(() => producer.end());
    const cloudEvent = (i: number) =>
      JSON.stringify({
        specversion: '1.0',
        id: `ce-${i}`,
        source: '/shop',
        type: 'order.created',
        subject: `o${i}`,
        time: '2026-01-01T00:00:00Z',
        data: { total: i },
      });
    for (let i = 0; i < 20; i++) {
      await producer.publish(stream, cloudEvent(i)); // before the bridge runs
      if (i === 3) await producer.publish(stream, '{"not a cloud event": true}'); // dead-lettered, acked
    }
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: natsUrl },
      checkpoints: new MemoryCheckpointStore(),
      publisher: { deadLetterTopic: `${root}/dead-letter` },
    });
    cleanups.push(() => app.stop());
    app.dataSource('redis', { connector: 'bridge', url: redisUrl, options: STREAMS, format: 'cloudevents' });
    app.model('orders', {
      dataSource: 'redis',
      topic: `${root}/{model}/{key}`,
      envelope: 'legacy',
      settings: { topics: stream, durable, groupStart: 'earliest', defaultOp: 'create' },
    });
    const warnings: string[] = [];
    app.on('status', (s) => void (s.type === 'warning' && warnings.push(s.message)));
    await app.start();
    expect(warnings).toEqual([]); // a durable source loses nothing while evpub is stopped: no warning
    for (let i = 20; i < 40; i++) await producer.publish(stream, cloudEvent(i));
    await waitFor(() => sub.got.length === 41, '40 messages and a dead letter on NATS');
    const topics = Array.from({ length: 40 }, (_, i) => `${root}/orders/o${i}`);
    topics.splice(4, 0, `${root}/dead-letter`);
    expect(sub.got.map((m) => m.topic)).toEqual(topics);
    expect(sub.got[4]!.json).toMatchObject({
      code: ErrorCode.MALFORMED_INPUT,
      reason: expect.stringContaining('not a CloudEvent') as string,
      input: { model: 'orders', source: { topic: stream } },
      original: '{"not a cloud event": true}',
    });
    sub.got.splice(4, 1);
    expect(sub.got[7]!.json).toEqual({ model: 'orders', message: { total: 7 } });
    await waitFor(async () => (await pending(redisUrl, stream, durable)) === 0, 'every entry acked');
    await app.stop();
    await new Redis(redisUrl).del(stream).catch(() => undefined);
  });

  it('bridges a JetStream durable consumer to Redis; the consumer has nothing left unacked', async () => {
    const natsUrl = await requireService('nats');
    const redisUrl = await requireService('redis');
    const root = uniqueName('br');
    const streamName = uniqueName('EVPUB');
    const js = { nats: { jetstream: true, stream: streamName } };
    const nc = await natsConnect({ servers: new URL(natsUrl).host });
    cleanups.push(async () => {
      await (await jetstreamManager(nc)).streams.delete(streamName).catch(() => undefined);
      await nc.close();
    });
    const sub = await subscriber(redisUrl, `${root}/out/#`);
    cleanups.push(() => sub.client.end());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: redisUrl },
      checkpoints: new MemoryCheckpointStore(),
    });
    cleanups.push(() => app.stop());
    app.dataSource('js', { connector: 'bridge', url: natsUrl, options: js });
    app.model('orders', {
      dataSource: 'js',
      topic: `${root}/out/{key}`,
      settings: { topics: `${root}/in/#`, durable: uniqueName('d'), keyPath: 'id' },
    });
    await app.start();
    const producer = createClient(natsUrl, { ...js, logger: quietLogger() });
    cleanups.push(() => producer.end());
    for (let i = 0; i < 20; i++)
      await producer.publish(`${root}/in/${i % 2}`, JSON.stringify({ id: `k${i}` }));
    await waitFor(() => sub.got.length === 20, '20 messages on Redis');
    expect(sub.got.map((m) => m.topic).sort()).toEqual(
      Array.from({ length: 20 }, (_, i) => `${root}/out/k${i}`).sort(),
    );
    const jsm = await jetstreamManager(nc);
    await waitFor(async () => {
      const consumers = await jsm.consumers.list(streamName).next();
      return consumers.length === 2 && consumers.every((c) => c.num_ack_pending === 0 && c.num_pending === 0);
    }, 'both consumers delivered and acked everything');
  });

  it('plain pub/sub cannot be paused: past maxBuffered the feed fails loudly, never dropping silently', async () => {
    const mosquitto = await startMosquitto();
    cleanups.push(() => mosquitto.close());
    const dataSource = {
      name: 'mqtt',
      settings: { url: mosquitto.url, maxBuffered: 20, stopTimeout: 100 },
      logger: quietLogger(),
      connector: undefined as unknown,
    };
    await initialize(dataSource);
    const connector = dataSource.connector as BridgeConnector;
    cleanups.push(() => connector.stop());
    const sink = new RecordingSink();
    sink.full = true;
    const feed: ModelFeed = { name: 'orders', settings: { topics: 'in/#', keyPath: 'id' }, from: 'now' };
    await connector.start({ models: [feed], sink });
    const producer = createClient(mosquitto.url, { logger: quietLogger() });
    cleanups.push(() => producer.end());
    for (let i = 0; i < 30; i++) await producer.publish('in/x', JSON.stringify({ id: `k${i}` }));
    await waitFor(() => sink.failures.length === 1, 'the feed to fail');
    expect(sink.failures[0]!.err).toMatchObject({
      code: ErrorCode.SOURCE_FAILED,
      message: expect.stringContaining('maxBuffered (20)') as string,
    });
    expect(sink.events.length).toBe(1);
    expect(connector.health()).toMatchObject({ state: 'failed', detail: 'orders: failed' });
  });

  async function bridge(
    settings: Record<string, unknown>,
    model: Record<string, unknown>,
    sink: RecordingSink,
  ) {
    const dataSource = { name: 'src', settings, logger: quietLogger(), connector: undefined as unknown };
    await initialize(dataSource);
    const connector = dataSource.connector as BridgeConnector;
    cleanups.push(() => connector.stop());
    await connector.start({ models: [{ name: 'orders', settings: model, from: 'now' }], sink });
    return connector;
  }

  it('durable AMQP with a prefetch window: the broker stops sending while nothing is committed', async () => {
    const amqpUrl = await requireService('rabbitmq');
    const durable = uniqueName('g');
    const topic = `${uniqueName('br')}/orders`;
    cleanups.push(async () => {
      const conn = await amqplib.connect(amqpUrl);
      const channel = await conn.createChannel();
      await channel.deleteQueue(`evpub.${durable}`);
      await conn.close();
    });
    const sink = new RecordingSink();
    sink.full = true;
    const connector = await bridge(
      { url: amqpUrl, options: { amqp: { prefetch: 5 } }, maxBuffered: 10, stopTimeout: 100 },
      { topics: topic, durable, keyPath: 'id' },
      sink,
    );
    const producer = createClient(amqpUrl, { logger: quietLogger() });
    cleanups.push(() => producer.end());
    for (let i = 0; i < 40; i++) await producer.publish(topic, JSON.stringify({ id: `k${i}` }));
    await waitFor(() => sink.drains >= 1, 'the feed to wait for drain');
    // Only the prefetch window (5) arrives: the buffer bound (10) is never reached.
    const witness = await subscriber(amqpUrl, topic);
    cleanups.push(() => witness.client.end());
    await producer.publish(topic, JSON.stringify({ id: 'witness' }));
    await waitFor(() => witness.got.length === 1, 'a message through a second subscriber');
    expect(sink.failures).toEqual([]);
    expect(sink.events.length).toBe(1);
    sink.release();
    await waitFor(() => sink.events.length === 5, 'the prefetched five');
    expect(sink.events.length).toBe(5); // no ack yet, so no more
    // Committing acks them; the broker sends the next ones, and so on.
    const commitAll = async () => {
      const last = sink.events.at(-1)!.position!;
      await connector.commit('orders', last);
    };
    while (sink.events.length < 41) {
      const before = sink.events.length;
      await commitAll();
      await waitFor(() => sink.events.length > before, 'more after a commit');
    }
    expect(sink.keys()).toEqual([...Array.from({ length: 40 }, (_, i) => `k${i}`), 'witness']);
    expect(sink.failures).toEqual([]);
  });

  it('a redelivery of a message still held (the claim timer ran out) is dropped, not published twice', async () => {
    const redisUrl = await requireService('redis');
    const stream = `${uniqueName('br')}/in`;
    const durable = uniqueName('g');
    cleanups.push(() => new Redis(redisUrl).del(stream));
    const sink = new RecordingSink();
    sink.full = true;
    const connector = await bridge(
      { url: redisUrl, options: { redis: { mode: 'streams', claimIdleMs: 100 } }, stopTimeout: 100 },
      { topics: stream, durable, keyPath: 'id' },
      sink,
    );
    const producer = createClient(redisUrl, { ...STREAMS, logger: quietLogger() });
    cleanups.push(() => producer.end());
    for (let i = 0; i < 3; i++) await producer.publish(stream, JSON.stringify({ id: `k${i}` }));
    await waitFor(
      () => /redeliveries of held messages dropped/.test(connector.health().detail ?? ''),
      'a claimed redelivery',
    );
    sink.release();
    await waitFor(() => sink.events.length === 3, 'the three');
    await connector.commit('orders', sink.events[2]!.position!);
    await waitFor(async () => (await pending(redisUrl, stream, durable)) === 0, 'every entry acked');
    expect(sink.keys()).toEqual(['k0', 'k1', 'k2']);
  });

  it('rejects bad settings with CONFIG_INVALID naming the key', async () => {
    const bad = (settings: Record<string, unknown>) =>
      Promise.resolve(initialize({ name: 'b', settings, logger: quietLogger() })).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    expect(await bad({})).toMatchObject({
      code: ErrorCode.CONFIG_INVALID,
      message: expect.stringContaining('datasources.b.url') as string,
    });
    expect(await bad({ url: 'mqtt://x', format: 'xml' })).toMatchObject({ code: ErrorCode.CONFIG_INVALID });
    const dataSource = {
      name: 'b',
      settings: { url: 'mqtt://127.0.0.1:1' },
      logger: quietLogger(),
      connector: undefined as unknown,
    };
    await initialize(dataSource);
    const connector = dataSource.connector as BridgeConnector;
    await expect(
      connector.start({
        models: [{ name: 'm', settings: { keyPath: 'id' }, from: 'now' }],
        sink: new RecordingSink(),
      }),
    ).rejects.toMatchObject({
      code: ErrorCode.CONFIG_INVALID,
      message: expect.stringContaining('models.m.settings.topics') as string,
    });
  });
});
