/**
 * The mysql connector against the shared MariaDB (binlog ROW, GTIDs): exact JSON of every type,
 * ordering and before/after, a 10,000-row transaction resumed in its middle, the snapshot with
 * concurrent writes and its resume, and the errors that the shared server can show without
 * changing its settings (see mysql-server.test.ts for the others, on a private mariadbd). Every
 * test uses its own tables and drops them. (A connection cut through a TCP proxy is a case of
 * the fault matrix: test/faults/source-cut-mariadb.test.ts.)
 */
import type { Connection } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import { ErrorCode, isEvpubError } from '../../src/errors';
import type { ChangeEvent, StartFrom } from '../../src/events/change-event';
import { RecordingSink } from '../conformance/connector.suite';
import {
  SHARED_URL,
  ensureSignalTable,
  mysqlConnector,
  sharedConnection,
  uniqueTable,
} from '../helpers/mariadb';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

let conn: Connection;
const tables: string[] = [];
const running: EventConnector[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  conn = await sharedConnection();
  await conn.query("SET time_zone = '+00:00'");
  await ensureSignalTable(conn);
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.stop().catch(() => undefined)));
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

afterAll(async () => {
  for (const t of tables) await conn.query(`DROP TABLE IF EXISTS \`${t}\``);
  await conn?.end();
});

async function table(columns: string): Promise<string> {
  const name = uniqueTable();
  tables.push(name);
  await conn.query(`CREATE TABLE \`${name}\` (${columns})`);
  return name;
}

async function start(
  name: string,
  from: StartFrom,
  options: { settings?: Record<string, unknown>; model?: Record<string, unknown>; sink?: RecordingSink } = {},
): Promise<{ connector: EventConnector; sink: RecordingSink }> {
  const connector = await mysqlConnector({ url: SHARED_URL, ...options.settings });
  running.push(connector);
  const sink = options.sink ?? new RecordingSink();
  await connector.start({ models: [{ name: 'm', settings: { table: name, ...options.model }, from }], sink });
  return { connector, sink };
}

const TYPES = `id BIGINT PRIMARY KEY, i INT, ti TINYINT, si SMALLINT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  d DECIMAL(30,10), f DOUBLE, fl FLOAT, dt DATETIME(6), ts TIMESTAMP(3) NULL, dd DATE, tm TIME(3), yr YEAR,
  j JSON, b VARBINARY(16), bl BLOB, bn BINARY(4), tx TEXT, vc VARCHAR(20), ch CHAR(3),
  e ENUM('red','green'), st SET('a','b','c'), bt BIT(10), u UUID, n INT NULL`;

const TYPES_ROW = `(9007199254740993, -5, 127, 65535, -9223372036854775808, 18446744073709551615,
  '12345678901234567890.0123456789', 1.5, 0.25, '2024-02-29 13:14:15.123456', '2024-03-01 00:00:01.5',
  '2024-12-31', '-12:34:56.789', 2024, '{"a": [1, 2, {"b": null}], "s": "x"}', x'00ff10', x'deadbeef',
  x'0102', 'héllo 😀', 'abc', 'xy', 'green', 'a,c', b'1010101010', '123e4567-e89b-12d3-a456-426614174000', NULL)`;

const TYPES_JSON = {
  id: '9007199254740993',
  i: -5,
  ti: 127,
  si: 65535,
  bi: '-9223372036854775808',
  bu: '18446744073709551615',
  d: '12345678901234567890.0123456789',
  f: 1.5,
  fl: 0.25,
  dt: '2024-02-29T13:14:15.123456',
  ts: '2024-03-01T00:00:01.500Z',
  dd: '2024-12-31',
  tm: '-12:34:56.789',
  yr: 2024,
  j: { a: [1, 2, { b: null }], s: 'x' },
  b: 'AP8Q',
  bl: '3q2+7w==',
  bn: 'AQIAAA==',
  tx: 'héllo 😀',
  vc: 'abc',
  ch: 'xy',
  e: 'green',
  st: 'a,c',
  bt: '682',
  u: '123e4567-e89b-12d3-a456-426614174000',
  n: null,
};

