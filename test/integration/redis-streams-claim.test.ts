/**
 * Redis Streams durable subscriptions across crashes: entries a consumer was given and never
 * acknowledged are claimed (XAUTOCLAIM) by another consumer of the group once they were idle for
 * `redis.claimIdleMs`, and delivered again; a live consumer's fresh entries are left alone;
 * `redis.maxDeliveries` bounds redeliveries. Against the shared Redis.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import pino from 'pino';
import { createClient, ErrorCode, isEvpubError, type Client } from '../../src/pubsub/index';
import { collector } from '../conformance/pubsub.suite';
import { expireTestStreams } from '../helpers/redis-cleanup';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

let url: string;
let redis: Redis;
const clients: Client[] = [];
const children: ChildProcess[] = [];

function client(redisOptions: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Client {
  const c = createClient(url, { redis: { mode: 'streams', ...redisOptions }, ...extra });
  clients.push(c);
  return c;
}

/** XPENDING summary: [count, first id, last id, [[consumer, count], ...] | null]. */
async function pendingByConsumer(topic: string, group: string): Promise<Record<string, number>> {
  const [, , , consumers] = (await redis.xpending(topic, group)) as [
    number,
    unknown,
    unknown,
    [string, string][] | null,
  ];
  return Object.fromEntries((consumers ?? []).map(([name, n]) => [name, Number(n)]));
}

async function consumerNames(topic: string, group: string): Promise<string[]> {
  const rows = (await redis.xinfo('CONSUMERS', topic, group)) as unknown[][];
  return rows.map((row) => String(row[row.indexOf('name') + 1]));
}

beforeAll(async () => {
  url = await requireService('redis');
  redis = new Redis(url);
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(clients.map((c) => c.end()));
  redis.disconnect();
  await expireTestStreams(url);
});

describe('redis streams claims', () => {
  it('refuses invalid claimIdleMs / maxDeliveries with CONFIG_INVALID naming the key', () => {
    for (const [options, message] of [
      [{ redis: { mode: 'streams', claimIdleMs: 0 } }, /redis\.claimIdleMs: must be a positive integer/],
      [
        { redis: { mode: 'streams', maxDeliveries: '3' } },
        /redis\.maxDeliveries: must be a positive integer/,
      ],
      [{ redis: { claimIdleMs: 500 } }, /redis\.claimIdleMs: only applies with redis\.mode "streams"/],
    ] as const) {
      let err: unknown;
      try {
        createClient(url, options);
      } catch (e) {
        err = e;
      }
      expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
      expect((err as Error).message).toMatch(message);
    }
  });

  it("a new consumer (another random name) gets a SIGKILLed consumer's unacknowledged entries", async () => {
    const topic = `evpub/test/${uniqueName()}`;
    const group = uniqueName('g');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'test/helpers/redis-stream-consumer.ts', url, topic, group],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(child);
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_code, signal) => resolve(signal)),
    );
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await waitFor(() => out.includes('subscribed\n'), 'the child subscribed');

    const n = 5;
    const pub = client();
    for (let i = 0; i < n; i++) await pub.publish(topic, `m${i}`);
    await waitFor(
      () => out.split('\n').filter((l) => l.startsWith('got ')).length === n,
      'the child got all',
    );
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    // All n are pending to the dead consumer, whose name nobody will use again.
    const dead = await consumerNames(topic, group);
    expect(dead).toHaveLength(1);
    expect(await pendingByConsumer(topic, group)).toEqual({ [dead[0]!]: n });

    const next = client({ claimIdleMs: 500 });
    const got = collector(next);
    await next.subscribe(topic, { durable: group });
    await waitFor(() => got.length === n, 'the dead consumer entries, redelivered', 10_000);
    expect(got.map((m) => [m.payload.toString(), m.meta.redelivered])).toEqual(
      Array.from({ length: n }, (_, i) => [`m${i}`, true]),
    );
    // Acknowledged (auto ack) by the new consumer: nothing pending in the group any more.
    await waitFor(async () => Object.keys(await pendingByConsumer(topic, group)).length === 0, 'no pending');
    await pub.publish(topic, 'fresh');
    await waitFor(() => got.length === n + 1, 'the new entry');
    expect(got[n]!.meta.redelivered).toBeUndefined();
  });

  it("a live consumer's entries younger than claimIdleMs are not taken by another consumer", async () => {
    const topic = `evpub/test/${uniqueName()}`;
    const group = uniqueName('g');
    const aName = uniqueName('a');
    const a = client({}, { clientId: aName });
    const gotA = collector(a);
    await a.subscribe(topic, { durable: group, ack: 'manual' });
    const pub = client();
    for (let i = 0; i < 3; i++) await pub.publish(topic, `m${i}`);
    await waitFor(() => gotA.length === 3, 'a got all three');

    const bName = uniqueName('b');
    const b = client({ claimIdleMs: 15_000 }, { clientId: bName });
    const gotB = collector(b);
    await b.subscribe(topic, { durable: group });
    // b's first claim pass runs before its first read: once b is in the group, the pass is over.
    await waitFor(async () => (await consumerNames(topic, group)).includes(bName), 'b in the group');
    await pub.publish(topic, 'marker');
    await waitFor(() => [...gotA, ...gotB].some((m) => m.payload.toString() === 'marker'), 'the marker');
    // Nothing was claimed: no redelivery anywhere, and a still holds all it was given (the marker
    // went to a or to b).
    expect([...gotA, ...gotB].filter((m) => m.meta.redelivered)).toEqual([]);
    expect((await pendingByConsumer(topic, group))[aName]).toBe(gotA.length);
    await Promise.all(gotA.map((m) => m.meta.ack()));
  });

  it("an entry its own consumer's handler never acks is delivered again after claimIdleMs", async () => {
    const topic = `evpub/test/${uniqueName()}`;
    const sub = client({ claimIdleMs: 300 });
    const got = collector(sub);
    await sub.subscribe(topic, { durable: uniqueName('g'), ack: 'manual' });
    await client().publish(topic, 'slow');
    await waitFor(() => got.length === 2, 'the redelivery', 10_000);
    expect(got[1]!.payload.toString()).toBe('slow');
    expect(got[1]!.meta.messageId).toBe(got[0]!.meta.messageId);
    expect([got[0]!.meta.redelivered, got[1]!.meta.redelivered]).toEqual([undefined, true]);
    await got[1]!.meta.ack();
  });

  it('maxDeliveries: an entry delivered that often is acknowledged without delivery and logged', async () => {
    const topic = `evpub/test/${uniqueName()}`;
    const group = uniqueName('g');
    const lines: string[] = [];
    const logger = pino({ level: 'error' }, { write: (line: string) => void lines.push(line) });
    const sub = client({ claimIdleMs: 200, maxDeliveries: 2 }, { logger });
    const got = collector(sub);
    await sub.subscribe(topic, { durable: group, ack: 'manual' });
    await client().publish(topic, 'poison');
    await waitFor(
      async () => got.length >= 2 && (await redis.xpending(topic, group))[0] === 0,
      'the entry acknowledged',
      10_000,
    );
    expect(got.map((m) => [m.payload.toString(), m.meta.redelivered])).toEqual([
      ['poison', undefined],
      ['poison', true],
    ]);
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logged).toEqual([
      expect.objectContaining({
        stream: topic,
        group,
        id: got[0]!.meta.messageId,
        deliveries: 3,
        maxDeliveries: 2,
      }),
    ]);
    expect(await redis.xlen(topic)).toBe(1); // still in the stream
  });
});
