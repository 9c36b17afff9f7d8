/**
 * The same CouchDB changes (a create, an update, a delete) published with the CloudEvents
 * envelope through every broker at once: Redis (pub/sub), NATS core, NATS JetStream (durable
 * consumer), RabbitMQ and Kafka (librdkafka's mock cluster), in structured mode, plus binary
 * mode (attributes as `ce-*` headers) on NATS and Kafka. One publisher app per broker, all
 * reading the same database; every message is parsed by the official `cloudevents` SDK.
 *
 * Since every app reads the same changes, each change must carry the same CloudEvents `id`
 * on every broker (the idempotency key is the change's, not the publish's).
 */
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { CloudEvent, HTTP, Kafka, type KafkaMessage } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import type { EnvelopeName } from '../../src/app/config-types';
import type { SubscribeOptions } from '../../src/pubsub/adapter';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { kafkaCluster, type KafkaCluster } from '../helpers/kafka-mock';
import { quietLogger, type Received } from '../helpers/publisher';
import { createClient } from '../../src/pubsub/registry';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import type { Client } from '../../src/pubsub/client';

interface Target {
  name: string;
  url: string;
  options?: Record<string, unknown>;
  envelope: EnvelopeName;
  subscribe?: SubscribeOptions;
  /** Topic prefix, unique per target. */
  prefix: string;
  app?: App;
  client?: Client;
  got?: Received[];
}

const OPS = ['create', 'update', 'delete'] as const;
const jetStream = uniqueName('EVPUB');
let couch: TestCouchServer;
let kafka: KafkaCluster;
const targets: Target[] = [];

beforeAll(async () => {
  const [redis, nats, amqp] = await Promise.all([
    requireService('redis'),
    requireService('nats'),
    requireService('rabbitmq'),
  ]);
  [couch, kafka] = await Promise.all([startTestCouchServer(), kafkaCluster()]);
  await couch.createDb('accounts');
  const t = (name: string, url: string, envelope: EnvelopeName, more: Partial<Target> = {}): Target => ({
    name,
    url,
    envelope,
    prefix: uniqueName('ce'),
    ...more,
  });
  targets.push(
    t('redis', redis, 'cloudevents'),
    t('nats', nats, 'cloudevents'),
    t('nats jetstream', nats, 'cloudevents', {
      options: { nats: { jetstream: true, stream: jetStream } },
      subscribe: { durable: uniqueName('d'), from: 'earliest' },
    }),
    t('rabbitmq', amqp, 'cloudevents'),
    t('kafka', kafka.url, 'cloudevents'),
    t('nats binary', nats, 'cloudevents-binary'),
    t('kafka binary', kafka.url, 'cloudevents-binary'),
  );
  // Subscribers first (one exact topic each: a Kafka subscription is a consumer group to join),
  // then the publishers; all in parallel.
  await Promise.all(
    targets.map(async (target) => {
      const client = createClient(target.url, { logger: quietLogger(), ...target.options });
      const got: Received[] = [];
      client.on('message', (topic, payload, meta) => {
        const text = payload.toString('utf8');
        got.push({
          topic,
          text,
          json: {},
          ...(meta.headers ? { headers: meta.headers } : {}),
          ...(meta.key !== undefined ? { key: meta.key } : {}),
        });
      });
      await client.subscribe(`${target.prefix}/accounts`, target.subscribe);
      target.client = client;
      target.got = got;
    }),
  );
  await Promise.all(
    targets.map(async (target) => {
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: { url: target.url, ...(target.options ? { options: target.options } : {}) } },
        checkpoints: { store: 'memory' },
      });
      app.dataSource('couch', { connector: 'couchdb', url: couch.url });
      app.model(
        { name: 'accounts', base: 'Model' },
        {
          dataSource: 'couch',
          topic: `${target.prefix}/{model}`,
          envelope: target.envelope,
        },
      );
      target.app = app;
      await app.start();
    }),
  );
}, 60_000);

