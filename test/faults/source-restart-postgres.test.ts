/**
 * Fault matrix: a private PostgreSQL cluster (test/helpers/postgres-server.ts; the shared server
 * must never crash) crashes (`pg_ctl stop -m immediate`) mid-stream and starts again: the
 * connector reconnects with back-off and resumes from its last committed position. Every change
 * arrives, each row's versions in order.
 *
 * - Connector level, in the middle of a 10,000-row transaction: the connector runs under a
 *   recording sink that commits the last event every 50 ms, as the publisher does once the
 *   broker confirmed.
 * - End to end: an evpub app publishes to the shared Redis in streams mode, commits come from
 *   what the broker confirmed, and the test's durable consumer group counts what arrives.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { createClient } from '../../src/pubsub/registry';
import { RecordingSink } from '../conformance/connector.suite';
import type { PostgresConnector } from '../../src/connectors/postgres/index';
import type { ChangeEvent } from '../../src/events/change-event';
import { PgFixture, sql } from '../helpers/postgres';
import { privatePostgres, type PrivatePostgres } from '../helpers/postgres-server';
import { quietLogger, statusLog } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';

let pg: PrivatePostgres;
const cleanup: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  pg = await privatePostgres();
});
afterAll(async () => {
  await pg?.close();
});
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

function track(c: PostgresConnector): PostgresConnector {
  cleanup.push(() => c.stop());
  return c;
}

/** Commits the model's last event every 50 ms, as the publisher does once the broker confirmed. */
function autoCommit(c: PostgresConnector, model: string, sink: RecordingSink): void {
  let last: ChangeEvent | undefined;
  const timer = setInterval(() => {
    const e = sink.events.at(-1);
    if (e && e !== last) {
      last = e;
      void c.commit(model, e.position!);
    }
  }, 50);
  cleanup.push(async () => clearInterval(timer));
}

