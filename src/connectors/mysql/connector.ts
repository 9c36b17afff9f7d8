/**
 * The MySQL / MariaDB event connector (built-in `mysql`, alias `mariadb`).
 *
 * `start()` checks the server once (binary log on, ROW format, replication privileges; see
 * errors.ts), reads each model's table metadata, then per model:
 * - `{ after }`: checks the server still has the binlog the position needs (a purged one is a
 *   `sink.fail`, never a skip), then streams from the position, skipping the rows of its
 *   transaction already pushed, and continues the snapshot after its cursor if the position is
 *   inside one.
 * - no checkpoint and `snapshot: 'initial'` (either `from`): streams from the current binlog
 *   point and reads the table meanwhile, chunk by chunk between watermarks (snapshot.ts).
 * - `'beginning'` without snapshot: streams the whole binlog the server still has (from the
 *   oldest binlog's own start state, which stays valid after older binlogs were purged).
 * - `'now'` without snapshot: marks the current binlog point and streams from it.
 * Each model has its own binlog connection (binlog.ts) with its own replica server id, so
 * each model pauses, reconnects and fails on its own. `start()` resolves when every stream is
 * connected (or its snapshot has begun); it rejects when one cannot begin.
 */
import { createHash } from 'node:crypto';
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { ErrorCode, EvpubError } from '../../errors';
import { defaultLogger, type Logger } from '../../logger';
import { loadDriver } from '../../util/driver';
import { backoffDelay, sleepUnlessStopped } from '../../util/retry';
import { Lifecycle } from '../kit/lifecycle';
import { checkMysql } from './check';
import type {
  ChangeSink,
  ConnectorHealth,
  DataSourceLike,
  EventConnector,
  ModelFeed,
  SourceCheck,
  StartRequest,
} from '../contract';
import { BinlogStream } from './binlog';
import { checkServer, translate, type ServerInfo } from './errors';
import {
  checkAvailable,
  decodePosition,
  encodePosition,
  oldestPoint,
  type SnapshotCursor,
  type StreamPoint,
} from './position';
import {
  connectionOptions,
  parseMysqlSettings,
  withSsl,
  parseSnapshot,
  signalTableOf,
  tableOf,
  type MysqlSettings,
  type TableRef,
} from './settings';
import { ChunkedSnapshot, checkSignalTable } from './snapshot';
import { loadTableMeta, type TableMeta } from './values';

type MysqlPromise = typeof import('mysql2/promise');

interface ModelRun {
  model: string;
  meta: TableMeta;
  lastPushed: string | null;
  failed: boolean;
  stream?: BinlogStream;
  snapshot?: Promise<void>;
}

export class MysqlConnector implements EventConnector {
  readonly name = 'mysql';
  readonly resumable = true;
  readonly settings: MysqlSettings;
  private readonly logger: Logger;
  private readonly runs = new Map<string, ModelRun>();
  private readonly stopper = new AbortController();
  private readonly life: Lifecycle;

