/**
 * The Kafka producer's idempotence (`kafka.idempotent`, on by default), as the records on the
 * broker show it: an idempotent producer's record batches carry the producer id the cluster gave
 * it (InitProducerId) and their sequence numbers; a plain producer's carry producer id -1.
 * A kafkajs consumer decodes both (`batchContext` of each record).
 *
 * On librdkafka's mock (the default here) the cluster names no controller, and kafkajs asks the
 * controller for the producer id: the adapter then turns idempotence off with a warning, and
 * refuses `kafka.idempotent: true` with a config error. With KAFKA_BROKERS set (a real cluster),
 * the same test checks that the records carry a producer id and consecutive sequence numbers.
 */
import { Writable } from 'node:stream';
import { Kafka, logLevel } from 'kafkajs';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, ErrorCode, type Client } from '../../src/pubsub/index';
import { toKafka } from '../../src/pubsub/topics';
import { kafkaCluster, type KafkaCluster } from '../helpers/kafka-mock';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

interface Batch {
  producerId: string;
  firstSequence: number;
}

/** The batch context of the first `count` records of `topic` (partition 0), read with kafkajs. */
async function batchesOf(brokers: string[], topic: string, count: number): Promise<Batch[]> {
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: uniqueName('g'), sessionTimeout: 6_000 });
  const seen: Batch[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const ctx = (message as unknown as { batchContext: { producerId: unknown; firstSequence: number } })
          .batchContext;
        seen.push({ producerId: String(ctx.producerId), firstSequence: ctx.firstSequence });
      },
    });
    await waitFor(() => seen.length >= count, `${count} records of ${topic}`, 30_000);
  } finally {
    await consumer.disconnect();
  }
  return seen;
}

function capture(): { logger: pino.Logger; lines: () => string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { logger: pino({ level: 'warn' }, sink), lines: () => lines };
}

describe('Kafka: idempotent producer', () => {
  let cluster: KafkaCluster;
  const clients: Client[] = [];
  beforeAll(async () => {
    cluster = await kafkaCluster();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await cluster?.close();
  });

  it('is the default: its records carry a producer id, or it says why it cannot be (no controller)', async () => {
    const { logger, lines } = capture();
    const c = createClient(cluster.url, { logger });
    clients.push(c);
    const topic = `evpub/test/${uniqueName('idem')}`;
    for (let i = 0; i < 5; i++) await c.publish(topic, `m${i}`);
    const batches = await batchesOf(cluster.brokers, toKafka(topic), 5);
    const noController = lines().some((l) => /names no controller: the producer is not idempotent/.test(l));
    if (cluster.mockPort !== undefined) {
      expect(noController, lines().join('')).toBe(true);
      expect(batches.every((b) => b.producerId === '-1')).toBe(true);
    } else {
      expect(noController).toBe(false);
      expect(batches.every((b) => b.producerId !== '-1')).toBe(true);
      // One publish per request: each batch numbered after the previous one.
      expect(batches.map((b) => b.firstSequence)).toEqual([0, 1, 2, 3, 4]);
    }
  });

  it('kafka.idempotent: false makes a plain producer, without a warning', async () => {
    const { logger, lines } = capture();
    const c = createClient(cluster.url, { logger, kafka: { idempotent: false } });
    clients.push(c);
    const topic = `evpub/test/${uniqueName('plain')}`;
    await c.publish(topic, 'one');
    const batches = await batchesOf(cluster.brokers, toKafka(topic), 1);
    expect(batches[0]!.producerId).toBe('-1');
    expect(lines().join('')).not.toMatch(/idempotent/);
  });

  it('kafka.idempotent: true where the cluster cannot give a producer id is a config error naming the key', async () => {
    if (cluster.mockPort === undefined) return; // a real cluster names its controller
    const c = createClient(cluster.url, { logger: pino({ level: 'silent' }), kafka: { idempotent: true } });
    clients.push(c);
    await expect(c.connect()).rejects.toMatchObject({
      code: ErrorCode.CONFIG_INVALID,
      message: expect.stringMatching(/^kafka\.idempotent: .*names no controller.*kafka\.idempotent: false/),
    });
  });

  it('kafka.idempotent must be a boolean', () => {
    expect(() => createClient(cluster.url, { kafka: { idempotent: 'yes' } })).toThrow(
      /kafka\.idempotent: must be true \(the default\) or false/,
    );
  });
});
