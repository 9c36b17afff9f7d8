/**
 * A model's snapshot: its table's rows as `snapshot` events, read in primary key order in keyset
 * chunks (`WHERE pk > cursor ORDER BY pk LIMIT n`, see keysetAfter) while the model's binlog
 * stream runs.
 *
 * Chunks are merged into the stream with watermarks (the approach of Netflix's DBLog):
 * 1. The snapshot writes a *low* watermark, a fresh random value, to the signal table (one
 *    row per datasource and model, `INSERT ... ON DUPLICATE KEY UPDATE`): its own transaction,
 *    so it lands in the binlog between the changes committed before it and those after.
 * 2. It SELECTs the next chunk and keeps its rows in memory.
 * 3. It writes a *high* watermark the same way: it is also the next chunk's low watermark.
 * The stream (binlog.ts) decodes the signal table's rows next to the model's. From the low
 * watermark to the high one, every key it sees change (insert, update (old and new key),
 * delete; a TRUNCATE: every key) is dropped from the chunk: the stream itself publishes that
 * row's newer state. At the high watermark the rows left are pushed, as `snapshot` events, in
 * the stream's order, before anything the binlog has after it. The next chunk is read while the
 * stream makes its way to that watermark, so at most two chunks wait in memory.
 *
 * Why no stale row follows a newer change: the chunk is read after the low watermark committed
 * and before the high one. A row left in the chunk had no change between the two, so the value
 * read is its value at the low watermark, i.e. its last change before it, which the stream has
 * already published (or it was never changed since the stream's start). Every later change of
 * it comes after the high watermark, hence after the snapshot event. A row deleted before its
 * chunk is read is not read, and its delete is streamed. So for every key, the last event is
 * the row's latest state, and every row present is read once; only a restart or reconnect
 * repeats events (at-least-once, event ids stable).
 *
 * Progress: every position the model's stream produces while the snapshot runs carries the
 * cursor (position.ts `s`): the primary key of the last row pushed of the last chunk, and the
 * rows done. A restart from such a checkpoint streams from its binlog point and reads the
 * next chunk after the cursor: at most the chunk in progress is read again, and the changes
 * after the checkpoint come again from the stream. Rows pushed of a chunk carry their own key as
 * the cursor; the chunk's end is marked (`sink.mark`) after them, with the chunk's last key even
 * when the stream dropped that row. The last chunk (fewer rows than the chunk size) marks a
 * position without a cursor: a restart then only streams.
 *
 * The signal table (settings `signalTable`,
 * `(id VARCHAR(255) PRIMARY KEY, watermark VARCHAR(64) NOT NULL)`) is created by evpub when it is
 * missing and the connector's user may create it; otherwise the operator makes it, and the user
 * needs INSERT and UPDATE on it. It must be written to the binlog (not excluded by
 * `binlog_ignore_db` / `binlog_do_db`: checkSignalTable), or no chunk ever completes.
 */
import { randomUUID } from 'node:crypto';
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { eventId, type ChangeEvent, type Row } from '../../events/change-event';
import { ErrorCode, EvpubError } from '../../errors';
import type { Logger } from '../../logger';
import type { ChangeSink } from '../contract';
import { decodeKey, encodeKey, type SnapshotCursor } from './position';
import type { TableRef } from './settings';
import { decodeRow, keyOf, quoteId, quoteTable, type TableMeta } from './values';

/** The columns of the signal table, for messages. */
export const SIGNAL_DDL = '(id VARCHAR(255) PRIMARY KEY, watermark VARCHAR(64) NOT NULL)';

/** A snapshot event's idempotency key: the same row content read again gets the same id. */
export function snapshotEventId(meta: TableMeta, key: string, after: Record<string, unknown>): string {
  return eventId(meta.database, meta.table, 'snapshot', key, JSON.stringify(after));
}

/** What the stream pushes at a chunk's high watermark. */
export interface ChunkRelease {
  /** The chunk's rows nobody changed during its window, each with the cursor after it. */
  rows: { event: Omit<ChangeEvent, 'position'>; cursor: SnapshotCursor }[];
  /** The cursor after the whole chunk; null when it was the last one (the snapshot is done). */
  next: SnapshotCursor | null;
  /** Call once the rows and the chunk's end are pushed: the snapshot goes on. */
  pushed: () => void;
}

/** The stream's side of a running snapshot (binlog.ts calls these in binlog order). */
export interface SnapshotWindow {
  /** A row of the model's table changed (key as `keyOf` gives it). */
  changed(key: string): void;
  /** The model's table was truncated. */
  truncated(): void;
  /** A watermark value read from the signal table; at the chunk's high watermark, its rows. */
  watermark(value: string): ChunkRelease | undefined;
}