  constructor(private readonly dataSource: DataSourceLike) {
    this.life = new Lifecycle('mysql', dataSource.name);
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'mysql',
      datasource: dataSource.name,
    });
    this.settings = withSsl(
      parseMysqlSettings(dataSource.settings, dataSource.name),
      dataSource.name,
      this.logger,
    );
  }

  /** A query connection, session in UTC so TIMESTAMPs read as binlog rows do. */
  async connect(): Promise<Connection> {
    const mysql = await loadDriver<MysqlPromise>('mysql2/promise', 'mysql connector');
    let conn: Connection;
    try {
      conn = await mysql.createConnection(connectionOptions(this.settings));
    } catch (err) {
      throw translate(err, this.settings, 'connecting');
    }
    conn.on('error', () => undefined); // a later loss fails the next query, which reports it
    await conn.query("SET time_zone = '+00:00'");
    return conn;
  }

  /** `evpub check`: what the server and tables still need (contract point 8; read-only). */
  check(
    models: readonly { name: string; settings: Readonly<Record<string, unknown>> }[],
  ): Promise<SourceCheck[]> {
    return checkMysql(() => this.connect(), this.settings, this.dataSource.name, models);
  }

  async start(request: StartRequest): Promise<void> {
    this.life.begin();
    const refs = request.models.map((m) => ({ feed: m, ref: tableOf(m.name, m.settings, this.settings) }));
    let conn: Connection | undefined;
    try {
      conn = await this.connect();
      const info = await checkServer(conn, this.settings, this.logger).catch((err: unknown) => {
        throw translate(err, this.settings, 'checking the server');
      });
      const opening: Promise<void>[] = [];
      for (const [index, { feed, ref }] of refs.entries()) {
        const meta = await loadTableMeta(conn, ref).catch((err: unknown) => {
          throw translate(err, this.settings, `reading ${ref.database}.${ref.table}'s columns`);
        });
        const run: ModelRun = { model: feed.name, meta, lastPushed: null, failed: false };
        this.runs.set(feed.name, run);
        opening.push((await this.plan(conn, info, run, feed, request.sink, index)).opened);
      }
      await Promise.all(opening);
    } catch (err) {
      const error = this.life.startFailed(err, (e) => translate(e, this.settings, 'starting'));
      await this.stop();
      throw error;
    } finally {
      await conn?.end().catch(() => undefined);
    }
    this.life.started();
  }

  /** Decides where the model starts; returns what start() awaits (the stream's first connection). */
  private async plan(
    conn: Connection,
    info: ServerInfo,
    run: ModelRun,
    feed: ModelFeed,
    sink: ChangeSink,
    index: number,
  ): Promise<{ opened: Promise<void> }> {
    const { from } = feed;
    let point: StreamPoint;
    let skip: { tx: string; row: number } | undefined;
    let snapshot: SnapshotCursor | undefined;
    if (typeof from === 'object') {
      const position = decodePosition(from.after);
      point =
        position.gtid !== undefined ? { gtid: position.gtid } : { file: position.file!, pos: position.pos! };
      try {
        await checkAvailable(conn, point, info.mariadb);
      } catch (err) {
        run.failed = true;
        const error = translate(err, this.settings, 'checking the checkpoint');
        this.logger.error({ model: feed.name, err: error.message }, 'cannot resume');
        sink.fail(feed.name, error);
        return { opened: Promise.resolve() };
      }
      if (position.snapshot) snapshot = position.snapshot;
      else if (position.tx !== undefined) skip = { tx: position.tx, row: position.row ?? 0 };
      run.lastPushed = from.after;
    } else {
      const mode = parseSnapshot(
        feed.settings.snapshot,
        `models.${feed.name}.settings.snapshot`,
        this.settings.snapshot,
      );
      if (mode === 'initial') {
        // No checkpoint: read the table, then stream from the point recorded before reading.
        if (run.meta.primaryKey.length === 0) {
          throw new EvpubError(
            ErrorCode.CONFIG_INVALID,
            `mysql connector: models.${feed.name}: a snapshot needs a primary key on ${run.meta.database}.${run.meta.table}`,
          );
        }
        point = await currentPoint(conn, info);
        snapshot = { key: null, done: 0 };
      } else if (from === 'beginning') {
        point = await firstPoint(conn, info);
      } else {
        point = await currentPoint(conn, info);
        // Committed like an event: a restart resumes here even if no change came meanwhile.
        sink.mark(feed.name, encodePosition(point));
      }
    }
    const logger = this.logger.child({ model: feed.name, table: `${run.meta.database}.${run.meta.table}` });
    const serverId = this.settings.serverId + index;
    let chunks: { window: ChunkedSnapshot; signalTable: TableRef; cursor: SnapshotCursor } | undefined;
    if (snapshot) {
      const signalTable = signalTableOf(this.settings, this.dataSource.name);
      // One row per datasource and model, whatever the (default random) server id, so restarts
      // do not add rows; two publishers of the same names share it, each ignoring the other's
      // watermarks.
      const signalId = signalRowId(`${this.dataSource.name}/${feed.name}`);
      const window = new ChunkedSnapshot({
        meta: run.meta,
        signalTable,
        signalId,
        user: this.settings.user,
        datasource: this.dataSource.name,
        model: feed.name,
        chunkSize: this.settings.snapshotChunk,
        cursor: snapshot,
        sink,
        logger,
        signal: this.stopper.signal,
      });
      await checkSignalTable(conn, { signalTable, signalId }, this.settings.user);
      chunks = { window, signalTable, cursor: snapshot };
    }
    const stream = new BinlogStream({
      settings: this.settings,
      datasource: this.dataSource.name,
      model: feed.name,
      meta: run.meta,
      serverId,
      sink,
      logger,
      point,
      ...(skip ? { skip } : {}),
      ...(chunks ? { snapshot: chunks } : {}),
      onPushed: (position) => (run.lastPushed = position),
    });
    run.stream = stream;
    const opened = stream.open();
    if (!chunks) return { opened };
    const { window } = chunks;
    // The snapshot reads once the stream runs (start() fails if the stream cannot begin).
    run.snapshot = opened
      .then(
        () => this.readSnapshot(window, logger),
        () => undefined,
      )
      .catch(async (err: unknown) => {
        if (this.stopper.signal.aborted) return;
        run.failed = true;
        const error = translate(err, this.settings, 'reading the snapshot');
        logger.error({ err: error.message }, 'snapshot failed');
        sink.fail(feed.name, error);
        await stream.stop();
      });
    return { opened };
  }

  /**
   * Runs the snapshot on a query connection of its own; a lost connection (or any retriable
   * error) is retried with back-off on a new one, going on from the last chunk pushed.
   * Rejects with what cannot be retried (a missing signal table).
   */
  private async readSnapshot(window: ChunkedSnapshot, logger: Logger): Promise<void> {
    let attempt = 0;
    while (!this.stopper.signal.aborted) {
      let sconn: Connection | undefined;
      try {
        sconn = await this.connect();
        await window.run(sconn);
        return;
      } catch (err) {
        const error = translate(err, this.settings, 'reading the snapshot');
        if (this.stopper.signal.aborted || !error.retriable) throw error;
        attempt += 1;
        const delay = backoffDelay(attempt, {
          initialDelay: this.settings.reconnectDelay,
          maxDelay: this.settings.maxReconnectDelay,
        });
        logger.warn({ err: error.message, attempt, delay }, 'snapshot query failed; retrying');
        await sleepUnlessStopped(delay, this.stopper.signal);
      } finally {
        await sconn?.end().catch(() => undefined);
      }
    }
  }

  stop(): Promise<void> {
    return this.life.stop(async () => {
      this.stopper.abort();
      const runs = [...this.runs.values()];
      await Promise.all(runs.map((r) => r.snapshot ?? Promise.resolve()));
      await Promise.all(runs.map((r) => (r.stream ? r.stream.stop() : Promise.resolve())));
    });
  }

  health(): ConnectorHealth {
    const positions: Record<string, string | null> = {};
    const failed: string[] = [];
    let reconnecting = false;
    for (const [model, run] of this.runs) {
      positions[model] = run.lastPushed;
      if (run.failed || run.stream?.state === 'failed') failed.push(model);
      if (run.stream?.state === 'reconnecting') reconnecting = true;
    }
    let state: ConnectorHealth['state'];
    const life = this.life.state;
    if (life === 'idle' || life === 'starting') state = life;
    else if (life === 'stopped') state = 'stopped';
    else if (failed.length > 0) state = 'failed';
    else if (reconnecting) state = 'reconnecting';
    else state = 'streaming';
    return { state, positions, ...(failed.length > 0 ? { detail: `failed: ${failed.join(', ')}` } : {}) };
  }
}

