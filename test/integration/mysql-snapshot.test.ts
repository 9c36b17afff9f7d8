/**
 * MySQL/MariaDB snapshots alongside the binlog stream (watermarked chunks, snapshot.ts), against
 * the shared MariaDB: writes during the snapshot never leave a stale row after a newer change,
 * the stream is not held back by a long snapshot, a restart mid-snapshot resumes after the last
 * chunk done (through the app, with file checkpoints), composite keys, and the signal table's
 * errors. Every test uses its own tables and drops them.
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { FileCheckpointStore } from '../../src/checkpoints/file';
import type { EventConnector } from '../../src/connectors/contract';
import { decodePosition } from '../../src/connectors/mysql/position';
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
import { quietLogger, subscriber, tempDir } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { startTcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

let conn: Connection;
const tables: string[] = [];
const running: EventConnector[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  conn = await sharedConnection();
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

async function table(columns: string, rows?: number): Promise<string> {
  const name = uniqueTable();
  tables.push(name);
  await conn.query(`CREATE TABLE \`${name}\` (${columns})`);
  if (rows) await conn.query(`INSERT INTO \`${name}\` SELECT seq, 0 FROM seq_1_to_${rows}`);
  return name;
}

async function start(
  name: string,
  from: StartFrom,
  sink: RecordingSink,
  settings: Record<string, unknown> = {},
): Promise<EventConnector> {
  const connector = await mysqlConnector({ url: SHARED_URL, snapshot: 'initial', ...settings });
  running.push(connector);
  await connector.start({ models: [{ name: 'm', settings: { table: name }, from }], sink });
  return connector;
}

/** The version an event shows of its row: `after.v`, or for a delete the deleted row's `v`. */
function versionOf(e: ChangeEvent): number {
  return Number((e.after ?? e.before)!.v);
}

/** The snapshot is over: a mark without a snapshot cursor. */
function snapshotDone(sink: RecordingSink): boolean {
  return sink.marks.some((m) => decodePosition(m.position).snapshot === undefined);
}

