/**
 * The transactional outbox, MySQL/MariaDB side (docs/outbox.md): an application writes its
 * change and the outbox row (INSERT + DELETE, `outboxStatements`) in one transaction with
 * mysql2; evpub's mysql connector publishes the row's event from the binlog to Mosquitto.
 *
 * - Committed transactions are published exactly as their rows describe, in commit order, with
 *   the row's id as the CloudEvent id; a rolled-back one never is (a later committed write
 *   arrives, the rolled-back one does not); the outbox table stays empty.
 * - A malformed row and a row naming a model not fed from the outbox go to the dead-letter topic
 *   with their reason; the stream goes on, for both outbox models of the datasource (one unit).
 * - A restart resumes every outbox model from its own checkpoint: what was written while evpub
 *   was stopped arrives, nothing published before comes again.
 * - Bad configuration is a clear error; `evpub check` reports a missing outbox table that may
 *   not be created.
 */
import { randomUUID } from 'node:crypto';
import Redis from 'ioredis';
import type { Connection } from 'mysql2/promise';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { EvpubError } from '../../src/errors';
import { outboxStatements, type OutboxRow } from '../../src/events/outbox';
import { mysqlConnector, SHARED_URL, sharedConnection } from '../helpers/mariadb';
import { quietLogger, subscriber, type Received } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
let mqtt: string;
let admin: Connection;

