/**
 * The conformance suite against Kafka: librdkafka's mock cluster in a kcat process, or the real
 * cluster in KAFKA_BROKERS. The restart tests run on a private mock behind a TCP proxy that
 * can be stopped and started on the same port. The mock advertises its own address
 * (127.0.0.1:MOCKPORT) in metadata, so clients would bypass a proxy after bootstrap; the
 * clients map that advertised address to the proxy with `kafka.brokerAddressMap` (an option
 * for brokers reached through tunnels and NAT), so every connection goes through the proxy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, ErrorCode, type Client, type KafkaAdapter } from '../../src/pubsub/index';
import { collector, pubsubConformance, type PrivateBroker } from './pubsub.suite';
import { freePort, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { kafkaCluster, startKafkaMock, type KafkaCluster } from '../helpers/kafka-mock';
import { startTcpProxy } from '../helpers/tcp-proxy';

let cluster: KafkaCluster | undefined;
/** Filled by privateBroker(): mock address → proxy address. */
const brokerAddressMap: Record<string, string> = {};

pubsubConformance({
  name: 'kafka',
  url: async () => {
    cluster = await kafkaCluster();
    return cluster.url;
  },
  // The mock keeps a group "joining" for a session timeout after its last member left (a real
  // broker rebalances an empty group at once), so a short one keeps the durable tests quick.
  options: { kafka: { brokerAddressMap, sessionTimeout: 6_000 } },
  refusalsNotProduced: [
    "a topic the ACL denies (TOPIC_AUTHORIZATION_FAILED): librdkafka's mock has no ACLs",
    'a record over the broker\'s message.max.bytes (MESSAGE_TOO_LARGE): evpub refuses it before sending (see "Kafka adapter specifics")',
    'an invalid topic (INVALID_TOPIC_EXCEPTION): evpub refuses it before sending (see "Kafka adapter specifics")',
    'a corrupt record (CORRUPT_MESSAGE): kafkajs writes valid batches; the mock cannot be told to refuse one',
  ],
  unawaitedSubscribeMisses:
    'a plain subscriber starts at the partition end it finds once its consumer has joined (seconds); a record produced before is history',
  teardown: async () => {
    await cluster?.close();
  },
  privateBroker: async (): Promise<PrivateBroker> => {
    const mock = await startKafkaMock();
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: mock.mockPort! });
    brokerAddressMap[mock.brokers[0]!] = `127.0.0.1:${proxy.port}`;
    return {
      url: `kafka://127.0.0.1:${proxy.port}`,
      stop: () => proxy.stop(),
      start: () => proxy.start(),
      close: async () => {
        await proxy.close();
        await mock.close();
      },
    };
  },
});

describe('Kafka adapter specifics', () => {
  let own: KafkaCluster;
  const clients: Client[] = [];
  const client = (url = own.url): Client => {
    const c = createClient(url, { kafka: { sessionTimeout: 6_000 } });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    own = await kafkaCluster();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await own.close();
  });

  it('a plain subscriber gets nothing published before subscribe resolved, everything after', async () => {
    const topic = `evpub/kafka/${uniqueName()}`;
    const pub = client();
    await pub.publish(topic, 'old');
    const sub = client();
    const got = collector(sub);
    await sub.subscribe(topic);
    await pub.publish(topic, 'new');
    await waitFor(() => got.length >= 1, 'the new message');
    await pub.publish(topic, 'marker');
    await waitFor(() => got.length >= 2, 'the marker');
    expect(got.map((m) => m.payload.toString())).toEqual(['new', 'marker']);
  });

  it('durable: messages not acknowledged are redelivered to the next subscriber of the group', async () => {
    const topic = `evpub/kafka/${uniqueName()}`;
    const group = uniqueName('g');
    const pub = client();
    const first = client();
    const got1 = collector(first);
    await first.subscribe(topic, { durable: group, ack: 'manual' });
    for (const m of ['m1', 'm2', 'm3']) await pub.publish(topic, m);
    await waitFor(() => got1.length === 3, 'three messages');
    await got1[0]!.meta.ack();
    await got1[2]!.meta.ack(); // m2 is not acknowledged: the commit stays after m1
    await first.end();
    const second = client();
    const got2 = collector(second);
    await second.subscribe(topic, { durable: group, ack: 'manual' });
    await waitFor(() => got2.length === 2, 'the unacknowledged messages again');
    expect(got2.map((m) => m.payload.toString())).toEqual(['m2', 'm3']);
  });

  it('takes several bootstrap brokers in the URL', async () => {
    const dead = await freePort();
    const c = client(`${own.url},127.0.0.1:${dead}`);
    await c.connect();
    expect((c.adapter as KafkaAdapter)['brokers']).toEqual([own.brokers[0], `127.0.0.1:${dead}`]);
  });

  it('refuses a message over message.max.bytes before sending, counting key and headers', async () => {
    const c = client();
    const max = c.adapter.features.maxPayload;
    const err: unknown = await c
      .publish(`evpub/kafka/${uniqueName()}`, Buffer.alloc(max - 10), { headers: { big: 'x'.repeat(100) } })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.PAYLOAD_TOO_LARGE, retriable: false });
  });

  it('refuses a topic Kafka cannot name before sending, for good, and publishes on', async () => {
    // The broker's own INVALID_TOPIC_EXCEPTION cannot happen: evpub checks Kafka's rule first.
    const c = client();
    const base = `evpub/kafka/${uniqueName()}`;
    const err: unknown = await c.publish(`${base}/a.b`, 'x').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.INVALID_TOPIC, retriable: false });
    await c.publish(`${base}/ok`, 'y');
  });
});
