/**
 * Fault matrix: a bridge (Redis Streams durable consumer group → NATS) killed with kill -9, then
 * another one started with the same durable name: the durable source redelivers what the dead
 * one read and never acked, so nothing is lost.
 *
 * - Killed after it read a burst and before it acknowledged any of it: the first bridge runs in
 *   a child process (test/helpers/bridge-app.ts) and publishes to NATS through a TCP proxy,
 *   stopped before the burst, so nothing it reads can be published or acknowledged. After the
 *   kill, a bridge in this process (same durable name, another consumer) takes the pending
 *   entries over (`claimIdleMs`).
 * - Killed mid-stream, while it publishes: bridges in child processes, the second started as
 *   soon as the first is gone; what the first published but had not acked comes again
 *   (duplicates), what it read and never published comes for the first time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { startTcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow, RssSampler } from './matrix';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const STREAMS = { redis: { mode: 'streams' } };
const MESSAGES = 200;

/** Entries of the group not acknowledged yet (XPENDING summary). */
async function pending(redisUrl: string, stream: string, group: string): Promise<number> {
  const redis = new Redis(redisUrl);
  try {
    const reply = (await redis.xpending(stream, group)) as [number, ...unknown[]];
    return Number(reply[0]);
  } finally {
    redis.disconnect();
  }
}

describe('fault matrix: kill -9 of the publisher (bridge)', () => {
  it('a bridge killed before it acked: the durable source redelivers everything to the next one', async () => {
    const began = Date.now();
    const redisUrl = await requireService('redis');
    const natsUrl = await requireService('nats');
    const nats = new URL(natsUrl);
    const proxy = await startTcpProxy({ host: nats.hostname, port: Number(nats.port) });
    cleanups.push(() => proxy.close());
    const root = uniqueName('br');
    const stream = `${root}/in`;
    const durable = uniqueName('g');
    cleanups.push(() => new Redis(redisUrl).del(stream));
    const sub = await subscriber(natsUrl, `${root}/#`);
    cleanups.push(() => sub.client.end());

    // The first bridge runs in a child process and publishes to NATS through the proxy.
    const repo = path.resolve(__dirname, '../..');
    const child: ChildProcess = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        path.join(repo, 'test/helpers/bridge-app.ts'),
        redisUrl,
        stream,
        durable,
        `nats://127.0.0.1:${proxy.port}`,
        root,
      ],
      { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    cleanups.push(async () => void child.kill('SIGKILL'));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => out.includes('ready\n'), 'the bridge process to start');
    await proxy.stop(); // NATS is unreachable for the child: nothing it reads can be published
    const producer = createClient(redisUrl, { ...STREAMS, logger: quietLogger() });
    cleanups.push(() => producer.end());
    const keys = Array.from({ length: MESSAGES }, (_, i) => `k${i}`);
    for (const [i, id] of keys.entries()) await producer.publish(stream, JSON.stringify({ id, i }));
    await waitFor(
      () => new RegExp(`pushed \\w+\\.${MESSAGES}\\n`).test(out),
      `the child to read all ${MESSAGES}`,
    );
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(await pending(redisUrl, stream, durable)).toBe(MESSAGES); // read, never acked
    expect(sub.got).toEqual([]);

    // The next bridge (same durable name, another consumer) gets them again, publishes, acks.
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: natsUrl },
      checkpoints: new MemoryCheckpointStore(),
    });
    cleanups.push(() => app.stop());
    app.dataSource('src', {
      connector: 'bridge',
      url: redisUrl,
      options: { redis: { mode: 'streams', claimIdleMs: 200 } },
    });
    app.model('orders', {
      dataSource: 'src',
      topic: `${root}/{model}/{key}`,
      settings: { topics: stream, durable, groupStart: 'earliest', keyPath: 'id' },
    });
    await app.start();
    // Every message arrives (at least once: with claimIdleMs 200 an entry still waiting for
    // its checkpoint save may be claimed again by the same consumer and published twice).
    const expected = keys.map((k) => `${root}/orders/${k}`).sort();
    await waitFor(
      () => new Set(sub.got.map((m) => m.topic)).size >= MESSAGES,
      'the redelivered messages on NATS',
    );
    expect([...new Set(sub.got.map((m) => m.topic))].sort()).toEqual(expected);
    await waitFor(async () => (await pending(redisUrl, stream, durable)) === 0, 'every entry acked');
    const row = reportRow({
      fault: 'kill -9 of the publisher, restart',
      source: 'bridge (redis streams group)',
      broker: 'nats',
      ...countDelivery(
        keys,
        sub.got.map((m) => m.topic.slice(`${root}/orders/`.length)),
      ),
      seconds: (Date.now() - began) / 1000,
      note: 'killed after reading, before any ack',
    });
    expect(row.lost).toBe(0);
  });

  it('a bridge killed mid-stream: the next one gets what it had not acked, nothing lost', async () => {
    const began = Date.now();
    const redisUrl = await requireService('redis');
    const natsUrl = await requireService('nats');
    const root = uniqueName('br');
    const stream = `${root}/in`;
    const durable = uniqueName('g');
    cleanups.push(() => new Redis(redisUrl).del(stream));
    const sub = await subscriber(natsUrl, `${root}/#`);
    cleanups.push(() => sub.client.end());
    const repo = path.resolve(__dirname, '../..');
    const samplers: RssSampler[] = [];
    const bridge = async (): Promise<ChildProcess> => {
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          path.join(repo, 'test/helpers/bridge-app.ts'),
          redisUrl,
          stream,
          durable,
          natsUrl,
          root,
          '500', // claimIdleMs: the next bridge takes the dead one's entries over after 0.5 s
        ],
        { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      cleanups.push(async () => void child.kill('SIGKILL'));
      samplers.push(new RssSampler(child.pid!));
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor(() => out.includes('ready\n'), 'a bridge process to start');
      return child;
    };

    const count = 2000;
    const keys = Array.from({ length: count }, (_, i) => `k${i}`);
    const first = await bridge();
    const producer = createClient(redisUrl, { ...STREAMS, logger: quietLogger() });
    cleanups.push(() => producer.end());
    const writer = (async () => {
      for (const [i, id] of keys.entries()) await producer.publish(stream, JSON.stringify({ id, i }));
    })();
    writer.catch(() => undefined);
    await waitFor(() => sub.got.length >= 300, '300 messages through the first bridge');
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    const atKill = sub.got.length;
    await bridge();
    await writer;
    const arrived = (): string[] => sub.got.map((m) => m.topic.slice(`${root}/orders/`.length));
    await waitFor(() => new Set(arrived()).size >= count, `all ${count} messages on NATS`, 60_000);
    await waitFor(async () => (await pending(redisUrl, stream, durable)) === 0, 'every entry acked');
    expect([...new Set(arrived())].sort()).toEqual([...keys].sort());
    const row = reportRow({
      fault: 'kill -9 of the publisher, restart',
      source: 'bridge (redis streams group)',
      broker: 'nats',
      ...countDelivery(keys, arrived()),
      maxRssMb: Math.max(...samplers.map((r) => r.stop())),
      seconds: (Date.now() - began) / 1000,
      note: `mid-stream, after ${atKill} published`,
    });
    expect(row.lost).toBe(0);
  });
});
