/**
 * The initial snapshot of one table: its rows as `snapshot` events, in primary key order, read
 * in keyset chunks (`WHERE (pk) > (cursor) ORDER BY pk LIMIT n`), each chunk its own short query.
 *
 * Consistency: the binlog point (GTID state, or file + offset) is recorded *before* the first
 * chunk is read, and the stream starts from that point once the snapshot is done. A row read by
 * a chunk shows its state at some moment after the point; every change after the point comes
 * again from the stream, in order. So every row present when the snapshot ends is published at
 * least once, and applying the events in order per key ends at the table's state; a change made
 * during the snapshot may arrive twice (in its row's snapshot event and from the stream). This
 * holds across chunks read at different times, and across a crash: the cursor is in each
 * event's position, a restart continues after the last row published, the stream from the same
 * point. Progress goes to `sink.status({ type: 'snapshot', model, done, total })` after each
 * chunk (total is COUNT(*) at the start).
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { eventId, type ChangeEvent } from '../../events/change-event';
import { ErrorCode, EvpubError } from '../../errors';
import type { ChangeSink } from '../contract';
import { decodeKey, encodeKey, encodePosition, type SnapshotCursor, type StreamPoint } from './position';
import { decodeRow, keyOf, quoteId, quoteTable, type TableMeta } from './values';
import { drainUnlessStopped } from '../kit/waits';

export interface SnapshotOptions {
  conn: Connection;
  meta: TableMeta;
  datasource: string;
  model: string;
  chunkSize: number;
  /** Where the stream starts after the snapshot; recorded before the first chunk. */
  point: StreamPoint;
  cursor: SnapshotCursor;
  sink: ChangeSink;
  signal: AbortSignal;
  onPushed(position: string): void;
}

/** A snapshot event's idempotency key: the same row content read again gets the same id. */
export function snapshotEventId(meta: TableMeta, key: string, after: Record<string, unknown>): string {
  return eventId(meta.database, meta.table, 'snapshot', key, JSON.stringify(after));
}

/** Resolves when every row was pushed (or the signal aborted). */
export async function runSnapshot(o: SnapshotOptions): Promise<void> {
  const { meta, conn } = o;
  if (meta.primaryKey.length === 0) {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `mysql: snapshot of ${meta.database}.${meta.table} needs a primary key to read it in order: ` +
        'add one, or set the model\'s snapshot: "never"',
      { context: { table: `${meta.database}.${meta.table}` } },
    );
  }
  const table = quoteTable(meta);
  const pk = meta.primaryKey.map(quoteId).join(', ');
  const [[count]] = await conn.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM ${table}`);
  const total = Number(count?.n ?? 0);
  let cursor = o.cursor.key === null ? null : decodeKey(o.cursor.key);
  let done = o.cursor.done;
  o.sink.status({ type: 'snapshot', model: o.model, done, total });
  for (;;) {
    if (o.signal.aborted) return;
    const where = cursor === null ? '' : `WHERE (${pk}) > (${meta.primaryKey.map(() => '?').join(', ')}) `;
    const [rows] = await conn.query<RowDataPacket[]>(
      `SELECT * FROM ${table} ${where}ORDER BY ${pk} LIMIT ${Math.floor(o.chunkSize)}`,
      cursor ?? [],
    );
    const readAt = new Date().toISOString();
    for (const raw of rows) {
      if (o.signal.aborted) return;
      cursor = meta.primaryKey.map((k) => raw[k] as unknown);
      done += 1;
      const after = decodeRow(meta, raw);
      const key = keyOf(meta, after);
      const position = encodePosition({ ...o.point, snapshot: { key: encodeKey(cursor), done } });
      const event: ChangeEvent = {
        id: snapshotEventId(meta, key, after),
        datasource: o.datasource,
        model: o.model,
        op: 'snapshot',
        key,
        before: null,
        after,
        position,
        sourceTime: readAt,
        source: { database: meta.database, table: meta.table, snapshot: true },
      };
      o.onPushed(position);
      if (!o.sink.push(event)) await drainUnlessStopped(o.sink, o.signal);
    }
    o.sink.status({ type: 'snapshot', model: o.model, done, total: Math.max(total, done) });
    if (rows.length < o.chunkSize) return;
  }
}