describe('fault matrix: source restarted mid-stream (postgres)', () => {
  it('reconnects with back-off after a server crash mid-transaction, and loses nothing', async () => {
    const began = Date.now();
    const f = new PgFixture(pg.url);
    const t = await f.table('id int PRIMARY KEY, value int');
    const c = track(await f.connector());
    /** Pauses (window full) after `pauseAt` events, so the crash comes while a transaction is read. */
    class PausingSink extends RecordingSink {
      pauseAt = Infinity;
      override push(event: ChangeEvent): boolean {
        super.push(event);
        if (this.events.length === this.pauseAt) this.full = true;
        return !this.full;
      }
    }
    const sink = new PausingSink();
    await c.start({ models: [{ name: t, settings: {}, from: 'now' }], sink });
    autoCommit(c, t, sink);

    // Before: 5 transactions of 100 rows.
    for (let i = 0; i < 5; i++)
      await sql(
        `INSERT INTO ${t} SELECT g, 0 FROM generate_series($1::int, $1 + 99) g`,
        [i * 100 + 1],
        pg.url,
      );
    await waitFor(() => sink.events.length >= 500, 'the first 500 rows');
    // While reading: one 10,000-row transaction; the crash comes after 2,000 of its rows.
    sink.pauseAt = 2500;
    await sql(`INSERT INTO ${t} SELECT g, 0 FROM generate_series(1001, 11000) g`, [], pg.url);
    await waitFor(() => sink.full, 'the connector in the middle of the big transaction');
    await pg.stop(); // -m immediate: a crash
    sink.release();
    await waitFor(
      () => sink.statuses.filter((s) => s.type === 'reconnecting').length >= 2,
      'two reconnect attempts (back-off)',
    );
    await pg.start();
    // After: inserts and updates of rows from before the crash.
    for (let i = 0; i < 5; i++)
      await sql(
        `INSERT INTO ${t} SELECT g, 0 FROM generate_series($1::int, $1 + 99) g`,
        [20_001 + i * 100],
        pg.url,
      );
    await sql(`UPDATE ${t} SET value = 1 WHERE id <= 50`, [], pg.url);
    await sql(`UPDATE ${t} SET value = 2 WHERE id <= 50`, [], pg.url);

    const rows = await sql<{ id: number; value: number }>(`SELECT id, value FROM ${t}`, [], pg.url);
    expect(rows.length).toBe(11_000);
    await waitFor(
      () => {
        const last = sink.events.at(-1);
        return last?.key === '50' && last.after?.value === 2;
      },
      'the last update',
      20_000,
    );
    const got = new Set(sink.keys());
    for (const r of rows) expect(got.has(String(r.id)), `row ${r.id}`).toBe(true);
    // Per key, in order: create, then (for 1..50) value 1, then value 2.
    const byKey = new Map<string, unknown[]>();
    for (const e of sink.events) byKey.set(e.key, [...(byKey.get(e.key) ?? []), e.after?.value]);
    for (let id = 1; id <= 50; id++) expect(byKey.get(String(id))!.slice(-2)).toEqual([1, 2]);
    const reconnects = sink.statuses.filter((s) => s.type === 'reconnecting').length;
    const duplicates = sink.events.length - new Set(sink.events.map((e) => e.id)).size;
    expect(sink.failures).toEqual([]);
    expect(c.health().state).toBe('streaming');
    const sent: string[] = rows.map((r) => `${r.id}@0`);
    for (let id = 1; id <= 50; id++) sent.push(`${id}@1`, `${id}@2`);
    const row = reportRow({
      fault: 'source restarted (crash, pg_ctl -m immediate)',
      source: 'postgres',
      broker: '— (connector → sink)',
      ...countDelivery(
        sent,
        sink.events.map((e) => `${e.key}@${String(e.after?.value)}`),
      ),
      seconds: (Date.now() - began) / 1000,
      note: 'mid-transaction of 10,000 rows',
    });
    expect(row.lost).toBe(0);
    console.log(
      `postgres crash: ${sink.events.length} events for 11,100 changes, ${duplicates} duplicates, ${reconnects} reconnect attempts`,
    );
    await c.stop();
    await f.drop();
  });

  it(
    'end to end: every change reaches the broker after the crash, in order per row',
    { timeout: 120_000 },
    async () => {
      const began = Date.now();
      const redisUrl = await requireService('redis');
      const f = new PgFixture(pg.url);
      const t = await f.table('id int PRIMARY KEY, v int NOT NULL');
      cleanup.push(() => f.drop());
      const topic = `evpub/test/${uniqueName('pgcrash')}`;
      cleanup.push(async () => {
        const redis = new Redis(redisUrl);
        await redis.del(topic);
        redis.disconnect();
      });
      const consumer = createClient(redisUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
      cleanup.push(() => consumer.end());
      const seen: { id: string; key: string; v: number }[] = [];
      consumer.on('message', (_t, payload) => {
        const ce = JSON.parse(payload.toString()) as {
          id: string;
          data: { key: string; after: { v: number } };
        };
        seen.push({ id: ce.id, key: ce.data.key, v: ce.data.after.v });
      });
      await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: { url: redisUrl, options: { redis: { mode: 'streams' } } } },
        checkpoints: new MemoryCheckpointStore(),
      });
      cleanup.push(() => app.stop());
      const log = statusLog();
      app.on('status', log.listener);
      app.dataSource('pg', {
        connector: 'postgres',
        url: pg.url,
        slot: f.slot,
        publication: f.publication,
        statusInterval: 200,
        heartbeatInterval: 500,
        reconnectDelay: 100,
      });
      app.model('rows', { dataSource: 'pg', topic, from: 'beginning', settings: { table: t } });
      await app.start();
      const reconnecting = () =>
        log.events.filter((e) => e.type === 'connector' && e.status.type === 'reconnecting').length;

      // 10,000 inserts, 100 per transaction, written while the server crashes and comes back: a
      // batch that fails is tried again until it passes (ON CONFLICT: a batch whose commit the
      // crash interrupted may or may not be in). Then 2 rounds of updates of the first 1,000 rows.
      const ROWS = 10_000;
      const UPDATED = 1000;
      const writer = (async () => {
        for (let from = 1; from <= ROWS; from += 100) {
          await waitFor(
            () =>
              sql(
                `INSERT INTO ${t} SELECT g, 0 FROM generate_series($1::int, $1 + 99) g ON CONFLICT DO NOTHING`,
                [from],
                pg.url,
              ).then(
                () => true,
                () => false,
              ),
            `rows ${from}.. inserted`,
            60_000,
          );
        }
      })();
      writer.catch(() => undefined);
      await waitFor(() => seen.length >= 1000, 'the first 1,000 events');
      const crashAt = seen.length;
      await pg.stop(); // -m immediate: a crash
      await waitFor(() => reconnecting() >= 2, 'two reconnect attempts');
      await pg.start();
      await writer;
      for (const v of [1, 2]) await sql(`UPDATE ${t} SET v = ${v} WHERE id <= ${UPDATED}`, [], pg.url);
      const complete = (): boolean => {
        const last = new Map<string, number>();
        for (const s of seen) last.set(s.key, s.v);
        return last.size === ROWS && [...last].every(([k, v]) => v === (Number(k) <= UPDATED ? 2 : 0));
      };
      await waitFor(complete, 'every row at its last version', 60_000);
      await app.stop();

      const sent: string[] = [];
      for (let id = 1; id <= ROWS; id++)
        sent.push(`${id}@0`, ...(id <= UPDATED ? [`${id}@1`, `${id}@2`] : []));
      const row = reportRow({
        fault: 'source restarted (crash, pg_ctl -m immediate)',
        source: 'postgres',
        broker: 'redis streams',
        ...countDelivery(
          sent,
          seen.map((s) => `${s.key}@${s.v}`),
        ),
        seconds: (Date.now() - began) / 1000,
        note: `end to end, crash after ${crashAt} events, while writing`,
      });
      expect(row.lost).toBe(0);
      // Per row, in order once earlier copies of a replayed event are dropped.
      const lastIndex = new Map<string, number>();
      seen.forEach((s, i) => lastIndex.set(s.id, i));
      const perKey = new Map<string, number[]>();
      seen.forEach((s, i) => {
        if (lastIndex.get(s.id) === i) perKey.set(s.key, [...(perKey.get(s.key) ?? []), s.v]);
      });
      for (let id = 1; id <= ROWS; id++)
        expect(perKey.get(String(id)), `row ${id}`).toEqual(id <= UPDATED ? [0, 1, 2] : [0]);
    },
  );
});
