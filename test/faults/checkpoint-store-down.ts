/**
 * The checkpoint store unreachable mid-stream, one case per store (checkpoint-store-*.test.ts):
 * PostgreSQL (the shared server: table, slot, publication of the case) → `evpub start` → the
 * shared Redis in streams mode (a consumer group of the test), checkpoints in Redis or
 * PostgreSQL behind a TCP proxy (test/helpers/tcp-proxy.ts). Stopping the proxy is the store
 * going away for evpub (its connections are cut, new ones refused) while the test still reads
 * the store directly: the saved checkpoint is known at every moment, also during the outage.
 *
 * 1. 2,000 rows (20 transactions); every event arrives, the checkpoint is saved and the slot
 *    confirmed up to them.
 * 2. The proxy stops. 2,000 more rows. What evpub does while its saves fail is observed and
 *    printed (the tracker retries the save with back-off; the window counts events the broker
 *    has not confirmed, so publishing goes on); the outage lasts until those rows arrived (or
 *    60 s passed) and 100 more samples of the slot were taken (10 s or more: the save's
 *    back-off has grown to seconds when the store comes back).
 * 3. The proxy starts again: the checkpoint reaches the last row and the slot follows.
 * 4. 4,000 more rows; after 1,000 of them arrived the publisher is killed (SIGKILL) and started
 *    again: every row arrives (lost 0).
 *
 * Throughout, every 100 ms, the slot's confirmed_flush_lsn is read, then the saved checkpoint.
 * Afterwards, with every change known, each sample is checked: the slot is never confirmed past
 * the commit LSN of the first change after the saved checkpoint (PostgreSQL would not send that
 * change again after a restart: it would be lost).
 */
import Redis from 'ioredis';
import { Client as PgClient } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointConfig } from '../../src/app/config-types';
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { killCli, type CliProcess } from '../e2e/cli';
import { PG_URL } from '../helpers/postgres';
import { quietLogger } from '../helpers/publisher';
import { startRedisServer } from '../helpers/redis-server';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';
import { parseLsn, PgSource, problems, requireFreshBuild, startEvpub, tempDir } from './evpub-process';
import { countDelivery, reportRow, RssSampler } from './matrix';

const PER_TX = 100;
const PHASE_A = 2_000;
const PHASE_B = 2_000;
const PHASE_C = 4_000;
const KILL_AFTER = 1_000; // rows of phase C received before the kill
const FEED = 'pg/rows';
/** Samples of the slot (one per 100 ms or so) taken during the outage after its rows arrived. */
const DOWN_SAMPLES = 100;

/** A change's place in the stream: (commit LSN, index in the transaction). */
interface Point {
  lsn: bigint;
  index: number;
}

/** `16/B374D848#12` or `16/B374D848:12` as a point. */
function point(text: string): Point {
  const m = /^([0-9A-F]+\/[0-9A-F]+)[#:](-?\d+)$/i.exec(text);
  if (!m) throw new Error(`not a postgres position or event id: ${text}`);
  return { lsn: parseLsn(m[1]!), index: Number(m[2]) };
}

function compare(a: Point, b: Point): number {
  if (a.lsn !== b.lsn) return a.lsn < b.lsn ? -1 : 1;
  return a.index - b.index;
}

/** The store a case makes unreachable: its evpub config, and a direct read of the saved position. */
interface StoreUnderTest {
  config: CheckpointConfig;
  saved(): Promise<string | undefined>;
  close(): Promise<void>;
}

async function redisStore(): Promise<{ store: StoreUnderTest; proxy: TcpProxy; server: PrivateBroker }> {
  const server = await startRedisServer();
  const port = Number(new URL(server.url).port);
  const proxy = await startTcpProxy({ host: '127.0.0.1', port });
  const direct = new Redis(server.url);
  const prefix = `evpub:faults:${uniqueName('ckpt')}:`;
  return {
    server,
    proxy,
    store: {
      config: { store: 'redis', url: `redis://127.0.0.1:${proxy.port}`, prefix },
      saved: async () => (await direct.get(prefix + FEED)) ?? undefined,
      close: async () => {
        direct.disconnect();
        await server.close();
      },
    },
  };
}

async function postgresStore(): Promise<{ store: StoreUnderTest; proxy: TcpProxy }> {
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: SERVICES.postgres.port });
  const table = uniqueName('fault_ckpt');
  const direct = new PgClient({ connectionString: PG_URL });
  await direct.connect();
  const proxied = new URL(PG_URL);
  proxied.port = String(proxy.port);
  return {
    proxy,
    store: {
      config: { store: 'postgres', url: proxied.toString(), table },
      saved: async () => {
        const rows = await direct
          .query<{ position: string }>(`SELECT position FROM ${table} WHERE feed_id = $1`, [FEED])
          .catch((err: { code?: string }) => {
            if (err.code === '42P01') return { rows: [] }; // not created yet
            throw err;
          });
        return rows.rows[0]?.position;
      },
      close: async () => {
        await direct.query(`DROP TABLE IF EXISTS ${table}`);
        await direct.end();
      },
    },
  };
}

