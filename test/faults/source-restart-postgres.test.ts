/**
 * Fault matrix: a private PostgreSQL cluster (test/helpers/postgres-server.ts; the shared server
 * must never crash) crashes (`pg_ctl stop -m immediate`) while the postgres connector is in the
 * middle of a 10,000-row transaction, and starts again: the connector reconnects with back-off
 * and resumes from its last committed position. Every change arrives (the rows of the
 * interrupted transaction again, as duplicates), each row's versions in order.
 *
 * The connector runs under a recording sink that commits the last event every 50 ms, as the
 * publisher does once the broker confirmed: the fault is the source's, not a broker's.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RecordingSink } from '../conformance/connector.suite';
import type { PostgresConnector } from '../../src/connectors/postgres/index';
import type { ChangeEvent } from '../../src/events/change-event';
import { PgFixture, sql } from '../helpers/postgres';
import { privatePostgres, type PrivatePostgres } from '../helpers/postgres-server';
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
});
