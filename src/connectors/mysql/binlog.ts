/**
 * One model's row-based binlog stream, read with zongji over mysql2.
 *
 * Protocol:
 * 1. `open()` connects (a zongji instance: a control connection and a binlog connection that
 *    registers as a replica with its own server id, listed in SHOW SLAVE HOSTS: replica.ts) and
 *    asks for the binlog from `point`: a GTID
 *    state (the server sends every transaction after it) or a file + offset. It resolves once
 *    the server accepted the replica registration (`ready`), and rejects with an EvpubError
 *    when that first connection fails. Only the model's table is decoded (`includeSchema`).
 * 2. Each row of a write/update/delete rows event becomes a ChangeEvent (insert → create with
 *    `after`, update → `before` + `after`, delete → `before`), positioned by the GTID state
 *    before its transaction, the transaction, and the row's number in it (position.ts). Rows of
 *    the transaction a resume position points into are skipped up to that row.
 * 3. Backpressure: when `sink.push` returns false, the binlog connection is paused
 *    (`connection.pause()`: mysql2 stops reading the socket and holds already-read packets),
 *    the rest of the current rows event waits in a small queue (one event's rows, bounded by
 *    binlog_row_event_max_size), and reading resumes after `sink.drain()`.
 * 4. The server sends a heartbeat every `heartbeat` ms on an idle stream; `3 × heartbeat` ms
 *    without a byte (while not paused) means the connection is dead. A lost connection, a
 *    server restart or that silence reopens the stream after a back-off from the last row
 *    pushed (or the last commit seen with nothing pending). Fatal errors (binlog purged,
 *    privileges, the server ending the dump for a newer reader with the same server id:
 *    FEED_OWNED_ELSEWHERE) go to `sink.fail()`.
 * 5. While the model's snapshot runs (`snapshot` option, see snapshot.ts), the stream also
 *    decodes the signal table's rows: it hands each watermark to the snapshot, and each key of
 *    the model's table it sees change, and pushes the rows a chunk's high watermark releases
 *    right there, in binlog order, then a mark with the cursor after the chunk. Every position
 *    it makes meanwhile carries the cursor of the last chunk pushed (rolled back with `point`
 *    on a reconnect, since the rows not yet pushed are read again).
 */
