/**
 * evpub's PostgreSQL connector as a juggler connector (LoopBack 4's `@loopback/repository`
 * `juggler`, loopback-datasource-juggler 7), driven the seed's way: `Model.start(emitter, cb)`
 * emits `'eventMessage', modelName, row` for each change; `Model.stop(cb)` stops the model;
 * `ds.disconnect()` stops everything. Real PostgreSQL (logical replication), unique tables,
 * slot and publication.
 */
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { juggler } from '@loopback/repository';
import { afterEach, describe, expect, it } from 'vitest';
import * as postgres from '../../src/connectors/postgres/index';
import { ErrorCode, isEvpubError } from '../../src/errors';
import { PG_URL, PgFixture, sql } from '../helpers/postgres';
import { freePort, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

interface Received {
  model: string;
  msg: Record<string, unknown>;
}

/** The seed's listener emitter, collecting what it is given. */
function listener(): { emitter: EventEmitter; got: Received[]; errors: [string, Error][] } {
  const emitter = new EventEmitter();
  const got: Received[] = [];
  const errors: [string, Error][] = [];
  emitter.on('eventMessage', (model: string, msg: Record<string, unknown>) => got.push({ model, msg }));
  emitter.on('error', (model: string, err: Error) => errors.push([model, err]));
  return { emitter, got, errors };
}

type SeedModel = typeof juggler.ModelBase & {
  start(emitter: EventEmitter, cb?: (err?: Error | null) => void): Promise<void> | undefined;
  stop(cb?: (err?: Error | null) => void): Promise<void> | undefined;
};

const fixtures: PgFixture[] = [];
const sources: juggler.DataSource[] = [];
afterEach(async () => {
  for (const ds of sources.splice(0)) await ds.disconnect();
  for (const f of fixtures.splice(0)) await f.drop();
});

function dataSource(pg: PgFixture, settings: Record<string, unknown> = {}): juggler.DataSource {
  const ds = new juggler.DataSource(uniqueName('ds'), {
    connector: postgres,
    url: PG_URL,
    slot: pg.slot,
    publication: pg.publication,
    statusInterval: 200,
    heartbeatInterval: 200,
    reconnectDelay: 50,
    ...settings,
  });
  sources.push(ds);
  return ds;
}

function model(ds: juggler.DataSource, name: string, table: string): SeedModel {
  return ds.createModel(name, {}, { evpub: { table } }) as unknown as SeedModel;
}

function start(m: SeedModel, emitter: EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
    void m.start(emitter, (err) => (err ? reject(err) : resolve()));
  });
}

