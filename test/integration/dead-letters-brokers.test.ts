/**
 * Dead letters on every broker: a publisher (memory connector) whose model makes one event too
 * large to carry (`publisher.maxEventBytes`) among small ones, published to MQTT 3.1.1, MQTT 5,
 * Redis pub/sub, Redis Streams, AMQP, NATS core, JetStream and Kafka (librdkafka's mock).
 *
 * On each: every other event arrives on its topic in source order, the dead letter arrives on
 * the dead-letter topic with its reason, code, the event's identity and the topic it was meant
 * for (no `original`: a letter holding an event too large for the limit would not fit it
 * either), the events after it arrive too (the feed goes on), and the checkpoint passes it.
 *
 * On AMQP and Kafka, which refuse some topics evpub accepts (routing keys over 255 bytes, topic
 * names over 249 characters), the refused event is dead-lettered with its `original` and headers.
 */
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { memoryStore } from '../../src/connectors/memory';
import type { SubscribeOptions } from '../../src/pubsub/adapter';
import { expireTestStreams } from '../helpers/redis-cleanup';
import { kafkaCluster, type KafkaCluster } from '../helpers/kafka-mock';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

interface Target {
  name: string;
  url: () => Promise<string>;
  options?: Record<string, unknown>;
  subscribe?: () => SubscribeOptions;
  /** Kafka orders per key (partition) only: each row here has its own key. */
  orderPerKeyOnly?: boolean;
}

const jetStream = uniqueName('EVPUB_DL');
let kafka: KafkaCluster | undefined;

const TARGETS: Target[] = [
  { name: 'MQTT 3.1.1', url: () => requireService('mosquitto'), options: { mqtt: { protocolVersion: 4 } } },
  { name: 'MQTT 5', url: () => requireService('mosquitto') },
  { name: 'Redis pub/sub', url: () => requireService('redis') },
  { name: 'Redis Streams', url: () => requireService('redis'), options: { redis: { mode: 'streams' } } },
  { name: 'AMQP', url: () => requireService('rabbitmq') },
  { name: 'NATS core', url: () => requireService('nats') },
  {
    name: 'JetStream',
    url: () => requireService('nats'),
    options: { nats: { jetstream: true, stream: jetStream } },
    subscribe: () => ({ durable: uniqueName('d'), from: 'earliest' }),
  },
  { name: 'Kafka', url: async () => (kafka ??= await kafkaCluster()).url, orderPerKeyOnly: true },
];

const LIMIT = 1000;

/** The publisher setting naming the dead-letter topic (on the feed's own broker). */
const deadLetterTo = (topic: string) => ({ deadLetterTopic: topic });
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  await Promise.all((['mosquitto', 'redis', 'rabbitmq', 'nats'] as const).map((s) => requireService(s)));
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

afterAll(async () => {
  await kafka?.close();
  await expireTestStreams(await requireService('redis'));
  const nc = await connect({ servers: new URL(await requireService('nats')).host });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(jetStream).catch(() => undefined);
  } finally {
    await nc.close();
  }
});

