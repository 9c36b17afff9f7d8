/**
 * Snapshots: a model's existing rows published as `snapshot` events, in keyset-ordered chunks
 * (`WHERE (key) > (cursor) ORDER BY key LIMIT chunk`), while the stream runs.
 *
 * Consistency argument (no change lost, every row at least once, final state right):
 * the stream is already running when the first chunk is read, from the slot, so every change
 * committed after a chunk's read is delivered by the stream for this model. A row read at time
 * t is published with its state at t; every change before t that the stream has not yet
 * pushed is the same or an older state of the row, and the last change before t is the state
 * read. A chunk's rows are pushed one by one while the stream pushes too (both wait on the same
 * publisher window, e.g. a paused feed), so a row is dropped from its chunk when the stream
 * pushed a change of its key (or a truncate of the table) since the chunk's read began: that
 * change is either newer than the state read, or older, and then the stream still has to push
 * the last change before t, which is the state read; either way the stream gives the row's
 * latest state, and the snapshot row would arrive after it, stale. So for each key, the last
 * event a consumer receives is the row's latest state (or its delete); a row deleted before
 * its chunk is not read but its delete is streamed. A row changed during the snapshot arrives
 * as the stream's change instead of (or as well as) a snapshot event: at least once, never
 * zero times, never stale last.
 *
 * Resuming: every event of a model whose snapshot runs carries the cursor (the key, as text, of
 * the last row read) in its position; a restart from a checkpoint that has one resumes the
 * snapshot after that key. Chunks are read in READ COMMITTED: no long transaction holds back
 * vacuum, and a crash loses at most one chunk of work.
 */
import { createHash } from 'node:crypto';
import type { Client } from 'pg';
import { qualified, quoteIdent } from './settings';
import { RAW_TEXT, type TableInfo } from './slot-admin';

export interface ChunkRow {
  /** Key values as text, in key order: the cursor after this row. */
  cursor: string[];
  /** Column → [type oid, text value]. */
  values: Map<string, { oid: number; text: string | null }>;
}

/** Reads the next chunk after `cursor` (null: from the first row). */
export async function readChunk(
  client: Client,
  table: TableInfo,
  cursor: string[] | null,
  limit: number,
): Promise<ChunkRow[]> {
  const keys = table.key.map(quoteIdent);
  const where =
    cursor === null ? '' : `WHERE (${keys.join(', ')}) > (${cursor.map((_, i) => `$${i + 1}`).join(', ')})`;
  const result = await client.query<Record<string, string | null>>({
    text: `SELECT * FROM ${qualified(table)} ${where} ORDER BY ${keys.join(', ')} LIMIT ${limit}`,
    values: cursor ?? [],
    types: RAW_TEXT,
  });
  return result.rows.map((row) => {
    const values = new Map<string, { oid: number; text: string | null }>();
    for (const field of result.fields)
      values.set(field.name, { oid: field.dataTypeID, text: row[field.name] ?? null });
    return { cursor: table.key.map((k) => row[k] ?? ''), values };
  });
}

export async function countRows(client: Client, table: TableInfo): Promise<number> {
  const { rows } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${qualified(table)}`);
  return Number(rows[0]!.n);
}

/** A snapshot event's idempotency key: the same row content read again gets the same id. */
export function snapshotId(table: TableInfo, key: string, after: unknown): string {
  const digest = createHash('sha256')
    .update(`${table.schema}.${table.table}\u0000${key}\u0000${JSON.stringify(after)}`)
    .digest('hex')
    .slice(0, 24);
  return `snapshot:${digest}`;
}
