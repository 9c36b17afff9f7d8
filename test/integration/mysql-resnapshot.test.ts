/**
 * Re-snapshot of a running MariaDB model (contract point 9: the model's binlog stream is taken
 * over by a new one from the last row pushed, with a snapshot window), against the shared
 * MariaDB: while a writer inserts and updates without pause, every version written is streamed
 * exactly once across the takeover, every row nobody touched comes again as one `snapshot`
 * event, no stale row follows a newer change, and the last event per key is the table; a second
 * request while it runs answers "running"; the errors (no primary key, unknown model, not
 * started); and through the app, a stop mid-snapshot resumes it after its cursor.
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { EventConnector } from '../../src/connectors/contract';
import { decodePosition } from '../../src/connectors/mysql/position';
import { ErrorCode, isEvpubError } from '../../src/errors';
import type { ChangeEvent } from '../../src/events/change-event';
import { RecordingSink } from '../conformance/connector.suite';
import {
  SHARED_URL,
  ensureSignalTable,
  mysqlConnector,
  sharedConnection,
  uniqueTable,
} from '../helpers/mariadb';
import { quietLogger, subscriber } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
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

async function start(name: string, sink: RecordingSink, chunk = 100): Promise<EventConnector> {
  const connector = await mysqlConnector({ url: SHARED_URL, snapshot: 'never', snapshotChunk: chunk });
  running.push(connector);
  await connector.start({ models: [{ name: 'm', settings: { table: name }, from: 'now' }], sink });
  return connector;
}

const versionOf = (e: ChangeEvent): number => Number((e.after ?? e.before)!.v);

describe('mysql re-snapshot of a running model', () => {
  it('beside a writer: every version streamed once, untouched rows snapshotted once, last event per key is the table', async () => {
    const rows = 2_000;
    const name = await table('id INT PRIMARY KEY, v INT NOT NULL', rows);
    const sink = new RecordingSink();
    const connector = await start(name, sink);

    // One writer, its statements chained: versions grow in commit order. Inserts of new keys
    // and updates of existing ones only, so each version is in exactly one streamed event.
    const writer = await sharedConnection();
    let version = 0;
    let writing = true;
    let nextKey = 10_001;
    const touched = new Set<number>();
    const writeLoad = async () => {
      while (writing) {
        const v = ++version;
        if (v % 2 === 0) {
          const id = 1 + Math.floor(Math.random() * rows);
          touched.add(id);
          await writer.query(`UPDATE \`${name}\` SET v = ? WHERE id = ?`, [v, id]);
        } else {
          touched.add(nextKey);
          await writer.query(`INSERT INTO \`${name}\` VALUES (?, ?)`, [nextKey++, v]);
        }
      }
    };
    const load = writeLoad();
    cleanups.push(async () => {
      writing = false;
      await load.catch(() => undefined);
      await writer.end();
    });
    await waitFor(() => sink.events.length >= 20, 'the stream to carry the writes');

    // The window fills at the 500th snapshot row: the snapshot waits, and is surely running.
    const push = sink.push.bind(sink);
    let snapshotRows = 0;
    sink.push = (event) => {
      push(event);
      if (event.op === 'snapshot' && ++snapshotRows === 500) sink.full = true;
      return !sink.full;
    };
    const startedAt = sink.events.length;
    expect(await connector.snapshot!('m')).toEqual({ started: true, done: 0 });
    await waitFor(() => sink.full, 'the 500th snapshot row');
    const again = await connector.snapshot!('m');
    expect(again.started).toBe(false);
    expect(again.total).toBeGreaterThanOrEqual(rows);
    sink.release();
    await waitFor(
      () => sink.statuses.some((s) => s.type === 'snapshot' && s.done === s.total && s.done > 0),
      'the snapshot to finish',
      60_000,
    );
    writing = false;
    await load;
    await writer.query(`INSERT INTO \`${name}\` VALUES (999999, 0)`); // the end marker
    await waitFor(() => sink.keys().includes('999999'), 'the stream to catch up');
    expect(sink.failures).toEqual([]);

    // No change lost or repeated across the takeover of the stream.
    const streamed = sink.events.filter((e) => e.op !== 'snapshot' && e.key !== '999999').map(versionOf);
    expect(streamed.length).toBe(version);
    expect(new Set(streamed).size).toBe(version);
    // Per key, versions never go back: no stale snapshot row after a change.
    const seen = new Map<string, ChangeEvent[]>();
    for (const e of sink.events) seen.set(e.key, [...(seen.get(e.key) ?? []), e]);
    for (const [key, events] of seen) {
      const versions = events.map(versionOf);
      expect(versions, `versions of key ${key}`).toEqual([...versions].sort((a, b) => a - b));
    }
    // The last event per key is the table's row.
    const [state] = await conn.query<RowDataPacket[]>(`SELECT id, v FROM \`${name}\``);
    for (const row of state)
      expect(versionOf(seen.get(String(row.id))!.at(-1)!), `row ${row.id}`).toBe(row.v);
    // Every row nobody touched came again, once, as a snapshot event, in key order.
    const snapshot = sink.events.slice(startedAt).filter((e) => e.op === 'snapshot');
    const keys = snapshot.map((e) => Number(e.key));
    expect(keys).toEqual([...keys].sort((a, b) => a - b));
    const counts = new Map<number, number>();
    for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1);
    for (let id = 1; id <= rows; id++) {
      if (!touched.has(id)) expect(counts.get(id), `row ${id}`).toBe(1);
    }
    expect(connector.health().state).toBe('streaming');
    process.stdout.write(
      `mysql re-snapshot beside a writer: ${keys.length} snapshot rows, ${streamed.length} streamed changes\n`,
    );
  });

  it('rejects a table without a primary key, an unknown model, and a connector not started', async () => {
    const name = await table('id INT, v INT NOT NULL');
    const sink = new RecordingSink();
    const connector = await start(name, sink);
    const noKey = await connector.snapshot!('m').catch((e: unknown) => e);
    expect(isEvpubError(noKey, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect((noKey as Error).message).toContain('needs a primary key');
    const unknown = await connector.snapshot!('nope').catch((e: unknown) => e);
    expect(isEvpubError(unknown, ErrorCode.INVALID_STATE)).toBe(true);
    // The stream goes on untouched.
    await conn.query(`INSERT INTO \`${name}\` VALUES (1, 1)`);
    await waitFor(() => sink.events.some((e) => e.op === 'create'), 'a change after the refusals');
    const idle = await mysqlConnector({ url: SHARED_URL });
    const notStarted = await idle.snapshot!('m').catch((e: unknown) => e);
    expect(isEvpubError(notStarted, ErrorCode.INVALID_STATE)).toBe(true);
  });

  it('through the app: a stop mid-snapshot resumes after its cursor on the next start', async () => {
    const rows = 3_000;
    const name = await table('id INT PRIMARY KEY, v INT NOT NULL', rows);
    const store = new MemoryCheckpointStore();
    const broker = `memory://${uniqueName('b')}`;
    const topic = `evpub/test/${uniqueName('resnap')}`;
    const app = () => {
      const a = evpub({
        logger: quietLogger(),
        brokers: { default: broker },
        checkpoints: store,
        publisher: { maxInFlight: 50 },
      });
      const ds = a.dataSource('my', {
        connector: 'mysql',
        url: SHARED_URL,
        snapshotChunk: 100,
        heartbeat: 1_000,
      });
      a.model('m', { dataSource: ds, topic, from: 'now', settings: { table: name } });
      return a;
    };
    type Data = { op: string; key: string };
    const dataOf = (got: { json: Record<string, unknown> }[]) => got.map((m) => m.json.data as Data);

    const sub1 = await subscriber(broker, topic);
    cleanups.push(() => sub1.client.end());
    const first = app();
    cleanups.push(() => first.stop());
    await first.start();
    let stopping: Promise<void> | undefined;
    sub1.client.on('message', () => {
      if (sub1.got.length >= 1_000) stopping ??= first.stop();
    });
    expect(await first.resnapshot('my/m')).toEqual({ started: true, done: 0 });
    await waitFor(() => stopping !== undefined, 'the first run to be stopping');
    await stopping;
    const checkpoint = await store.load('my/m');
    const resumeAfter = Number(decodePosition(checkpoint!).snapshot!.key![0]);
    expect(resumeAfter).toBeGreaterThanOrEqual(800);
    expect(resumeAfter).toBeLessThan(rows);
    const read1 = new Set(dataOf(sub1.got).map((d) => Number(d.key)));
    await sub1.client.end();

    const sub2 = await subscriber(broker, topic);
    cleanups.push(() => sub2.client.end());
    const second = app();
    cleanups.push(() => second.stop());
    await second.start();
    await waitFor(
      () => dataOf(sub2.got).some((d) => d.key === String(rows)),
      'the snapshot to finish in the second run',
      60_000,
    );
    const read2 = dataOf(sub2.got).map((d) => Number(d.key));
    expect(dataOf(sub2.got).every((d) => d.op === 'snapshot')).toBe(true);
    expect(read2).toEqual(Array.from({ length: rows - resumeAfter }, (_, i) => resumeAfter + 1 + i));
    for (let id = 1; id <= rows; id++) {
      if (!read1.has(id) && !read2.includes(id)) throw new Error(`row ${id} was never read`);
    }
    await waitFor(() => second.status().feeds['my/m']!.state === 'streaming', 'streaming again');
  });
});