afterAll(async () => {
  await Promise.all(targets.map(async (t) => t.app?.stop()));
  await Promise.all(targets.map(async (t) => t.client?.end()));
  await couch?.close();
  await kafka?.close();
  const nats = await requireService('nats');
  const nc = await connect({ servers: new URL(nats).host });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(jetStream).catch(() => undefined);
  } finally {
    await nc.close();
  }
});

/**
 * The SDK's reading of a message: structured (one JSON) or binary (attribute headers + data),
 * with the protocol binding the broker has in the SDK (Kafka's `ce_*` headers; `ce-*` as HTTP
 * for NATS).
 */
function toCloudEvent(target: Target, m: Received): CloudEvent<unknown> {
  const binary = target.envelope === 'cloudevents-binary';
  const headers = binary
    ? { 'content-type': 'application/json', ...m.headers }
    : { 'content-type': 'application/cloudevents+json' };
  const event = target.url.startsWith('kafka:')
    ? Kafka.toEvent({ headers, key: m.key ?? '', value: m.text, body: m.text } as KafkaMessage<string>)
    : HTTP.toEvent({ headers, body: m.text });
  if (Array.isArray(event)) throw new Error('a batch was not expected');
  return event as CloudEvent<unknown>;
}

describe('CloudEvents through every broker', () => {
  it('create, update and delete arrive on each broker as valid CloudEvents with the same ids', async () => {
    const id = uniqueName('bond');
    const revs: string[] = [];
    const waitAll = (n: number, what: string) =>
      waitFor(() => targets.every((t) => t.got!.length >= n), `${what} on every broker`, 30_000);

    revs.push(
      await couch.put('accounts', { _id: id, name: 'James Bond', type: 'Demo', region: 'Bangalore' }),
    );
    await waitAll(1, 'the create');
    revs.push(
      await couch.put('accounts', {
        _id: id,
        _rev: revs[0],
        name: 'James Bond',
        type: 'Demo',
        region: 'London',
      }),
    );
    await waitAll(2, 'the update');
    revs.push(await couch.remove('accounts', id, revs[1]!));
    await waitAll(3, 'the delete');

    const idsPerOp = new Map<string, Set<string>>();
    for (const target of targets) {
      expect(target.got, target.name).toHaveLength(3);
      target.got!.forEach((m, i) => {
        const op = OPS[i]!;
        expect(m.topic, target.name).toBe(`${target.prefix}/accounts`);
        const ce = toCloudEvent(target, m);
        expect(ce.validate()).toBe(true);
        expect(ce.specversion).toBe('1.0');
        expect(ce.source).toBe('/evpub/couch/accounts');
        expect(ce.type).toBe(`evpub.accounts.${op}`);
        expect(ce.subject).toBe(id);
        expect(ce.datacontenttype).toBe('application/json');
        expect(Number.isNaN(Date.parse(ce.time!))).toBe(false);
        const after =
          op === 'delete'
            ? null
            : {
                _id: id,
                _rev: revs[i],
                name: 'James Bond',
                type: 'Demo',
                region: op === 'create' ? 'Bangalore' : 'London',
              };
        expect(ce.data, `${target.name} ${op}`).toEqual({
          op,
          key: id,
          before: null,
          after,
          position: expect.any(String),
          source: { database: 'accounts', rev: revs[i], seq: expect.any(String) },
        });
        if (target.envelope === 'cloudevents-binary') {
          const idHeader = target.url.startsWith('kafka:') ? 'ce_id' : 'ce-id';
          expect(m.headers?.[idHeader]).toBe(ce.id);
          expect(JSON.parse(m.text)).toEqual(ce.data); // the payload is the data alone
        } else {
          expect(m.headers?.['ce-id']).toBeUndefined();
        }
        const ids = idsPerOp.get(op) ?? new Set<string>();
        ids.add(ce.id);
        idsPerOp.set(op, ids);
      });
    }
    // One id per change, the same on every broker; three changes, three ids.
    expect([...idsPerOp.values()].map((s) => s.size)).toEqual([1, 1, 1]);
    expect(new Set([...idsPerOp.values()].flatMap((s) => [...s])).size).toBe(3);
  });
});
