/**
 * Fault matrix: the publisher's connections to PostgreSQL cut by a TCP proxy mid-stream (the
 * replication stream and every query connection destroyed, new ones refused until the proxy
 * listens again), while 3,000 changes are written to the shared server directly. An evpub app
 * in this process publishes them to the shared Redis in streams mode; the test's durable
 * consumer group counts them.
 *
 * What is asserted, and why it holds:
 * - Every change (row, version) arrives at least once: the slot is confirmed only up to what
 *   the broker accepted, so after the reconnect the server sends again whatever was in flight.
 * - Per row, versions arrive in increasing order once earlier copies of a replayed event are
 *   dropped, and a replayed change carries the same CloudEvents id.
 * - The connector reports `reconnecting` while the proxy is down and streams again after.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { createClient } from '../../src/pubsub/registry';
import { dropSlotWhenFree, PG_URL, sql } from '../helpers/postgres';
import { quietLogger, statusLog } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';

const ROWS = 500;
const VERSIONS = 6;
const PER_TX = 100;
const CUT_AFTER = 600; // events received

let redisUrl: string;
let proxy: TcpProxy;
const table = uniqueName('cut');
const slot = uniqueName('slot');
const publication = uniqueName('pub');

beforeAll(async () => {
  redisUrl = await requireService('redis');
  await requireService('postgres');
  const pg = new URL(PG_URL);
  proxy = await startTcpProxy({ host: pg.hostname, port: Number(pg.port) });
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v int NOT NULL)`);
});
afterAll(async () => {
  await proxy?.close();
  await dropSlotWhenFree(slot);
  await sql(`DROP PUBLICATION IF EXISTS ${publication}`);
  await sql(`DROP TABLE IF EXISTS ${table}`);
});

/** 500 inserts then 5 rounds of updates, 100 rows per transaction. */
async function writeChanges(): Promise<void> {
  for (let from = 1; from <= ROWS; from += PER_TX)
    await sql(`INSERT INTO ${table} SELECT g, 0 FROM generate_series($1::int, $1 + ${PER_TX - 1}) g`, [from]);
  for (let round = 1; round < VERSIONS; round++) {
    for (let from = 1; from <= ROWS; from += PER_TX) {
      await sql(`UPDATE ${table} SET v = v + 1 WHERE id BETWEEN $1 AND $1 + ${PER_TX - 1}`, [from]);
    }
  }
}

interface Seen {
  id: string;
  key: string;
  v: number;
}

describe('fault matrix: the connection to the source cut mid-stream (postgres)', () => {
  it('every change arrives after the reconnect, in order per row', { timeout: 120_000 }, async () => {
    const began = Date.now();
    const topic = `evpub/test/${uniqueName('pgcut')}`;
    const consumer = createClient(redisUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
    const seen: Seen[] = [];
    consumer.on('message', (_t, payload) => {
      const ce = JSON.parse(payload.toString()) as {
        id: string;
        data: { key: string; after: { v: number } };
      };
      seen.push({ id: ce.id, key: ce.data.key, v: ce.data.after.v });
    });
    const through = new URL(PG_URL);
    through.port = String(proxy.port);
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: { url: redisUrl, options: { redis: { mode: 'streams' } } } },
      checkpoints: new MemoryCheckpointStore(),
    });
    const log = statusLog();
    app.on('status', log.listener);
    app.dataSource('pg', {
      connector: 'postgres',
      url: through.toString(),
      slot,
      publication,
      statusInterval: 200,
      heartbeatInterval: 500,
      reconnectDelay: 100,
    });
    app.model('rows', { dataSource: 'pg', topic, from: 'beginning', settings: { table } });
    const reconnecting = () =>
      log.events.filter((e) => e.type === 'connector' && e.status.type === 'reconnecting').length;
    try {
      await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
      await app.start();
      const writer = writeChanges();
      writer.catch(() => undefined);

      await waitFor(() => seen.length >= CUT_AFTER, `${CUT_AFTER} events before the cut`);
      await proxy.stop();
      const cutAt = seen.length;
      await waitFor(() => reconnecting() >= 2, 'two reconnect attempts while cut');
      await writer; // the writes go on meanwhile (straight to the server)
      await proxy.start();
      const complete = (): boolean => {
        const last = new Map<string, number>();
        for (const s of seen) last.set(s.key, s.v);
        return last.size === ROWS && [...last.values()].every((v) => v === VERSIONS - 1);
      };
      await waitFor(complete, 'every row at its final version', 60_000);
      await app.stop();

      const sent: string[] = [];
      for (let id = 1; id <= ROWS; id++) for (let v = 0; v < VERSIONS; v++) sent.push(`${id}@${v}`);
      const row = reportRow({
        fault: 'source connection cut (tcp proxy)',
        source: 'postgres',
        broker: 'redis streams',
        ...countDelivery(
          sent,
          seen.map((s) => `${s.key}@${s.v}`),
        ),
        seconds: (Date.now() - began) / 1000,
        note: `cut after ${cutAt} events`,
      });
      expect(row.lost).toBe(0);
      // Per row, increasing once earlier copies of a replayed event are dropped.
      const lastIndex = new Map<string, number>();
      seen.forEach((s, i) => lastIndex.set(s.id, i));
      const perKey = new Map<string, number[]>();
      seen.forEach((s, i) => {
        if (lastIndex.get(s.id) === i) perKey.set(s.key, [...(perKey.get(s.key) ?? []), s.v]);
      });
      const versions = Array.from({ length: VERSIONS }, (_, v) => v);
      for (let id = 1; id <= ROWS; id++) expect(perKey.get(String(id)), `row ${id}`).toEqual(versions);
      // A replayed change carries the id it had.
      const idOf = new Map<string, string>();
      for (const s of seen) {
        const k = `${s.key}@${s.v}`;
        expect(idOf.get(k) ?? s.id, k).toBe(s.id);
        idOf.set(k, s.id);
      }
      expect(log.events.some((e) => e.type === 'connector' && e.status.type === 'connected')).toBe(true);
    } finally {
      await app.stop().catch(() => undefined);
      await consumer.end();
      const redis = new Redis(redisUrl);
      await redis.del(topic);
      redis.disconnect();
    }
  });
});