export interface SnapshotOptions {
  meta: TableMeta;
  signalTable: TableRef;
  /** The signal table row this model's snapshot writes (`datasource/model`). */
  signalId: string;
  /** The connector's user, for the GRANT in messages. */
  user: string;
  datasource: string;
  model: string;
  chunkSize: number;
  /** Where the snapshot resumes (key null: from the first row). */
  cursor: SnapshotCursor;
  sink: ChangeSink;
  logger: Logger;
  signal: AbortSignal;
}

interface Chunk {
  /** The watermark that opens its window (the previous chunk's high one, but for the first). */
  low: string;
  high: string;
  open: boolean;
  truncated: boolean;
  changed: Set<string>;
  rows?: { key: string; after: Row; cursor: unknown[] }[];
  readAt?: string;
  last: boolean;
  /** Rows done before it and after it, set when the stream reaches its high watermark. */
  doneBefore?: number;
  doneAfter?: number;
  /** Resolves once its rows and its end are pushed. */
  pushed: Promise<void>;
  /** Called by the stream once they are. */
  release: () => void;
}

const ER_NO_SUCH_TABLE = 1146;
/** CREATE command denied (table or database level). */
const isDenied = (err: unknown): boolean => [1142, 1044].includes((err as { errno?: number }).errno ?? 0);

/** Server errors meaning the signal table is missing, misshapen or not writable by this user. */
const SIGNAL_ERRORS = new Set([1146, 1049, 1054, 1142, 1143, 1044, 1364, 1406]);

/**
 * The error for a missing or unwritable signal table, naming the setting and the fix; any other
 * error (a lost connection) as it is.
 */
export function signalTableError(signal: TableRef, user: string, cause: unknown): unknown {
  const errno = (cause as { errno?: number }).errno;
  if (errno === undefined || !SIGNAL_ERRORS.has(errno)) return cause;
  const table = quoteTable(signal);
  const problem =
    errno === 1146 || errno === 1049
      ? `the snapshot signal table ${table} does not exist`
      : `cannot write the snapshot signal table ${table} (${(cause as Error).message})`;
  return new EvpubError(
    ErrorCode.CONFIG_INVALID,
    `mysql: ${problem} (setting signalTable): a snapshot writes its watermarks there; create it with ` +
      `\`CREATE TABLE ${table} ${SIGNAL_DDL}\` and \`GRANT INSERT, UPDATE ON ${table} TO '${user}'\`, ` +
      'or set signalTable to "database.table" of one that exists',
    { cause, context: { setting: 'signalTable', table: `${signal.database}.${signal.table}` } },
  );
}

/** Writes `value` as the model's watermark: rejects with the driver's error. */
async function writeWatermark(
  conn: Connection,
  o: Pick<SnapshotOptions, 'signalTable' | 'signalId'>,
  value: string,
) {
  await conn.query(
    `INSERT INTO ${quoteTable(o.signalTable)} (id, watermark) VALUES (?, ?) ON DUPLICATE KEY UPDATE watermark = VALUES(watermark)`,
    [o.signalId, value],
  );
}

/**
 * Checks at start that the signal table exists (creating it when it does not and this user
 * may), this user may write it (one watermark write, which the stream ignores), and the server's
 * binlog filters (`binlog_do_db`, `binlog_ignore_db`) let its rows into the binlog. Throws
 * CONFIG_INVALID naming signalTable.
 */
export async function checkSignalTable(
  conn: Connection,
  o: Pick<SnapshotOptions, 'signalTable' | 'signalId'>,
  user: string,
): Promise<void> {
  try {
    await writeWatermark(conn, o, `check:${randomUUID()}`);
  } catch (err) {
    if ((err as { errno?: number }).errno !== ER_NO_SUCH_TABLE)
      throw signalTableError(o.signalTable, user, err);
    try {
      await conn.query(`CREATE TABLE IF NOT EXISTS ${quoteTable(o.signalTable)} ${SIGNAL_DDL}`);
      await writeWatermark(conn, o, `check:${randomUUID()}`);
    } catch (createErr) {
      // Not allowed to create it (or its database is missing): the operator makes it.
      throw signalTableError(o.signalTable, user, isDenied(createErr) ? err : createErr);
    }
  }
  let filters: RowDataPacket | undefined;
  try {
    [[filters]] = await conn.query<RowDataPacket[]>('SHOW MASTER STATUS');
  } catch {
    return; // MySQL 8.4 names it SHOW BINARY LOG STATUS; the filters are rare: not checked there
  }
  const list = (value: unknown): string[] =>
    (typeof value === 'string' ? value : '')
      .split(',')
      .map((d) => d.trim())
      .filter((d) => d !== '');
  const only = list(filters?.Binlog_Do_DB);
  const ignored = list(filters?.Binlog_Ignore_DB);
  const db = o.signalTable.database;
  if (ignored.includes(db) || (only.length > 0 && !only.includes(db))) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `mysql: the snapshot signal table ${quoteTable(o.signalTable)} (setting signalTable) is in a database the ` +
        `server keeps out of its binlog (binlog_do_db: ${only.join(',') || '-'}, binlog_ignore_db: ` +
        `${ignored.join(',') || '-'}), so the stream would never see a watermark: put it in a logged database`,
      { context: { setting: 'signalTable' } },
    );
  }
}

