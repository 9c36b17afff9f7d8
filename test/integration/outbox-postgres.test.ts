/**
 * The transactional outbox, PostgreSQL side (docs/outbox.md): an application writes its change
 * and the outbox row (INSERT + DELETE, `outboxStatements`) in one transaction with pg; evpub's
 * postgres connector publishes the row's event to Mosquitto.
 *
 * - Committed transactions are published exactly as their rows describe, in commit order, with
 *   the row's id as the CloudEvent id and the commit time; a rolled-back one never is (a later
 *   committed write arrives, the rolled-back one does not); the outbox table stays empty.
 * - A malformed row and a row naming a model evpub does not feed from the outbox go to the
 *   dead-letter topic with their reason, and the stream goes on.
 * - Bad configuration is a clear error at start naming the keys; `evpub check` reports a missing
 *   outbox table that may not be created, and no table finding for an outbox model.
 */
import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { EvpubError } from '../../src/errors';
import { outboxStatements, type OutboxRow } from '../../src/events/outbox';
import { PgFixture, PG_URL, sql } from '../helpers/postgres';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
let mqtt: string;

beforeAll(async () => {
  await requireService('postgres');
  mqtt = await requireService('mosquitto');
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** One application transaction: its own change, then the outbox rows; commit or roll back. */
async function write(
  outbox: string,
  change: { sql: string; params: unknown[] } | undefined,
  rows: OutboxRow[],
  end: 'COMMIT' | 'ROLLBACK' = 'COMMIT',
): Promise<void> {
  const client = new Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query('BEGIN');
    if (change) await client.query(change.sql, change.params);
    for (const row of rows) {
      for (const s of outboxStatements('postgres', outbox, row)) await client.query(s.sql, s.params);
    }
    await client.query(end);
  } finally {
    await client.end();
  }
}

function row(
  model: string,
  op: OutboxRow['op'],
  key: string,
  after: OutboxRow['after'],
  before = null,
): OutboxRow {
  return { id: randomUUID(), model, op, key, before, after };
}

/** A datasource with an outbox, a model fed from it, the application's table; a subscriber. */
async function setup(extra: { models?: string[] } = {}) {
  const f = new PgFixture();
  cleanups.push(() => f.drop());
  const outbox = uniqueName('outbox');
  cleanups.push(() => sql(`DROP TABLE IF EXISTS ${outbox}`));
  const accounts = await f.table('id text PRIMARY KEY, balance int', 'accounts');
  const prefix = `evpub/test/${uniqueName('ob')}`;
  const deadLetterTopic = `${prefix}/dead-letter`;
  const events = await subscriber(mqtt, `${prefix}/events/#`);
  cleanups.push(() => events.client.end());
  const letters = await subscriber(mqtt, deadLetterTopic);
  cleanups.push(() => letters.client.end());
  const app = evpub({
    logger: quietLogger(),
    brokers: { default: mqtt },
    checkpoints: { store: 'memory' },
    publisher: { deadLetterTopic },
  });
  cleanups.push(() => app.stop());
  app.dataSource('pg', {
    connector: 'postgres',
    url: f.url,
    slot: f.slot,
    publication: f.publication,
    heartbeatInterval: 200,
    outbox: { table: outbox },
  });
  for (const model of ['Account', ...(extra.models ?? [])]) {
    app.model(model, {
      dataSource: 'pg',
      topic: `${prefix}/events/{model}/{key}`,
      settings: { outbox: true },
    });
  }
  await app.start();
  return { f, app, outbox, accounts, prefix, events, letters, deadLetterTopic };
}

describe('postgres outbox', () => {
  it('publishes committed rows as they describe, in commit order; a rolled-back transaction publishes nothing', async () => {
    const { outbox, accounts, prefix, events } = await setup();
    const created = row('Account', 'create', 'a1', { id: 'a1', balance: 10 });
    await write(outbox, { sql: `INSERT INTO ${accounts} VALUES ('a1', 10)`, params: [] }, [created]);
    const rolledBack = row('Account', 'create', 'a2', { id: 'a2', balance: 99 });
    await write(
      outbox,
      { sql: `INSERT INTO ${accounts} VALUES ('a2', 99)`, params: [] },
      [rolledBack],
      'ROLLBACK',
    );
    // Two events in one transaction, then a third transaction.
    const updated = row('Account', 'update', 'a1', { id: 'a1', balance: 20 }, null);
    updated.before = { id: 'a1', balance: 10 };
    const other = row('Account', 'create', 'a3', { id: 'a3', balance: 5 });
    await write(outbox, { sql: `UPDATE ${accounts} SET balance = 20 WHERE id = 'a1'`, params: [] }, [
      updated,
      other,
    ]);
    const deleted = row('Account', 'delete', 'a3', null);
    deleted.before = { id: 'a3', balance: 5 };
    await write(outbox, { sql: `DELETE FROM ${accounts} WHERE id = 'a3'`, params: [] }, [deleted]);

    // The last committed write arrived: anything before it (the rolled-back one) would have too.
    await waitFor(() => events.got.some((m) => m.json.id === deleted.id), 'the last committed event');
    const expected = [created, updated, other, deleted];
    expect(events.got.map((m) => m.json.id)).toEqual(expected.map((r) => r.id));
    expect(events.got.some((m) => m.json.id === rolledBack.id || m.json.subject === 'a2')).toBe(false);
    for (const [i, m] of events.got.entries()) {
      const r = expected[i]!;
      expect(m.topic).toBe(`${prefix}/events/Account/${r.key}`);
      expect(m.json).toMatchObject({
        specversion: '1.0',
        id: r.id,
        source: '/evpub/pg/Account',
        type: `evpub.Account.${r.op}`,
        subject: r.key,
        data: { op: r.op, key: r.key, before: r.before, after: r.after },
      });
      expect(Number.isNaN(Date.parse(m.json.time as string))).toBe(false);
    }
    // One transaction, one commit time and one tx for both of its events; positions increase.
    const data = events.got.map(
      (m) => m.json.data as { tx: { id: string; commitTime: string }; position: string },
    );
    expect(data[1]!.tx).toEqual(data[2]!.tx);
    expect(events.got[1]!.json.time).toBe(data[1]!.tx.commitTime);
    expect(new Set(data.map((d) => d.position)).size).toBe(4);
    // The outbox never keeps a row; the application's table has its own state.
    expect(await sql(`SELECT * FROM ${outbox}`)).toEqual([]);
    expect(await sql(`SELECT id, balance FROM ${accounts} ORDER BY id`)).toEqual([{ id: 'a1', balance: 20 }]);
  });

  it('sends a malformed row and a row for another model to the dead-letter topic with the reason; the stream goes on', async () => {
    const { outbox, events, letters, deadLetterTopic } = await setup({ models: ['Invoice'] });
    const before = row('Account', 'create', 'b1', { id: 'b1' });
    await write(outbox, undefined, [before]);
    const badOp = { ...row('Account', 'create', 'b2', { id: 'b2' }), op: 'upsert' as OutboxRow['op'] };
    await write(outbox, undefined, [badOp]);
    const unknown = row('Nobody', 'create', 'b3', { id: 'b3' });
    await write(outbox, undefined, [unknown]);
    const after = row('Invoice', 'create', 'i1', { id: 'i1' });
    await write(outbox, undefined, [after]);

    await waitFor(() => events.got.length >= 2 && letters.got.length >= 2, 'two events and two dead letters');
    expect(events.got.map((m) => [m.json.id, m.json.type])).toEqual([
      [before.id, 'evpub.Account.create'],
      [after.id, 'evpub.Invoice.create'],
    ]);
    expect(letters.got.map((m) => m.topic)).toEqual([deadLetterTopic, deadLetterTopic]);
    const [malformed, stranger] = letters.got.map((m) => m.json);
    expect(malformed).toMatchObject({
      code: 'EVPUB_MALFORMED_INPUT',
      reason: expect.stringContaining('outbox column "op" is "upsert"') as unknown,
      // Charged to the first outbox model.
      input: { datasource: 'pg', model: 'Account', source: { outbox: `public.${outbox}` } },
    });
    expect(JSON.parse(malformed!.original as string)).toMatchObject({ id: badOp.id, op: 'upsert' });
    expect(stranger).toMatchObject({
      reason: expect.stringContaining(
        'names model "Nobody", which this connector was not started with',
      ) as unknown,
      input: { model: 'Account' },
    });
    expect(JSON.parse(stranger!.original as string)).toMatchObject({ id: unknown.id, model: 'Nobody' });
  });

  it('creates the outbox table and puts it in the publication', async () => {
    const { f, outbox } = await setup();
    const published = await sql<{ tablename: string }>(
      'SELECT tablename FROM pg_publication_tables WHERE pubname = $1',
      [f.publication],
    );
    expect(published.map((p) => p.tablename)).toEqual([outbox]);
  });

  it('refuses bad outbox configuration at start, naming the keys', async () => {
    const start = async (ds: Record<string, unknown>, settings: Record<string, unknown>) => {
      const f = new PgFixture();
      cleanups.push(() => f.drop());
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: mqtt },
        checkpoints: { store: 'memory' },
      });
      cleanups.push(() => app.stop());
      app.dataSource('pg', {
        connector: 'postgres',
        url: f.url,
        slot: f.slot,
        publication: f.publication,
        ...ds,
      });
      app.model('Account', { dataSource: 'pg', topic: 'evpub/test/x', settings });
      return app.start().then(
        () => undefined,
        (err: unknown) => err as EvpubError,
      );
    };
    const noDs = await start({}, { outbox: true });
    expect(noDs).toBeInstanceOf(EvpubError);
    expect(noDs!.message).toContain(
      'models.Account.settings.outbox is true but datasources.pg.outbox is not set',
    );

    const typo = await start({ outbox: { tabel: 'x' } }, { outbox: true });
    expect(typo!.message).toContain('datasources.pg.outbox.tabel: unknown setting; did you mean table?');

    const badName = await start({ outbox: { table: 'x"; drop table y; --' } }, { outbox: true });
    expect(badName!.message).toContain('datasources.pg.outbox.table:');

    const withTable = await start({ outbox: true }, { outbox: true, table: 'accounts' });
    expect(withTable!.message).toContain('models.Account.settings.table: cannot be given with outbox: true');

    const missing = uniqueName('outbox');
    const noCreate = await start({ outbox: { table: missing, create: false } }, { outbox: true });
    expect(noCreate!.message).toContain(`the outbox table public.${missing} does not exist`);
    expect(noCreate!.message).toContain('datasources.pg.outbox.create is false');
    expect(await sql('SELECT to_regclass($1) AS t', [missing])).toEqual([{ t: null }]);
  });

  it('evpub check: a missing outbox table that may not be created is an error; an outbox model has no table finding', async () => {
    const f = new PgFixture();
    cleanups.push(() => f.drop());
    const missing = uniqueName('outbox');
    const connector = await f.connector({ outbox: { table: missing, create: false } });
    const findings = await connector.check([{ name: 'Account', settings: { outbox: true } }]);
    expect(findings.filter((c) => c.what.startsWith('table '))).toEqual([]);
    expect(findings.find((c) => c.what.startsWith('outbox table'))).toMatchObject({
      what: `outbox table public.${missing} (models Account)`,
      level: 'error',
      fix: expect.stringContaining(`CREATE TABLE IF NOT EXISTS "public"."${missing}"`) as unknown,
    });
    const creating = await f.connector({ outbox: { table: missing } });
    expect((await creating.check([{ name: 'Account', settings: { outbox: true } }])).at(-1)).toMatchObject({
      level: 'ok',
      detail: 'created at first start',
    });
    const without = await f.connector({});
    expect((await without.check([{ name: 'Account', settings: { outbox: true } }])).at(-1)).toMatchObject({
      level: 'error',
      detail: expect.stringContaining('datasources.pg.outbox is not set') as unknown,
    });
  });
});
