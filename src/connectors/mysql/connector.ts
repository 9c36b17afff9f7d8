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
 *
 * Units of ownership (contract point 10): one per model. Each model's reader resumes from its
 * own position and holds its own binlog connection, so two models never need the same
 * process; a model is the smallest piece that must have one reader at a time (two readers of
 * it would publish its changes twice). Several instances of this connector may therefore read
 * one datasource, each started with some of its models. The exception: the models fed from the
 * outbox (`outbox: true`, outbox.ts) share one stream of the outbox table, so they are one unit.
 *
 * Server ids: a model's binlog reader uses `serverId + n`, n the model's place in the
 * datasource's configured models (`dataSource.models`, which evpub passes whole also to an
 * instance that reads only some of them), not in `start()`'s list: two instances with one
 * model each would otherwise both use `serverId + 0`, and the server ends the older dump when
 * a second one registers with its id. So the ids stay distinct across instances and stable
 * across restarts and moves of a unit between processes (as long as the configuration keeps
 * the models' order). A model `start()` gets that the list lacks is numbered after the list;
 * without a list (a caller of `initialize` that passes none), by its place in `start()`'s list.
 * The default `serverId` is random per connector instance, so instances never share one. Before
 * any reader connects, `start()` refuses server ids another live reader uses, or with
 * `takeover` (point 11) ends that reader (replica.ts).
 *
 * Every `statusInterval` ms while streaming, one `SHOW BINARY LOGS` on a query connection of its
 * own (opened at the first report, reopened after a failure, closed by `stop()`) measures how far
 * each model's reader is behind the server's end of the binlog: reported as `{ type: 'lagging',
 * model, bytes, seconds }` (lag.ts); a reconnecting model from its last known position. A
 * failed report is logged (a warning the first time after a success, then debug) and skipped;
 * it never affects the streams.
 *
 * Re-snapshot (`snapshot(model)`, contract point 9): the model's stream is stopped after what
 * it pushed, and a new one takes over from exactly where a reconnect would resume (the point
 * after the last row pushed, skipping the rows of its transaction already pushed), this time
 * with a snapshot window from the first row. Why a new run rather than a window installed into
 * the running stream: a stream decodes the signal table and carries a cursor in its positions
 * only when it is built with a snapshot, and "resume from the last row pushed" is the path every
 * reconnect already takes, so the re-snapshot adds no state to a stream while it runs; the
 * price is one binlog reconnection. Consistency is the initial snapshot's (snapshot.ts): the new
 * stream starts before the first watermark, and the binlog is read on from the last row pushed,
 * so nothing is skipped; positions carry the cursor, so a restart resumes the snapshot.
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
  SnapshotStart,
  SourceCheck,
  StartRequest,
} from '../contract';
import { BinlogStream } from './binlog';
import { checkServer, translate, type ServerInfo } from './errors';
import { claimServerIds } from './replica';
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
  outboxTable,
  parseSnapshot,
  signalTableOf,
  tableOf,
  type MysqlSettings,
  type TableRef,
} from './settings';
import { ChunkedSnapshot, checkSignalTable } from './snapshot';
import { loadTableMeta, type TableMeta } from './values';
import { outboxDdl } from '../../events/outbox';
import { isOutboxModel, outboxModels } from '../kit/outbox';
import { OutboxSink } from './outbox';
import { comparePositions, type BinlogPosition } from './position';
import { binlogFiles, lagBytes, lagSeconds } from './lag';

type MysqlPromise = typeof import('mysql2/promise');

interface ModelRun {
  model: string;
  meta: TableMeta;
  /** Its binlog reader's replica server id (see top: serverId + the model's place). */
  serverId: number;
  sink: ChangeSink;
  lastPushed: string | null;
  failed: boolean;
  stream?: BinlogStream;
  snapshot?: Promise<void>;
  /** When a lag report last found its reader at the end of the binlog (ms). */
  caughtUpAt?: number;
  /** The snapshot window while its chunks are read (until the last one is pushed). */
  window?: ChunkedSnapshot;
  /** A re-snapshot taking over from the stream (see top), until the new stream is built. */
  restarting?: Promise<void>;
}

