/**
 * `evpub dead-letters replay` on Redis Streams, JetStream and AMQP (Kafka: its own file, the
 * mock's group joins are slow), and its refusal on brokers that store nothing.
 */
import { connect } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import amqplib from 'amqplib';
import { afterAll, describe, expect, it } from 'vitest';
import { consumerName } from '../../src/pubsub/adapters/nats-durable';
import { toDotted } from '../../src/pubsub/topics';
import { expireTestStreams } from '../helpers/redis-cleanup';
import { requireService, uniqueName } from '../helpers/services';
import { spawnCli } from './cli';
import { replaySuite } from './dead-letters-replay.suite';

const jetStream = uniqueName('EVPUB_DLR');

async function withJsm(url: string, work: (jsm: JetStreamManager) => Promise<void>): Promise<void> {
  const nc = await connect({ servers: new URL(url).host });
  try {
    await work(await jetstreamManager(nc));
  } finally {
    await nc.close();
  }
}

afterAll(async () => {
  await expireTestStreams(await requireService('redis'));
  await withJsm(await requireService('nats'), async (jsm) => {
    await jsm.streams.delete(jetStream).catch(() => undefined);
  });
});

replaySuite({
  name: 'Redis Streams',
  url: () => requireService('redis'),
  options: { redis: { mode: 'streams' } },
  cliOptions: ['-o', 'redis.mode=streams'],
});

replaySuite({
  name: 'JetStream',
  url: () => requireService('nats'),
  options: { nats: { jetstream: true, stream: jetStream } },
  cliOptions: ['-o', 'nats.jetstream=true', '-o', `nats.stream=${jetStream}`],
  subscribe: () => ({ durable: uniqueName('d'), from: 'earliest' }),
  // A run's unacknowledged letters are nak'ed when it ends, but one of them (nats-server 2.9:
  // the first) is handed at once to the ended run's pull request and counts as delivered again:
  // it comes back only after the consumer's ack wait (30 s as evpub makes it). The test makes the
  // consumer itself, as an operator may, with a 1 s ack wait, shorter than a run's idle time,
  // so the next run still finds every letter left.
  prepare: (url, group, topic) =>
    withJsm(url, async (jsm) => {
      const subject = toDotted(topic);
      await jsm.consumers.add(jetStream, {
        durable_name: consumerName(group, subject),
        filter_subject: subject,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: 1_000_000_000,
      });
    }),
});

replaySuite({
  name: 'AMQP',
  url: () => requireService('rabbitmq'),
  options: {},
  cliOptions: [],
  setup: true,
  cleanup: async (url, group) => {
    const conn = await amqplib.connect(url);
    try {
      const ch = await conn.createChannel();
      await ch.deleteQueue(`evpub.${group}`);
    } finally {
      await conn.close();
    }
  },
});

describe('evpub dead-letters replay on brokers that store nothing', () => {
  it.each([
    {
      name: 'MQTT',
      service: 'mosquitto' as const,
      args: [],
      says: /MQTT has no named durable subscriptions.*persistent-session subscriber/,
    },
    {
      name: 'Redis pub/sub',
      service: 'redis' as const,
      args: [],
      says: /Redis pub\/sub .* stores nothing.*-o redis\.mode=streams/,
    },
    {
      name: 'NATS core',
      service: 'nats' as const,
      args: [],
      says: /NATS core stores nothing.*-o nats\.jetstream=true/,
    },
  ])('$name: refused at once, naming the mode and what to use instead', async ({ service, args, says }) => {
    const url = await requireService(service);
    const proc = spawnCli(['dead-letters', 'replay', url, '--idle-ms', '60000', ...args]);
    expect(await proc.exited).toBe(1);
    expect(proc.stderr()).toMatch(says);
    expect(proc.stdout()).toBe('');
  });
});