interface Sample {
  at: number;
  storeUp: boolean;
  confirmed: bigint | undefined;
  saved: string | undefined;
}

export function checkpointStoreDownCase(kind: 'redis' | 'postgres'): void {
  const source = new PgSource();
  const dir = tempDir(`evpub-fault-ckpt-${kind}-`);
  let brokerUrl: string;
  let store: StoreUnderTest | undefined;
  let proxy: TcpProxy | undefined;
  const processes: CliProcess[] = [];
  let consumer: Client | undefined;
  let monitorDb: PgClient | undefined;
  let monitoring = false;
  let monitor: Promise<void> | undefined;

  beforeAll(async () => {
    requireFreshBuild();
    await requireService('postgres');
    brokerUrl = await requireService('redis');
    await source.create();
    ({ store, proxy } = kind === 'redis' ? await redisStore() : await postgresStore());
  });

  afterAll(async () => {
    monitoring = false;
    await monitor?.catch(() => undefined);
    await Promise.all(processes.map((p) => killCli(p)));
    await consumer?.end().catch(() => undefined);
    await monitorDb?.end().catch(() => undefined);
    await proxy?.close();
    await store?.close();
    await source.drop();
    dir.remove();
  });

  describe(`fault matrix: the ${kind} checkpoint store unreachable`, () => {
    it('the slot is never confirmed past the saved checkpoint; after the store is back and a kill -9, nothing is lost', async () => {
      const started = Date.now();
      const topic = `evpub/test/${uniqueName('ckptdown')}`;
      const seen: { id: string; key: string }[] = [];
      consumer = createClient(brokerUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
      consumer.on('message', (_topic, payload) => {
        const ce = JSON.parse(payload.toString()) as { id: string; data: { key: string } };
        seen.push({ id: ce.id, key: ce.data.key });
      });
      await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
      const keys = new Set<string>();
      let scanned = 0;
      /** Whether rows 1..upTo all arrived. */
      const arrived = (upTo: number): boolean => {
        for (; scanned < seen.length; scanned++) keys.add(seen[scanned]!.key);
        for (let id = 1; id <= upTo; id++) if (!keys.has(String(id))) return false;
        return true;
      };

      const config = {
        brokers: { default: { url: brokerUrl, options: { redis: { mode: 'streams' } } } },
        checkpoints: store!.config,
        datasources: { pg: source.datasource() },
        models: { rows: { dataSource: 'pg', topic, from: 'beginning', settings: { table: source.table } } },
      };
      const start = async (): Promise<{ proc: CliProcess; rss: RssSampler }> => {
        const proc = await startEvpub(dir.dir, config);
        processes.push(proc);
        return { proc, rss: new RssSampler(proc.pid) };
      };
      const write = async (from: number, count: number): Promise<void> => {
        for (let id = from; id < from + count; id += PER_TX) await source.insert(id, id + PER_TX - 1);
      };

      // The monitor: the slot first, then the checkpoint (saves only move it forward, so a
      // checkpoint read after the slot is at or past the one the slot's commit came from).
      const samples: Sample[] = [];
      monitorDb = new PgClient({ connectionString: PG_URL });
      await monitorDb.connect();
      monitoring = true;
      monitor = (async () => {
        while (monitoring) {
          const rows = await monitorDb.query<{ lsn: string | null }>(
            'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
            [source.slot],
          );
          const lsn = rows.rows[0]?.lsn;
          const storeUp = proxy!.running;
          const saved = await store!.saved();
          samples.push({ at: Date.now(), storeUp, confirmed: lsn ? parseLsn(lsn) : undefined, saved });
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();

      const first = await start();
      const lastSeenPoint = (): Point =>
        seen.map((s) => point(s.id)).reduce((max, p) => (compare(p, max) > 0 ? p : max));

      // 1. Store up: everything arrives, is saved, and the slot follows.
      await write(1, PHASE_A);
      await waitFor(() => arrived(PHASE_A), `rows 1..${PHASE_A}`, 60_000);
      const endOfA = lastSeenPoint();
      await waitFor(
        async () => {
          const saved = await store!.saved();
          return saved !== undefined && compare(point(saved), endOfA) >= 0;
        },
        'the checkpoint of the first rows',
        30_000,
      );
      await waitFor(
        async () => ((await source.confirmedFlush()) ?? 0n) >= endOfA.lsn,
        'the slot confirmed past the first rows',
        30_000,
      );

      // 2. The store goes away; more rows.
      await proxy!.stop();
      const downAt = Date.now();
      const savedWhileDown = await store!.saved();
      await write(PHASE_A + 1, PHASE_B);
      const publishedWhileDown = await waitFor(() => arrived(PHASE_A + PHASE_B), 'rows of the outage', 60_000)
        .then(() => true)
        .catch(() => false);
      const downSamplesFrom = samples.length;
      await waitFor(
        () => samples.length >= downSamplesFrom + DOWN_SAMPLES,
        `${DOWN_SAMPLES} samples of the slot during the outage`,
        60_000,
      );
      const receivedWhileDown = seen.length;
      expect(await store!.saved()).toBe(savedWhileDown); // nothing reaches the store
      const downSeconds = (Date.now() - downAt) / 1000;

      // 3. The store is back: the checkpoint and the slot catch up.
      await proxy!.start();
      await waitFor(() => arrived(PHASE_A + PHASE_B), `rows 1..${PHASE_A + PHASE_B}`, 60_000);
      const endOfB = lastSeenPoint();
      await waitFor(
        async () => {
          const saved = await store!.saved();
          return saved !== undefined && compare(point(saved), endOfB) >= 0;
        },
        'the checkpoint of the outage rows once the store is back',
        60_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}:\n${problems(first.proc)}`);
      });
      const backAfter = (Date.now() - downAt) / 1000 - downSeconds;
      await waitFor(
        async () => ((await source.confirmedFlush()) ?? 0n) >= endOfB.lsn,
        'the slot confirmed past the outage rows',
        30_000,
      );
      const saveFailures = (first.proc.stdout().match(/checkpoint failed/g) ?? []).length;

      // 4. kill -9 mid-stream, then a restart.
      let writing = true;
      const writer = write(PHASE_A + PHASE_B + 1, PHASE_C).finally(() => (writing = false));
      writer.catch(() => undefined); // awaited below
      await waitFor(
        () => arrived(PHASE_A + PHASE_B) && keys.size >= PHASE_A + PHASE_B + KILL_AFTER,
        `${KILL_AFTER} rows before the kill`,
        60_000,
      );
      first.proc.child.kill('SIGKILL');
      expect(await first.proc.exited).toBe('SIGKILL');
      const writingAtKill = writing;
      const second = await start();
      await writer;
      const total = PHASE_A + PHASE_B + PHASE_C;
      await waitFor(() => arrived(total), `all ${total} rows after the restart`, 120_000).catch(
        (err: Error) => {
          throw new Error(`${err.message} (got ${keys.size}):\n${problems(second.proc)}`);
        },
      );
      second.proc.child.kill('SIGTERM');
      expect(await second.proc.exited).toBe(0);
      monitoring = false;
      await monitor;
      const admin = new Redis(brokerUrl);
      const length = await admin.xlen(topic);
      await admin.del(topic);
      admin.disconnect();
      await waitFor(() => seen.length >= length, `all ${length} stream entries consumed`, 60_000);

      // The slot against the saved checkpoint, sample by sample.
      const points = [...new Set(seen.map((s) => s.id))].map(point).sort(compare);
      const firstAfter = (saved: string | undefined): Point | undefined => {
        if (saved === undefined) return points[0];
        const p = point(saved);
        return points.find((q) => compare(q, p) > 0);
      };
      const violations = samples.filter((s) => {
        const next = firstAfter(s.saved);
        return (
          s.confirmed !== undefined && next !== undefined && s.saved !== undefined && s.confirmed > next.lsn
        );
      });
      const down = samples.filter((s) => !s.storeUp);
      const maxConfirmedDown = down.reduce((m, s) => (s.confirmed! > m ? s.confirmed! : m), 0n);
      const firstUnsaved = firstAfter(savedWhileDown);

      const rssMb = Math.max(first.rss.stop(), second.rss.stop());
      const row = reportRow({
        fault: `${kind} checkpoint store unreachable mid-stream, then kill -9 + restart`,
        source: 'postgres',
        broker: 'redis streams',
        ...countDelivery(
          Array.from({ length: total }, (_, i) => String(i + 1)),
          seen.map((s) => s.key),
        ),
        maxRssMb: rssMb,
        seconds: (Date.now() - started) / 1000,
        note: `down ${downSeconds.toFixed(0)} s; ${publishedWhileDown ? 'publishing went on' : 'publishing stopped'} while saves failed`,
      });
      console.log(
        `${kind} checkpoint store down ${downSeconds.toFixed(1)} s: ${saveFailures} save failures logged; ` +
          `${receivedWhileDown - PHASE_A} events published during the outage (all ${PHASE_B} rows: ${publishedWhileDown}); ` +
          `saved checkpoint during the outage ${savedWhileDown}, first unsaved change at ${firstUnsaved ? fmt(firstUnsaved.lsn) : '-'}, ` +
          `slot at most ${fmt(maxConfirmedDown)} in ${down.length} samples; checkpoint caught up ${backAfter.toFixed(1)} s after the store was back; ` +
          `${samples.length} samples, ${violations.length} past the saved checkpoint; writes running at the kill: ${writingAtKill}`,
      );
      expect(down.length).toBeGreaterThanOrEqual(DOWN_SAMPLES);
      expect(firstUnsaved).toBeDefined();
      expect(maxConfirmedDown).toBeLessThanOrEqual(firstUnsaved!.lsn);
      expect(violations.map((v) => `${fmt(v.confirmed!)} > saved ${v.saved}`)).toEqual([]);
      expect(row.lost).toBe(0);
    }, 300_000);
  });
}

function fmt(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}
