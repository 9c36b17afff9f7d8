/**
 * Topic templates cannot escape their prefix through key values, on every real broker: events
 * whose keys are built to inject separators and wildcards (`a/b`, `#`, `+`, `.`, `*`, `>`,
 * `%2F`, whitespace, NUL) are published on `<root>/orders/{key}`; a subscriber to
 * `<root>/orders/+` receives each on exactly the topic rendered, and a subscriber to
 * `<root>/other/#` receives none. Kafka (its strict names) refuses them with INVALID_TOPIC.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { compileTopic } from '../../src/pipeline/topics';
import { createClient } from '../../src/pubsub/registry';
import { ErrorCode } from '../../src/errors';
import { kafkaCluster } from '../helpers/kafka-mock';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName, type ServiceName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const KEYS = ['a/b', '#', '+', 'x.y', '*', '>', '%2F..', 'two words', 'tab\there', 'nul\u0000', '', 'ok'];

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const BROKERS: { name: string; service?: ServiceName; url: (base: string) => string }[] = [
  { name: 'memory', url: () => `memory://${uniqueName('b')}` },
  { name: 'mqtt', service: 'mosquitto', url: (b) => b },
  { name: 'redis', service: 'redis', url: (b) => b },
  { name: 'nats', service: 'nats', url: (b) => b },
  { name: 'amqp', service: 'rabbitmq', url: (b) => b },
];

describe.each(BROKERS)('key values stay below their prefix: $name', ({ service, url: urlOf }) => {
  it('every hostile key arrives on its own topic under <root>/orders/+, none elsewhere', async () => {
    const url = urlOf(service ? await requireService(service) : '');
    const root = uniqueName('keys');
    const render = compileTopic(`${root}/{model}/{key}`);
    const topics = KEYS.map((key) => render({ datasource: 'db', model: 'orders', op: 'create', key }));
    const inside = await subscriber(url, `${root}/orders/+`);
    cleanups.push(() => inside.client.end());
    const outside = await subscriber(url, `${root}/other/#`);
    cleanups.push(() => outside.client.end());
    const pub = createClient(url, { logger: quietLogger() });
    cleanups.push(() => pub.end());
    for (const topic of topics) await pub.publish(topic, Buffer.from(topic));
    const marker = `${root}/other/marker`;
    await pub.publish(marker, Buffer.from('marker'));
    await waitFor(() => inside.got.length === topics.length && outside.got.length === 1, 'every message');
    expect(inside.got.map((m) => m.topic).sort()).toEqual([...topics].sort());
    for (const m of inside.got) expect(m.text).toBe(m.topic);
    expect(outside.got.map((m) => m.topic)).toEqual([marker]);
  });
});

describe('key values on Kafka', () => {
  it('a key its names cannot carry is INVALID_TOPIC, not another topic', async () => {
    const kafka = await kafkaCluster();
    cleanups.push(() => kafka.close());
    const pub = createClient(kafka.url, { logger: quietLogger() });
    cleanups.push(() => pub.end());
    const render = compileTopic('evpub/{model}/{key}');
    for (const key of ['a/b', '#', 'x.y', '>', 'two words']) {
      await expect(
        pub.publish(render({ datasource: 'db', model: 'orders', op: 'create', key }), Buffer.from('x')),
      ).rejects.toMatchObject({ code: ErrorCode.INVALID_TOPIC });
    }
  });
});
