/**
 * Binlog positions: what a MySQL/MariaDB event's `position` string holds, and the check that the
 * server still has the binlog a position needs.
 *
 * A position is JSON with short keys:
 * - `g`: the GTID state *before* the event's transaction (MariaDB `domain-server-seq,...`,
 *   or a MySQL GTID set), or else `f` + `p`: the binlog file and offset where the
 *   transaction starts. Streaming from there replays the whole transaction.
 * - `t`: the transaction (its GTID, or `file:offset`) and `r`: the event's row number (1-based)
 *   among the model's table rows in that transaction. Resuming *after* a position replays the
 *   transaction and skips its rows up to `r`: nothing lost, nothing repeated, even when the
 *   publisher stopped in the middle of a 10,000-row transaction.
 * - `s`: set on every position of a model while its snapshot runs alongside the stream: `k`
 *   the primary key (raw values) of the last snapshot row pushed, or of the end of the last
 *   chunk pushed, `null` before the first; `n` the rows done. A restart streams from
 *   `g`/`f`+`p` as usual and reads the next chunk after `k` (see snapshot.ts).
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { ErrorCode, EvpubError } from '../../errors';
import { purgedError } from './errors';

/** Where a binlog stream starts: the server sends everything after it. */
export interface StreamPoint {
  gtid?: string;
  file?: string;
  pos?: number;
}

export interface SnapshotCursor {
  /** The last primary key read, as raw values (a Buffer as `{ b64 }`); null before the first row. */
  key: unknown[] | null;
  done: number;
}

export interface BinlogPosition extends StreamPoint {
  tx?: string;
  row?: number;
  snapshot?: SnapshotCursor;
}

interface Encoded {
  g?: string;
  f?: string;
  p?: number;
  t?: string;
  r?: number;
  s?: { k: unknown[] | null; n: number };
}

export function encodePosition(p: BinlogPosition): string {
  const e: Encoded = {};
  if (p.gtid !== undefined) e.g = p.gtid;
  else {
    e.f = p.file;
    e.p = p.pos;
  }
  if (p.tx !== undefined) {
    e.t = p.tx;
    e.r = p.row;
  }
  if (p.snapshot) e.s = { k: p.snapshot.key, n: p.snapshot.done };
  return JSON.stringify(e);
}

function badPosition(position: string): EvpubError {
  return new EvpubError(
    ErrorCode.CHECKPOINT_FAILED,
    `mysql: the checkpoint ${JSON.stringify(position.slice(0, 120))} is not a MySQL binlog position ` +
      '(was it written by another connector?): delete the checkpoint to start over',
    { context: { position: position.slice(0, 120) } },
  );
}

export function decodePosition(position: string): BinlogPosition {
  let e: Encoded;
  try {
    e = JSON.parse(position) as Encoded;
  } catch {
    throw badPosition(position);
  }
  if (typeof e !== 'object' || e === null) throw badPosition(position);
  const out: BinlogPosition = {};
  if (typeof e.g === 'string') out.gtid = e.g;
  else if (typeof e.f === 'string' && typeof e.p === 'number') {
    out.file = e.f;
    out.pos = e.p;
  } else throw badPosition(position);
  if (e.t !== undefined) {
    if (typeof e.t !== 'string' || typeof e.r !== 'number') throw badPosition(position);
    out.tx = e.t;
    out.row = e.r;
  }
  if (e.s !== undefined) {
    if (typeof e.s !== 'object' || e.s === null || typeof e.s.n !== 'number') throw badPosition(position);
    out.snapshot = { key: Array.isArray(e.s.k) ? e.s.k : null, done: e.s.n };
  }
  return out;
}

/** Raw key values for JSON (Buffers as `{ b64 }`), and back. */
export function encodeKey(values: unknown[]): unknown[] {
  return values.map((v) => (Buffer.isBuffer(v) ? { b64: v.toString('base64') } : v));
}

export function decodeKey(values: unknown[]): unknown[] {
  return values.map((v) =>
    typeof v === 'object' && v !== null && typeof (v as { b64?: unknown }).b64 === 'string'
      ? Buffer.from((v as { b64: string }).b64, 'base64')
      : v,
  );
}

/** Highest sequence number per domain of a MariaDB GTID list (`0-1-5,0-2-7,1-1-3`). */
function domains(list: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const item of list.split(',')) {
    const m = /^\s*(\d+)-(\d+)-(\d+)\s*$/.exec(item);
    if (!m) continue;
    const seq = BigInt(m[3]!);
    const prev = out.get(m[1]!);
    if (prev === undefined || seq > prev) out.set(m[1]!, seq);
  }
  return out;
}

/** The binlog files the server still has, oldest first. */
async function binaryLogs(conn: Connection): Promise<string[]> {
  const [logs] = await conn.query<RowDataPacket[]>('SHOW BINARY LOGS');
  return logs.map((l) => String(l.Log_name));
}

/**
 * MariaDB: the GTID state a binlog file starts after, from the Gtid_list event at its head
 * (`[0-1-5,0-2-7]`: the last GTID of each domain and server id written before the file; the
 * server writes a domain's most recent one last). Returned as a connect state, one
 * `domain-server-seq` per domain (its last entry); `''` when nothing was ever written before the
 * file; undefined when the file has no Gtid_list event.
 */