describe('dead letters on every broker', () => {
  it.each(TARGETS)(
    '$name: a too large event is dead-lettered with its identity; the others arrive in order',
    async (target) => {
      const url = await target.url();
      // Under evpub/test/: the Redis streams left behind are expired in afterAll.
      const prefix = `evpub/test/${uniqueName('dl')}`;
      const rowsTopic = `${prefix}/rows`;
      const deadLetterTopic = `${prefix}/dead-letter`;
      // Exact topics, one subscription each (a Kafka subscription is a group to join).
      const rows = await subscriber(url, rowsTopic, { ...target.options });
      cleanups.push(() => rows.client.end());
      const letters = await subscriber(url, deadLetterTopic, { ...target.options });
      cleanups.push(() => letters.client.end());
      if (target.subscribe) {
        // Durable subscribers instead of the plain ones (JetStream: a stream to read from).
        await rows.client.unsubscribe(rowsTopic);
        await rows.client.subscribe(rowsTopic, target.subscribe());
        await letters.client.unsubscribe(deadLetterTopic);
        await letters.client.subscribe(deadLetterTopic, target.subscribe());
      }

      const storeName = uniqueName('s');
      const checkpoints = new MemoryCheckpointStore();
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: { url, ...(target.options ? { options: target.options } : {}) } },
        checkpoints,
        publisher: { maxEventBytes: LIMIT, ...deadLetterTo(deadLetterTopic) },
      });
      cleanups.push(() => app.stop());
      const ds = app.dataSource('db', { connector: 'memory', store: storeName });
      app.model('rows', { dataSource: ds, topic: `${prefix}/{model}` });
      await app.start();

      const keys = ['s1', 's2', 's3', 'big', 's4', 's5', 's6'];
      const events = keys.map((key) =>
        ds.connector!.create('rows', key, { key, v: key === 'big' ? 'y'.repeat(5000) : 'x' }),
      );
      const big = events[3]!;
      await waitFor(
        () => rows.got.length >= 6 && letters.got.length >= 1,
        `six events on ${rowsTopic} and a dead letter on ${deadLetterTopic} (${target.name})`,
      );

      // The other events, in source order, on their topic; the feed went on past the letter.
      expect(rows.got.map((m) => m.topic)).toEqual(Array(6).fill(rowsTopic));
      const order = (list: string[]): string[] => (target.orderPerKeyOnly ? [...list].sort() : list);
      expect(order(rows.got.map((m) => m.json.subject as string))).toEqual([
        's1',
        's2',
        's3',
        's4',
        's5',
        's6',
      ]);
      expect(order(rows.got.map((m) => (m.json.data as { position: string }).position))).toEqual(
        order(events.filter((e) => e !== big).map((e) => String(e.position))),
      );

      expect(letters.got).toHaveLength(1);
      expect(letters.got[0]!.topic).toBe(deadLetterTopic);
      const letter = letters.got[0]!.json;
      expect(letter).toEqual({
        reason: expect.stringContaining(`more than the limit of ${LIMIT}`) as unknown,
        code: 'EVPUB_PAYLOAD_TOO_LARGE',
        time: expect.any(String) as unknown,
        event: {
          id: big.id,
          datasource: 'db',
          model: 'rows',
          op: 'create',
          key: 'big',
          position: big.position,
          sourceTime: big.sourceTime,
        },
        topic: rowsTopic,
        envelope: 'cloudevents',
        originalBytes: expect.any(Number) as unknown,
      });
      expect(letter.originalBytes).toBeGreaterThan(5000);
      expect(Number.isNaN(Date.parse(letter.time as string))).toBe(false);
      // No `original`: with it, the letter would be larger than the limit it failed.
      expect(letter).not.toHaveProperty('original');

      // The checkpoint passes the dead-lettered event: a restart does not publish it again.
      await app.stop();
      expect(await checkpoints.load('db/rows')).toBe(String(memoryStore(storeName).head));
    },
  );
});

/** Brokers that refuse a topic evpub accepts: the refusal is dead-lettered with the original. */
const LONG_TOPIC_REFUSERS = TARGETS.filter((t) => t.name === 'AMQP' || t.name === 'Kafka');

describe('a topic the broker refuses', () => {
  it.each(LONG_TOPIC_REFUSERS)(
    '$name: the event is dead-lettered with its original and headers; the feed goes on',
    async (target) => {
      const url = await target.url();
      const prefix = `evpub/test/${uniqueName('dl')}`;
      const deadLetterTopic = `${prefix}/dead-letter`;
      const letters = await subscriber(url, deadLetterTopic, { ...target.options });
      cleanups.push(() => letters.client.end());
      const rows = await subscriber(url, `${prefix}/short`, { ...target.options });
      cleanups.push(() => rows.client.end());
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: { url, ...(target.options ? { options: target.options } : {}) } },
        checkpoints: { store: 'memory' },
        publisher: deadLetterTo(deadLetterTopic),
      });
      cleanups.push(() => app.stop());
      const ds = app.dataSource('db', { connector: 'memory', store: uniqueName('s') });
      // An AMQP routing key is at most 255 bytes, a Kafka topic name 249 characters.
      app.model('rows', { dataSource: ds, topic: `${prefix}/{key}`, envelope: 'cloudevents-binary' });
      await app.start();
      const longKey = 'k'.repeat(300);
      const refused = ds.connector!.create('rows', longKey, { v: 1 });
      ds.connector!.create('rows', 'short', { v: 2 });
      await waitFor(
        () => letters.got.length >= 1 && rows.got.length >= 1,
        `a dead letter and the next event (${target.name})`,
      );
      const letter = letters.got[0]!.json;
      expect(letter).toMatchObject({
        code: 'EVPUB_INVALID_TOPIC',
        event: { id: refused.id, key: longKey, position: refused.position },
        topic: `${prefix}/${longKey}`,
        envelope: 'cloudevents-binary',
      });
      // Binary mode: the original is the data, its attributes are the headers.
      expect(JSON.parse(letter.original as string)).toMatchObject({ key: longKey, after: { v: 1 } });
      expect(letter.originalBytes).toBe(Buffer.byteLength(letter.original as string));
      expect(Object.values(letter.headers as Record<string, string>)).toContain(refused.id);
      expect(rows.got).toHaveLength(1);
    },
  );
});