export class MysqlConnector implements EventConnector {
  readonly name = 'mysql';
  readonly resumable = true;
  readonly settings: MysqlSettings;
  private readonly logger: Logger;
  private readonly runs = new Map<string, ModelRun>();
  private readonly stopper = new AbortController();
  private readonly life: Lifecycle;
  private sink: ChangeSink | undefined;
  private lagTimer: NodeJS.Timeout | undefined;
  /** The query connection of the lag reports, and the report running (one at a time). */
  private lagConn: Connection | undefined;
  private lagReport: Promise<void> | undefined;
  private lagWarned = false;
  /** The outbox stream's sink and its models, the lead first (outbox.ts), when a model reads the outbox. */
  private outbox: { sink: OutboxSink; models: string[]; from: Map<string, string | null> } | undefined;

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

  /**
   * Contract point 10: one unit per model (see top), except the outbox models, which share one
   * stream of the outbox table: one unit of all of them, where the first of them is. Without
   * the models' settings (`dataSource.modelSettings`) and with an outbox, one unit of all.
   */
  units(models: readonly string[]): string[][] {
    if (this.settings.outbox === undefined) return models.map((model) => [model]);
    const settings = this.dataSource.modelSettings;
    if (!settings) return models.length > 0 ? [[...models]] : [];
    const fromOutbox = models.filter((m) => {
      try {
        return isOutboxModel(m, settings[m] ?? {});
      } catch {
        return false; // start() says what is wrong
      }
    });
    const out: string[][] = [];
    for (const model of models) {
      if (!fromOutbox.includes(model)) out.push([model]);
      else if (model === fromOutbox[0]) out.push(fromOutbox);
    }
    return out;
  }

  /** Each model's binlog server id: `serverId` + its place in the configured models (see top). */
  private serverIds(models: readonly string[]): Map<string, number> {
    const configured = this.dataSource.models ?? [];
    const extra = models.filter((m) => !configured.includes(m));
    const ids = new Map<string, number>();
    for (const [index, model] of models.entries()) {
      const n = configured.length > 0 ? configured.indexOf(model) : index;
      const offset = n >= 0 ? n : configured.length + extra.indexOf(model);
      const id = this.settings.serverId + offset;
      if (id > MAX_SERVER_ID) {
        throw new EvpubError(
          ErrorCode.CONFIG_INVALID,
          `datasources.${this.dataSource.name}.serverId: ${this.settings.serverId} + ${offset} (model ${model}) ` +
            `exceeds the largest server id ${MAX_SERVER_ID}: choose a smaller serverId`,
          { context: { model, serverId: this.settings.serverId } },
        );
      }
      ids.set(model, id);
    }
    return ids;
  }

  /** `evpub check`: what the server and tables still need (contract point 8; read-only). */
  check(
    models: readonly { name: string; settings: Readonly<Record<string, unknown>> }[],
  ): Promise<SourceCheck[]> {
    return checkMysql(
      () => this.connect(),
      this.settings,
      this.dataSource.name,
      models,
      this.settings.serverIdSet ? () => this.serverIds(models.map((m) => m.name)) : undefined,
    );
  }

