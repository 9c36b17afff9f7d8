/**
 * Fault matrix: the publisher's connection to the broker cut by a TCP proxy mid-stream (every
 * open connection destroyed, new ones refused until the proxy listens again), for each broker.
 * The broker itself keeps running and the test's subscriber talks to it directly, so it sees
 * everything the broker accepted: a durable subscription where the broker has one, a live
 * subscriber on MQTT. The shared Redis, NATS and RabbitMQ are used (nothing restarts them); MQTT
 * uses a private mosquitto with unlimited queues (the shared one drops QoS 1 messages for a
 * subscriber more than 1,000 behind). See broker-fault.ts for the case and what it asserts.
 *
 * Kafka has no row: the only Kafka here is librdkafka's mock cluster, which advertises its own
 * address in the metadata, so after the bootstrap a client talks to it directly and a proxy in
 * front of it cuts nothing (and the mock cannot be restarted with its data: it is in memory).
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import amqplib from 'amqplib';
import { Redis } from 'ioredis';
import { afterEach, describe, it } from 'vitest';
import { startMosquitto } from '../helpers/mosquitto';
import { requireService, uniqueName } from '../helpers/services';
import { proxied, runBrokerFault } from './broker-fault';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const FAULT = 'broker connection cut (tcp proxy)';

describe('fault matrix: the connection to the broker cut mid-stream', () => {
  it('redis streams: nothing lost, in order per key', { timeout: 120_000 }, async () => {
    const url = await requireService('redis');
    const { proxy, url: through } = await proxied(url);
    cleanups.push(() => proxy.close());
    await runBrokerFault({
      fault: FAULT,
      broker: 'redis streams',
      note: 'durable consumer group',
      publishUrl: through,
      subscribeUrl: url,
      options: { redis: { mode: 'streams' } },
      subscribe: { durable: uniqueName('g'), from: 'earliest' },
      down: () => proxy.stop(),
      up: () => proxy.start(),
      cleanup: async (topic) => {
        const redis = new Redis(url);
        await redis.del(topic);
        redis.disconnect();
      },
    });
  });

  it('nats jetstream: nothing lost, in order per key', { timeout: 120_000 }, async () => {
    const url = await requireService('nats');
    const { proxy, url: through } = await proxied(url);
    cleanups.push(() => proxy.close());
    const stream = uniqueName('EVPUB');
    await runBrokerFault({
      fault: FAULT,
      broker: 'nats jetstream',
      note: 'durable consumer',
      publishUrl: through,
      subscribeUrl: url,
      options: { nats: { jetstream: true, stream } },
      subscribe: { durable: uniqueName('d'), from: 'earliest' },
      down: () => proxy.stop(),
      up: () => proxy.start(),
      cleanup: async () => {
        const nc = await natsConnect({ servers: new URL(url).host });
        await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
        await nc.close();
      },
    });
  });

  it('amqp: nothing lost, in order per key', { timeout: 120_000 }, async () => {
    const url = await requireService('rabbitmq');
    const { proxy, url: through } = await proxied(url);
    cleanups.push(() => proxy.close());
    const durable = uniqueName('q');
    await runBrokerFault({
      fault: FAULT,
      broker: 'amqp (rabbitmq)',
      note: 'durable queue',
      publishUrl: through,
      subscribeUrl: url,
      subscribe: { durable },
      down: () => proxy.stop(),
      up: () => proxy.start(),
      cleanup: async () => {
        const conn = await amqplib.connect(url);
        const ch = await conn.createChannel();
        await ch.deleteQueue(`evpub.${durable}`);
        await conn.close();
      },
    });
  });

  it('mqtt: nothing lost, in order per key', { timeout: 120_000 }, async () => {
    const broker = await startMosquitto();
    cleanups.push(() => broker.close());
    const { proxy, url: through } = await proxied(broker.url);
    cleanups.push(() => proxy.close());
    await runBrokerFault({
      fault: FAULT,
      broker: 'mqtt 5 (mosquitto)',
      note: 'live subscriber, QoS 1',
      publishUrl: through,
      subscribeUrl: broker.url,
      subscribe: { qos: 1 },
      down: () => proxy.stop(),
      up: () => proxy.start(),
    });
  });
});
