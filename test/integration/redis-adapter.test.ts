/**
 * What the conformance suite does not cover for the Redis adapter: its options, credentials,
 * stream trimming, and durable delivery of unacknowledged entries (after a client restart and
 * after a broker restart), against the shared Redis or a private redis-server.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createClient, ErrorCode, isEvpubError, type Client } from '../../src/pubsub/index';
import { collector, type PrivateBroker } from '../conformance/pubsub.suite';
import { expireTestStreams } from '../helpers/redis-cleanup';
import { startRedisServer } from '../helpers/redis-server';
import { freePort, requireService, uniqueName } from '../helpers/services';
import { deferred, waitFor } from '../helpers/wait';

let url: string;
const clients: Client[] = [];
const brokers: PrivateBroker[] = [];
const streams = { redis: { mode: 'streams' } };

function client(options: Parameters<typeof createClient>[1] = {}, at = url): Client {
  const c = createClient(at, options);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  url = await requireService('redis');
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end()));
  await Promise.all(brokers.map((b) => b.close()));
  await expireTestStreams(url); // the evpub/test/* streams left on the shared Redis
});

describe('redis adapter options', () => {
  it.each([
    [{ redis: { mode: 'kafka' } }, /redis\.mode: must be "pubsub" or "streams"/],
    [{ redis: { mod: 'streams' } }, /redis\.mod: unknown option; allowed: mode/],
    [{ redis: { maxLen: 10 } }, /redis\.maxLen: only applies with redis\.mode "streams"/],
    [{ redis: { mode: 'streams', maxLen: 1.5 } }, /redis\.maxLen: must be a positive integer/],
    [{ redis: 'streams' }, /redis: must be an object/],
  ])('refuses %j with CONFIG_INVALID naming the key', (options, message) => {
    let err: unknown;
    try {
      createClient(url, options);
    } catch (e) {
      err = e;
    }
    expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect((err as Error).message).toMatch(message);
  });

  it('features follow the mode', () => {
    expect(client().adapter.features).toMatchObject({ wildcards: true, headers: false, durable: false });
    expect(client(streams).adapter.features).toMatchObject({
      wildcards: false,
      headers: true,
      durable: true,
      orderingKey: true,
      maxPayload: 512 * 1024 * 1024,
    });
  });

  it('streams mode refuses wildcards with INVALID_TOPIC stating the rule', async () => {
    const err: unknown = await client(streams)
      .subscribe('a/#')
      .catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.INVALID_TOPIC)).toBe(true);
    expect((err as Error).message).toMatch(/"a\/#".*one stream \(a key\).*SCAN/);
  });

  it('maxLen trims streams approximately', async () => {
    const topic = `evpub/test/${uniqueName()}`;
    const pub = client({ redis: { mode: 'streams', maxLen: 10 } });
    await Promise.all(Array.from({ length: 1000 }, (_, i) => pub.publish(topic, String(i))));
    const redis = new Redis(url);
    try {
      expect(await redis.xlen(topic)).toBeLessThan(1000);
    } finally {
      redis.disconnect();
    }
  });
});

describe('redis credentials', () => {
  let broker: PrivateBroker;
  beforeAll(async () => {
    broker = await startRedisServer({ args: ['--requirepass', 's3cret'] });
    brokers.push(broker);
  });

  it('a wrong password fails with AUTH_FAILED at once, without the password in the message', async () => {
    const bad = new URL(broker.url);
    bad.password = 'wrong-password';
    const c = client({ connectTimeout: 10_000 }, bad.toString());
    const started = Date.now();
    const err: unknown = await c.connect().catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.AUTH_FAILED)).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect((err as Error).message).not.toContain('wrong-password');
    expect((err as Error).message).toContain(new URL(broker.url).port);
  });

  it('no password where one is required fails with AUTH_FAILED', async () => {
    const err: unknown = await client({ connectTimeout: 10_000 }, broker.url)
      .connect()
      .catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.AUTH_FAILED)).toBe(true);
  });

  it('the right password, in the URL or in options, connects', async () => {
    const good = new URL(broker.url);
    good.password = 's3cret';
    await client({}, good.toString()).connect();
    await client({ password: 's3cret' }, broker.url).connect();
  });
});

describe('redis streams durability', () => {
  it('unacknowledged entries come back to the same consumer (clientId) after a client restart', async () => {
    const topic = `evpub/test/${uniqueName()}`;
    const group = uniqueName('g');
    const clientId = uniqueName('consumer');
    const first = client({ ...streams, clientId });
    const got1 = collector(first);
    await first.subscribe(topic, { durable: group, ack: 'manual' });
    const pub = client(streams);
    for (let i = 0; i < 3; i++) await pub.publish(topic, `m${i}`);
    await waitFor(() => got1.length === 3, 'three messages');
    await got1[0]!.meta.ack(); // only m0 is acknowledged
    await first.end();

    const second = client({ ...streams, clientId });
    const got2 = collector(second);
    await second.subscribe(topic, { durable: group });
    await pub.publish(topic, 'm3');
    await waitFor(() => got2.length === 3, 'the two pending messages and the new one');
    expect(got2.map((m) => [m.payload.toString(), m.meta.redelivered === true])).toEqual([
      ['m1', true],
      ['m2', true],
      ['m3', false],
    ]);
  });

  it('from: "earliest" starts a new group at the beginning of the stream', async () => {
    const topic = `evpub/test/${uniqueName()}`;
    const pub = client(streams);
    await pub.publish(topic, 'old');
    const sub = client(streams);
    const got = collector(sub);
    await sub.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
    await waitFor(() => got.length === 1, 'the old message');
    expect(got[0]!.payload.toString()).toBe('old');
  });

  async function restart(broker: PrivateBroker, sub: Client): Promise<void> {
    const offline = deferred();
    const back = deferred();
    sub.once('offline', () => offline.resolve());
    sub.once('reconnect', () => back.resolve());
    await broker.stop();
    await offline.promise;
    await broker.start();
    await back.promise;
  }

  it('an entry delivered but not acknowledged before a broker restart is delivered again', async () => {
    const broker = await startRedisServer();
    brokers.push(broker);
    const topic = `evpub/test/${uniqueName()}`;
    const sub = client(streams, broker.url);
    const got = collector(sub);
    await sub.subscribe(topic, { durable: uniqueName('g'), ack: 'manual' });
    const pub = client(streams, broker.url);
    await pub.publish(topic, 'unacked');
    await waitFor(() => got.length === 1, 'the first delivery');
    await restart(broker, sub);
    await waitFor(() => got.length === 2, 'the redelivery after the restart');
    expect(got[1]!.payload.toString()).toBe('unacked');
    expect(got[1]!.meta.redelivered).toBe(true);
    await got[1]!.meta.ack();
  });

  it('a plain stream subscriber resumes after a broker restart where it left off', async () => {
    const broker = await startRedisServer();
    brokers.push(broker);
    const topic = `evpub/test/${uniqueName()}`;
    const sub = client(streams, broker.url);
    const got = collector(sub);
    await sub.subscribe(topic);
    const pub = client(streams, broker.url);
    await pub.publish(topic, 'before');
    await waitFor(() => got.length === 1, 'the message before the restart');
    await restart(broker, sub);
    await pub.publish(topic, 'after');
    await waitFor(() => got.length === 2, 'the message after the restart');
    expect(got.map((m) => m.payload.toString())).toEqual(['before', 'after']);
  });
});

describe('redis pub/sub subscribe before the connection is up', () => {
  it('a subscribe() that connects where nothing listens fails with CONNECT_FAILED, and leaves no socket or timer behind', async () => {
    // The SUBSCRIBE goes out on its own connection while the command connection is made: a failed
    // connect must stop that one too (else it would retry forever and keep the process alive).
    const port = await freePort();
    const script = `
      const { createClient } = require(${JSON.stringify(join(__dirname, '../../src/pubsub/index.ts'))});
      createClient('redis://127.0.0.1:${port}', { connectTimeout: 500 }).subscribe('a/b').catch((e) => {
        process.stdout.write(e.code + ' ' + e.message);
      });`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '-e', script], {
      timeout: 15_000,
      killSignal: 'SIGKILL',
      cwd: join(__dirname, '../..'),
    });
    expect(stdout).toContain(ErrorCode.CONNECT_FAILED);
    expect(stdout).toContain(`127.0.0.1:${port}`);
  });
});