/** The model stream's row in the signal table: its name, or a digest when too long for the column. */
function signalRowId(name: string): string {
  return name.length <= 255 ? name : `sha256:${createHash('sha256').update(name).digest('hex')}`;
}

/** The point after everything the server has written so far. */
async function currentPoint(conn: Connection, info: ServerInfo): Promise<StreamPoint> {
  if (info.mariadb) {
    const [[row]] = await conn.query<RowDataPacket[]>('SELECT @@GLOBAL.gtid_binlog_pos AS pos');
    return { gtid: String(row?.pos ?? '') };
  }
  const [[mode]] = await conn.query<RowDataPacket[]>('SELECT @@GLOBAL.gtid_mode AS mode');
  if (String(mode?.mode).toUpperCase() === 'ON') {
    const [[row]] = await conn.query<RowDataPacket[]>('SELECT @@GLOBAL.gtid_executed AS pos');
    return { gtid: String(row?.pos ?? '').replace(/\s/g, '') };
  }
  const [[status]] = await conn.query<RowDataPacket[]>('SHOW MASTER STATUS');
  if (!status)
    throw new EvpubError(ErrorCode.SOURCE_FAILED, 'mysql: SHOW MASTER STATUS is empty: is log_bin on?');
  return { file: String(status.File), pos: Number(status.Position) };
}

/**
 * The start of the oldest binlog the server still has ('beginning'). Never the empty GTID state
 * once binlogs were purged: both servers refuse it then (error 1236), as a replica that needs
 * transactions they no longer have. MariaDB: the state at the head of the oldest binlog
 * (position.ts oldestPoint). MySQL with GTIDs: `gtid_purged`, what the server no longer has.
 */
async function firstPoint(conn: Connection, info: ServerInfo): Promise<StreamPoint> {
  if (info.mariadb) return oldestPoint(conn, true);
  const [[mode]] = await conn.query<RowDataPacket[]>('SELECT @@GLOBAL.gtid_mode AS mode');
  if (String(mode?.mode).toUpperCase() === 'ON') {
    const [[row]] = await conn.query<RowDataPacket[]>('SELECT @@GLOBAL.gtid_purged AS purged');
    return { gtid: String(row?.purged ?? '').replace(/\s/g, '') };
  }
  return oldestPoint(conn, false);
}