export async function gtidListOf(conn: Connection, file: string): Promise<string | undefined> {
  const [events] = await conn.query<RowDataPacket[]>(
    `SHOW BINLOG EVENTS IN '${file.replace(/['\\]/g, '')}' LIMIT 5`,
  );
  const list = events.find((e) => String(e.Event_type) === 'Gtid_list');
  if (!list) return undefined;
  const last = new Map<string, string>();
  for (const item of String(list.Info).replace(/[[\]]/g, '').split(',')) {
    const m = /^\s*(\d+)-(\d+)-(\d+)\s*$/.exec(item);
    if (m) last.set(m[1]!, `${m[1]}-${m[2]}-${m[3]}`);
  }
  return [...last.values()].join(',');
}

/**
 * Where the oldest binlog the server still has begins. MariaDB: the GTID state at its head,
 * NOT the empty state: the server answers an empty connect state by searching back for a binlog
 * whose Gtid_list is empty, which exists only while no binlog was ever purged (expired or
 * `PURGE BINARY LOGS`); after that it refuses with error 1236 ("Could not find GTID state
 * requested by slave in any binlog files"). MySQL (or a MariaDB binlog without Gtid_list):
 * the oldest file at offset 4.
 */
export async function oldestPoint(conn: Connection, mariadb: boolean): Promise<StreamPoint> {
  const names = await binaryLogs(conn);
  const oldest = names[0];
  if (oldest === undefined) {
    throw new EvpubError(ErrorCode.SOURCE_FAILED, 'mysql: the server lists no binary logs: is log_bin on?');
  }
  if (mariadb) {
    const state = await gtidListOf(conn, oldest);
    if (state !== undefined) return { gtid: state };
  }
  return { file: oldest, pos: 4 };
}

/**
 * Rejects with the "binlog purged" error when the server no longer has the binlog that
 * streaming from `point` needs: its file is not listed by SHOW BINARY LOGS, or (MariaDB GTID) the
 * oldest binlog starts after the point's transaction in some domain, or has a domain the point
 * lacks (the server would have to send that domain from its first transaction: also the empty
 * point `''` once a binlog was purged). The server's own refusal (error 1236) is translated the
 * same way, for what this check cannot see.
 */
export async function checkAvailable(conn: Connection, point: StreamPoint, mariadb: boolean): Promise<void> {
  const names = await binaryLogs(conn);
  if (names.length === 0) throw purgedError('the server lists no binary logs');
  if (point.file !== undefined) {
    if (!names.includes(point.file)) {
      throw purgedError(`binlog file ${point.file} is gone; the oldest is ${names[0]}`);
    }
    return;
  }
  if (point.gtid === undefined || !mariadb) return;
  const oldest = names[0]!;
  const list = await gtidListOf(conn, oldest);
  if (list === undefined) return;
  const before = domains(list);
  const ours = domains(point.gtid);
  for (const [domain, first] of before) {
    const seq = ours.get(domain);
    if (seq === undefined) {
      throw purgedError(
        `it needs GTID domain ${domain} from its first transaction, and the oldest binlog ${oldest} starts after ${domain}-*-${first}`,
      );
    }
    if (seq < first) {
      throw purgedError(
        `it needs the transactions after GTID ${domain}-*-${seq}, and the oldest binlog ${oldest} starts after ${domain}-*-${first}`,
      );
    }
  }
}

/**
 * The highest sequence number per source of a GTID state: MariaDB `domain-server-seq` per
 * domain, MySQL `uuid:1-5:7` per server uuid (its intervals' highest end).
 */
function gtidHeads(state: string): Map<string, bigint> {
  const out = domains(state);
  for (const item of state.split(',')) {
    const [uuid, ...ranges] = item.trim().split(':');
    if (!uuid || ranges.length === 0) continue;
    let max = -1n;
    for (const range of ranges) {
      const end = /^(?:\d+-)?(\d+)$/.exec(range.trim());
      if (end && BigInt(end[1]!) > max) max = BigInt(end[1]!);
    }
    if (max >= 0n) out.set(uuid.toLowerCase(), max);
  }
  return out;
}

/** -1, 0, 1 as `a` is before, at or after `b`; undefined when the two cannot be ordered. */
function comparePoints(a: StreamPoint, b: StreamPoint): number | undefined {
  if (a.gtid !== undefined && b.gtid !== undefined) {
    if (a.gtid === b.gtid) return 0;
    const x = gtidHeads(a.gtid);
    const y = gtidHeads(b.gtid);
    const keys = new Set([...x.keys(), ...y.keys()]);
    let less = false;
    let more = false;
    for (const k of keys) {
      const u = x.get(k) ?? -1n;
      const v = y.get(k) ?? -1n;
      if (u < v) less = true;
      if (u > v) more = true;
    }
    if (less && more) return undefined;
    return less ? -1 : more ? 1 : 0;
  }
  if (a.file !== undefined && b.file !== undefined) {
    if (a.file !== b.file) return a.file < b.file ? -1 : 1;
    return Math.sign((a.pos ?? 0) - (b.pos ?? 0));
  }
  return undefined;
}

/**
 * Orders two positions of one server's binlog (the outbox's models, which share a stream): by
 * their stream point (GTID states by each domain's or server's highest sequence number, files
 * and offsets as written), then a position at a point before any row of the transaction after
 * it, then the row. Undefined when they cannot be ordered (a GTID state and a file offset, or
 * GTID states each ahead in some domain): the caller then reads rather than skips.
 */
export function comparePositions(a: BinlogPosition, b: BinlogPosition): number | undefined {
  const points = comparePoints(a, b);
  if (points !== 0) return points;
  if (a.tx === undefined || b.tx === undefined) {
    return a.tx === undefined ? (b.tx === undefined ? 0 : -1) : 1;
  }
  if (a.tx !== b.tx) return undefined;
  return Math.sign((a.row ?? 0) - (b.row ?? 0));
}