/**
 * Runs one model's snapshot against its stream: the object is the stream's window (binlog.ts);
 * `run(conn)` reads the chunks on a query connection and resolves when the last chunk was
 * pushed (or the signal aborted). It rejects on a query error; called again (with a new
 * connection) it goes on after the last chunk pushed: the chunks not pushed yet are forgotten,
 * and the stream then ignores their watermarks.
 *
 * Pipelined, with one watermark write per chunk: a chunk's high watermark is the next chunk's
 * low one, and the next chunk is read while the stream is still on its way to that
 * watermark. At most two chunks are in memory: the one the stream is to push, and the one
 * being read (before reading, the loop waits until the chunk before the previous one is pushed).
 */
export class ChunkedSnapshot implements SnapshotWindow {
  /** The chunks whose watermarks are written and that are not pushed yet, oldest first. */
  private chunks: Chunk[] = [];
  /** After the last chunk pushed: its last key (raw values), the rows done. */
  private cursor: unknown[] | null;
  private done: number;
  private total: number | undefined;
  /** Rows done as of the last chunk the stream released (binlog order). */
  private released: number;

  constructor(private readonly o: SnapshotOptions) {
    this.cursor = o.cursor.key === null ? null : decodeKey(o.cursor.key);
    this.done = this.released = o.cursor.done;
    if (o.meta.primaryKey.length === 0) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `mysql: snapshot of ${o.meta.database}.${o.meta.table} needs a primary key to read it in order: ` +
          'add one, or set the model\'s snapshot: "never"',
        { context: { table: `${o.meta.database}.${o.meta.table}` } },
      );
    }
  }

  /** Rows published so far (as of the last chunk pushed), and the count when read. */
  progress(): { done: number; total?: number } {
    return { done: this.done, ...(this.total !== undefined ? { total: this.total } : {}) };
  }

  changed(key: string): void {
    for (const chunk of this.chunks) if (chunk.open) chunk.changed.add(key);
  }

  truncated(): void {
    for (const chunk of this.chunks) if (chunk.open) chunk.truncated = true;
  }

  watermark(value: string): ChunkRelease | undefined {
    let release: ChunkRelease | undefined;
    for (const chunk of this.chunks) {
      // High first: the same value closes one chunk's window and opens the next one's.
      if (value === chunk.high && chunk.rows) {
        chunk.open = false;
        release = this.releaseOf(chunk);
      } else if (value === chunk.low) chunk.open = true;
    }
    return release;
  }

  /**
   * The rows of a chunk the stream reached the high watermark of. A reconnect may read that
   * watermark again before they were all pushed: the same rows again (those already pushed
   * repeat, with the same ids).
   */
  private releaseOf(chunk: Chunk): ChunkRelease {
    const { meta } = this.o;
    chunk.doneBefore ??= this.released;
    let done = chunk.doneBefore;
    const rows: ChunkRelease['rows'] = [];
    for (const row of chunk.truncated ? [] : chunk.rows!) {
      if (chunk.changed.has(row.key)) continue;
      done += 1;
      rows.push({
        cursor: { key: row.cursor, done },
        event: {
          id: snapshotEventId(meta, row.key, row.after),
          datasource: this.o.datasource,
          model: this.o.model,
          op: 'snapshot',
          key: row.key,
          before: null,
          after: row.after,
          sourceTime: chunk.readAt!,
          source: { database: meta.database, table: meta.table, snapshot: true },
        },
      });
    }
    chunk.doneAfter = this.released = done;
    const lastRow = chunk.rows!.at(-1);
    const next: SnapshotCursor | null = chunk.last ? null : { key: lastRow ? lastRow.cursor : null, done };
    return { rows, next, pushed: chunk.release };
  }

  /** A chunk whose window opens at `low`, known to the stream from now on. */
  private open(low: string): Chunk {
    let release!: () => void;
    const pushed = new Promise<void>((resolve) => (release = resolve));
    const chunk: Chunk = {
      low,
      high: `wm:${randomUUID()}`,
      open: false,
      truncated: false,
      changed: new Set(),
      last: false,
      pushed,
      release: () => {
        // Called in the stream's order, once per push of the chunk's end.
        const at = this.chunks.indexOf(chunk);
        if (at >= 0) {
          this.chunks.splice(at, 1);
          const lastRow = chunk.rows!.at(-1);
          if (lastRow) this.cursor = decodeKey(lastRow.cursor);
          this.done = chunk.doneAfter ?? this.done;
          // Only the last chunk says it is done (done === total), even when rows came or went
          // meanwhile (the count was read at the start).
          const total = chunk.last ? this.done : Math.max(this.total ?? 0, this.done + 1);
          this.o.sink.status({ type: 'snapshot', model: this.o.model, done: this.done, total });
        }
        release();
      },
    };
    this.chunks.push(chunk);
    return chunk;
  }

  private async write(conn: Connection, value: string): Promise<void> {
    try {
      await writeWatermark(conn, this.o, value);
    } catch (err) {
      throw signalTableError(this.o.signalTable, this.o.user, err);
    }
  }

  async run(conn: Connection): Promise<void> {
    const { o } = this;
    const { meta } = o;
    const table = quoteTable(meta);
    const pk = meta.primaryKey.map(quoteId).join(', ');
    if (this.total === undefined) {
      const [[count]] = await conn.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM ${table}`);
      this.total = Number(count?.n ?? 0);
      o.sink.status({ type: 'snapshot', model: o.model, done: this.done, total: this.total });
    }
    this.chunks = [];
    this.released = this.done;
    let cursor = this.cursor;
    let chunk = this.open(`wm:${randomUUID()}`);
    await this.write(conn, chunk.low);
    for (;;) {
      if (o.signal.aborted) return;
      const after = cursor === null ? undefined : keysetAfter(meta.primaryKey, cursor);
      const [raws] = await conn.query<RowDataPacket[]>(
        `SELECT * FROM ${table} ${after ? `WHERE ${after.sql} ` : ''}ORDER BY ${pk} LIMIT ${Math.floor(o.chunkSize)}`,
        after?.params ?? [],
      );
      chunk.readAt = new Date().toISOString();
      chunk.last = raws.length < o.chunkSize;
      chunk.rows = raws.map((raw) => {
        const row = decodeRow(meta, raw);
        return {
          key: keyOf(meta, row),
          after: row,
          cursor: encodeKey(meta.primaryKey.map((k): unknown => raw[k])),
        };
      });
      const lastRow = raws.at(-1);
      if (lastRow) cursor = meta.primaryKey.map((k): unknown => lastRow[k]);
      // The next chunk's window opens at this chunk's high watermark: known before it is written.
      const next = chunk.last ? undefined : this.open(chunk.high);
      await this.write(conn, chunk.high);
      if (!next) {
        if (!(await untilPushed(chunk.pushed, o.signal))) return;
        o.logger.info({ rows: this.done }, 'snapshot done');
        return;
      }
      // The stream pushes this chunk when it reaches its high watermark (later if it is paused
      // by a full publisher window, or reconnecting). The next one is read meanwhile, once the
      // chunk before this one is pushed: two chunks in memory at most.
      const before = this.chunks[this.chunks.indexOf(chunk) - 1];
      if (before && !(await untilPushed(before.pushed, o.signal))) return;
      chunk = next;
    }
  }
}

/**
 * `(k1, k2) > (c1, c2)` spelt out (`k1 > ? OR (k1 = ? AND k2 > ?)`): MariaDB plans a row
 * comparison as a scan of the whole index from its start, the expanded form as a range, so
 * each chunk of a composite key costs its own rows, not the rows before it too.
 */
export function keysetAfter(keys: string[], cursor: unknown[]): { sql: string; params: unknown[] } {
  const terms: string[] = [];
  const params: unknown[] = [];
  keys.forEach((key, i) => {
    const equal = keys.slice(0, i).map((k) => `${quoteId(k)} = ?`);
    terms.push([...equal, `${quoteId(key)} > ?`].join(' AND '));
    params.push(...cursor.slice(0, i), cursor[i]);
  });
  return { sql: terms.length === 1 ? terms[0]! : terms.map((t) => `(${t})`).join(' OR '), params };
}

/** True once `pushed` resolves; false as soon as `stop` is aborted. */
function untilPushed(pushed: Promise<void>, stop: AbortSignal): Promise<boolean> {
  if (stop.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onStop = (): void => resolve(false);
    stop.addEventListener('abort', onStop, { once: true });
    void pushed.then(() => {
      stop.removeEventListener('abort', onStop);
      resolve(true);
    });
  });
}
