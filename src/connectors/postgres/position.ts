/**
 * LSNs and the connector's positions.
 *
 * A position (opaque to everyone else) is `<stream>` or `<stream>|s:<cursor>`:
 * - `<stream>` is `<commitLsn>#<index>`: the event is the `index`-th change (0-based, all
 *   models counted) of the transaction whose commit record is at `commitLsn`; or `-` when the
 *   model has pushed no change from the stream yet. Transactions arrive in commit order, so
 *   (commitLsn, index) orders every change of the datasource.
 * - `|s:<cursor>` is present while the model's snapshot is running: the cursor is the
 *   base64url JSON of the key (as text) of the last row read, or `null` before the first chunk.
 *
 * Resuming from a position: the stream restarts from the slot (whose confirmed LSN is never
 * past any model's checkpoint, see index.ts) and the model skips every change at or before
 * (commitLsn, index), including the part of a transaction it already published. The
 * snapshot, when present, resumes after the cursor.
 */
import { ErrorCode, EvpubError } from '../../errors';

export type Lsn = bigint;

export function parseLsn(text: string): Lsn {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!m) throw new EvpubError(ErrorCode.SOURCE_FAILED, `not a PostgreSQL LSN: ${JSON.stringify(text)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** A point in the stream: the change `index` of the transaction committed at `lsn`. */
export interface StreamPoint {
  lsn: Lsn;
  index: number;
}

export interface DecodedPosition {
  stream: StreamPoint | null;
  /** Present while a snapshot runs: the last key read (text values), or null before the first chunk. */
  snapshot?: { cursor: string[] | null };
}

export function encodePosition(p: DecodedPosition): string {
  const stream = p.stream ? `${formatLsn(p.stream.lsn)}#${p.stream.index}` : '-';
  if (!p.snapshot) return stream;
  return `${stream}|s:${Buffer.from(JSON.stringify(p.snapshot.cursor)).toString('base64url')}`;
}

export function decodePosition(position: string): DecodedPosition {
  const bad = (): EvpubError =>
    new EvpubError(
      ErrorCode.CHECKPOINT_FAILED,
      `postgres connector: the checkpoint ${JSON.stringify(position)} is not a position this connector made; ` +
        'reset it (model option resetCheckpoint) to start over',
    );
  const [streamPart, snapPart] = position.split('|s:');
  let stream: StreamPoint | null = null;
  if (streamPart !== '-') {
    const m = /^([0-9A-F]+\/[0-9A-F]+)#(-?\d+)$/i.exec(streamPart ?? '');
    if (!m) throw bad();
    stream = { lsn: parseLsn(m[1]!), index: Number(m[2]) };
  }
  if (snapPart === undefined) return { stream };
  try {
    const cursor = JSON.parse(Buffer.from(snapPart, 'base64url').toString('utf8')) as unknown;
    if (cursor !== null && !(Array.isArray(cursor) && cursor.every((v) => typeof v === 'string')))
      throw bad();
    return { stream, snapshot: { cursor: cursor } };
  } catch {
    throw bad();
  }
}

/** -1, 0, 1 as `a` is before, at or after `b`; null is before everything. */
export function comparePoints(a: StreamPoint | null, b: StreamPoint | null): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? -1 : 1;
  if (a.lsn !== b.lsn) return a.lsn < b.lsn ? -1 : 1;
  return Math.sign(a.index - b.index);
}

/**
 * The position `evpub snapshot <model>` saves as a model's checkpoint: the stream from `lsn`
 * (the server's WAL position when the command ran) and the snapshot from its first row. The
 * next start reads every row again, and a slot created meanwhile is fine: every change the
 * new slot does not have happened before the snapshot reads the rows.
 */
export function resnapshotPosition(lsn: Lsn): string {
  return encodePosition({ stream: { lsn, index: -1 }, snapshot: { cursor: null } });
}