describe('mysql connector (shared MariaDB)', () => {
  it('publishes every type as exact JSON, the same from the binlog and from a snapshot', async () => {
    const name = await table(TYPES);
    const { sink } = await start(name, 'now');
    await conn.query(`INSERT INTO \`${name}\` VALUES ${TYPES_ROW}`);
    await waitFor(() => sink.events.length === 1, 'the insert');
    const [event] = sink.events;
    expect(event!.op).toBe('create');
    expect(event!.key).toBe('9007199254740993');
    expect(event!.after).toEqual(TYPES_JSON);
    expect(JSON.parse(JSON.stringify(event!.after))).toEqual(TYPES_JSON);
    expect(event!.tx?.id).toMatch(/^\d+-\d+-\d+$/);

    const snap = await start(name, 'beginning', { model: { snapshot: 'initial' } });
    await waitFor(() => snap.sink.events.length === 1, 'the snapshot row');
    expect(snap.sink.events[0]!.op).toBe('snapshot');
    expect(snap.sink.events[0]!.after).toEqual(TYPES_JSON);
  });

  it('keeps source order with before and after, across statements and multi-row transactions', async () => {
    const name = await table('id INT PRIMARY KEY, v VARCHAR(10)');
    const { sink } = await start(name, 'now');
    await conn.query(`INSERT INTO \`${name}\` VALUES (1, 'a'), (2, 'b'), (3, 'c')`);
    await conn.beginTransaction();
    await conn.query(`UPDATE \`${name}\` SET v = CONCAT(v, '2') WHERE id IN (1, 2)`);
    await conn.query(`DELETE FROM \`${name}\` WHERE id = 3`);
    await conn.query(`INSERT INTO \`${name}\` VALUES (3, 'c3')`);
    await conn.commit();
    await conn.query(`UPDATE \`${name}\` SET id = 4 WHERE id = 1`);
    await waitFor(() => sink.events.length === 8, '8 events');
    expect(sink.events.map((e) => [e.op, e.key, e.before?.v ?? null, e.after?.v ?? null])).toEqual([
      ['create', '1', null, 'a'],
      ['create', '2', null, 'b'],
      ['create', '3', null, 'c'],
      ['update', '1', 'a', 'a2'],
      ['update', '2', 'b', 'b2'],
      ['delete', '3', 'c', null],
      ['create', '3', null, 'c3'],
      ['update', '4', 'a2', 'a2'],
    ]);
    const updateOfKey = sink.events[7]!;
    expect(updateOfKey.before).toEqual({ id: 1, v: 'a2' });
    expect(updateOfKey.after).toEqual({ id: 4, v: 'a2' });
    // One transaction: one tx id, rows numbered in it.
    const tx = sink.events.slice(3, 6).map((e) => e.tx?.id);
    expect(new Set(tx).size).toBe(1);
    expect(sink.events.slice(3, 6).map((e) => e.source?.row)).toEqual([1, 2, 3]);
  });

  it('streams a 10,000-row transaction, and resumes in its middle without loss or repeat', async () => {
    const name = await table('id INT PRIMARY KEY, v INT');
    const { connector, sink } = await start(name, 'now');
    const started = Date.now();
    await conn.query(`INSERT INTO \`${name}\` SELECT seq, seq * 2 FROM seq_1_to_10000`);
    await waitFor(() => sink.events.length === 10_000, '10,000 events');
    const seconds = (Date.now() - started) / 1000;
    process.stdout.write(
      `mysql: 10,000-row transaction in ${seconds.toFixed(2)} s (${Math.round(10_000 / seconds)} events/s)\n`,
    );
    expect(sink.keys()).toEqual(Array.from({ length: 10_000 }, (_, i) => String(i + 1)));
    await connector.stop();
    const middle = sink.events[4_999]!.position!;
    const again = await start(name, { after: middle });
    await conn.query(`INSERT INTO \`${name}\` VALUES (10001, 0)`);
    await waitFor(() => again.sink.keys().includes('10001'), 'the row after');
    expect(again.sink.keys()).toEqual(Array.from({ length: 5_001 }, (_, i) => String(i + 5_001)));
    expect(again.sink.events[0]!.id).toBe(sink.events[5_000]!.id);
  });

  it('snapshot: every row at least once, final state equals the table, with writes during it', async () => {
    const name = await table('id INT PRIMARY KEY, v INT NOT NULL');
    await conn.query(`INSERT INTO \`${name}\` SELECT seq, 0 FROM seq_1_to_3000`);
    const writer = await sharedConnection();
    let writing = true;
    let writes = 0;
    const load = (async () => {
      while (writing) {
        const id = 1 + Math.floor(Math.random() * 3500);
        const op = writes % 3;
        if (op === 0) await writer.query(`UPDATE \`${name}\` SET v = v + 1 WHERE id = ?`, [id]);
        else if (op === 1) await writer.query(`INSERT IGNORE INTO \`${name}\` VALUES (?, 100)`, [id]);
        else await writer.query(`DELETE FROM \`${name}\` WHERE id = ?`, [id]);
        writes++;
      }
    })();
    cleanups.push(async () => {
      writing = false;
      await load.catch(() => undefined);
      await writer.end();
    });
    // The sink starts full: the snapshot holds after its first row until the writer has written
    // while it runs (whatever the machine's speed), then goes on.
    const held = new RecordingSink();
    held.full = true;
    const { sink } = await start(name, 'beginning', {
      settings: { snapshot: 'initial', snapshotChunk: 200 },
      sink: held,
    });
    await waitFor(() => sink.events.length >= 1, 'the snapshot to start');
    const before = writes;
    await waitFor(() => writes > before + 20, 'writes during the snapshot');
    sink.release();
    // The snapshot's end is marked (committed like an event): a position without a cursor.
    await waitFor(() => sink.marks.some((m) => !m.position.includes('"s"')), 'the snapshot to finish');
    writing = false;
    await load;
    const [[mark]] = await conn.query<import('mysql2').RowDataPacket[]>(
      `SELECT COUNT(*) AS n, COALESCE(SUM(v), 0) AS s FROM \`${name}\``,
    );
    await conn.query(`INSERT INTO \`${name}\` VALUES (999999, 0)`); // the end marker
    await waitFor(() => sink.keys().includes('999999'), 'the stream to catch up');
    const state = new Map<string, number>();
    for (const e of sink.events) {
      if (e.op === 'delete') state.delete(e.key);
      else state.set(e.key, e.after!.v as number);
    }
    state.delete('999999');
    const [rows] = await conn.query<import('mysql2').RowDataPacket[]>(
      `SELECT id, v FROM \`${name}\` WHERE id <> 999999 ORDER BY id`,
    );
    expect(Number(mark!.n)).toBe(rows.length);
    expect(new Map(rows.map((r) => [String(r.id), Number(r.v)]))).toEqual(state);
    const snapshotKeys = sink.events.filter((e) => e.op === 'snapshot').map((e) => Number(e.key));
    expect(snapshotKeys).toEqual([...snapshotKeys].sort((a, b) => a - b));
    const progress = sink.statuses.filter((s) => s.type === 'snapshot');
    expect(progress.length).toBeGreaterThan(10);
  });

  it('snapshot resumes after the last row published, then streams from its start point', async () => {
    const name = await table('id INT PRIMARY KEY, v INT NOT NULL');
    await conn.query(`INSERT INTO \`${name}\` SELECT seq, seq FROM seq_1_to_1000`);
    const sink = new RecordingSink();
    // The publisher's window fills at the 250th row (deterministically, whatever the load): the
    // snapshot must stop reading and wait for room.
    const push = sink.push.bind(sink);
    sink.push = (event) => {
      push(event);
      if (sink.events.length >= 250) sink.full = true;
      return !sink.full;
    };
    const first = await start(name, 'beginning', {
      model: { snapshot: 'initial' },
      settings: { snapshotChunk: 100 },
      sink,
    });
    await waitFor(() => sink.drains >= 1, 'the snapshot to wait');
    expect(sink.events.length).toBe(250);
    await first.connector.stop();
    const last = sink.events.at(-1)!;
    await conn.query(`UPDATE \`${name}\` SET v = -1 WHERE id = 1`); // after the snapshot's start point
    const second = await start(name, { after: last.position! });
    // The stream runs alongside the snapshot: the update may come before the last rows or after.
    await waitFor(
      () => second.sink.events.some((e) => e.op === 'update') && second.sink.keys().includes('1000'),
      'the update from the stream and the last snapshot row',
    );
    const snapshotKeys = second.sink.events.filter((e) => e.op === 'snapshot').map((e) => Number(e.key));
    expect(snapshotKeys).toEqual(
      Array.from({ length: 1000 - Number(last.key) }, (_, i) => i + 1 + Number(last.key)),
    );
    expect(second.sink.events.filter((e) => e.op === 'update').map((e) => e.key)).toEqual(['1']);
  });

  it('two models on one connector; snapshot also when a model starts "now" without a checkpoint', async () => {
    const a = await table('id INT PRIMARY KEY, v INT');
    const b = await table('k VARCHAR(8), n INT'); // no primary key: the whole row is the key
    await conn.query(`INSERT INTO \`${a}\` VALUES (1, 1), (2, 2)`);
    const connector = await mysqlConnector({ url: SHARED_URL });
    running.push(connector);
    const sink = new RecordingSink();
    await connector.start({
      models: [
        { name: 'a', settings: { table: `test.${a}`, snapshot: 'initial' }, from: 'now' },
        { name: 'b', settings: { table: b }, from: 'now' },
      ],
      sink,
    });
    await waitFor(
      () => sink.marks.some((m) => m.model === 'a' && !m.position.includes('"s"')),
      'a snapshot done',
    );
    await conn.query(`INSERT INTO \`${b}\` VALUES ('x', 1)`);
    await conn.query(`UPDATE \`${a}\` SET v = 3 WHERE id = 2`);
    await waitFor(() => sink.events.length >= 4, '4 events');
    // Each model has its own stream: order holds per model, not across models.
    const of = (model: string) => sink.events.filter((e) => e.model === model).map((e) => [e.op, e.key]);
    expect(of('a')).toEqual([
      ['snapshot', '1'],
      ['snapshot', '2'],
      ['update', '2'],
    ]);
    expect(of('b')).toEqual([['create', '{"k":"x","n":1}']]);
  });

  it('TRUNCATE becomes a truncate event; after ALTER TABLE rows decode with the new columns', async () => {
    const name = await table('id INT PRIMARY KEY');
    const { sink } = await start(name, 'now');
    await conn.query(`INSERT INTO \`${name}\` VALUES (1)`);
    await conn.query(`TRUNCATE TABLE test.\`${name}\``);
    await conn.query(`ALTER TABLE \`${name}\` ADD COLUMN big BIGINT, ADD COLUMN doc JSON`);
    await conn.query(`INSERT INTO \`${name}\` VALUES (2, 9007199254740993, '{"a": 1}')`);
    await waitFor(() => sink.events.length >= 3, '3 events');
    expect(sink.events.map((e) => [e.op, e.key])).toEqual([
      ['create', '1'],
      ['truncate', ''],
      ['create', '2'],
    ]);
    expect(sink.events[2]!.after).toEqual({ id: 2, big: '9007199254740993', doc: { a: 1 } });
    // Resuming after the truncate does not repeat it.
    const again = await start(name, { after: sink.events[1]!.position! });
    await conn.query(`INSERT INTO \`${name}\` VALUES (3, 1, NULL)`);
    await waitFor(() => again.sink.keys().includes('3'), 'the row after');
    expect(again.sink.events.map((e) => [e.op, e.key])).toEqual([
      ['create', '2'],
      ['create', '3'],
    ]);
  });

  describe('errors', () => {
    it('a snapshot of a table without a primary key: start() rejects with CONFIG_INVALID', async () => {
      const name = await table('k INT');
      const err = await start(name, 'beginning', { model: { snapshot: 'initial' } }).catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
      expect((err as Error).message).toContain('needs a primary key');
    });

    it('a table that does not exist: start() rejects naming it', async () => {
      const connector = await mysqlConnector({ url: SHARED_URL });
      running.push(connector);
      const missing = uniqueTable();
      const err = await connector
        .start({
          models: [{ name: 'm', settings: { table: missing }, from: 'now' }],
          sink: new RecordingSink(),
        })
        .catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.SOURCE_FAILED)).toBe(true);
      expect((err as Error).message).toContain(`test.${missing} does not exist`);
    });

    it('a user without REPLICATION SLAVE / REPLICATION CLIENT: start() rejects naming the GRANT', async () => {
      const user = uniqueName('u');
      await conn.query(`CREATE USER '${user}'@'%' IDENTIFIED BY 'pw'`);
      cleanups.push(() => conn.query(`DROP USER '${user}'@'%'`));
      await conn.query(`GRANT SELECT ON test.* TO '${user}'@'%'`);
      const name = await table('id INT PRIMARY KEY');
      const connector = await mysqlConnector({ url: `mysql://${user}:pw@127.0.0.1:3306/test` });
      running.push(connector);
      const err = await connector
        .start({ models: [{ name: 'm', settings: { table: name }, from: 'now' }], sink: new RecordingSink() })
        .catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.AUTH_FAILED)).toBe(true);
      expect((err as Error).message).toContain('lacks REPLICATION SLAVE and REPLICATION CLIENT');
      expect((err as Error).message).toContain('GRANT REPLICATION SLAVE, REPLICATION CLIENT');
      expect((err as Error).message).not.toContain('pw');
    });

    it('a checkpoint whose binlog file the server no longer has: sink.fail, nothing read', async () => {
      const name = await table('id INT PRIMARY KEY');
      const { connector, sink } = await start(name, {
        after: JSON.stringify({ f: 'mysql-bin.000000', p: 4 }),
      });
      expect(sink.failures).toHaveLength(1);
      expect(sink.failures[0]!.err.message).toContain('no longer has (or never had) the binlog');
      expect(sink.failures[0]!.err.message).toContain('re-snapshot');
      await conn.query(`INSERT INTO \`${name}\` VALUES (1)`);
      expect(connector.health().state).toBe('failed');
      expect(sink.events).toEqual([] as ChangeEvent[]);
    });

    it('a GTID checkpoint the server refuses (not in its binlog): sink.fail with the server message', async () => {
      const name = await table('id INT PRIMARY KEY');
      const { connector, sink } = await start(name, { after: JSON.stringify({ g: '0-1-999999999' }) });
      await waitFor(() => sink.failures.length === 1, 'the failure');
      expect(sink.failures[0]!.err.message).toContain('no longer has (or never had) the binlog');
      expect(sink.failures[0]!.err.message).toContain('0-1-999999999');
      expect(connector.health().state).toBe('failed');
    });

    it('a checkpoint of another connector: CHECKPOINT_FAILED', async () => {
      const name = await table('id INT PRIMARY KEY');
      const err = await start(name, { after: '12345' }).catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.CHECKPOINT_FAILED)).toBe(true);
    });

    it('an unknown setting: CONFIG_INVALID at initialize', async () => {
      const err = await mysqlConnector({ url: SHARED_URL, slot: 'x' }).catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
      expect((err as Error).message).toMatch(
        /^datasources\.[\w-]+\.slot: unknown setting; the settings here are url, host/,
      );
    });
  });
});