import type ZongJi from '@vlasky/zongji' with { 'resolution-mode': 'import' };
import type {
  AnyBinlogEvent,
  DeleteRowsEvent,
  QueryEvent,
  UpdateRowsEvent,
  WriteRowsEvent,
} from '@vlasky/zongji' with {
  'resolution-mode': 'import',
};
import { eventId, type ChangeEvent, type Operation } from '../../events/change-event';
import { ErrorCode, EvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import { loadDriver } from '../../util/driver';
import type { ChangeSink } from '../contract';
import { isFatal, translate } from './errors';
import { displaced, isDisplaced, registerReplica } from './replica';
import { encodePosition, type SnapshotCursor, type StreamPoint } from './position';
import { connectionOptions, type MysqlSettings, type TableRef } from './settings';
import type { SnapshotWindow } from './snapshot';
import { decodeRow, keyOf, loadTableMeta, type TableMeta } from './values';
import { backoffDelay, sleepUnlessStopped } from '../../util/retry';
import { drainUnlessStopped } from '../kit/waits';

export type StreamState = 'idle' | 'streaming' | 'reconnecting' | 'stopped' | 'failed';

type ZongJiClass = typeof ZongJi;

export interface BinlogStreamOptions {
  settings: MysqlSettings;
  datasource: string;
  model: string;
  meta: TableMeta;
  serverId: number;
  sink: ChangeSink;
  logger: Logger;
  /** Where streaming starts. */
  point: StreamPoint;
  /** Rows of transaction `tx` up to `row` were pushed already: skip them. */
  skip?: { tx: string; row: number };
  /** Called with each pushed event's position. */
  onPushed(position: string): void;
  /** The model's snapshot running alongside: its window, its signal table, where it resumes. */
  snapshot?: { window: SnapshotWindow; signalTable: TableRef; cursor: SnapshotCursor };
}

/** An event to push, or (`mark`) a position to mark, in binlog order. */
type Pending = {
  point: StreamPoint;
  tx: string;
  row: number;
  /** The snapshot's cursor once this is pushed (null: no snapshot running). */
  cursor: SnapshotCursor | null;
  /** Called once it is handed to the sink. */
  then?: () => void;
} & ({ event: ChangeEvent; mark?: undefined } | { mark: string; event?: undefined });

const INCLUDE_EVENTS = ['tablemap', 'writerows', 'updaterows', 'deleterows', 'xid', 'heartbeat', 'query'];

/** `TRUNCATE [TABLE] name` / `ALTER TABLE name`, name optionally `db.`-qualified and quoted. */
const DDL =
  /^\s*(TRUNCATE|ALTER)\s+(?:ONLINE\s+|IGNORE\s+)*(?:TABLE\s+)?(?:IF\s+EXISTS\s+)?((?:`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(?:`(?:[^`]|``)+`|[\w$]+))?)/i;

function unquote(name: string): string {
  const n = name.trim();
  return n.startsWith('`') ? n.slice(1, -1).replace(/``/g, '`') : n;
}

/** The statement's verb and table when it truncates or alters a table. */
export function ddlTarget(
  statement: string,
  schema: string,
): { verb: 'TRUNCATE' | 'ALTER'; database: string; table: string } | undefined {
  const m = DDL.exec(statement);
  if (!m) return undefined;
  const parts = m[2]!.match(/`(?:[^`]|``)+`|[\w$]+/g) ?? [];
  const [database, table] =
    parts.length === 2 ? [unquote(parts[0]), unquote(parts[1]!)] : [schema, unquote(parts[0]!)];
  return { verb: m[1]!.toUpperCase() as 'TRUNCATE' | 'ALTER', database, table };
}

/** The idempotency key of a row change: its table, transaction and row number. */
export function rowEventId(meta: TableMeta, tx: string, row: number): string {
  return eventId(meta.database, meta.table, tx, row);
}

export class BinlogStream {
  state: StreamState = 'idle';
  private point: StreamPoint;
  private skip: { tx: string; row: number } | undefined;
  private zongji: ZongJi | undefined;
  private readonly pending: Pending[] = [];
  private waiting = false;
  private paused = false;
  private currentTx: string | undefined;
  private txRow = 0;
  private txPoint: StreamPoint = {};
  private silence: NodeJS.Timeout | undefined;
  private readonly stopper = new AbortController();
  private loop: Promise<void> | undefined;
  private lost: ((err: EvpubError) => void) | undefined;
  private meta: TableMeta;
  private reloading = false;
  private markedAt = 0;
  private marked: string | undefined;
  /** The snapshot cursor as of the last row decoded, and as of the last one pushed. */
  private cursor: SnapshotCursor | null;
  private pushedCursor: SnapshotCursor | null;
  /** The last read position known, kept across a reconnect (see `readPosition()`). */
  private lastRead: { file: string; pos: number } | undefined;
  /** The binlog timestamp (ms) of the last event read that carries one; undefined before. */
  lastEventAt: number | undefined;

  constructor(private readonly o: BinlogStreamOptions) {
    this.point = o.point;
    this.skip = o.skip;
    this.meta = o.meta;
    this.cursor = this.pushedCursor = o.snapshot?.cursor ?? null;
  }

  /** A position in the current transaction (or at `point`), with the snapshot cursor if one runs. */
  private positionAt(point: StreamPoint, tx?: string, row?: number, cursor = this.cursor): string {
    return encodePosition({
      ...point,
      ...(tx !== undefined ? { tx, row: row ?? 0 } : {}),
      ...(cursor ? { snapshot: cursor } : {}),
    });
  }

  private get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  /**
   * The binlog file and offset after the last event the connection read (zongji advances it on
   * every event, the other tables' too, and holds it at a transaction's start until its
   * commit); while reconnecting, the last one known. Undefined before the server named a file.
   */
  readPosition(): { file: string; pos: number } | undefined {
    const file = this.zongji?.options.filename;
    const pos = this.zongji?.options.position;
    if (file && pos !== undefined) this.lastRead = { file, pos };
    return this.lastRead;
  }

  /** Connects once; resolves when streaming has begun. Reconnects in the background after. */
  async open(): Promise<void> {
    const { lost } = await this.connect();
    this.connected();
    this.loop = this.run(lost);
  }

  private connected(): void {
    this.state = 'streaming';
    this.o.sink.status({ type: 'connected', model: this.o.model });
    this.o.logger.info({ point: this.point }, 'binlog stream connected');
  }

  /**
   * Connects in the background (a re-snapshot's new stream): a failure to connect is retried
   * with back-off like a lost connection, a fatal one goes to `sink.fail()`.
   */
  begin(): void {
    this.loop = this.run(undefined);
  }

  /**
   * Where a stream that takes over from this one begins, once it is stopped: the same point a
   * reconnect would use (after the last row pushed, or the last commit seen with nothing
   * pending), and the rows of its transaction to skip.
   */
  resumePoint(): { point: StreamPoint; skip?: { tx: string; row: number } } {
    return { point: this.point, ...(this.skip ? { skip: this.skip } : {}) };
  }

  /** Stops reading and resolves when the connections are closed. Harmless twice. */
  async stop(): Promise<void> {
    if (this.state !== 'failed') this.state = 'stopped';
    this.stopper.abort();
    this.lost?.(new EvpubError(ErrorCode.CLIENT_CLOSED, 'stopped'));
    await this.loop;
    await this.closeZongji();
  }

  /** Reopens after each loss until stopped or failed. `first` settles when the first connection is lost. */
  private async run(first: Promise<EvpubError> | undefined): Promise<void> {
    let attempt = 0;
    let lost = first;
    while (!this.stopped) {
      try {
        if (!lost) {
          lost = (await this.connect()).lost;
          if (this.stopped) break;
          this.connected();
          attempt = 0;
        }
        const err = await lost;
        lost = undefined;
        await this.closeZongji();
        if (this.stopped) break;
        throw err;
      } catch (caught) {
        lost = undefined;
        await this.closeZongji();
        if (this.stopped) break;
        const err = translate(caught, this.o.settings, 'reading the binlog');
        if (isFatal(err)) {
          this.state = 'failed';
          this.o.logger.error({ err: err.message }, 'binlog stream failed');
          this.o.sink.fail(this.o.model, err);
          return;
        }
        attempt += 1;
        this.state = 'reconnecting';
        this.o.sink.status({ type: 'reconnecting', model: this.o.model, attempt, error: err.message });
        this.o.logger.warn({ attempt, err: err.message }, 'binlog stream lost; reconnecting');
        await this.backOff(attempt);
      }
    }
  }

  private backOff(attempt: number): Promise<void> {
    const { reconnectDelay, maxReconnectDelay } = this.o.settings;
    return sleepUnlessStopped(
      backoffDelay(attempt, { initialDelay: reconnectDelay, maxDelay: maxReconnectDelay }),
      this.stopper.signal,
    );
  }

  /**
   * Starts a zongji instance from `point`. Resolves, once it is ready, with a promise that
   * settles when the stream is lost; rejects when it fails before being ready.
   */
  private async connect(): Promise<{ lost: Promise<EvpubError> }> {
    const ZongJiCtor = await loadDriver<ZongJiClass>('@vlasky/zongji', 'mysql connector');
    // Rows read on the old connection but not pushed are read again from `point`.
    this.pending.length = 0;
    this.currentTx = undefined;
    this.cursor = this.pushedCursor;
    this.paused = false;
    const zongji = new ZongJiCtor(connectionOptions(this.o.settings));
    this.zongji = zongji;
    let settleLost!: (err: EvpubError) => void;
    const lost = new Promise<EvpubError>((resolve) => (settleLost = resolve));
    const ready = new Promise<void>((resolve, reject) => {
      let isReady = false;
      zongji.on('ready', () => {
        isReady = true;
        resolve();
      });
      zongji.on('error', (err: Error) => {
        // Ended by the server for a newer reader with our server id: stop rather than take turns.
        const error = isDisplaced(err)
          ? displaced(this.o.datasource, this.o.model, this.o.serverId, err)
          : translate(err, this.o.settings, 'reading the binlog');
        if (!isReady) reject(error);
        else settleLost(error);
      });
    });
    zongji.on('binlog', (event: AnyBinlogEvent) => this.onEvent(zongji, event));
    const { point, meta } = this;
    this.reloading = false;
    zongji.start({
      serverId: this.o.serverId,
      ...(point.gtid !== undefined
        ? { gtidSet: point.gtid }
        : { filename: point.file ?? '', position: point.pos ?? 4 }),
      includeEvents: INCLUDE_EVENTS,
      includeSchema: this.schemas(meta),
    });
    // The first command on the binlog connection: heartbeats on an idle stream (nanoseconds).
    zongji.connection?.query(
      `SET @master_heartbeat_period = ${BigInt(this.o.settings.heartbeat) * 1_000_000n}`,
      () => undefined,
    );
    // Then, still before the dump: listed in SHOW SLAVE HOSTS with our server id (replica.ts).
    if (zongji.connection) {
      registerReplica(zongji.connection, this.o.serverId, (err) => {
        if (err) this.o.logger.warn({ err: err.message }, 'the server refused the replica registration');
      });
    }
    this.watchSilence(zongji, settleLost);
    this.lost = settleLost;
    let onAbort = (): void => undefined;
    const stopped = new Promise<void>((_, reject) => {
      onAbort = () => reject(new EvpubError(ErrorCode.CLIENT_CLOSED, 'stopped while connecting'));
      if (this.stopped) onAbort();
      else this.stopper.signal.addEventListener('abort', onAbort, { once: true });
    });
    ready.catch(() => undefined);
    stopped.catch(() => undefined);
    try {
      await Promise.race([ready, stopped]);
    } finally {
      this.stopper.signal.removeEventListener('abort', onAbort);
    }
    return { lost };
  }

  /** The tables to decode: the model's, and the signal table while a snapshot may run. */
  private schemas(meta: TableMeta): Record<string, string[]> {
    const out: Record<string, string[]> = { [meta.database]: [meta.table] };
    const signal = this.o.snapshot?.signalTable;
    if (signal) out[signal.database] = [...(out[signal.database] ?? []), signal.table];
    return out;
  }

  /** Arms the silence timer on every byte the binlog connection receives. */
  private watchSilence(zongji: ZongJi, settleLost: (err: EvpubError) => void): void {
    const socket = (zongji.connection as unknown as { stream?: NodeJS.EventEmitter } | null)?.stream;
    const limit = this.o.settings.heartbeat * 3;
    const arm = (): void => {
      this.clearSilence();
      if (this.paused || this.stopped) return;
      this.silence = setTimeout(() => {
        settleLost(
          new EvpubError(
            ErrorCode.DISCONNECTED,
            `no data from the server for ${limit} ms (not even a heartbeat)`,
            {
              retriable: true,
            },
          ),
        );
      }, limit);
    };
    this.armSilence = arm;
    socket?.on('data', arm);
    arm();
  }

  private armSilence: () => void = () => undefined;

  private clearSilence(): void {
    if (this.silence) clearTimeout(this.silence);
    this.silence = undefined;
  }

  private async closeZongji(): Promise<void> {
    this.clearSilence();
    const zongji = this.zongji;
    this.zongji = undefined;
    this.lost = undefined;
    if (!zongji) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 3_000);
      zongji.once('stopped', () => {
        clearTimeout(timer);
        resolve();
      });
      try {
        zongji.stop();
      } catch {
        clearTimeout(timer);
        resolve();
      }
    });
    zongji.removeAllListeners('binlog');
    zongji.on('error', () => undefined);
  }

  private onEvent(zongji: ZongJi, event: AnyBinlogEvent): void {
    if (zongji !== this.zongji || this.stopped) return;
    if (event.timestamp > 0) this.lastEventAt = event.timestamp; // heartbeats carry 0
    switch (event.getEventName()) {
      case 'writerows':
        return this.onRows(zongji, event as WriteRowsEvent, 'create');
      case 'updaterows':
        return this.onRows(zongji, event as UpdateRowsEvent, 'update');
      case 'deleterows':
        return this.onRows(zongji, event as DeleteRowsEvent, 'delete');
      case 'query':
        return this.onQuery(zongji, event as QueryEvent);
      case 'xid':
      case 'heartbeat':
        // A commit (or an idle stream) with every row pushed: the next connection may start
        // after it, and (at most once a heartbeat period) the checkpoint may move there too, so
        // an idle model does not keep an old binlog position the server may purge.
        if (this.pending.length === 0 && !this.waiting) {
          this.point = streamPoint(zongji);
          this.skip = undefined;
          this.currentTx = undefined;
          this.markIdle();
        }
        return;
      default:
        return;
    }
  }

  /**
   * DDL of the model's table: `TRUNCATE` becomes one `truncate` event (numbered as row 1 of its
   * event group, like a row); `ALTER TABLE` pauses the stream while the column metadata is
   * read again, so the rows after it decode with the new column types.
   */
  private onQuery(zongji: ZongJi, event: QueryEvent): void {
    const target = ddlTarget(event.query, event.schema);
    if (!target || target.database !== this.meta.database || target.table !== this.meta.table) return;
    if (target.verb === 'ALTER') return this.reloadMeta(zongji);
    const tx = event.gtid ?? `${zongji.options.filename ?? ''}:${zongji.options.position ?? 0}`;
    this.currentTx = tx;
    this.txRow = 1;
    this.txPoint = streamPoint(zongji);
    this.o.snapshot?.window.truncated();
    if (this.skip && this.skip.tx === tx) return;
    this.skip = undefined;
    this.pending.push({
      point: this.txPoint,
      tx,
      row: 1,
      cursor: this.cursor,
      event: {
        id: rowEventId(this.meta, tx, 1),
        datasource: this.o.datasource,
        model: this.o.model,
        op: 'truncate',
        key: '',
        before: null,
        after: null,
        position: this.positionAt(this.txPoint, tx, 1),
        sourceTime: new Date(event.timestamp || Date.now()).toISOString(),
        tx: { id: tx },
        source: {
          database: this.meta.database,
          table: this.meta.table,
          ...(event.gtid ? { gtid: event.gtid } : {}),
        },
      },
    });
    this.pump();
  }

  private reloadMeta(zongji: ZongJi): void {
    const ctrl = zongji.ctrlConnection;
    if (!ctrl) return;
    this.reloading = true;
    this.hold();
    loadTableMeta(ctrl.promise(), this.meta)
      .then((meta) => {
        if (zongji === this.zongji) this.meta = meta;
        this.o.logger.info({ columns: meta.columns.length }, 'table altered: column metadata read again');
      })
      .catch((err: unknown) => {
        this.o.logger.warn(
          { err: toError(err).message },
          "could not read the altered table's columns; keeping the old ones",
        );
      })
      .finally(() => {
        if (zongji !== this.zongji) return;
        this.reloading = false;
        if (!this.waiting && this.pending.length === 0) this.resume();
      });
  }

  private markIdle(): void {
    const now = Date.now();
    if (now - this.markedAt < this.o.settings.heartbeat) return;
    const position = this.positionAt(this.point);
    if (position === this.marked) return;
    this.markedAt = now;
    this.marked = position;
    this.o.sink.mark(this.o.model, position);
  }

  private onRows(
    zongji: ZongJi,
    event: WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent,
    op: Operation,
  ): void {
    const table = event.tableMap[event.tableId];
    if (!table) return;
    const ours = table.parentSchema === this.meta.database && table.tableName === this.meta.table;
    const signal = this.o.snapshot?.signalTable;
    const signalled = signal && table.parentSchema === signal.database && table.tableName === signal.table;
    if (!ours && !signalled) return;
    const tx = event.gtid ?? `${zongji.options.filename ?? ''}:${zongji.options.position ?? 0}`;
    if (tx !== this.currentTx) {
      this.currentTx = tx;
      this.txRow = 0;
      this.txPoint = streamPoint(zongji);
      if (this.skip && this.skip.tx !== tx) this.skip = undefined;
    }
    if (!ours) return this.onSignal(event, op, tx);
    const window = this.o.snapshot?.window;
    const sourceTime = new Date(event.timestamp || Date.now()).toISOString();
    for (const raw of event.rows) {
      this.txRow += 1;
      const skipped = this.skip !== undefined && this.skip.tx === tx && this.txRow <= this.skip.row;
      if (skipped && !window) continue;
      let before: Record<string, unknown> | null = null;
      let after: Record<string, unknown> | null = null;
      if (op === 'update') {
        const change = raw as { before: Record<string, unknown>; after: Record<string, unknown> };
        before = decodeRow(this.meta, change.before);
        after = decodeRow(this.meta, change.after);
      } else if (op === 'create') after = decodeRow(this.meta, raw as Record<string, unknown>);
      else before = decodeRow(this.meta, raw as Record<string, unknown>);
      if (window) {
        // Skipped or not: a key changed in a chunk's window even when this row was pushed
        // before a reconnect.
        if (before) window.changed(keyOf(this.meta, before));
        if (after) window.changed(keyOf(this.meta, after));
      }
      if (skipped) continue;
      const position = this.positionAt(this.txPoint, tx, this.txRow);
      this.pending.push({
        point: this.txPoint,
        tx,
        row: this.txRow,
        cursor: this.cursor,
        event: {
          id: rowEventId(this.meta, tx, this.txRow),
          datasource: this.o.datasource,
          model: this.o.model,
          op,
          key: keyOf(this.meta, (after ?? before)!),
          before,
          after,
          position,
          sourceTime,
          tx: { id: tx },
          source: {
            database: this.meta.database,
            table: this.meta.table,
            ...(event.gtid ? { gtid: event.gtid } : {}),
            row: this.txRow,
          },
        },
      });
    }
    this.pump();
  }

  /**
   * A signal table row: its watermark goes to the snapshot; at a chunk's high watermark, the
   * chunk's rows are queued here, in the stream's order, then the mark of the chunk's end.
   */
  private onSignal(
    event: WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent,
    op: Operation,
    tx: string,
  ): void {
    const window = this.o.snapshot?.window;
    if (!window || op === 'delete') return;
    for (const raw of event.rows) {
      const row = (op === 'update' ? (raw as { after: Record<string, unknown> }).after : raw) as Record<
        string,
        unknown
      >;
      const release = window.watermark(String(row.watermark));
      if (!release) continue;
      const at = { point: this.txPoint, tx, row: this.txRow };
      for (const { event: e, cursor } of release.rows) {
        this.pending.push({
          ...at,
          cursor,
          event: { ...e, position: this.positionAt(at.point, tx, at.row, cursor) },
        });
      }
      this.cursor = release.next;
      this.pending.push({
        ...at,
        cursor: this.cursor,
        mark: this.positionAt(at.point, tx, at.row),
        then: release.pushed,
      });
    }
    this.pump();
  }

  /** Pushes pending rows in order; on a full sink pauses the connection until drain. */
  private pump(): void {
    if (this.waiting) return;
    while (this.pending.length > 0) {
      if (this.stopped) return;
      const next = this.pending.shift()!;
      this.point = next.point;
      this.skip = { tx: next.tx, row: next.row };
      this.pushedCursor = next.cursor;
      this.markedAt = Date.now();
      if (next.mark !== undefined) {
        this.o.onPushed(next.mark);
        this.marked = next.mark;
        this.o.sink.mark(this.o.model, next.mark);
        next.then?.();
        continue;
      }
      this.o.onPushed(next.event.position!);
      next.then?.();
      if (!this.o.sink.push(next.event)) {
        this.pause();
        return;
      }
    }
    if (this.paused && !this.reloading) this.resume();
  }

  /** Stops reading the binlog connection (mysql2 holds the packets already read). */
  private hold(): void {
    if (this.paused) return;
    this.paused = true;
    this.clearSilence();
    this.zongji?.connection?.pause();
  }

  private pause(): void {
    this.waiting = true;
    this.hold();
    const zongji = this.zongji;
    void this.drainOrStop().then(
      () => {
        this.waiting = false;
        if (this.stopped || zongji !== this.zongji) return;
        this.pump();
      },
      (err: unknown) => {
        this.waiting = false;
        this.o.logger.error({ err: toError(err).message }, 'sink.drain() failed');
      },
    );
  }

  private resume(): void {
    this.paused = false;
    this.armSilence();
    this.zongji?.connection?.resume();
  }

  private drainOrStop(): Promise<void> {
    return drainUnlessStopped(this.o.sink, this.stopper.signal);
  }
}

/** Where a stream restarted now would begin: the executed GTID state, else file + offset. */
function streamPoint(zongji: ZongJi): StreamPoint {
  const gtid = zongji.gtidSet;
  if (gtid !== undefined) return { gtid };
  return { file: zongji.options.filename ?? '', pos: zongji.options.position ?? 4 };
}
