/**
 * How far a binlog reader is behind the server's end of the binary log, in bytes and seconds:
 * what the connector reports as `{ type: 'lagging', model, bytes, seconds }` every
 * `statusInterval` (see connector.ts).
 *
 * - The server's end: one `SHOW BINARY LOGS` per report, for every model of the datasource. It
 *   lists the binlog files the server has, oldest first, with their sizes; the last one is the
 *   file being written and its size is the current write position (the `Position` of `SHOW
 *   MASTER STATUS` / `SHOW BINARY LOG STATUS`), so one statement gives both. It reads the binlog
 *   index and the files' sizes, no binlog content: cheap at this rate even with many files.
 *   It needs `REPLICATION CLIENT` (MariaDB: `BINLOG MONITOR`), which the connector needs anyway.
 * - The reader's position: the binlog file and offset after the last event the stream's
 *   connection read (any table: zongji advances it on filtered events too, and keeps it at the
 *   start of a transaction until its commit).
 * - Bytes: what is left of the reader's file after its offset, plus the size of every later
 *   file. Unknown (undefined) when the reader's file is no longer listed.
 * - Seconds: 0 when no byte is left. Otherwise now minus the time the reader's position stands
 *   for: the timestamp of the last event it read (the binlog's clock, whole seconds), or the
 *   last report that found it caught up, whichever is later (after an idle hour, a row written
 *   a second ago is a second behind, not an hour). Unknown before either is known.
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';

export interface BinlogFile {
  name: string;
  size: number;
}

export interface ReadPosition {
  file: string;
  pos: number;
}

/** The server's binlog files, oldest first, with their sizes (the last: its write position). */
export async function binlogFiles(conn: Connection, timeoutMs: number): Promise<BinlogFile[]> {
  const [rows] = await conn.query<RowDataPacket[]>({ sql: 'SHOW BINARY LOGS', timeout: timeoutMs });
  return rows.map((r) => ({ name: String(r.Log_name), size: Number(r.File_size) }));
}

/** Bytes of binlog after `read`; undefined when its file is not (or no longer) listed. */
export function lagBytes(files: readonly BinlogFile[], read: ReadPosition): number | undefined {
  const at = files.findIndex((f) => f.name === read.file);
  if (at < 0) return undefined;
  let bytes = Math.max(0, files[at]!.size - read.pos);
  for (const f of files.slice(at + 1)) bytes += f.size;
  return bytes;
}

/**
 * The seconds a reader is behind, `bytes` behind: 0 when caught up; else from the later of the
 * last event's time and the last time it was caught up (ms since the epoch); undefined when
 * neither is known.
 */
export function lagSeconds(
  bytes: number,
  now: number,
  lastEventAt: number | undefined,
  caughtUpAt: number | undefined,
): number | undefined {
  if (bytes === 0) return 0;
  const since = Math.max(lastEventAt ?? -Infinity, caughtUpAt ?? -Infinity);
  if (since === -Infinity) return undefined;
  return Math.max(0, (now - since) / 1000);
}
