/**
 * The Kafka batcher's idempotent mode (kafka-producer.ts), against librdkafka's mock with real
 * kafkajs producers: one `sendBatch` at a time (what is published meanwhile goes in the next
 * one, in order), and after a send that failed, a new producer from `renew()` before anything
 * else is sent, publishing going on.
 *
 * The adapter uses this mode only with an idempotent producer, which the mock cannot give
 * (it names no controller: kafka-idempotence.test.ts); the batcher is so driven directly here,
 * with plain producers, to check its ordering and its renewal on a real cluster connection.
 */
import * as kafkajs from 'kafkajs';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isEvpubError } from '../../src/errors';
import {
  evpubPartitioner,
  kafkaPublishError,
  ProduceBatcher,
} from '../../src/pubsub/adapters/kafka-producer';
import { startKafkaMock, type KafkaCluster } from '../helpers/kafka-mock';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

describe('Kafka batcher, idempotent mode', () => {
  let mock: KafkaCluster;
  let kafka: Kafka;
  const producers: Producer[] = [];
  const newProducer = async (): Promise<Producer> => {
    // Unkeyed messages to the lowest partition, as the adapter sends them: one ordered log.
    const p = kafka.producer({ allowAutoTopicCreation: true, createPartitioner: evpubPartitioner(kafkajs) });
    producers.push(p);
    await p.connect();
    return p;
  };

  beforeAll(async () => {
    mock = await startKafkaMock();
    kafka = new Kafka({ brokers: mock.brokers, logLevel: logLevel.NOTHING });
  });
  afterAll(async () => {
    await Promise.all(producers.map((p) => p.disconnect().catch(() => undefined)));
    await mock?.close();
  });

  /** The values of `topic`'s partition 0, in offset order. */
  async function read(topic: string, count: number): Promise<string[]> {
    const consumer = kafka.consumer({ groupId: uniqueName('g') });
    const values: string[] = [];
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({ eachMessage: async ({ message }) => void values.push(String(message.value)) });
      await waitFor(() => values.length >= count, `${count} records of ${topic}`, 30_000);
    } finally {
      await consumer.disconnect();
    }
    return values;
  }

  it('sends one batch at a time, in publish order, and renews the producer after a failed send', async () => {
    const topic = uniqueName('serial');
    const first = await newProducer();
    let renewals = 0;
    const sent: number[] = [];
    const batcher = new ProduceBatcher({
      producer: first,
      ensureTopic: () => Promise.resolve(),
      maxMessageBytes: 1_048_588,
      translate: (err, topics, n) => kafkaPublishError(err, topics, n),
      renew: async () => {
        renewals++;
        return newProducer();
      },
    });
    // Count the requests the producers make: a new batch only after the previous one settled.
    let inFlight = 0;
    let most = 0;
    const watch = (p: Producer): void => {
      const send = p.sendBatch.bind(p);
      p.sendBatch = async (batch) => {
        inFlight++;
        most = Math.max(most, inFlight);
        sent.push(batch.topicMessages!.reduce((n, t) => n + t.messages.length, 0));
        try {
          return await send(batch);
        } finally {
          inFlight--;
        }
      };
    };
    watch(first);
    const message = (i: number) => ({ key: null, value: `m${i}` });

    // 300 publishes over 30 ticks, sends in flight meanwhile: never two at once; all arrive, in order.
    const published: Promise<void>[] = [];
    for (let i = 0; i < 300; i++) {
      published.push(batcher.send(topic, message(i), 40));
      if (i % 10 === 9) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(published);
    expect(most).toBe(1);
    expect(sent.reduce((a, b) => a + b, 0)).toBe(300);

    // A send that fails (its producer lost its connection): rejected as transient; the next
    // publish goes through a new producer.
    await first.disconnect();
    const failed = await batcher.send(topic, message(300), 40).catch((err: unknown) => err);
    expect(isEvpubError(failed) && failed.retriable).toBe(true);
    expect(renewals).toBe(0);
    await batcher.send(topic, message(301), 40);
    expect(renewals).toBe(1);
    expect(batcher.current).not.toBe(first);
    await batcher.send(topic, message(302), 40);
    expect(renewals).toBe(1); // only after a failure

    // close() (the adapter's end): what is not handed to kafkajs yet is rejected at once.
    const last = batcher.send(topic, message(303), 40);
    await new Promise((r) => setImmediate(r));
    const queued = batcher.send(topic, message(304), 40);
    batcher.close(new Error('closed'));
    await expect(queued).rejects.toThrow('closed');
    await batcher.drained();
    await last;

    const values = await read(topic, 303);
    expect(values).toEqual([...Array.from({ length: 300 }, (_, i) => `m${i}`), 'm301', 'm302', 'm303']);
  });
});
