/**
 * The broker frozen (SIGSTOP) for 30 s during a 100,000-row burst: PostgreSQL → `evpub start`
 * → a private redis-server in streams mode, read by the test's consumer group.
 *
 * Why Redis Streams: the stream keeps every entry until it is trimmed and the consumer group
 * reads at its own pace, so a subscriber that is frozen with the broker (its blocked XREADGROUP
 * waits too) cannot miss anything: whatever evpub got accepted is there afterwards. The broker
 * keeps its data in memory only (no AOF: it is never restarted here).
 *
 * A stopped process keeps its sockets open: no connection error, no reconnect, the publishes just
 * never answer. evpub's publish timeout is 5 s here (default 30 s, as long as the stop), so the
 * stop certainly goes through the timeout path: the feed backs off and re-publishes, in order,
 * everything not committed, while its window (`maxInFlight`) holds the source back. Asserted:
 * - every row arrives (lost 0; duplicates are the timed-out XADDs that Redis ran after SIGCONT);
 * - the publisher's RSS stays flat while the broker is stopped: the peak of the second 15 s is
 *   at most 50 MB above the peak of the first 15 s (both are printed).
 */
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/pubsub/registry';
import type { Client } from '../../src/pubsub/client';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { killCli, type CliProcess } from '../e2e/cli';
import { quietLogger } from '../helpers/publisher';
import { startRedisServer } from '../helpers/redis-server';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { PgSource, problems, requireFreshBuild, startEvpub, tempDir } from './evpub-process';
import { countDelivery, reportRow, RssSampler } from './matrix';

const ROWS = 100_000;
const PER_TX = 1_000;
const STOP_AFTER = 10_000; // events received before the broker is stopped
const STOP_MS = 30_000;
const RSS_GROWTH_MB = 50;

const source = new PgSource();
const dir = tempDir('evpub-fault-sigstop-');
let broker: PrivateBroker | undefined;
let brokerPid: number | undefined;
let publisher: CliProcess | undefined;
let consumer: Client | undefined;

beforeAll(async () => {
  requireFreshBuild();
  await requireService('postgres');
  await source.create();
  broker = await startRedisServer({ args: ['--appendonly', 'no'] });
  const admin = new Redis(broker.url);
  const info = await admin.info('server');
  admin.disconnect();
  brokerPid = Number(/^process_id:(\d+)/m.exec(info)?.[1]);
  expect(brokerPid).toBeGreaterThan(0);
});

afterAll(async () => {
  if (brokerPid) process.kill(brokerPid, 'SIGCONT'); // a stopped process would not stop on SIGTERM
  if (publisher) await killCli(publisher);
  await consumer?.end().catch(() => undefined);
  await broker?.close();
  await source.drop();
  dir.remove();
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('fault matrix: the broker stopped (SIGSTOP) for 30 s', () => {
  it('a 100,000-row burst arrives complete and RSS stays flat while the broker is stopped', async () => {
    const started = Date.now();
    const url = broker!.url;
    const topic = `evpub/faults/${uniqueName('sigstop')}`;
    const received: string[] = [];
    consumer = createClient(url, { logger: quietLogger(), redis: { mode: 'streams' } });
    consumer.on('message', (_topic, payload) => {
      received.push((JSON.parse(payload.toString()) as { data: { key: string } }).data.key);
    });
    await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });

    publisher = await startEvpub(dir.dir, {
      brokers: { default: { url, options: { publishTimeout: 5_000, redis: { mode: 'streams' } } } },
      checkpoints: { store: 'file', path: 'checkpoints' },
      datasources: { pg: source.datasource() },
      models: { rows: { dataSource: 'pg', topic, from: 'beginning', settings: { table: source.table } } },
    });
    const rss = new RssSampler(publisher.pid);

    let writing = true;
    const writer = (async () => {
      for (let from = 1; from <= ROWS; from += PER_TX) await source.insert(from, from + PER_TX - 1);
    })().finally(() => (writing = false));
    writer.catch(() => undefined); // awaited below

    await waitFor(() => received.length >= STOP_AFTER, `${STOP_AFTER} events before the stop`, 120_000);
    process.kill(brokerPid!, 'SIGSTOP');
    const stoppedAt = Date.now();
    const atStop = received.length;
    // The 30 s are the fault itself: RSS is compared between its two halves.
    await sleep(STOP_MS / 2);
    const firstHalfMb = rss.maxSince(stoppedAt);
    const half = Date.now();
    await sleep(STOP_MS / 2);
    const secondHalfMb = rss.maxSince(half);
    const duringStop = received.length - atStop;
    process.kill(brokerPid!, 'SIGCONT');
    const writingAfterStop = writing;

    await writer;
    const keys = new Set<string>();
    let scanned = 0;
    await waitFor(
      () => {
        for (; scanned < received.length; scanned++) keys.add(received[scanned]!);
        return keys.size >= ROWS;
      },
      `all ${ROWS} rows after SIGCONT`,
      300_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (got ${keys.size}):\n${problems(publisher!)}`);
    });

    // A clean stop, then every entry of the stream consumed: the duplicates are all counted.
    publisher.child.kill('SIGTERM');
    expect(await publisher.exited).toBe(0);
    const admin = new Redis(url);
    const length = await admin.xlen(topic);
    admin.disconnect();
    await waitFor(() => received.length >= length, `all ${length} stream entries consumed`, 60_000);

    const sent = Array.from({ length: ROWS }, (_, i) => String(i + 1));
    const row = reportRow({
      fault: 'broker stopped (SIGSTOP) 30 s mid-burst',
      source: 'postgres',
      broker: 'redis streams',
      ...countDelivery(sent, received),
      maxRssMb: rss.stop(),
      seconds: (Date.now() - started) / 1000,
      note: `RSS during the stop: ${firstHalfMb.toFixed(0)} MB first 15 s, ${secondHalfMb.toFixed(0)} MB last 15 s`,
    });
    console.log(
      `broker SIGSTOP: ${atStop} events before the stop, ${duringStop} during it; ` +
        `rows still being written at SIGCONT: ${writingAfterStop}; publish timeout 5 s`,
    );
    expect(row.lost).toBe(0);
    expect(firstHalfMb).toBeGreaterThan(0);
    expect(secondHalfMb).toBeLessThanOrEqual(firstHalfMb + RSS_GROWTH_MB);
  }, 600_000);
});