async function slotPid(slot: string): Promise<number | null> {
  const rows = await sql<{ active_pid: number | null }>(
    'SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  return rows[0]?.active_pid ?? null;
}

describe('PostgreSQL through juggler: the seed’s Model.start / Model.stop', () => {
  it('insert, update, delete → eventMessage; juggler sees a connected datasource; disconnect frees the slot', async () => {
    const pg = new PgFixture();
    fixtures.push(pg);
    const table = await pg.table('id text PRIMARY KEY, name text');
    await sql(`ALTER TABLE ${table} REPLICA IDENTITY FULL`);
    const ds = dataSource(pg);
    const accounts = model(ds, 'accounts', table);
    const { emitter, got, errors } = listener();
    await start(accounts, emitter);
    expect(ds.connected).toBe(true);
    expect(ds.connector?.name).toBe('postgres');
    await ds.ping();

    await sql(`INSERT INTO ${table} VALUES ('a1', 'James')`);
    await sql(`UPDATE ${table} SET name = 'James Bond' WHERE id = 'a1'`);
    await sql(`DELETE FROM ${table} WHERE id = 'a1'`);
    await waitFor(() => got.length === 3, 'three changes');
    expect(got).toEqual([
      { model: 'accounts', msg: { id: 'a1', name: 'James' } },
      { model: 'accounts', msg: { id: 'a1', name: 'James Bond' } },
      // REPLICA IDENTITY FULL: the deleted row whole.
      { model: 'accounts', msg: { id: 'a1', name: 'James Bond' } },
    ]);
    expect(errors).toEqual([]);

    expect(await slotPid(pg.slot)).not.toBeNull();
    await ds.disconnect();
    // The server's walsender lets go of the slot just after the connection closed.
    await waitFor(async () => (await slotPid(pg.slot)) === null, 'the slot to be released');
    expect(ds.connected).toBe(false);

    // Started again after the disconnect: it streams, and the next disconnect stops it too.
    await start(accounts, emitter);
    expect(ds.connected).toBe(true);
    await sql(`INSERT INTO ${table} VALUES ('a2', 'Moneypenny')`);
    await waitFor(() => got.length === 4, 'a2');
    await ds.disconnect();
    await waitFor(async () => (await slotPid(pg.slot)) === null, 'the slot to be released again');
  });

  it('a second model started while the first is written to: the first loses nothing and repeats nothing', async () => {
    const pg = new PgFixture();
    fixtures.push(pg);
    const t1 = await pg.table();
    const t2 = await pg.table();
    const ds = dataSource(pg);
    const accounts = model(ds, 'accounts', t1);
    const orders = model(ds, 'orders', t2);
    const a = listener();
    const o = listener();
    await start(accounts, a.emitter);

    // Rows keep coming into accounts before, during and after the restart orders' start makes.
    let written = 0;
    let writing = true;
    const writer = (async () => {
      for (; writing; written++) await sql(`INSERT INTO ${t1} VALUES ($1, $2)`, [`r${written}`, written]);
    })();
    await waitFor(() => a.got.length >= 20, 'the first rows of accounts');
    const before = await slotPid(pg.slot);
    await start(orders, o.emitter); // starts the slot's reader again, with both models
    const after = await slotPid(pg.slot);
    const writtenAfterRestart = written;
    await waitFor(() => written >= writtenAfterRestart + 20, 'rows written after the restart');
    writing = false;
    await writer;
    const N = written;
    await sql(`INSERT INTO ${t2} VALUES ('o1', 1)`);
    await waitFor(() => a.got.length >= N && o.got.length === 1, 'every row of both models');

    expect(before).not.toBeNull();
    expect(after).not.toBe(before); // the replication connection was restarted
    expect(a.got.map((r) => r.msg.id)).toEqual(Array.from({ length: N }, (_, i) => `r${i}`));
    expect(o.got).toEqual([{ model: 'orders', msg: { id: 'o1', value: 1 } }]);
    expect([...a.errors, ...o.errors]).toEqual([]);
  });

  it('Model.stop stops that model only; started again it reads from now', async () => {
    const pg = new PgFixture();
    fixtures.push(pg);
    const t1 = await pg.table();
    const t2 = await pg.table();
    const ds = dataSource(pg);
    const accounts = model(ds, 'accounts', t1);
    const orders = model(ds, 'orders', t2);
    const a = listener();
    const o = listener();
    await start(accounts, a.emitter);
    await start(orders, o.emitter);
    await sql(`INSERT INTO ${t1} VALUES ('a1', 1)`);
    await waitFor(() => a.got.length === 1, 'a1');

    await accounts.stop(); // the promise form (no callback)
    await sql(`INSERT INTO ${t1} VALUES ('a2', 2)`);
    await sql(`INSERT INTO ${t2} VALUES ('o1', 1)`);
    // The slot's stream is in commit order: orders' row comes after accounts' a2.
    await waitFor(() => o.got.length === 1, 'o1');
    expect(a.got.map((r) => r.msg.id)).toEqual(['a1']);

    await start(accounts, a.emitter);
    await sql(`INSERT INTO ${t1} VALUES ('a3', 3)`);
    await waitFor(() => a.got.length === 2, 'a3');
    expect(a.got.map((r) => r.msg.id)).toEqual(['a1', 'a3']); // a2 was made while stopped
    expect(o.got.map((r) => r.msg.id)).toEqual(['o1']);

    const twice = await new Promise<Error | null | undefined>((resolve) => {
      void accounts.start(a.emitter, resolve);
    });
    expect(isEvpubError(twice, ErrorCode.INVALID_STATE)).toBe(true);
    expect(twice?.message).toContain('model "accounts": already started; call accounts.stop() first');
  });

  it('a model whose table is missing fails start with the reason; the running model goes on', async () => {
    const pg = new PgFixture();
    fixtures.push(pg);
    const t1 = await pg.table();
    const ds = dataSource(pg);
    const accounts = model(ds, 'accounts', t1);
    const ghost = model(ds, 'ghost', uniqueName('no_such_table'));
    const a = listener();
    await start(accounts, a.emitter);
    const err = await start(ghost, listener().emitter).catch((e: unknown) => e as Error);
    expect(isEvpubError(err)).toBe(true);
    expect((err as Error).message).toMatch(/no_such_table/);
    await sql(`INSERT INTO ${t1} VALUES ('a1', 1)`);
    await waitFor(() => a.got.length === 1, 'accounts still streaming');
    expect(a.errors).toEqual([]);
  });

  it('an unreachable server: start calls back with the error, the password masked', async () => {
    const pg = new PgFixture();
    const port = await freePort();
    const ds = dataSource(pg, {
      url: `postgres://evpub:s3cret-pw@127.0.0.1:${port}/test`,
      connectTimeout: 2000,
    });
    const accounts = model(ds, 'accounts', 'accounts');
    const err = await start(accounts, listener().emitter).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(isEvpubError(err)).toBe(true);
    expect(inspect(err, { depth: 10 })).not.toContain('s3cret-pw');
    expect(err?.message).toContain(`127.0.0.1:${port}`);
  });

  it('a misspelt datasource setting: the datasource error and every start name it', async () => {
    const pg = new PgFixture();
    const ds = dataSource(pg, { slott: 'x' });
    const dsError = await new Promise<Error>((resolve) => ds.once('error', resolve));
    expect(dsError.message).toContain('.slott: unknown setting; did you mean slot?');
    expect(ds.connected).toBe(false);
    const err = await start(model(ds, 'accounts', 'accounts'), listener().emitter).catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect((err as Error).message).toBe(dsError.message);
  });
});