  async start(request: StartRequest): Promise<void> {
    this.life.begin();
    this.sink = request.sink;
    let conn: Connection | undefined;
    try {
      const fromOutbox = new Set(
        outboxModels('mysql', this.dataSource.name, this.settings.outbox, request.models),
      );
      const configured = this.dataSource.models ?? [];
      const place = (m: string): number =>
        configured.includes(m) ? configured.indexOf(m) : configured.length;
      // The outbox models, the lead (first configured) first: one stream, the lead's server id.
      const outboxFeeds = request.models
        .filter((m) => fromOutbox.has(m.name))
        .sort((a, b) => place(a.name) - place(b.name));
      const tableFeeds = request.models.filter((m) => !fromOutbox.has(m.name));
      const refs = tableFeeds.map((m) => ({ feed: m, ref: tableOf(m.name, m.settings, this.settings) }));
      const readers = [...tableFeeds, ...outboxFeeds.slice(0, 1)];
      conn = await this.connect();
      const info = await checkServer(conn, this.settings, this.logger).catch((err: unknown) => {
        throw translate(err, this.settings, 'checking the server');
      });
      const ids = this.serverIds(request.models.map((m) => m.name));
      await claimServerIds(
        conn,
        readers.map((m) => ({ model: m.name, serverId: ids.get(m.name)! })),
        {
          datasource: this.dataSource.name,
          explicit: this.settings.serverIdSet,
          takeover: request.takeover === true,
          waitOwn: this.settings.connectTimeout,
          logger: this.logger,
          signal: this.stopper.signal,
        },
      ).catch((err: unknown) => {
        throw translate(err, this.settings, 'listing the binlog readers');
      });
      const opening: Promise<void>[] = [];
      for (const { feed, ref } of refs) {
        const meta = await loadTableMeta(conn, ref).catch((err: unknown) => {
          throw translate(err, this.settings, `reading ${ref.database}.${ref.table}'s columns`);
        });
        const run: ModelRun = {
          model: feed.name,
          meta,
          serverId: ids.get(feed.name)!,
          sink: request.sink,
          lastPushed: null,
          failed: false,
        };
        this.runs.set(feed.name, run);
        opening.push((await this.plan(conn, info, run, feed)).opened);
      }
      if (outboxFeeds.length > 0) {
        const own = new Set(refs.map((r) => r.feed.name));
        opening.push((await this.startOutbox(conn, info, outboxFeeds, ids, own)).opened);
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
    if (this.life.state === 'streaming') {
      this.lagTimer = setInterval(() => {
        this.lagReport ??= this.reportLag().finally(() => (this.lagReport = undefined));
      }, this.settings.statusInterval);
    }
  }

  /** One lag report for every model with a reader (see lag.ts). Never throws. */
  private async reportLag(): Promise<void> {
    const readers = [...this.runs.values()].flatMap((run) => {
      const live = run.stream?.state === 'streaming' || run.stream?.state === 'reconnecting';
      const read = live ? run.stream!.readPosition() : undefined;
      return read ? [{ run, stream: run.stream!, read }] : [];
    });
    if (readers.length === 0 || this.stopper.signal.aborted) return;
    try {
      this.lagConn ??= await this.connect();
      if (this.stopper.signal.aborted) return;
      const files = await binlogFiles(this.lagConn, this.settings.statusInterval);
      const now = Date.now();
      this.lagWarned = false;
      for (const { run, stream, read } of readers) {
        const bytes = lagBytes(files, read);
        if (bytes === undefined) continue;
        if (bytes === 0) run.caughtUpAt = now;
        const seconds = lagSeconds(bytes, now, stream.lastEventAt, run.caughtUpAt);
        this.sink?.status({
          type: 'lagging',
          model: run.model,
          bytes,
          ...(seconds !== undefined ? { seconds } : {}),
        });
      }
    } catch (err) {
      const conn = this.lagConn;
      this.lagConn = undefined;
      await conn?.end().catch(() => undefined);
      if (this.stopper.signal.aborted) return;
      const error = translate(err, this.settings, 'measuring the binlog lag');
      const level = this.lagWarned ? 'debug' : 'warn';
      this.lagWarned = true;
      this.logger[level]({ err: error.message }, 'binlog lag report failed (retried every statusInterval)');
    }
  }

  /**
   * The outbox stream (outbox.ts): the table made when missing and allowed, one stream as the
   * lead model's, from the earliest of the models' starts; returns what start() awaits.
   */
  private async startOutbox(
    conn: Connection,
    info: ServerInfo,
    feeds: ModelFeed[],
    ids: Map<string, number>,
    own: Set<string>,
  ): Promise<{ opened: Promise<void> }> {
    const outbox = this.settings.outbox!;
    const ref = outboxTable(outbox);
    const name = `${ref.database}.${ref.table}`;
    const quoted = `\`${ref.database.replace(/`/g, '``')}\`.\`${ref.table.replace(/`/g, '``')}\``;
    const [found] = await conn.query<RowDataPacket[]>(
      'SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
      [ref.database, ref.table],
    );
    if (found.length === 0) {
      const ddl = outboxDdl('mysql', quoted);
      if (!outbox.create) {
        throw new EvpubError(
          ErrorCode.CONFIG_INVALID,
          `mysql connector: the outbox table ${name} does not exist and datasources.${this.dataSource.name}.outbox.create ` +
            `is false: create it (${ddl}) or allow create`,
          { context: { setting: `datasources.${this.dataSource.name}.outbox.create` } },
        );
      }
      await conn.query(ddl).catch((err: unknown) => {
        const e = translate(err, this.settings, `creating the outbox table ${name}`);
        e.message += ` (the user needs CREATE on ${ref.database}, or create it: ${ddl})`;
        throw e;
      });
      this.logger.info({ table: name }, 'outbox table created');
    }
    const meta = await loadTableMeta(conn, ref).catch((err: unknown) => {
      throw translate(err, this.settings, `reading ${name}'s columns`);
    });
    const models = feeds.map((f) => f.name);
    const lead = models[0]!;
    const sink = new OutboxSink({
      datasource: this.dataSource.name,
      sink: this.sink!,
      models,
      own,
      table: name,
    });
    this.outbox = {
      sink,
      models,
      from: new Map(feeds.map((f) => [f.name, typeof f.from === 'object' ? f.from.after : null])),
    };
    const run: ModelRun = {
      model: lead,
      meta,
      serverId: ids.get(lead)!,
      sink,
      lastPushed: null,
      failed: false,
    };
    this.runs.set(lead, run);
    // Each model's start; the stream begins at the earliest.
    const starts: { model: string; at: BinlogPosition }[] = [];
    let now: StreamPoint | undefined;
    for (const feed of feeds) {
      if (typeof feed.from === 'object') {
        sink.skipUntil(feed.name, feed.from.after);
        starts.push({ model: feed.name, at: decodePosition(feed.from.after) });
      } else if (feed.from === 'now') {
        now ??= await currentPoint(conn, info);
        const position = encodePosition(now);
        sink.skipUntil(feed.name, position);
        this.sink!.mark(feed.name, position);
        starts.push({ model: feed.name, at: now });
      } else {
        starts.push({ model: feed.name, at: await firstPoint(conn, info) });
      }
    }
    const first = earliest(starts.map((s) => s.at));
    if (!first.ordered) {
      this.logger.warn(
        { starts: starts.map((s) => ({ model: s.model, at: encodePosition(s.at) })) },
        "outbox: the models' positions cannot be ordered; reading from the first one: rows may be published again (with their ids)",
      );
    }
    const at = first.at;
    const point: StreamPoint = at.gtid !== undefined ? { gtid: at.gtid } : { file: at.file!, pos: at.pos! };
    try {
      await checkAvailable(conn, point, info.mariadb);
    } catch (err) {
      run.failed = true;
      const error = translate(err, this.settings, 'checking the checkpoint');
      this.logger.error({ models, err: error.message }, 'cannot resume the outbox');
      sink.fail(lead, error);
      return { opened: Promise.resolve() };
    }
    const stream = await this.launch(run, {
      point,
      ...(at.tx !== undefined ? { skip: { tx: at.tx, row: at.row ?? 0 } } : {}),
      conn,
    });
    return { opened: stream.open() };
  }

  /** Decides where the model starts; returns what start() awaits (the stream's first connection). */
  private async plan(
    conn: Connection,
    info: ServerInfo,
    run: ModelRun,
    feed: ModelFeed,
  ): Promise<{ opened: Promise<void> }> {
    const { from } = feed;
    const { sink } = run;
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
    const stream = await this.launch(run, {
      point,
      ...(skip ? { skip } : {}),
      ...(snapshot ? { snapshot } : {}),
      conn,
    });
    const opened = stream.open();
    this.readAlongside(run, stream, opened);
    return { opened };
  }

  /**
   * Builds the model's stream from `point` (skipping `skip`), with the snapshot window when
   * `snapshot` is given (checking the signal table on `conn` first). Does not connect it.
   */
  private async launch(
    run: ModelRun,
    from: {
      point: StreamPoint;
      skip?: { tx: string; row: number };
      snapshot?: SnapshotCursor;
      conn: Connection;
    },
  ): Promise<BinlogStream> {
    const { sink } = run;
    const logger = this.modelLogger(run);
    let chunks: { window: ChunkedSnapshot; signalTable: TableRef; cursor: SnapshotCursor } | undefined;
    if (from.snapshot) {
      const signalTable = signalTableOf(this.settings, this.dataSource.name);
      // One row per datasource and model, whatever the (default random) server id, so restarts
      // do not add rows; two publishers of the same names share it, each ignoring the other's
      // watermarks.
      const signalId = signalRowId(`${this.dataSource.name}/${run.model}`);
      const window = new ChunkedSnapshot({
        meta: run.meta,
        signalTable,
        signalId,
        user: this.settings.user,
        datasource: this.dataSource.name,
        model: run.model,
        chunkSize: this.settings.snapshotChunk,
        cursor: from.snapshot,
        sink,
        logger,
        signal: this.stopper.signal,
      });
      await checkSignalTable(from.conn, { signalTable, signalId }, this.settings.user);
      chunks = { window, signalTable, cursor: from.snapshot };
    }
    const stream = new BinlogStream({
      settings: this.settings,
      datasource: this.dataSource.name,
      model: run.model,
      meta: run.meta,
      serverId: run.serverId,
      sink,
      logger,
      point: from.point,
      ...(from.skip ? { skip: from.skip } : {}),
      ...(chunks ? { snapshot: chunks } : {}),
      onPushed: (position) => (run.lastPushed = position),
    });
    run.stream = stream;
    run.window = chunks?.window;
    return stream;
  }

  private modelLogger(run: ModelRun): Logger {
    return this.logger.child({ model: run.model, table: `${run.meta.database}.${run.meta.table}` });
  }

  /** Reads the stream's snapshot (if it has one) once `opened` resolves; a failure fails the model. */
  private readAlongside(run: ModelRun, stream: BinlogStream, opened: Promise<void>): void {
    const window = run.window;
    if (!window) return;
    const logger = this.modelLogger(run);
    // The snapshot reads once the stream runs (start() fails if the stream cannot begin).
    run.snapshot = opened
      .then(
        async () => {
          await this.readSnapshot(window, logger);
          if (run.window === window && !this.stopper.signal.aborted) run.window = undefined;
        },
        () => undefined,
      )
      .catch(async (err: unknown) => {
        if (this.stopper.signal.aborted) return;
        run.failed = true;
        const error = translate(err, this.settings, 'reading the snapshot');
        logger.error({ err: error.message }, 'snapshot failed');
        run.sink.fail(run.model, error);
        await stream.stop();
      });
  }

  /** Re-snapshots a streaming model's table from its first row (contract point 9; see top). */
  async snapshot(model: string): Promise<SnapshotStart> {
    const run = this.runs.get(model);
    const life = this.life.state;
    const streamState = run?.stream?.state;
    if (
      !run ||
      run.failed ||
      life !== 'streaming' ||
      (run.restarting === undefined && streamState !== 'streaming' && streamState !== 'reconnecting')
    ) {
      const why = !run
        ? 'has no such model'
        : run.failed || streamState === 'failed'
          ? 'failed for this model'
          : `is ${life === 'streaming' ? streamState : life}`;
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `mysql connector "${this.dataSource.name}": cannot snapshot model ${model}: the connector ${why}`,
        { context: { model } },
      );
    }
    if (run.restarting) return { started: false, done: 0 };
    if (this.outbox?.models.includes(model)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `mysql connector: models.${model}: fed from the outbox (settings.outbox), it has no table to snapshot`,
        { context: { model } },
      );
    }
    if (run.window) return { started: false, ...run.window.progress() };
    if (run.meta.primaryKey.length === 0) {
      const table = `${run.meta.database}.${run.meta.table}`;
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `mysql connector: models.${model}: a snapshot needs a primary key on ${table}: add one`,
        { context: { model, table } },
      );
    }
    const restarting = this.takeOver(run);
    run.restarting = restarting;
    try {
      await restarting;
    } finally {
      run.restarting = undefined;
    }
    return { started: true, done: 0 };
  }

  /** Stops the model's stream and starts a new one from where it stopped, with a snapshot. */
  private async takeOver(run: ModelRun): Promise<void> {
    const conn = await this.connect();
    try {
      const old = run.stream!;
      // The signal table is checked (or created) before the stream is touched: a re-snapshot
      // that cannot run leaves the stream as it was.
      const signalTable = signalTableOf(this.settings, this.dataSource.name);
      const signalId = signalRowId(`${this.dataSource.name}/${run.model}`);
      await checkSignalTable(conn, { signalTable, signalId }, this.settings.user);
      // The columns as they are now (an ALTER since start is decoded right by the new stream).
      const meta = await loadTableMeta(conn, run.meta);
      await old.stop();
      run.meta = meta;
      if (this.stopper.signal.aborted) {
        throw new EvpubError(
          ErrorCode.INVALID_STATE,
          `mysql connector "${this.dataSource.name}" was stopped while the re-snapshot of ${run.model} began`,
        );
      }
      const { point, skip } = old.resumePoint();
      let stream: BinlogStream;
      try {
        stream = await this.launch(run, {
          point,
          ...(skip ? { skip } : {}),
          snapshot: { key: null, done: 0 },
          conn,
        });
      } catch (err) {
        // The old stream is gone and no new one runs: the model stops here, said so.
        run.failed = true;
        const error = translate(err, this.settings, 'starting the re-snapshot');
        run.sink.fail(run.model, error);
        throw error;
      }
      this.modelLogger(run).info({ point }, 're-snapshot started: the stream goes on from there');
      stream.begin();
      this.readAlongside(run, stream, Promise.resolve());
    } catch (err) {
      throw translate(err, this.settings, 'starting the re-snapshot');
    } finally {
      await conn.end().catch(() => undefined);
    }
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
      clearInterval(this.lagTimer);
      await this.lagReport;
      await this.lagConn?.end().catch(() => undefined);
      this.lagConn = undefined;
      const runs = [...this.runs.values()];
      await Promise.all(runs.map((r) => (r.restarting ?? Promise.resolve()).catch(() => undefined)));
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
    if (this.outbox) {
      // The outbox stream runs as its lead's: each outbox model shows its own last position.
      const lead = this.outbox.models[0]!;
      const leadFailed = failed.includes(lead);
      for (const model of this.outbox.models) {
        positions[model] = this.outbox.sink.lastPushed.get(model) ?? this.outbox.from.get(model) ?? null;
        if (leadFailed && model !== lead) failed.push(model);
      }
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

/** Server ids are unsigned 32-bit. */
const MAX_SERVER_ID = 2 ** 32 - 1;

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

/**
 * The earliest of the outbox models' starts; `ordered` false when some cannot be ordered (then
 * the one before the most others).
 */
function earliest(starts: BinlogPosition[]): { at: BinlogPosition; ordered: boolean } {
  let best = starts[0]!;
  let bestScore = -1;
  for (const a of starts) {
    const score = starts.filter((b) => {
      const order = comparePositions(a, b);
      return order !== undefined && order <= 0;
    }).length;
    if (score === starts.length) return { at: a, ordered: true };
    if (score > bestScore) [best, bestScore] = [a, score];
  }
  return { at: best, ordered: false };
}