beforeAll(async () => {
  mqtt = await requireService('mosquitto');
  admin = await sharedConnection();
  return () => admin.end();
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** One application transaction: its own change, then the outbox rows; commit or roll back. */
async function write(
  outbox: string,
  change: string | undefined,
  rows: OutboxRow[],
  end: 'commit' | 'rollback' = 'commit',
): Promise<void> {
  const conn = await sharedConnection();
  try {
    await conn.beginTransaction();
    if (change) await conn.query(change);
    for (const row of rows) {
      for (const s of outboxStatements('mysql', `\`${outbox}\``, row)) await conn.query(s.sql, s.params);
    }
    await (end === 'commit' ? conn.commit() : conn.rollback());
  } finally {
    await conn.end();
  }
}

function row(model: string, op: OutboxRow['op'], key: string, after: OutboxRow['after']): OutboxRow {
  return { id: randomUUID(), model, op, key, before: null, after };
}

/** A started app: a datasource with an outbox, outbox models `Account` and `Invoice`. */
async function startApp(outbox: string, prefix: string, checkpoints = new MemoryCheckpointStore()) {
  const app = evpub({
    logger: quietLogger(),
    brokers: { default: mqtt },
    checkpoints,
    publisher: { deadLetterTopic: `${prefix}/dead-letter` },
  });
  cleanups.push(() => app.stop());
  app.dataSource('my', {
    connector: 'mysql',
    url: SHARED_URL,
    heartbeat: 1000,
    reconnectDelay: 100,
    outbox: { table: outbox },
  });
  for (const model of ['Account', 'Invoice']) {
    app.model(model, {
      dataSource: 'my',
      topic: `${prefix}/events/{model}/{key}`,
      settings: { outbox: true },
    });
  }
  await app.start();
  return app;
}

async function setup() {
  const outbox = uniqueName('outbox');
  cleanups.push(() => admin.query(`DROP TABLE IF EXISTS \`${outbox}\``));
  const accounts = uniqueName('accounts');
  await admin.query(`CREATE TABLE \`${accounts}\` (id VARCHAR(32) PRIMARY KEY, balance INT)`);
  cleanups.push(() => admin.query(`DROP TABLE IF EXISTS \`${accounts}\``));
  const prefix = `evpub/test/${uniqueName('obm')}`;
  const events = await subscriber(mqtt, `${prefix}/events/#`);
  cleanups.push(() => events.client.end());
  const letters = await subscriber(mqtt, `${prefix}/dead-letter`);
  cleanups.push(() => letters.client.end());
  return { outbox, accounts, prefix, events, letters };
}

const ids = (got: Received[]) => got.map((m) => m.json.id);

describe('mysql outbox', () => {
  it('publishes committed rows as they describe, in commit order; a rolled-back transaction publishes nothing', async () => {
    const { outbox, accounts, prefix, events } = await setup();
    await startApp(outbox, prefix);
    const created = row('Account', 'create', 'a1', { id: 'a1', balance: 10 });
    await write(outbox, `INSERT INTO \`${accounts}\` VALUES ('a1', 10)`, [created]);
    const rolledBack = row('Account', 'create', 'a2', { id: 'a2', balance: 99 });
    await write(outbox, `INSERT INTO \`${accounts}\` VALUES ('a2', 99)`, [rolledBack], 'rollback');
    const updated = {
      ...row('Account', 'update', 'a1', { id: 'a1', balance: 20 }),
      before: { id: 'a1', balance: 10 },
    };
    const invoice = row('Invoice', 'create', 'i1', { id: 'i1', total: '12.50' });
    await write(outbox, `UPDATE \`${accounts}\` SET balance = 20 WHERE id = 'a1'`, [updated, invoice]);
    const deleted = { ...row('Account', 'delete', 'a1', null), before: { id: 'a1', balance: 20 } };
    await write(outbox, `DELETE FROM \`${accounts}\` WHERE id = 'a1'`, [deleted]);

    await waitFor(() => events.got.some((m) => m.json.id === deleted.id), 'the last committed event');
    const expected = [created, updated, invoice, deleted];
    expect(ids(events.got)).toEqual(expected.map((r) => r.id));
    expect(events.got.some((m) => m.json.id === rolledBack.id || m.json.subject === 'a2')).toBe(false);
    for (const [i, m] of events.got.entries()) {
      const r = expected[i]!;
      expect(m.topic).toBe(`${prefix}/events/${r.model}/${r.key}`);
      expect(m.json).toMatchObject({
        id: r.id,
        source: `/evpub/my/${r.model}`,
        type: `evpub.${r.model}.${r.op}`,
        subject: r.key,
        data: { op: r.op, key: r.key, before: r.before, after: r.after, source: { outbox: true } },
      });
    }
    const [outboxRows] = await admin.query(`SELECT * FROM \`${outbox}\``);
    expect(outboxRows).toEqual([]);
  });

  it('sends a malformed row and a row for another model to the dead-letter topic; the stream goes on', async () => {
    const { outbox, prefix, events, letters } = await setup();
    await startApp(outbox, prefix);
    const first = row('Account', 'create', 'b1', { id: 'b1' });
    await write(outbox, undefined, [first]);
    const badAfter = {
      ...row('Invoice', 'create', 'b2', null),
      after: [1, 2] as unknown as OutboxRow['after'],
    };
    await write(outbox, undefined, [badAfter]);
    const unknown = row('Nobody', 'create', 'b3', { id: 'b3' });
    await write(outbox, undefined, [unknown]);
    const last = row('Invoice', 'create', 'i9', { id: 'i9' });
    await write(outbox, undefined, [last]);

    await waitFor(() => events.got.length >= 2 && letters.got.length >= 2, 'two events and two dead letters');
    expect(ids(events.got)).toEqual([first.id, last.id]);
    const [malformed, stranger] = letters.got.map((m) => m.json);
    expect(malformed).toMatchObject({
      code: 'EVPUB_MALFORMED_INPUT',
      reason: 'outbox column "after" is not a JSON object',
      input: { datasource: 'my', model: 'Account', source: { outbox: `test.${outbox}` } },
    });
    expect(JSON.parse(malformed!.original as string)).toMatchObject({ id: badAfter.id });
    expect(stranger).toMatchObject({
      reason: expect.stringContaining(
        'names model "Nobody", which this connector was not started with',
      ) as unknown,
      input: { model: 'Account' },
    });
  });

  it('resumes each outbox model from its checkpoint after a restart: nothing lost, nothing repeated', async () => {
    const { outbox, prefix, events } = await setup();
    const checkpoints = new MemoryCheckpointStore();
    const app = await startApp(outbox, prefix, checkpoints);
    const before = [
      row('Account', 'create', 'c1', { id: 'c1' }),
      row('Account', 'create', 'c2', { id: 'c2' }),
    ];
    for (const r of before) await write(outbox, undefined, [r]);
    await waitFor(() => events.got.length >= 2, 'the events before the restart');
    await app.stop();
    // Written while evpub is stopped: one for each model, in one transaction and in two.
    const meanwhile = [
      row('Invoice', 'create', 'j1', { id: 'j1' }),
      row('Account', 'update', 'c1', { id: 'c1', v: 2 }),
    ];
    await write(outbox, undefined, meanwhile);
    const later = row('Invoice', 'create', 'j2', { id: 'j2' });
    await write(outbox, undefined, [later]);

    await startApp(outbox, prefix, checkpoints);
    await waitFor(() => events.got.some((m) => m.json.id === later.id), 'the last event after the restart');
    const after = row('Account', 'delete', 'c2', null);
    await write(outbox, undefined, [after]);
    await waitFor(() => events.got.some((m) => m.json.id === after.id), 'an event written after the restart');
    expect(ids(events.got)).toEqual([...before, ...meanwhile, later, after].map((r) => r.id));
  });

  it('units(): the outbox models of a datasource are one unit', async () => {
    const c = await mysqlConnector({ url: SHARED_URL, outbox: true });
    (c as unknown as { dataSource: { modelSettings: Record<string, unknown> } }).dataSource.modelSettings = {
      a: {},
      o1: { outbox: true },
      b: {},
      o2: { outbox: true },
    };
    expect(c.units!(['a', 'o1', 'b', 'o2'])).toEqual([['a'], ['o1', 'o2'], ['b']]);
    const without = await mysqlConnector({ url: SHARED_URL });
    expect(without.units!(['a', 'b'])).toEqual([['a'], ['b']]);
  });

  it('cluster mode: the outbox models are one unit beside the table models, and publish', async () => {
    const { outbox, accounts, prefix, events } = await setup();
    const redis = await requireService('redis');
    const prefix2 = `${uniqueName('cp')}:`;
    const cluster = uniqueName('c');
    cleanups.push(async () => {
      const client = new Redis(redis);
      const keys = [...(await client.keys(`${prefix2}*`)), ...(await client.keys(`*${cluster}*`))];
      if (keys.length > 0) await client.del(...keys);
      client.disconnect();
    });
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: mqtt },
      checkpoints: { store: 'redis', url: redis, prefix: prefix2 },
      cluster: {
        store: 'redis',
        url: redis,
        name: cluster,
        leaseTtl: '3s',
        instance: 'a',
      },
    });
    cleanups.push(() => app.stop());
    app.dataSource('my', {
      connector: 'mysql',
      url: SHARED_URL,
      reconnectDelay: 100,
      outbox: { table: outbox },
    });
    app.model('Account', {
      dataSource: 'my',
      topic: `${prefix}/events/{model}/{key}`,
      settings: { outbox: true },
    });
    app.model('Rows', {
      dataSource: 'my',
      topic: `${prefix}/events/{model}/{key}`,
      settings: { table: accounts },
    });
    app.model('Invoice', {
      dataSource: 'my',
      topic: `${prefix}/events/{model}/{key}`,
      settings: { outbox: true },
    });
    await app.start();
    await waitFor(
      () =>
        Object.values(app.status().feeds).length === 3 &&
        Object.values(app.status().feeds).every((f) => f.state === 'streaming'),
      'three feeds streaming',
    );
    expect((app.status().cluster?.units ?? []).map((u) => u.unit).sort()).toEqual([
      'my/Account+Invoice',
      'my/Rows',
    ]);
    const invoice = row('Invoice', 'create', 'i1', { id: 'i1' });
    await write(outbox, `INSERT INTO \`${accounts}\` VALUES ('r1', 1)`, [invoice]);
    await waitFor(() => events.got.length >= 2, 'the table change and the outbox event');
    expect(events.got.map((m) => m.json.type).sort()).toEqual(['evpub.Invoice.create', 'evpub.Rows.create']);
    expect(events.got.find((m) => m.json.type === 'evpub.Invoice.create')!.json.id).toBe(invoice.id);
  });

  it('refuses bad configuration, naming the keys; evpub check reports a missing outbox table it may not create', async () => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: mqtt },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    app.dataSource('my', { connector: 'mysql', url: SHARED_URL });
    app.model('Account', { dataSource: 'my', topic: 'evpub/test/x', settings: { outbox: true } });
    const err = await app.start().catch((e: unknown) => e as EvpubError);
    expect(err).toBeInstanceOf(EvpubError);
    expect((err as EvpubError).message).toContain(
      'models.Account.settings.outbox is true but datasources.my.outbox is not set',
    );
    await expect(mysqlConnector({ url: SHARED_URL, outbox: { table: 'x', creat: false } })).rejects.toThrow(
      'datasources.my.outbox.creat: unknown setting; did you mean create?',
    );

    const missing = uniqueName('outbox');
    const c = await mysqlConnector({ url: SHARED_URL, outbox: { table: missing, create: false } });
    const findings = await c.check!([{ name: 'Account', settings: { outbox: true } }]);
    expect(findings.filter((f) => f.what.startsWith('table '))).toEqual([]);
    expect(findings.at(-1)).toMatchObject({
      what: `outbox table test.${missing} (models Account)`,
      level: 'error',
      fix: expect.stringContaining(`CREATE TABLE IF NOT EXISTS \`test\`.\`${missing}\``) as unknown,
    });
  });
});
