/**
 * The PostgreSQL connector against PRIVATE clusters (test/helpers/postgres-server.ts), for what
 * the shared server must not go through: `wal_level` other than logical, heartbeats measured on
 * a server where nothing else emits them, and a slot that disappeared while evpub was not
 * running. (A server crash and restart mid-stream is a case of the fault matrix:
 * test/faults/source-restart-postgres.test.ts.)
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Client } from 'pg';
import { RecordingSink } from '../conformance/connector.suite';
import type { PostgresConnector } from '../../src/connectors/postgres/index';
import { PgFixture, sql } from '../helpers/postgres';
import { privatePostgres, type PrivatePostgres } from '../helpers/postgres-server';
import { waitFor } from '../helpers/wait';

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

const lsn = (text: string): bigint => {
  const [h, l] = text.split('/');
  return (BigInt(`0x${h}`) << 32n) | BigInt(`0x${l}`);
};

async function confirmed(url: string, slot: string): Promise<bigint> {
  const rows = await sql<{ l: string }>(
    'SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
    url,
  );
  return lsn(rows[0]!.l);
}

async function walNow(url: string): Promise<bigint> {
  return lsn((await sql<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l', [], url))[0]!.l);
}

describe('postgres connector on a private cluster', () => {
  it('an idle captured table does not hold the slot back (heartbeats), and the lag is reported in bytes and seconds', async () => {
    const other = 'evpub_other';
    await sql(`DROP DATABASE IF EXISTS ${other}`, [], pg.url);
    await sql(`CREATE DATABASE ${other}`, [], pg.url);
    const writeWal = async (): Promise<void> => {
      const client = new Client({ connectionString: pg.urlOf(other) });
      await client.connect();
      await client.query('CREATE TABLE IF NOT EXISTS w (x text)');
      await client.query("INSERT INTO w SELECT repeat('x', 500) FROM generate_series(1, 2000)");
      await client.end();
    };

    // With heartbeats: the slot follows the server's WAL though the captured table is idle.
    const f = new PgFixture(pg.url);
    const t = await f.table();
    const c = track(await f.connector({ heartbeatInterval: 100, statusInterval: 100 }));
    const sink = new RecordingSink();
    await c.start({ models: [{ name: t, settings: {}, from: 'now' }], sink });
    const start = await confirmed(pg.url, f.slot);
    await writeWal();
    const written = await walNow(pg.url);
    expect(written - start).toBeGreaterThan(1_000_000n);
    await waitFor(
      async () => (await confirmed(pg.url, f.slot)) >= written,
      'the slot to pass the other database',
    );
    expect(sink.events).toEqual([]);
    await waitFor(() => sink.statuses.some((s) => s.type === 'lagging'), 'a lag report');
    expect(sink.statuses.find((s) => s.type === 'lagging')).toMatchObject({
      type: 'lagging',
      bytes: expect.any(Number) as number,
    });
    // Idle (only heartbeats and other databases' WAL): caught up, 0 seconds behind.
    await waitFor(
      () => sink.statuses.some((s) => s.type === 'lagging' && s.seconds === 0),
      'a lag report of 0 seconds',
    );
    await c.stop();
    await f.drop();

    // Without heartbeats (the control): the slot stays put and the lag grows by what was written.
    const g = new PgFixture(pg.url);
    const u = await g.table();
    const d = track(await g.connector({ heartbeatInterval: 0, statusInterval: 100 }));
    const sink2 = new RecordingSink();
    await d.start({ models: [{ name: u, settings: {}, from: 'now' }], sink: sink2 });
    const start2 = await confirmed(pg.url, g.slot);
    await writeWal();
    const written2 = await walNow(pg.url);
    const lagged = await waitFor(
      () =>
        sink2.statuses.find(
          (s) => s.type === 'lagging' && s.bytes !== undefined && BigInt(s.bytes) >= written2 - start2,
        ),
      'a lag report of at least the WAL written',
    );
    expect(await confirmed(pg.url, g.slot)).toBeLessThan(written2);
    console.log(
      `heartbeats: slot followed ${written - start} bytes of other WAL; without them lag ${JSON.stringify(lagged)}`,
    );
    await d.stop();
    await g.drop();
    await sql(`DROP DATABASE ${other}`, [], pg.url);
  });

  it('a slot dropped while evpub was stopped is an error at start, not a silent gap', async () => {
    const f = new PgFixture(pg.url);
    const t = await f.table();
    const c = track(await f.connector());
    const sink = new RecordingSink();
    await c.start({ models: [{ name: t, settings: {}, from: 'now' }], sink });
    await sql(`INSERT INTO ${t} VALUES ('a', 1)`, [], pg.url);
    await waitFor(() => sink.events.length >= 1, 'a');
    await c.stop();
    await sql('SELECT pg_drop_replication_slot($1)', [f.slot], pg.url);
    const err = await (
      await f.connector()
    )
      .start({ models: [{ name: t, settings: {}, from: { after: sink.events[0]!.position! } }], sink })
      .catch((e: unknown) => e);
    expect((err as Error).message).toMatch(
      new RegExp(
        `slot "${f.slot}" does not exist, but the checkpoints of ${t} were made with it.*evpub snapshot`,
        's',
      ),
    );
    const slots = await sql('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [f.slot], pg.url);
    expect(slots).toEqual([]);
    await f.drop();
  });

  it('a slot invalidated by max_slot_wal_keep_size is an error that names the way on', async () => {
    const f = new PgFixture(pg.url);
    const t = await f.table();
    const c = track(await f.connector());
    const sink = new RecordingSink();
    await c.start({ models: [{ name: t, settings: {}, from: 'now' }], sink });
    await sql(`INSERT INTO ${t} VALUES ('a', 1)`, [], pg.url);
    await waitFor(() => sink.events.length >= 1, 'a');
    await c.stop();
    await sql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'", [], pg.url);
    cleanup.push(async () => {
      await sql('ALTER SYSTEM RESET max_slot_wal_keep_size', [], pg.url);
      await sql('SELECT pg_reload_conf()', [], pg.url);
    });
    await sql('SELECT pg_reload_conf()', [], pg.url);
    // More WAL than the slot may keep, then checkpoints until the server gives the slot up.
    await sql('CREATE TABLE filler (x text)', [], pg.url);
    await waitFor(async () => {
      await sql(
        'INSERT INTO filler SELECT repeat(md5(g::text), 30) FROM generate_series(1, 20000) g',
        [],
        pg.url,
      );
      await sql('SELECT pg_switch_wal()', [], pg.url);
      await sql('CHECKPOINT', [], pg.url);
      const rows = await sql<{ s: string }>(
        'SELECT wal_status AS s FROM pg_replication_slots WHERE slot_name = $1',
        [f.slot],
        pg.url,
      );
      return rows[0]?.s === 'lost';
    }, 'the slot to be invalidated');
    const err = await (
      await f.connector()
    )
      .start({ models: [{ name: t, settings: {}, from: { after: sink.events[0]!.position! } }], sink })
      .catch((e: unknown) => e);
    expect((err as Error).message).toMatch(
      /was invalidated \(max_slot_wal_keep_size\).*Re-snapshot.*evpub snapshot/s,
    );
    await sql('DROP TABLE filler', [], pg.url);
    await f.drop();
  });
});

describe('postgres connector on a cluster with wal_level=replica', () => {
  let replica: PrivatePostgres | undefined;
  afterAll(async () => {
    await replica?.close();
  });

  it('fails to start with an error that names the fix', async () => {
    replica = await privatePostgres({ settings: { wal_level: 'replica' } });
    const f = new PgFixture(replica.url);
    const t = await f.table();
    const err = await (
      await f.connector()
    )
      .start({ models: [{ name: t, settings: {}, from: 'now' }], sink: new RecordingSink() })
      .catch((e: unknown) => e);
    expect((err as Error).message).toMatch(
      /wal_level is "replica", logical replication needs "logical": run `ALTER SYSTEM SET wal_level = logical` as a superuser and restart PostgreSQL/,
    );
  });
});
