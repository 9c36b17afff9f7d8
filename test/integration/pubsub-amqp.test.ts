/**
 * AMQP-specific behaviour beyond the conformance suite, against the shared RabbitMQ (and a
 * private node for the mid-stream restart): the AMQP mapping seen by a raw amqplib client,
 * manual acks and redelivery, limits, errors, and re-publishing across a broker restart.
 */
import amqplib from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, ErrorCode, isEvpubError } from '../../src/pubsub/index';
import type { Client, ClientOptions } from '../../src/pubsub/index';
import { collector } from '../conformance/pubsub.suite';
import { startPrivateRabbitMq } from '../helpers/rabbitmq';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

describe('AMQP adapter', () => {
  let url: string;
  let raw: amqplib.ChannelModel;
  const clients: Client[] = [];
  const client = (options: ClientOptions = {}, at = url): Client => {
    const c = createClient(at, options);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    url = await requireService('rabbitmq');
    raw = await amqplib.connect(url);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await raw.close();
  });

  it('publishes to the topic exchange with the dotted routing key, persistent, with headers and properties', async () => {
    const ch = await raw.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true });
    await ch.bindQueue(queue, 'evpub', '%.v1.subutest');
    const got: amqplib.ConsumeMessage[] = [];
    await ch.consume(queue, (m) => m && got.push(m), { noAck: true });
    const id = uniqueName();
    await client().publish('/v1/subutest', id, {
      headers: { 'ce-id': id },
      key: 'k1',
      contentType: 'text/plain',
      messageId: id,
    });
    await waitFor(() => got.some((m) => m.content.toString() === id), 'the raw delivery');
    const m = got.find((x) => x.content.toString() === id)!;
    expect(m.fields.routingKey).toBe('%.v1.subutest');
    expect(m.properties.deliveryMode).toBe(2);
    expect(m.properties.contentType).toBe('text/plain');
    expect(m.properties.messageId).toBe(id);
    expect(m.properties.headers).toMatchObject({ 'ce-id': id, 'evpub-key': 'k1' });
    await ch.close();
  });

  it('delivers what a raw AMQP client publishes, with the topic, headers and key mapped back', async () => {
    const topic = `evpub/test/${uniqueName()}/a.b c`;
    const sub = client();
    const got = collector(sub);
    await sub.subscribe(topic.replace(/\/a\.b c$/, '/+'));
    const ch = await raw.createChannel();
    ch.publish('evpub', `evpub.test.${topic.split('/')[2]}.a%2Eb%20c`, Buffer.from('raw'), {
      headers: { 'x-n': 7, 'evpub-key': 'k2' },
      contentType: 'application/octet-stream',
    });
    await waitFor(() => got.length === 1, 'the raw message');
    expect(got[0]!.topic).toBe(topic);
    expect(got[0]!.meta.headers).toEqual({ 'x-n': '7' });
    expect(got[0]!.meta.key).toBe('k2');
    expect(got[0]!.meta.contentType).toBe('application/octet-stream');
    await ch.close();
  });

  it('manual ack: an unacknowledged durable message is redelivered, marked redelivered', async () => {
    const topic = `evpub/test/${uniqueName()}/manual`;
    const group = uniqueName('g');
    const first = client();
    const got1 = collector(first);
    await first.subscribe(topic, { durable: group, ack: 'manual' });
    await client().publish(topic, 'once');
    await waitFor(() => got1.length === 1, 'the first delivery');
    expect(got1[0]!.meta.redelivered).toBeUndefined();
    await first.end(); // never acked
    const second = client();
    const got2 = collector(second);
    await second.subscribe(topic, { durable: group, ack: 'manual' });
    await waitFor(() => got2.length === 1, 'the redelivery');
    expect(got2[0]!.payload.toString()).toBe('once');
    expect(got2[0]!.meta.redelivered).toBe(true);
    await got2[0]!.meta.ack();
    await got2[0]!.meta.ack(); // idempotent
    await second.end();
    await raw.createChannel().then(async (ch) => {
      await ch.deleteQueue(`evpub.${group}`);
      await ch.close();
    });
  });

  it('refuses a payload over RabbitMQ max_message_size before sending it', async () => {
    const c = client();
    expect(c.adapter.features.maxPayload).toBe(128 * 1024 * 1024);
    const err: unknown = await c
      .publish(`evpub/test/${uniqueName()}`, Buffer.allocUnsafe(c.adapter.features.maxPayload + 1))
      .catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.PAYLOAD_TOO_LARGE)).toBe(true);
  });

  it('refuses a topic whose routing key would exceed 255 bytes, naming it', async () => {
    const topic = `evpub/${'.'.repeat(100)}`;
    await expect(client().publish(topic, 'x')).rejects.toMatchObject({
      code: ErrorCode.INVALID_TOPIC,
      message: expect.stringContaining('255 bytes') as unknown,
    });
  });

  it('uses the exchange named in { amqp: { exchange } }', async () => {
    const exchange = uniqueName('evpub_x');
    const topic = `evpub/test/${uniqueName()}`;
    const sub = client({ amqp: { exchange } });
    const got = collector(sub);
    await sub.subscribe(topic);
    const other = client();
    const gotOther = collector(other);
    await other.subscribe(topic);
    await client({ amqp: { exchange } }).publish(topic, 'x');
    await waitFor(() => got.length === 1, 'the message on the custom exchange');
    expect(gotOther).toHaveLength(0);
    const ch = await raw.createChannel();
    await ch.deleteExchange(exchange);
    await ch.close();
  });

  it('bad AMQP options give CONFIG_INVALID naming the key', () => {
    expect(() => createClient(url, { amqp: { exchange: 'amq.topic' } })).toThrow(/amqp\.exchange/);
    expect(() => createClient(url, { amqp: { exchnge: 'x' } })).toThrow(/amqp\.exchnge: unknown option/);
    expect(() => createClient(url, { amqp: { prefetch: 0 } })).toThrow(/amqp\.prefetch/);
  });

  it('fails with AUTH_FAILED on wrong credentials, without the password in the message', async () => {
    const c = createClient(url.replace('guest:guest@', 'guest:s3cret@'));
    const err: unknown = await c.connect().catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.AUTH_FAILED)).toBe(true);
    expect((err as Error).message).not.toContain('s3cret');
    await c.end();
    const viaOptions = createClient(url.replace('guest:guest@', ''), {
      username: 'guest',
      password: 's3cret',
    });
    await expect(viaOptions.connect()).rejects.toMatchObject({ code: ErrorCode.AUTH_FAILED });
  });

  it('a broker restart mid-stream loses no publish: unconfirmed ones are re-published', async () => {
    const broker = await startPrivateRabbitMq();
    try {
      const topic = `evpub/test/${uniqueName()}/stream`;
      const options = { publishTimeout: 60_000 };
      const sub = client(options, broker.url);
      const got = collector(sub);
      await sub.subscribe(topic, { durable: uniqueName('g') });
      const pub = client(options, broker.url);
      await pub.connect();
      const n = 20_000;
      let confirmed = 0;
      const sends: Promise<void>[] = [];
      for (let i = 0; i < n; i++) sends.push(pub.publish(topic, String(i)).then(() => void confirmed++));
      await waitFor(() => confirmed >= 1_000, '1,000 confirms');
      await broker.stop();
      await broker.start();
      await Promise.all(sends);
      const seen = new Set<string>();
      await waitFor(
        () => {
          for (const m of got.splice(0)) seen.add(m.payload.toString());
          return seen.size === n;
        },
        `all ${n} messages (have ${seen.size})`,
        60_000,
      );
    } finally {
      await broker.close();
    }
  });

  it('an exchange deleted under the client (404): the publishing channel is opened again, the exchange declared again, and the publishes are confirmed, without going offline', async () => {
    const exchange = uniqueName('evpub');
    const topic = `evpub/test/${uniqueName()}/orders`;
    const c = client({ amqp: { exchange } });
    const offline: string[] = [];
    c.on('offline', () => offline.push('offline'));
    await c.publish(topic, 'before');
    const ch = await raw.createChannel();
    await ch.deleteExchange(exchange);
    // The first is refused by the broker (404, channel closed) and re-published on the new channel.
    await Promise.all([c.publish(topic, 'during 1'), c.publish(topic, 'during 2')]);
    await ch.checkExchange(exchange); // declared again by the adapter
    const { queue } = await ch.assertQueue('', { exclusive: true });
    await ch.bindQueue(queue, exchange, topic.split('/').join('.'));
    await c.publish(topic, 'after');
    await waitFor(async () => (await ch.checkQueue(queue)).messageCount === 1, 'the message after, routed');
    expect(offline).toEqual([]);
    expect(c.state).toBe('connected');
    await ch.deleteExchange(exchange);
    await ch.close();
  });
});