describe('mysql snapshot alongside the binlog stream', () => {
  it('writes during the snapshot: never a stale row after a newer change, the last event per key is the table', async () => {
    const name = await table('id INT PRIMARY KEY, v INT NOT NULL', 3_000);
    // One writer connection, its statements chained: versions grow in commit order.
    const writer = await sharedConnection();
    let version = 0;
    let chain: Promise<unknown> = Promise.resolve();
    const write = (sql: string, id: number): Promise<unknown> =>
      (chain = chain.then(() => writer.query(sql.replace('@v', String(++version)), [id])));
    const update = (id: number) => write(`UPDATE \`${name}\` SET v = @v WHERE id = ?`, id);
    const insert = (id: number) => write(`INSERT INTO \`${name}\` VALUES (?, @v)`, id);
    const remove = (id: number) => write(`DELETE FROM \`${name}\` WHERE id = ?`, id);
    const FIXED = [5, 10, 1_000, 2_500, 2_600, 5_000];
    let writing = true;
    let writes = 0;
    // Writes begin once the stream runs (start() resolved): every one of them is streamed.
    const writeLoad = async () => {
      while (writing) {
        const id = 1 + Math.floor(Math.random() * 3_500);
        if (FIXED.includes(id)) continue; // written once, below
        const op = writes % 3;
        if (op === 0) await update(id);
        else if (op === 1)
          await write(`INSERT INTO \`${name}\` VALUES (?, @v) ON DUPLICATE KEY UPDATE v = VALUES(v)`, id);
        else await remove(id);
        writes++;
      }
    };
    let load: Promise<void> = Promise.resolve();
    cleanups.push(async () => {
      writing = false;
      await load.catch(() => undefined);
      await writer.end();
    });
    // The window fills at the 1,000th snapshot row: the test then writes rows already read, the
    // chunk in progress and rows not read yet while the snapshot waits, then lets it go on.
    const sink = new RecordingSink();
    const push = sink.push.bind(sink);
    let snapshotRows = 0;
    sink.push = (event) => {
      push(event);
      if (event.op === 'snapshot' && ++snapshotRows === 1_000) sink.full = true;
      return !sink.full;
    };
    await start(name, 'now', sink, { snapshotChunk: 100 });
    load = writeLoad();
    await waitFor(() => sink.full, 'the 1,000th snapshot row');
    const before = writes;
    await waitFor(() => writes > before + 20, 'writes while the snapshot waits');
    await Promise.all([update(5), update(2_500), remove(10), remove(2_600), insert(5_000), update(1_000)]);
    sink.release();
    await waitFor(() => snapshotDone(sink), 'the snapshot to finish', 60_000);
    writing = false;
    await load;
    await insert(999_999); // the end marker
    await waitFor(() => sink.keys().includes('999999'), 'the stream to catch up');

    // Per key, the versions published never go back: no stale snapshot row after a change.
    const seen = new Map<string, ChangeEvent[]>();
    for (const e of sink.events) seen.set(e.key, [...(seen.get(e.key) ?? []), e]);
    for (const [key, events] of seen) {
      const versions = events.map(versionOf);
      expect(versions, `versions of key ${key}`).toEqual([...versions].sort((a, b) => a - b));
    }
    // The last event per key is the table's row (or its delete).
    const [rows] = await conn.query<RowDataPacket[]>(`SELECT id, v FROM \`${name}\``);
    const state = new Map(rows.map((r) => [String(r.id), Number(r.v)]));
    for (const [key, events] of seen) {
      const last = events.at(-1)!;
      if (last.op === 'delete') expect(state.has(key), `key ${key} deleted`).toBe(false);
      else expect(versionOf(last), `key ${key}`).toBe(state.get(key));
    }
    for (const key of state.keys()) expect(seen.has(key), `row ${key} published`).toBe(true);
    // A row nobody touched is read exactly once; the row deleted before its chunk is never read.
    const touched = new Set(sink.events.filter((e) => e.op !== 'snapshot').map((e) => e.key));
    for (let id = 1; id <= 3_000; id++) {
      if (touched.has(String(id))) continue;
      expect(
        seen.get(String(id))?.map((e) => e.op),
        `row ${id}`,
      ).toEqual(['snapshot']);
    }
    expect(seen.get('2600')?.some((e) => e.op === 'snapshot')).toBe(false);
    expect(seen.get('2600')?.at(-1)?.op).toBe('delete');
    const snapshotKeys = sink.events.filter((e) => e.op === 'snapshot').map((e) => Number(e.key));
    expect(snapshotKeys).toEqual([...snapshotKeys].sort((a, b) => a - b));
    expect(sink.statuses.filter((s) => s.type === 'snapshot').length).toBeGreaterThan(30);
    process.stdout.write(
      `mysql snapshot with writes: ${snapshotKeys.length} snapshot rows, ${sink.events.length - snapshotKeys.length} streamed changes, ${writes} writes\n`,
    );
  });

  it('the stream is not held back: a change made mid-snapshot is published before the chunks read after it', async () => {
    const name = await table('id INT PRIMARY KEY, v INT NOT NULL', 4_000);
    // A slow publisher: every push fills the window, room comes back on the next turn of the loop.
    const sink = new RecordingSink();
    const push = sink.push.bind(sink);
    let snapshotRows = 0;
    let changed: Promise<unknown> | undefined;
    sink.push = (event) => {
      push(event);
      if (event.op === 'snapshot' && ++snapshotRows === 2_000) {
        changed = conn.query(`UPDATE \`${name}\` SET v = -1 WHERE id IN (1, 4000)`);
      }
      return false;
    };
    sink.drain = () => {
      sink.drains += 1;
      return new Promise((resolve) => setImmediate(resolve));
    };
    await start(name, 'now', sink, { snapshotChunk: 20 });
    await waitFor(() => snapshotDone(sink), 'the snapshot to finish', 60_000);
    await changed;
    const at = sink.events.findIndex((e) => e.op === 'update');
    expect(at).toBeGreaterThan(0);
    const after = sink.events.slice(at).filter((e) => e.op === 'snapshot');
    // Only the chunks whose watermarks were written before the update may come after 2,000;
    // every chunk read after it comes after it.
    expect(snapshotRows - after.length).toBeLessThan(2_000 + 3 * 20);
    expect(after.length).toBeGreaterThan(1_900);
    expect(sink.events.filter((e) => e.op === 'update').map((e) => e.key)).toEqual(['1', '4000']);
    // Row 4000, read after its update, shows it; row 1 was read before it.
    const last = (key: string) => sink.events.filter((e) => e.key === key).at(-1)!;
    expect([last('4000').op, last('4000').after!.v]).toEqual(['snapshot', -1]);
    expect([last('1').op, last('1').after!.v]).toEqual(['update', -1]);
    expect(sink.events.filter((e) => e.op === 'snapshot').length).toBe(4_000);
  });

  it('composite primary keys: read in key order across chunks, each row once', async () => {
    const name = uniqueTable();
    tables.push(name);
    await conn.query(`CREATE TABLE \`${name}\` (a INT, b VARCHAR(8), v INT, PRIMARY KEY (a, b))`);
    await conn.query(
      `INSERT INTO \`${name}\` SELECT seq DIV 10, CONCAT('k', seq MOD 10), seq FROM seq_0_to_249`,
    );
    const sink = new RecordingSink();
    await start(name, 'beginning', sink, { snapshotChunk: 7 });
    await waitFor(() => snapshotDone(sink), 'the snapshot to finish');
    const keys = sink.events.map((e) => JSON.parse(e.key) as [number, string]);
    expect(keys).toHaveLength(250);
    expect(keys).toEqual(Array.from({ length: 250 }, (_, i) => [Math.floor(i / 10), `k${i % 10}`]));
  });

  it('a restart of the app mid-snapshot resumes after the last chunk done; nothing missing', async () => {
    const rows = 10_000;
    const chunk = 100;
    const name = await table('id INT PRIMARY KEY, v INT NOT NULL', rows);
    const dir = await tempDir('evpub-mysql-snapshot-');
    cleanups.push(() => dir.remove());
    const broker = `memory://${uniqueName('b')}`;
    const topic = `evpub/test/${uniqueName('snap')}`;
    const app = () => {
      const a = evpub({
        logger: quietLogger(),
        brokers: { default: broker },
        checkpoints: { store: 'file', path: dir.dir },
        publisher: { maxInFlight: 50 },
      });
      const ds = a.dataSource('my', {
        connector: 'mysql',
        url: SHARED_URL,
        snapshot: 'initial',
        snapshotChunk: chunk,
        heartbeat: 1_000,
      });
      a.model('m', { dataSource: ds, topic, from: 'now', settings: { table: name } });
      return a;
    };
    type Data = { op: string; key: string; after: { v: number } | null };
    const dataOf = (got: { json: Record<string, unknown> }[]) => got.map((m) => m.json.data as Data);

    // First run: stopped (gracefully) once 2,500 events reached the subscriber.
    const sub1 = await subscriber(broker, topic);
    cleanups.push(() => sub1.client.end());
    const first = app();
    cleanups.push(() => first.stop());
    let stopping: Promise<void> | undefined;
    sub1.client.on('message', () => {
      if (sub1.got.length >= 2_500) stopping ??= first.stop();
    });
    await first.start();
    await waitFor(() => stopping !== undefined, 'the first run to be stopping');
    await stopping;
    const checkpoint = await new FileCheckpointStore({ path: dir.dir }).load('my/m');
    const cursor = decodePosition(checkpoint!).snapshot!;
    const resumeAfter = Number(cursor.key![0]);
    const run1 = dataOf(sub1.got);
    expect(resumeAfter).toBeGreaterThanOrEqual(2_000);
    expect(resumeAfter).toBeLessThan(rows);
    await sub1.client.end();

    // While stopped: a row already read and one not read yet change.
    await conn.query(`UPDATE \`${name}\` SET v = -1 WHERE id IN (1, 9000)`);

    const sub2 = await subscriber(broker, topic);
    cleanups.push(() => sub2.client.end());
    const second = app();
    cleanups.push(() => second.stop());
    await second.start();
    await waitFor(
      () => dataOf(sub2.got).some((d) => d.op === 'snapshot' && d.key === String(rows)),
      'the snapshot to finish in the second run',
      60_000,
    );
    await waitFor(() => dataOf(sub2.got).filter((d) => d.op === 'update').length >= 2, 'both updates');
    const run2 = dataOf(sub2.got);
    const read2 = run2.filter((d) => d.op === 'snapshot').map((d) => Number(d.key));
    // The second run reads on from the checkpoint's cursor: no row of an earlier chunk again.
    expect(read2).toEqual(Array.from({ length: rows - resumeAfter }, (_, i) => resumeAfter + 1 + i));
    const read1 = new Set(run1.filter((d) => d.op === 'snapshot').map((d) => Number(d.key)));
    const again = read2.filter((k) => read1.has(k));
    expect(again.length).toBeLessThanOrEqual(chunk);
    // Nothing missing; the changes made while stopped are the last word on their rows.
    for (let id = 1; id <= rows; id++) {
      if (!read1.has(id) && !read2.includes(id)) throw new Error(`row ${id} was never read`);
    }
    expect(run2.filter((d) => d.op === 'update').map((d) => d.key)).toEqual(['1', '9000']);
    const last = (key: string) => run2.filter((d) => d.key === key).at(-1)!;
    expect(last('1').after!.v).toBe(-1);
    expect(last('9000').after!.v).toBe(-1);
    process.stdout.write(
      `mysql snapshot restart: first run ${run1.length} events, resumed after row ${resumeAfter}, ${again.length} rows read twice\n`,
    );
  });

  it('a connection cut mid-snapshot: stream and snapshot reconnect, every row read, in key order', async () => {
    const name = await table('id INT PRIMARY KEY, v INT NOT NULL', 2_000);
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: 3306 });
    cleanups.push(() => proxy.close());
    const sink = new RecordingSink();
    const push = sink.push.bind(sink);
    sink.push = (event) => {
      push(event);
      if (sink.events.length === 550) sink.full = true;
      return !sink.full;
    };
    const connector = await mysqlConnector({
      url: `mysql://root@127.0.0.1:${proxy.port}/test`,
      snapshot: 'initial',
      snapshotChunk: 100,
    });
    running.push(connector);
    await connector.start({ models: [{ name: 'm', settings: { table: name }, from: 'now' }], sink });
    await waitFor(() => sink.full, 'the 550th row');
    await proxy.stop();
    await waitFor(() => sink.statuses.some((s) => s.type === 'reconnecting'), 'a reconnect attempt');
    await conn.query(`UPDATE \`${name}\` SET v = -1 WHERE id IN (3, 1500)`); // while cut
    await proxy.start();
    sink.release();
    await waitFor(() => snapshotDone(sink), 'the snapshot to finish', 30_000);
    await waitFor(() => sink.events.filter((e) => e.op === 'update').length >= 2, 'both updates');
    // Rows pushed before the cut but not past the stream's restart point may come twice.
    const read = sink.events.filter((e) => e.op === 'snapshot').map((e) => Number(e.key));
    expect(new Set(read)).toEqual(new Set(Array.from({ length: 2_000 }, (_, i) => i + 1)));
    const last = (key: string) => sink.events.filter((e) => e.key === key).at(-1)!;
    expect(last('3').after!.v).toBe(-1);
    expect(last('1500').after!.v).toBe(-1);
    expect(connector.health().state).toBe('streaming');
  });

  describe('errors', () => {
    it('a missing signal table is created; one in a database that does not exist: start() rejects naming the setting', async () => {
      const name = await table('id INT PRIMARY KEY, v INT NOT NULL', 3);
      const missing = uniqueName('nosignal');
      cleanups.push(() => conn.query(`DROP TABLE IF EXISTS test.\`${missing}\``));
      const sink = new RecordingSink();
      await start(name, 'now', sink, { signalTable: missing });
      await waitFor(() => snapshotDone(sink), 'the snapshot to finish');
      expect(sink.keys()).toEqual(['1', '2', '3']);

      const nowhere = `${uniqueName('nodb')}.signals`;
      const err = await start(name, 'now', new RecordingSink(), { signalTable: nowhere }).catch(
        (e: unknown) => e,
      );
      expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
      expect((err as Error).message).toContain('signalTable');
      expect((err as Error).message).toContain('CREATE TABLE');
    });

    it('a signal table in another database, by "database.table"; a misspelt setting names the nearest', async () => {
      const name = await table('id INT PRIMARY KEY, v INT NOT NULL', 5);
      const db = uniqueName('sigdb');
      await conn.query(`CREATE DATABASE \`${db}\``);
      cleanups.push(() => conn.query(`DROP DATABASE \`${db}\``));
      await conn.query(
        `CREATE TABLE \`${db}\`.signals (id VARCHAR(255) PRIMARY KEY, watermark VARCHAR(64) NOT NULL)`,
      );
      const sink = new RecordingSink();
      await start(name, 'now', sink, { signalTable: `${db}.signals`, snapshotChunk: 2 });
      await waitFor(() => snapshotDone(sink), 'the snapshot to finish');
      expect(sink.keys()).toEqual(['1', '2', '3', '4', '5']);

      const typo = await mysqlConnector({ url: SHARED_URL, snapshotChunks: 10 }).catch((e: unknown) => e);
      expect(isEvpubError(typo, ErrorCode.CONFIG_INVALID)).toBe(true);
      expect((typo as Error).message).toContain('did you mean snapshotChunk?');
    });
  });
});
