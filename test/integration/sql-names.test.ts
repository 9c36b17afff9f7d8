/**
 * Hostile names from config are inert: against the real PostgreSQL and MariaDB, a table, slot,
 * publication or signal-table setting built to break out of its quotes is a CONFIG_INVALID
 * naming the setting and the rule, and nothing reaches the server (a canary table survives);
 * a real table with an odd name (mixed case, a space, a single quote, unicode), made by the
 * test, is captured as any other.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import { initialize as initPoll } from '../../src/connectors/poll/index';
import { ErrorCode } from '../../src/errors';
import { createLogger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { mysqlConnector, sharedConnection, SHARED_URL } from '../helpers/mariadb';
import { PgFixture, sql } from '../helpers/postgres';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

const hostile = (canary: string) => `x"; drop table ${canary}; --`;
const refusal = (setting: RegExp) => ({
  code: ErrorCode.CONFIG_INVALID,
  message: expect.stringMatching(setting) as string,
});
const RULE = /without double quotes, backticks, semicolons or control characters/;

function track<T extends EventConnector>(c: T): T {
  cleanup.push(() => c.stop());
  return c;
}

describe('postgres: hostile and odd names', () => {
  beforeAll(async () => {
    await requireService('postgres');
  });

  it('refuses a hostile model name, table, slot or publication before anything runs', async () => {
    const f = new PgFixture();
    cleanup.push(() => f.drop());
    const canary = await f.table();
    const start = async (settings: Record<string, unknown>, model: string, modelSettings = {}) => {
      const c = track(await f.connector(settings));
      await c.start({
        models: [{ name: model, settings: modelSettings, from: 'now' }],
        sink: new RecordingSink(),
      });
    };
    await expect(start({}, hostile(canary))).rejects.toMatchObject(
      refusal(/^models\.x"; drop .*\.settings\.table: .*model's name.* must be a name of 1 to 63 characters/),
    );
    await expect(start({}, 'orders', { table: `public.${hostile(canary)}` })).rejects.toMatchObject(
      refusal(RULE),
    );
    await expect(start({}, 'orders', { table: `${hostile(canary)}.orders` })).rejects.toMatchObject(
      refusal(/settings\.table: the schema "x\\"; drop/),
    );
    await expect(f.connector({ slot: `s'); select pg_drop_replication_slot('x` })).rejects.toMatchObject(
      refusal(/^datasources\.pg\.slot: must be 1 to 63 lower-case letters, digits or underscores/),
    );
    await expect(f.connector({ publication: hostile(canary) })).rejects.toMatchObject(
      refusal(/^datasources\.pg\.publication: /),
    );
    await expect(f.connector({ slot: 'Mixed_Case' })).rejects.toMatchObject(refusal(/slot/));
    expect(await sql(`SELECT to_regclass($1) AS t`, [canary])).toEqual([{ t: canary }]);
  });

  it('captures a table named with mixed case, a space, a quote and unicode', async () => {
    const f = new PgFixture();
    cleanup.push(() => f.drop());
    const table = `Odd Table's ${uniqueName('é')}`;
    await sql(`CREATE TABLE public."${table}" ("Id" text PRIMARY KEY, "Value" int)`);
    cleanup.push(() => sql(`DROP TABLE IF EXISTS public."${table}"`));
    const c = track(await f.connector());
    const sink = new RecordingSink();
    await c.start({ models: [{ name: 'odd', settings: { table: `public.${table}` }, from: 'now' }], sink });
    await sql(`INSERT INTO public."${table}" VALUES ('k1', 1)`);
    await sql(`UPDATE public."${table}" SET "Value" = 2`);
    await waitFor(() => sink.events.length >= 2, 'insert and update');
    expect(sink.events.map((e) => [e.model, e.op, e.key, e.after])).toEqual([
      ['odd', 'create', 'k1', { Id: 'k1', Value: 1 }],
      ['odd', 'update', 'k1', { Id: 'k1', Value: 2 }],
    ]);
  });
});

describe('mariadb: hostile and odd names', () => {
  it('refuses a hostile model name, table or signalTable before anything runs', async () => {
    const conn = await sharedConnection();
    cleanup.push(() => conn.end());
    const canary = uniqueName('my');
    await conn.query(`CREATE TABLE test.${canary} (id int PRIMARY KEY)`);
    cleanup.push(() => conn.query(`DROP TABLE IF EXISTS test.${canary}`));
    const start = async (model: string, settings: Record<string, unknown> = {}) => {
      const c = track(await mysqlConnector({ url: SHARED_URL }));
      await c.start({ models: [{ name: model, settings, from: 'now' }], sink: new RecordingSink() });
    };
    const evil = `x\`; drop table ${canary}; --`;
    await expect(start(evil)).rejects.toMatchObject(
      refusal(/^models\.x`; drop .*\.settings\.table: .*model's name.* must be a name of 1 to 64 characters/),
    );
    await expect(start('orders', { table: `test.${evil}` })).rejects.toMatchObject(refusal(RULE));
    await expect(start('orders', { database: evil })).rejects.toMatchObject(
      refusal(/^models\.orders\.settings\.database: the database/),
    );
    await expect(mysqlConnector({ url: SHARED_URL, signalTable: evil })).rejects.toMatchObject(
      refusal(/^datasources\.my\.signalTable: /),
    );
    const [rows] = await conn.query(`SHOW TABLES IN test LIKE '${canary}'`);
    expect(rows).toHaveLength(1);
  });

  it('captures a table named with mixed case, a space, a quote and unicode', async () => {
    const conn = await sharedConnection();
    cleanup.push(() => conn.end());
    const table = `Odd Table's ${uniqueName('é')}`;
    const quoted = `test.\`${table}\``;
    await conn.query(`CREATE TABLE ${quoted} (\`Id\` varchar(20) PRIMARY KEY, \`Value\` int)`);
    cleanup.push(() => conn.query(`DROP TABLE IF EXISTS ${quoted}`));
    const c = track(await mysqlConnector({ url: SHARED_URL }));
    const sink = new RecordingSink();
    await c.start({ models: [{ name: 'odd', settings: { table: `test.${table}` }, from: 'now' }], sink });
    await conn.query(`INSERT INTO ${quoted} VALUES ('k1', 1)`);
    await conn.query(`UPDATE ${quoted} SET \`Value\` = 2`);
    await waitFor(() => sink.events.length >= 2, 'insert and update');
    expect(sink.events.map((e) => [e.model, e.op, e.key, e.after])).toEqual([
      ['odd', 'create', 'k1', { Id: 'k1', Value: 1 }],
      ['odd', 'update', 'k1', { Id: 'k1', Value: 2 }],
    ]);
  });
});

describe('poll (SQL): hostile and odd names', () => {
  const poller = async (url: string, name: string, settings: Record<string, unknown>) => {
    const ds = {
      name: 'p',
      settings: { url, interval: 20 },
      logger: createLogger({ level: 'silent' }),
      connector: undefined as unknown,
    };
    await initPoll(ds);
    const connector = track(ds.connector as EventConnector);
    const sink = new RecordingSink();
    await connector.start({ models: [{ name, settings, from: 'beginning' }], sink });
    return sink;
  };

  it('refuses hostile table and column settings, and polls an odd table name on PostgreSQL', async () => {
    const url = await requireService('postgres');
    await expect(poller(url, 'x"; drop table y; --', {})).rejects.toMatchObject(
      refusal(/^models\.x"; drop .*\.settings\.table: .*model's name/),
    );
    for (const key of ['keyColumn', 'cursorColumn', 'deletedColumn']) {
      await expect(poller(url, 'orders', { [key]: 'id" FROM y; --' })).rejects.toMatchObject(
        refusal(new RegExp(`^models\\.orders\\.settings\\.${key}: .*without double quotes`)),
      );
    }
    const table = `Poll Odd's ${uniqueName('ü')}`;
    await sql(`CREATE TABLE "${table}" ("Id" text PRIMARY KEY, "Value" int)`);
    cleanup.push(() => sql(`DROP TABLE IF EXISTS "${table}"`));
    await sql(`INSERT INTO "${table}" VALUES ('a', 1), ('b', 2)`);
    const sink = await poller(url, 'odd', { table, keyColumn: 'Id' });
    await waitFor(() => sink.events.length >= 2, 'both rows');
    expect(sink.events.map((e) => [e.key, e.after])).toEqual([
      ['a', { Id: 'a', Value: 1 }],
      ['b', { Id: 'b', Value: 2 }],
    ]);
  });

  it('polls an odd table name on MariaDB', async () => {
    const conn = await sharedConnection();
    cleanup.push(() => conn.end());
    const table = `Poll Odd's ${uniqueName('ü')}`;
    await conn.query(`CREATE TABLE test.\`${table}\` (\`Id\` varchar(20) PRIMARY KEY, \`Value\` int)`);
    cleanup.push(() => conn.query(`DROP TABLE IF EXISTS test.\`${table}\``));
    await conn.query(`INSERT INTO test.\`${table}\` VALUES ('a', 1)`);
    const sink = await poller(SHARED_URL, 'odd', { table, keyColumn: 'Id' });
    await waitFor(() => sink.events.length >= 1, 'the row');
    expect(sink.events.map((e) => [e.key, e.after])).toEqual([['a', { Id: 'a', Value: 1 }]]);
  });
});
