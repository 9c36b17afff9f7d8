/**
 * The raw broker client libraries, each doing the least a correct publisher must: publish and
 * learn when the broker has the message. The baselines of the CDC benchmark (bench/cdc.ts) use
 * them: the broker ceiling (pre-built messages) and the minimal relay (bench/cdc/relay.ts).
 *
 * Contract: `publish(payload)` sends one message to `topic` and resolves when the broker
 * confirmed it, rejects when the broker refused it. Any number of publishes may be in flight;
 * the caller bounds them. What "confirmed" is, per broker:
 *   mqtt       QoS 1 PUBACK (MQTT 5)
 *   redis      the PUBLISH reply
 *   amqp       the publisher confirm (confirm channel, persistent message, exchange `evpub`)
 *   nats       core NATS confirms nothing: a flush round trip (PING/PONG), shared by all the
 *              publishes of one tick of the event loop
 *   jetstream  the stream's PubAck
 *   kafka      acks=-1; the publishes of one tick go out as one producer.send (as a real relay
 *              batches), each resolving with that send's result
 * `end()` closes the connection (JetStream: deletes the stream if this publisher created it).
 *
 * `topic` is in evpub's topic syntax (`bench/relay_1`); it is carried to the broker's own name
 * by the rules evpub's adapters use (src/pubsub/topics.ts), so that evpub's Client subscribed to
 * `topic` receives what is published here.
 */
import { toDotted, toKafka } from '../../src/pubsub/topics';

export type BrokerName = 'mqtt' | 'redis' | 'amqp' | 'nats' | 'jetstream' | 'kafka';

export const BROKERS: readonly BrokerName[] = ['mqtt', 'redis', 'amqp', 'nats', 'jetstream', 'kafka'];

export interface RawPublisher {
  /** Publishes one message and resolves when the broker confirmed it (see the table above). */
  publish(payload: Buffer): Promise<void>;
  end(): Promise<void>;
}

export function isBrokerName(name: string): name is BrokerName {
  return (BROKERS as readonly string[]).includes(name);
}

export async function openRawPublisher(
  broker: BrokerName,
  url: string,
  topic: string,
): Promise<RawPublisher> {
  switch (broker) {
    case 'mqtt':
      return openMqtt(url, topic);
    case 'redis':
      return openRedis(url, topic);
    case 'amqp':
      return openAmqp(url, topic);
    case 'nats':
      return openNats(url, topic);
    case 'jetstream':
      return openJetStream(url, topic);
    case 'kafka':
      return openKafka(url, topic);
  }
}

const nothing = (): void => undefined;

async function openMqtt(url: string, topic: string): Promise<RawPublisher> {
  const mqtt = await import('mqtt');
  const c = await mqtt.connectAsync(url, { protocolVersion: 5 });
  return {
    publish: (payload) => c.publishAsync(topic, payload, { qos: 1 }).then(nothing),
    end: () => c.endAsync(),
  };
}

async function openRedis(url: string, topic: string): Promise<RawPublisher> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url, { lazyConnect: true });
  await r.connect();
  return {
    publish: (payload) => r.publish(topic, payload).then(nothing),
    end: async () => void (await r.quit()),
  };
}

async function openAmqp(url: string, topic: string): Promise<RawPublisher> {
  const amqp = await import('amqplib');
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel();
  await ch.assertExchange('evpub', 'topic', { durable: true });
  const key = toDotted(topic);
  return {
    publish: (payload) =>
      new Promise<void>((resolve, reject) => {
        ch.publish('evpub', key, payload, { deliveryMode: 2 }, (err: unknown) =>
          err
            ? reject(err instanceof Error ? err : new Error('amqp: the broker nacked the message'))
            : resolve(),
        );
      }),
    end: async () => {
      await ch.close();
      await conn.close();
    },
  };
}

function natsServers(url: string): string {
  return new URL(url).host;
}

async function openNats(url: string, topic: string): Promise<RawPublisher> {
  const { connect } = await import('@nats-io/transport-node');
  const nc = await connect({ servers: natsServers(url) });
  const subject = toDotted(topic);
  let tick: Promise<void> | undefined;
  return {
    publish: (payload) => {
      nc.publish(subject, payload);
      if (!tick) {
        // One PING/PONG after this tick's publishes confirms them all (the server handles a
        // connection's messages in order).
        tick = nc.flush();
        queueMicrotask(() => (tick = undefined));
      }
      return tick;
    },
    end: () => nc.close(),
  };
}

async function openJetStream(url: string, topic: string): Promise<RawPublisher> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstream, jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: natsServers(url) });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const subject = toDotted(topic);
  // A stream that already captures the subject (evpub's subscriber may have made one) is used
  // as it is; otherwise one is made for this publisher and removed by end().
  let created: string | undefined;
  const existing = await jsm.streams.find(subject).catch(() => undefined);
  if (!existing) {
    created = `BENCH_RELAY_${topic.replace(/[^A-Za-z0-9_-]/g, '_')}`.slice(0, 200);
    await jsm.streams.add({ name: created, subjects: [subject] });
  }
  return {
    publish: (payload) => js.publish(subject, payload).then(nothing),
    end: async () => {
      if (created) await jsm.streams.delete(created).catch(nothing);
      await nc.close();
    },
  };
}

interface KafkaQueued {
  value: Buffer;
  resolve(): void;
  reject(err: Error): void;
}

async function openKafka(url: string, topic: string): Promise<RawPublisher> {
  const { Kafka, logLevel } = await import('kafkajs');
  const brokers = url.replace(/^kafka:\/\//, '').split(',');
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  const name = toKafka(topic);
  const admin = kafka.admin();
  await admin.connect();
  // librdkafka's mock cluster has no controller (CreateTopics fails) and creates topics with 4
  // partitions on first use; the partitioner below keeps every message on partition 0.
  await admin.createTopics({ topics: [{ topic: name, numPartitions: 1 }] }).catch(() => false);
  await admin.disconnect();
  const producer = kafka.producer({ allowAutoTopicCreation: true, createPartitioner: () => () => 0 });
  await producer.connect();
  // Loads the topic's metadata (the mock creates the topic here) before the first publish:
  // otherwise the first send waits for it while later sends overtake it, out of order.
  await producer.send({ topic: name, acks: -1, messages: [] });
  let queue: KafkaQueued[] = [];
  const send = (): void => {
    const batch = queue;
    queue = [];
    producer.send({ topic: name, acks: -1, messages: batch.map((m) => ({ value: m.value })) }).then(
      () => {
        for (const m of batch) m.resolve();
      },
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        for (const m of batch) m.reject(e);
      },
    );
  };
  return {
    publish: (value) =>
      new Promise<void>((resolve, reject) => {
        if (queue.push({ value, resolve, reject }) === 1) queueMicrotask(send);
      }),
    end: () => producer.disconnect(),
  };
}
