/**
 * The PostgreSQL event connector (built-in `postgres`, alias `postgresql`): logical
 * replication with pgoutput, one slot and one replication connection per datasource, shared
 * by all its models (one model = one table). See settings.ts for the settings, stream.ts for
 * the connection, types.ts for values, snapshot.ts for snapshots, position.ts for positions.
 *
 * Start: check wal_level and the REPLICATION attribute, describe the tables (missing → error),
 * warn once about tables whose replica identity cannot give what the model asks, create or
 * extend the publication, create the slot when missing (an invalidated or busy slot is an
 * error), start streaming from the slot, then run the snapshots due.
 *
 * Several instances (contract points 10 and 11): the slot is one position shared by every model
 * of the datasource, so the whole datasource is one unit of ownership and the connector has no
 * `units()` (the default). A slot serves one reader: started without `takeover`, a slot read by
 * another process fails start with FEED_OWNED_ELSEWHERE; with `takeover` (the caller holds the
 * unit's lease) that reader is a stale owner whose backend is ended (claimSlot). A new owner
 * starts from the checkpoints of the old one exactly as a restart does: the positions carry
 * the snapshot cursors (an initial or re-snapshot under way resumes after its last row), the
 * slot re-sends from what the old owner acknowledged, which is never past its checkpoints, and
 * each model skips what its checkpoint covers; nothing else is handed over.
 *
 * Re-snapshot (`snapshot(model)`, contract point 9): the model gets a snapshot state from its
 * first row and `runSnapshot` runs beside the stream exactly as the initial one does (same
 * chunks, same cursor in every position, same consistency argument: snapshot.ts), so a restart
 * mid-way resumes it after its cursor.
 *
 * Events: insert → create, update → update, delete → delete, truncate → one `truncate` event
 * per model (key ""). `before`: the old row with REPLICA IDENTITY FULL, else the key columns
 * (update and delete). An unchanged TOAST column is left out of `after` and named in
 * `source.unchanged`. `id` = `<commitLsn>:<index in transaction>`; `tx` = { id: xid,
 * commitPosition: commit LSN, commitTime }.
 *
 * The outbox (src/events/outbox.ts, docs/outbox.md): the models with `outbox: true` all read
 * the datasource's outbox table (created with outboxDdl when missing and allowed; in the
 * publication like a model table). Each INSERT of it becomes the event the row describes
 * (outboxRowToEvent: the row's id as event id, the transaction's commit time, the INSERT's place
 * in the transaction as position) pushed to the model it names; DELETEs and UPDATEs of the
 * outbox are no event: they move only the frontier, so they hold no WAL back. A row that does not
 * follow the protocol, or names a model that is not one of this connector's outbox models, is
 * a dead letter with its reason, charged to the first outbox model (in configuration order):
 * its position is that model's, so it is committed and skipped after a restart like an event.
 * The datasource is one unit either way (one slot), so every outbox model is always read here.
 *
 * Acknowledging the slot (the only way PostgreSQL may discard WAL): the flush LSN reported is
 * the minimum over models of each model's safe LSN, and only moves forward.
 * - A model with events pushed but not yet committed: everything before its committed
 *   position's transaction is safe (report that commit LSN: the transaction is sent again after
 *   a restart and the model skips what it published), or the transaction's end LSN when the
 *   committed event was the model's last one in it.
 * - A model with nothing uncommitted (idle, or all published): the stream frontier, i.e. the
 *   end of the last transaction or heartbeat fully handled (or the current transaction's commit
 *   LSN while inside one). An idle model therefore never holds WAL back; heartbeats move the
 *   frontier when no captured table changes.
 * - A model that failed keeps its place: its WAL is kept until it is fixed (lag shows it).
 */
import type { Client } from 'pg';
import type { Pgoutput } from 'pg-logical-replication';
import { ErrorCode, EvpubError, toError } from '../../errors';
import type { ChangeEvent, Position, Row } from '../../events/change-event';
import { defaultLogger, type Logger } from '../../logger';
import type {
  ChangeSink,
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  ModelFeed,
  SnapshotStart,
  SourceCheck,
  StartRequest,
} from '../contract';
import { describeReader, fixes, sourceError, sqlState } from './errors';
import {
  comparePoints,
  decodePosition,
  encodePosition,
  formatLsn,
  parseLsn,
  type Lsn,
  type StreamPoint,
} from './position';
import { Lifecycle } from '../kit/lifecycle';
import { outboxModels, unknownOutboxModel } from '../kit/outbox';
import { outboxDdl, outboxRowToEvent } from '../../events/outbox';
import { SettingsReader } from '../kit/settings';
import {
  APPLICATION_NAME,
  outboxTable,
  parsePostgresSettings,
  qualified,
  pgSsl,
  snapshotMode,
  tableOf,
  type PostgresSettings,
} from './settings';
import type { ConnectionOptions } from 'node:tls';
import {
  ArrayTypes,
  checkServer,
  checkSlot,
  connectAdmin,
  currentLsn,
  describeTables,
  ensurePublication,
  ensureSlot,
  heartbeat,
  HEARTBEAT_PREFIX,
  slotState,
  terminateReader,
  type SlotState,
  type TableInfo,
} from './slot-admin';
import { countRows, readChunk, snapshotId } from './snapshot';
import { checkPostgres } from './check';
import { ReplicationStream } from './stream';
import { decodeValue } from './types';
import { connectorInitializer } from '../kit/initialize';
import { backoffDelay, sleepUnlessStopped } from '../../util/retry';
import { drainUnlessStopped } from '../kit/waits';

export { parsePostgresSettings, POSTGRES_SETTING_KEYS } from './settings';
export { listSlots, dropSlot, connectAdmin, currentLsn, type SlotState } from './slot-admin';
export { formatLsn, resnapshotPosition } from './position';
export { defaultName, pgSsl } from './settings';

interface ModelState {
  name: string;
  table: TableInfo;
  /** Columns that make the event key (primary key, else the replica identity's). */
  key: string[];
  /** Stream changes at or before this point were published already (or precede 'now'). */
  skip: StreamPoint | null;
  /** The stream part of the model's positions: its last stream change pushed (or the skip point). */
  point: StreamPoint | null;
  snapshot:
    | {
        cursor: string[] | null;
        done: number;
        total?: number;
        /** Keys the stream pushed a change of since the current chunk's read began (snapshot.ts). */
        changed?: Set<string>;
        /** The stream pushed a truncate since then. */
        truncated?: boolean;
      }
    | undefined;
  lastPushed: Position | null;
  committed: Position | null;
  failed: boolean;
}

interface Tx {
  xid: number;
  commitLsn: Lsn;
  /** commitLsn as text, made once per transaction. */
  commitLsnText: string;
  commitTime: string;
  /** The commit time in ms since the epoch (for the lag in seconds). */
  commitMs: number;
  /** The events' `tx`, one object shared by the transaction's events (read-only). */
  info: { id: string; commitPosition: string; commitTime: string };
  index: number;
  /** Per model, the index of its last change in this transaction. */
  last: Map<string, number>;
}

/** One row change of a pgoutput insert, update or delete message. */
interface RowChange {
  relation: Pgoutput.MessageRelation;
  op: 'create' | 'update' | 'delete';
  /** The old row (REPLICA IDENTITY FULL), if sent. */
  old: Record<string, unknown> | undefined;
  next: Record<string, unknown> | null;
  /** The old key columns (default replica identity), if sent. */
  keyTuple: Record<string, unknown> | null;
}

function isoMicros(micros: bigint): string {
  const ms = new Date(Number(micros / 1000n)).toISOString();
  return `${ms.slice(0, -1)}${(micros % 1000n).toString().padStart(3, '0')}Z`;
}

export class PostgresConnector implements EventConnector {
  readonly name = 'postgres';
  readonly resumable = true;
  readonly settings: PostgresSettings;
  private readonly logger: Logger;
  private readonly models = new Map<string, ModelState>();
  private readonly byTable = new Map<string, ModelState[]>();
  private readonly arrays = new ArrayTypes();
  /** Relations (as the decoder keeps them until the next Relation message) whose types are known. */
  private readonly typedRelations = new WeakSet<Pgoutput.MessageRelation>();
  private sink: ChangeSink | undefined;
  private readonly life: Lifecycle<'reconnecting' | 'failed'>;
  private adminClient: Client | undefined;
  /** Settles when the admin connection's current call is done (see withAdmin). */
  private adminTurn: Promise<unknown> = Promise.resolve();
  /** pg's `ssl` option, loaded once from the `tls` setting (see ssl()). */
  private loadedSsl: { value: ConnectionOptions | undefined } | undefined;
  private stream: ReplicationStream | undefined;
  private protoVersion: 1 | 2 = 1;
  private tx: Tx | undefined;
  /** Everything before this LSN was handled by the stream handler. */
  private frontier: Lsn = 0n;
  /**
   * For the lag in seconds: the commit time of the transaction being read, or the last one read
   * (ms), and when a lag report last found the stream caught up (every change the server had
   * was read).
   */
  private readCommitMs: number | undefined;
  private caughtUpAt: number | undefined;
  /** Where the slot was when this connection started (safe for models with nothing committed yet). */
  private startFlush: Lsn = 0n;
  /** Ends of recent transactions, with each model's last index in them. */
  private readonly txEnds = new Map<Lsn, { end: Lsn; last: Map<string, number> }>();
  private readonly stopper = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly snapshots: Promise<void>[] = [];
  /** Point 11: this instance holds the slot's unit lease; another reader of the slot is stale. */
  private takeover = false;
  /**
   * The outbox (see "The outbox" above), when a model is fed from it: its table (`schema.table`),
   * its models by name, the model charged with the dead letters of rows naming no outbox model
   * (the first outbox model), and the names of the models with a table of their own.
   */
  private outbox:
    { table: string; models: Map<string, ModelState>; charge: ModelState; own: Set<string> } | undefined;

  constructor(private readonly dataSource: DataSourceLike) {
    this.settings = parsePostgresSettings(dataSource.name, dataSource.settings);
    this.life = new Lifecycle('postgres', dataSource.name);
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'postgres',
      datasource: dataSource.name,
      slot: this.settings.slot,
    });
  }

  // -------------------------------------------------------------------------------------------
  // Lifecycle

  async start(request: StartRequest): Promise<void> {
    this.life.begin();
    this.sink = request.sink;
    this.takeover = request.takeover === true;
    try {
      await this.prepare(request.models);
      await this.connect();
    } catch (err) {
      const error = this.life.startFailed(err);
      await this.teardown();
      throw error;
    }
    if (this.stopped) {
      await this.teardown();
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `postgres connector "${this.dataSource.name}" was stopped while starting`,
      );
    }
    this.life.started();
    this.markNow(request.models);
    this.loop = this.watch();
    if (this.settings.heartbeatInterval > 0) {
      this.timers.push(setInterval(() => void this.beat(), this.settings.heartbeatInterval));
    }
    this.timers.push(setInterval(() => void this.reportLag(), this.settings.statusInterval));
    for (const model of this.models.values()) {
      if (model.snapshot) this.snapshots.push(this.runSnapshot(model));
    }
  }

  /**
   * A model started `'now'` without a checkpoint marks where 'now' is (when the sink takes
   * marks), so that after a restart it resumes there even if it saw no change.
   */
  private markNow(feeds: ModelFeed[]): void {
    const mark = (this.sink as { mark?: (model: string, position: Position) => void }).mark;
    if (!mark) return;
    for (const feed of feeds) {
      const model = this.models.get(feed.name)!;
      if (feed.from !== 'now' || model.snapshot) continue;
      mark.call(this.sink, model.name, encodePosition({ stream: model.point }));
    }
  }

  private get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  /** The `tls` setting as pg's `ssl` option, read once (a file that cannot be read: CONFIG_INVALID). */
  private ssl(): ConnectionOptions | undefined {
    this.loadedSsl ??= { value: pgSsl(this.settings, this.logger) };
    return this.loadedSsl.value;
  }

  private async admin(): Promise<Client> {
    this.adminClient ??= await connectAdmin(
      this.settings.url,
      this.settings.displayUrl,
      this.settings.connectTimeout,
      this.ssl(),
    );
    return this.adminClient;
  }

  /**
   * Runs `fn` on the admin connection, one call at a time (snapshots, heartbeats, lag checks
   * and type lookups share it; pg wants no query issued while one runs); a failed connection is
   * dropped so the next call reconnects.
   */
  private withAdmin<T>(what: string, fn: (c: Client) => Promise<T>): Promise<T> {
    const turn = this.adminTurn.then(() => this.onAdmin(what, fn));
    this.adminTurn = turn.catch(() => undefined);
    return turn;
  }

  private async onAdmin<T>(what: string, fn: (c: Client) => Promise<T>): Promise<T> {
    const client = await this.admin();
    try {
      return await fn(client);
    } catch (err) {
      if (!(err instanceof EvpubError)) {
        this.adminClient = undefined;
        await client.end().catch(() => undefined);
        throw sourceError(what, err, this.settings.displayUrl);
      }
      throw err;
    }
  }

  private async prepare(all: ModelFeed[]): Promise<void> {
    const fromOutbox = new Set(outboxModels('postgres', this.dataSource.name, this.settings.outbox, all));
    // The models with a table of their own first, then the outbox models (all on the outbox table).
    const feeds = [
      ...all.filter((f) => !fromOutbox.has(f.name)),
      ...all.filter((f) => fromOutbox.has(f.name)),
    ];
    const own = feeds.length - fromOutbox.size;
    const refs = feeds.slice(0, own).map((f) => tableOf(f.name, f.settings));
    const { version } = await this.withAdmin('server check', checkServer);
    this.protoVersion = version >= 140000 ? 2 : 1;
    if (fromOutbox.size > 0) {
      const ref = outboxTable(this.settings.outbox!);
      await this.withAdmin('outbox table', (c) => this.ensureOutbox(c));
      for (let i = own; i < feeds.length; i++) refs.push(ref);
    }
    const tables = await this.withAdmin('table check', (c) => describeTables(c, refs));
    await this.withAdmin('type lookup', (c) =>
      this.arrays.learn(
        c,
        tables.flatMap((t) => [...t.columns.values()]),
      ),
    );
    const now = await this.withAdmin('current LSN', currentLsn);
    const warnings: string[] = [];
    feeds.forEach((feed, i) => {
      const table = tables[i]!;
      if (i >= own) {
        const model = this.modelState(feed, table, now, true);
        this.models.set(feed.name, model);
        this.outbox ??= {
          table: `${table.schema}.${table.table}`,
          models: new Map(),
          charge: model,
          own: new Set(feeds.slice(0, own).map((f) => f.name)),
        };
        this.outbox.models.set(feed.name, model);
        return;
      }
      if (
        table.replicaIdentity === 'nothing' ||
        (table.replicaIdentity === 'default' && table.key.length === 0)
      ) {
        warnings.push(
          `${table.schema}.${table.table} has no replica identity: updates and deletes fail on a published table; add a primary key or set REPLICA IDENTITY FULL`,
        );
      }
      const model = this.modelState(feed, table, now);
      this.models.set(feed.name, model);
      const tableKey = `${table.schema}.${table.table}`;
      this.byTable.set(tableKey, [...(this.byTable.get(tableKey) ?? []), model]);
    });
    if (warnings.length > 0) {
      this.logger.warn({ tables: warnings }, `replica identity: ${warnings.join('; ')}`);
    }
    // The outbox table once, however many models it feeds.
    const published = tables.slice(0, own + 1);
    const added = await this.withAdmin('publication', (c) =>
      ensurePublication(c, this.settings.publication, published),
    );
    if (added.length > 0)
      this.logger.info({ publication: this.settings.publication, added }, 'publication updated');
    // A checkpoint made with a slot that is gone: the changes in between are lost to evpub.
    // Only a checkpoint that restarts its snapshot from the first row (`evpub snapshot`) may
    // go on with a new slot.
    const resuming = [...this.models.values()].filter(
      (m) => m.committed !== null && m.snapshot?.cursor !== null,
    );
    if (resuming.length > 0 && !(await this.withAdmin('slot', (c) => slotState(c, this.settings.slot)))) {
      throw fixes.slotLost(
        this.settings.slot,
        `does not exist, but the checkpoints of ${resuming.map((m) => m.name).join(', ')} were made with it`,
      );
    }
    const ensured = await this.withAdmin('slot', (c) => ensureSlot(c, this.settings.slot));
    if (ensured.created) this.logger.info('replication slot created');
    const state = await this.claimSlot(ensured.state);
    this.startFlush = state.confirmedFlush ?? 0n;
  }

  /**
   * Waits until no other backend reads the slot and returns its state; at most connectTimeout.
   * - Read by this process's own connection (a restart whose walsender is still ending): wait.
   * - Read by another process, without takeover: one process reads a slot, so refuse at once
   *   (FEED_OWNED_ELSEWHERE, naming it) rather than read and publish twice.
   * - Read by another process, with takeover (point 11: this instance holds the unit's lease,
   *   so the other is a stale owner, paused or cut off past its deadline but with its
   *   connection still open): end its backend (pg_terminate_backend), warn naming it, and wait
   *   for the slot to be released. A role that may not end it: FEED_OWNED_ELSEWHERE naming the
   *   grant; still read after connectTimeout: a retriable SOURCE_FAILED.
   */
  private async claimSlot(initial: SlotState): Promise<SlotState> {
    const slot = this.settings.slot;
    const feeds = [...this.models.keys()];
    const until = Date.now() + this.settings.connectTimeout;
    const ended = new Set<number>();
    let state = initial;
    while (state.active && !this.stopped) {
      const other = state.application !== APPLICATION_NAME;
      if (other && !this.takeover) break;
      if (other && state.activePid !== null && !ended.has(state.activePid)) {
        ended.add(state.activePid);
        const reader = state;
        const signalled = await this.withAdmin('takeover', (c) => terminateReader(c, slot, feeds, reader));
        this.logger.warn(
          {
            backendPid: reader.activePid,
            application: reader.application,
            clientAddr: reader.clientAddr,
            feeds,
          },
          `takeover: the replication slot "${slot}" was read by ${describeReader({
            pid: reader.activePid,
            application: reader.application,
            clientAddr: reader.clientAddr,
          })}, a stale owner: ${signalled ? 'ended its backend' : 'its backend was ending already'}`,
        );
      }
      if (Date.now() >= until) break;
      await sleepUnlessStopped(100, this.stopper.signal);
      const now = await this.withAdmin('slot', (c) => slotState(c, slot));
      checkSlot(slot, now ? { ...now, active: false } : undefined);
      state = now!;
    }
    if (!state.active) return state;
    const reader = { pid: state.activePid, application: state.application, clientAddr: state.clientAddr };
    if (ended.size > 0 && state.application !== APPLICATION_NAME) {
      throw fixes.takeoverTimedOut(slot, reader, this.settings.connectTimeout);
    }
    throw fixes.slotOwnedElsewhere(slot, feeds, reader);
  }

  /**
   * The outbox table exists after this: created with outboxDdl when missing and `create` is not
   * false (CREATE on the schema needed), else CONFIG_INVALID naming the setting and the DDL.
   */
  private async ensureOutbox(c: Client): Promise<void> {
    const outbox = this.settings.outbox!;
    const name = qualified(outboxTable(outbox));
    const { rows } = await c.query<{ found: boolean }>('SELECT to_regclass($1) IS NOT NULL AS found', [name]);
    if (rows[0]?.found) return;
    const ddl = outboxDdl('postgres', name);
    if (!outbox.create) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `postgres connector: the outbox table ${outbox.schema}.${outbox.table} does not exist and ` +
          `datasources.${this.dataSource.name}.outbox.create is false: create it (${ddl}) or allow create`,
        { context: { setting: `datasources.${this.dataSource.name}.outbox.create` } },
      );
    }
    try {
      await c.query(ddl);
    } catch (err) {
      if (sqlState(err) === '42501') {
        throw new EvpubError(
          ErrorCode.AUTH_FAILED,
          `postgres connector: cannot create the outbox table ${outbox.schema}.${outbox.table}: the role lacks ` +
            `CREATE on schema ${outbox.schema}: GRANT CREATE ON SCHEMA "${outbox.schema}" TO <role>, or create it as its owner (${ddl})`,
          { cause: err },
        );
      }
      throw err;
    }
    this.logger.info({ table: `${outbox.schema}.${outbox.table}` }, 'outbox table created');
  }

  private modelState(feed: ModelFeed, table: TableInfo, now: Lsn, outbox = false): ModelState {
    const key = table.key.length > 0 ? table.key : [...table.columns.keys()];
    const model: ModelState = {
      name: feed.name,
      table,
      key,
      skip: null,
      point: null,
      snapshot: undefined,
      lastPushed: null,
      committed: null,
      failed: false,
    };
    const wantsSnapshot =
      !outbox &&
      snapshotMode(SettingsReader.forModel(feed.name, feed.settings), this.settings.snapshot) === 'initial';
    if (typeof feed.from === 'object') {
      const p = decodePosition(feed.from.after);
      model.skip = p.stream;
      model.point = p.stream;
      model.snapshot = p.snapshot ? { cursor: p.snapshot.cursor, done: 0 } : undefined;
      model.committed = feed.from.after;
    } else {
      if (feed.from === 'now') model.skip = model.point = { lsn: now, index: -1 };
      if (wantsSnapshot) model.snapshot = { cursor: null, done: 0 };
    }
    if (model.snapshot && table.key.length === 0) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `postgres connector: models.${feed.name}: a snapshot needs a primary key on ${table.schema}.${table.table}`,
      );
    }
    return model;
  }

  /** Opens the replication connection (one attempt). */
  private async connect(): Promise<void> {
    const stream = new ReplicationStream({
      settings: this.settings,
      ssl: this.ssl(),
      protoVersion: this.protoVersion,
      logger: this.logger,
      onMessage: (msg) => this.handle(msg),
      flush: () => this.safeFlush(),
    });
    this.tx = undefined;
    this.frontier = this.startFlush;
    await stream.open();
    this.stream = stream;
    this.sink!.status({ type: 'connected' });
    this.logger.info(
      { from: formatLsn(this.startFlush), protoVersion: this.protoVersion },
      'replication started',
    );
  }

  /** Reconnects with back-off whenever the connection ends, until stopped or failed. */
  private async watch(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      const reason = await this.stream!.ended;
      if (this.stopped) return;
      if (reason instanceof EvpubError && !reason.retriable) {
        this.failAll(reason);
        return;
      }
      for (;;) {
        attempt += 1;
        this.life.state = 'reconnecting';
        const message = reason?.message ?? 'replication connection closed';
        this.sink!.status({ type: 'reconnecting', attempt, error: message });
        this.logger.warn({ attempt, err: message }, 'replication connection lost; reconnecting');
        await this.backOff(attempt);
        if (this.stopped) return;
        try {
          let state = await this.withAdmin('slot check', (c) => slotState(c, this.settings.slot));
          checkSlot(this.settings.slot, state ? { ...state, active: false } : undefined);
          // With takeover, a stale owner that took the slot while this connection was down is
          // ended as at start; otherwise (and for this process's own ending walsender) the
          // connect below fails while the slot is busy, and is retried.
          if (this.takeover && state!.active && state!.application !== APPLICATION_NAME) {
            state = await this.claimSlot(state!);
          }
          this.startFlush = state!.confirmedFlush ?? 0n;
          // Resume every model after what it pushed: the slot re-sends from its confirmed LSN.
          for (const model of this.models.values()) model.skip = model.point;
          await this.connect();
          attempt = 0;
          this.life.state = 'streaming';
          break;
        } catch (err) {
          const e = toError(err);
          if (e instanceof EvpubError && !e.retriable) {
            this.failAll(e);
            return;
          }
          this.logger.debug({ err: e.message }, 'reconnect failed');
        }
      }
    }
  }

  private failAll(err: EvpubError): void {
    this.life.state = 'failed';
    for (const model of this.models.values()) {
      model.failed = true;
      this.sink!.fail(model.name, err);
    }
  }

  private backOff(attempt: number): Promise<void> {
    const { reconnectDelay, maxReconnectDelay } = this.settings;
    return sleepUnlessStopped(
      backoffDelay(attempt, { initialDelay: reconnectDelay, maxDelay: maxReconnectDelay }),
      this.stopper.signal,
    );
  }

  stop(): Promise<void> {
    return this.life.stop(async () => {
      this.stopper.abort();
      await this.teardown();
    });
  }

  private async teardown(): Promise<void> {
    for (const t of this.timers.splice(0)) clearInterval(t);
    this.stopper.abort();
    await this.stream?.close();
    await this.loop;
    await Promise.allSettled(this.snapshots);
    const admin = this.adminClient;
    this.adminClient = undefined;
    await admin?.end().catch(() => undefined);
  }

  // -------------------------------------------------------------------------------------------
  // Acknowledgement

  async commit(model: string, position: Position): Promise<void> {
    const state = this.models.get(model);
    if (!state) return;
    state.committed = position;
    this.stream?.ack();
    return Promise.resolve();
  }

  /** The LSN that may be reported flushed: the minimum of every model's safe LSN (see top). */
  private safeFlush(): Lsn {
    let flush: Lsn | undefined;
    const inTx = this.tx ? this.tx.commitLsn : undefined;
    const frontier = inTx ?? this.frontier;
    for (const model of this.models.values()) {
      let safe: Lsn;
      if (model.lastPushed === null || model.lastPushed === model.committed) safe = frontier;
      else {
        const point = model.committed === null ? null : decodePosition(model.committed).stream;
        if (point === null || point.index < 0) safe = point?.lsn ?? this.startFlush;
        else {
          const ended = this.txEnds.get(point.lsn);
          safe = ended && ended.last.get(model.name) === point.index ? ended.end : point.lsn;
        }
        if (safe < this.startFlush) safe = this.startFlush;
      }
      if (flush === undefined || safe < flush) flush = safe;
    }
    const result = flush ?? frontier;
    for (const lsn of this.txEnds.keys()) if (lsn < result) this.txEnds.delete(lsn);
    return result;
  }

  // -------------------------------------------------------------------------------------------
  // The stream

  /**
   * Handles one decoded message. Synchronous on the hot path: it returns a promise only when
   * the stream must wait before the next message (the sink is full, a type lookup, a
   * truncate), so that a steady stream costs no await per change (see stream.ts).
   */
  private handle(msg: Pgoutput.Message): Promise<void> | undefined {
    switch (msg.tag) {
      case 'begin': {
        const commitLsn = parseLsn(msg.commitLsn ?? '0/0');
        const commitLsnText = formatLsn(commitLsn);
        const commitTime = isoMicros(msg.commitTime as bigint);
        this.tx = {
          xid: msg.xid,
          commitLsn,
          commitLsnText,
          commitTime,
          commitMs: Number((msg.commitTime as bigint) / 1000n),
          info: { id: String(msg.xid), commitPosition: commitLsnText, commitTime },
          index: 0,
          last: new Map(),
        };
        this.readCommitMs = this.tx.commitMs;
        return;
      }
      case 'commit': {
        const tx = this.tx;
        if (tx && msg.commitEndLsn) {
          const end = parseLsn(msg.commitEndLsn);
          if (tx.last.size > 0) this.txEnds.set(tx.commitLsn, { end, last: tx.last });
          this.frontier = end;
        }
        this.tx = undefined;
        return;
      }
      case 'message':
        if (!msg.transactional && msg.prefix === HEARTBEAT_PREFIX && !this.tx && msg.messageLsn) {
          const lsn = parseLsn(msg.messageLsn);
          if (lsn > this.frontier) this.frontier = lsn;
        }
        return;
      case 'insert':
        return this.row({
          relation: msg.relation,
          op: 'create',
          old: undefined,
          next: msg.new,
          keyTuple: null,
        });
      case 'update':
        return this.row({
          relation: msg.relation,
          op: 'update',
          old: msg.old ?? undefined,
          next: msg.new,
          keyTuple: msg.key,
        });
      case 'delete':
        return this.row({
          relation: msg.relation,
          op: 'delete',
          old: msg.old ?? undefined,
          next: null,
          keyTuple: msg.key,
        });
      case 'truncate':
        return (async () => {
          for (const relation of msg.relations) await this.truncate(relation);
        })();
      default:
        return;
    }
  }

  private decodeRow(
    relation: Pgoutput.MessageRelation,
    tuple: Record<string, unknown>,
    only?: string[],
  ): { row: Row; unchanged: string[] | undefined } {
    const row: Row = {};
    let unchanged: string[] | undefined; // made only when a TOAST value is unchanged (rare)
    for (const column of relation.columns) {
      if (only && !only.includes(column.name)) continue;
      const raw = tuple[column.name];
      if (raw === undefined) {
        (unchanged ??= []).push(column.name);
        continue;
      }
      row[column.name] = decodeValue(column.typeOid, raw as string | null, this.arrays.elemOf);
    }
    return { row, unchanged };
  }

  private row(change: RowChange): Promise<void> | undefined {
    const { relation } = change;
    const tx = this.tx;
    if (!tx) return;
    const index = tx.index++;
    const outbox = this.outbox;
    if (outbox && outbox.table === `${relation.schema}.${relation.name}`) {
      return this.outboxRow(tx, index, change);
    }
    const models = this.byTable.get(`${relation.schema}.${relation.name}`);
    if (!models) return;
    if (!this.typedRelations.has(relation)) {
      const unknownTypes = relation.columns.map((c) => c.typeOid).filter((oid) => !this.arrays.knows(oid));
      if (unknownTypes.length > 0) {
        return this.withAdmin('type lookup', (c) => this.arrays.learn(c, unknownTypes)).then(() => {
          this.typedRelations.add(relation);
          return this.emitRow(tx, index, models, 0, change);
        });
      }
      this.typedRelations.add(relation);
    }
    return this.emitRow(tx, index, models, 0, change);
  }

  /**
   * An outbox row (see "The outbox" above): an INSERT becomes the event it describes, for the
   * model it names, or a dead letter charged to the first outbox model; a DELETE or UPDATE is
   * not an event (the frontier passes it, so it holds nothing back).
   */
  private outboxRow(tx: Tx, index: number, change: RowChange): Promise<void> | undefined {
    if (change.op !== 'create' || !change.next) return;
    const outbox = this.outbox!;
    const { relation } = change;
    const lsn = tx.commitLsnText;
    let values: Row | undefined;
    let event: ChangeEvent | undefined;
    let reason: string;
    try {
      values = this.decodeRow(relation, change.next).row;
      event = outboxRowToEvent(this.dataSource.name, values, {
        position: null,
        sourceTime: tx.commitTime,
        tx: tx.info,
      });
      reason = unknownOutboxModel(event.model, outbox.own);
    } catch (err) {
      reason = toError(err).message;
    }
    const target = event && outbox.models.get(event.model);
    const model = target ?? outbox.charge;
    const point = { lsn: tx.commitLsn, index };
    if (model.failed || comparePoints(point, model.skip) <= 0) return;
    tx.last.set(model.name, index);
    model.point = point;
    if (target) {
      event!.source = { outbox: true, lsn, index };
      return this.push(model, event!);
    }
    const position = `${lsn}#${index}`;
    model.lastPushed = position;
    const accepted = this.sink!.deadLetter(model.name, {
      payload: JSON.stringify(values ?? change.next),
      reason,
      code: ErrorCode.MALFORMED_INPUT,
      position,
      source: { outbox: outbox.table, lsn, index },
    });
    return accepted ? undefined : this.drainOrStop();
  }

  /** Pushes the change to each model of its table from `from` on; waits (returns a promise) when the sink is full. */
  private emitRow(
    tx: Tx,
    index: number,
    models: ModelState[],
    from: number,
    change: RowChange,
  ): Promise<void> | undefined {
    const { relation, op, old, next, keyTuple } = change;
    for (let i = from; i < models.length; i++) {
      const model = models[i]!;
      const point = { lsn: tx.commitLsn, index };
      if (model.failed || comparePoints(point, model.skip) <= 0) continue;
      const after = next ? this.decodeRow(relation, next) : undefined;
      let before: Row | null = null;
      if (old) before = this.decodeRow(relation, old).row;
      else if (keyTuple) before = this.decodeRow(relation, keyTuple, relation.keyColumns).row;
      else if (op === 'update' && after) before = pick(after.row, model.key);
      const keyRow = after?.row ?? before ?? {};
      const lsn = tx.commitLsnText;
      const event: ChangeEvent = {
        id: `${lsn}:${index}`,
        datasource: this.dataSource.name,
        model: model.name,
        op,
        key: keyOf(keyRow, model.key),
        before: op === 'create' ? null : before,
        after: after?.row ?? null,
        position: null,
        sourceTime: tx.commitTime,
        tx: tx.info,
        source: { schema: relation.schema, table: relation.name, lsn, index },
      };
      if (after?.unchanged) event.source!.unchanged = after.unchanged;
      const changed = model.snapshot?.changed;
      if (changed) {
        changed.add(event.key);
        if (before) changed.add(keyOf(before, model.key));
      }
      tx.last.set(model.name, index);
      model.point = point;
      const full = this.push(model, event);
      if (full) return full.then(() => this.emitRow(tx, index, models, i + 1, change));
    }
    return undefined;
  }

  private async truncate(relation: Pgoutput.MessageRelation): Promise<void> {
    const tx = this.tx;
    if (!tx) return;
    const index = tx.index++;
    for (const model of this.byTable.get(`${relation.schema}.${relation.name}`) ?? []) {
      const point = { lsn: tx.commitLsn, index };
      if (model.failed || comparePoints(point, model.skip) <= 0) continue;
      tx.last.set(model.name, index);
      model.point = point;
      if (model.snapshot) model.snapshot.truncated = true;
      await this.push(model, {
        id: `${formatLsn(tx.commitLsn)}:${index}`,
        datasource: this.dataSource.name,
        model: model.name,
        op: 'truncate',
        key: '',
        before: null,
        after: null,
        position: null,
        sourceTime: tx.commitTime,
        tx: tx.info,
        source: { schema: relation.schema, table: relation.name, lsn: formatLsn(tx.commitLsn), index },
      });
    }
  }

  /**
   * Stamps the model's position on the event and pushes it; when the sink is full, returns a
   * promise of its drain (undefined otherwise: no await on the hot path).
   */
  private push(model: ModelState, event: ChangeEvent): Promise<void> | undefined {
    // A streamed change outside a snapshot: model.point is (its commit LSN, its index), and the
    // event carries that LSN as text already: the position is encodePosition's, without the
    // BigInt formatting per change.
    const position =
      !model.snapshot && model.point && event.tx
        ? `${event.tx.commitPosition}#${model.point.index}`
        : encodePosition({
            stream: model.point,
            ...(model.snapshot ? { snapshot: { cursor: model.snapshot.cursor } } : {}),
          });
    event.position = position;
    model.lastPushed = position;
    return this.sink!.push(event) ? undefined : this.drainOrStop();
  }

  private drainOrStop(): Promise<void> {
    return drainUnlessStopped(this.sink!, this.stopper.signal);
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots, heartbeats, lag

  private async runSnapshot(model: ModelState): Promise<void> {
    const snap = model.snapshot!;
    let attempt = 0;
    while (!this.stopped && !model.failed) {
      try {
        snap.total ??= await this.withAdmin('snapshot count', (c) => countRows(c, model.table));
        // From here on, what the stream pushes is newer than (or leads to) what the read sees.
        snap.changed = new Set();
        snap.truncated = false;
        const rows = await this.withAdmin('snapshot read', (c) =>
          readChunk(c, model.table, snap.cursor, this.settings.snapshotChunk),
        );
        attempt = 0;
        for (const row of rows) {
          if (this.stopped) return;
          const after: Row = {};
          for (const [name, { oid, text }] of row.values)
            after[name] = decodeValue(oid, text, this.arrays.elemOf);
          const key = keyOf(after, model.key);
          snap.cursor = row.cursor;
          snap.done += 1;
          // The stream pushed this row's change (or a truncate) since the read: that change or
          // the ones after it give the row's latest state; this one would come after it, stale.
          if (snap.truncated || snap.changed.has(key)) continue;
          await this.push(model, {
            id: snapshotId(model.table, key, after),
            datasource: this.dataSource.name,
            model: model.name,
            op: 'snapshot',
            key,
            before: null,
            after,
            position: null,
            sourceTime: new Date().toISOString(),
            source: { schema: model.table.schema, table: model.table.table, snapshot: true },
          });
        }
        const last = rows.length < this.settings.snapshotChunk;
        // Only the last report says it is done (done === total), even when rows came or went
        // meanwhile (the count was read at the start).
        const total = last ? snap.done : Math.max(snap.total, snap.done + 1);
        this.sink!.status({ type: 'snapshot', model: model.name, done: snap.done, total });
        if (last) {
          model.snapshot = undefined;
          this.logger.info({ model: model.name, rows: snap.done }, 'snapshot done');
          return;
        }
      } catch (err) {
        if (this.stopped) return;
        attempt += 1;
        this.logger.warn(
          { model: model.name, attempt, err: toError(err).message },
          'snapshot chunk failed; retrying',
        );
        await this.backOff(attempt);
      }
    }
  }

  /** Re-snapshots a streaming model's table from its first row (contract point 9; see top). */
  snapshot(name: string): Promise<SnapshotStart> {
    const model = this.models.get(name);
    const state = this.life.state;
    if (!model || model.failed || (state !== 'streaming' && state !== 'reconnecting')) {
      const why = !model ? 'has no such model' : model.failed ? 'failed for this model' : `is ${state}`;
      return Promise.reject(
        new EvpubError(
          ErrorCode.INVALID_STATE,
          `postgres connector "${this.dataSource.name}": cannot snapshot model ${name}: the connector ${why}`,
          { context: { model: name } },
        ),
      );
    }
    if (model.snapshot) {
      const { done, total } = model.snapshot;
      return Promise.resolve({ started: false, done, ...(total !== undefined ? { total } : {}) });
    }
    if (this.outbox?.models.has(name)) {
      return Promise.reject(
        new EvpubError(
          ErrorCode.CONFIG_INVALID,
          `postgres connector: models.${name}: fed from the outbox (settings.outbox), it has no table to snapshot`,
          { context: { model: name } },
        ),
      );
    }
    if (model.table.key.length === 0) {
      const table = `${model.table.schema}.${model.table.table}`;
      return Promise.reject(
        new EvpubError(
          ErrorCode.CONFIG_INVALID,
          `postgres connector: models.${name}: a snapshot needs a primary key on ${table}: add one`,
          { context: { model: name, table } },
        ),
      );
    }
    model.snapshot = { cursor: null, done: 0 };
    this.logger.info({ model: name }, 're-snapshot started');
    this.snapshots.push(this.runSnapshot(model));
    return Promise.resolve({ started: true, done: 0 });
  }

  private async beat(): Promise<void> {
    if (this.life.state !== 'streaming') return;
    await this.withAdmin('heartbeat', heartbeat).catch((err: unknown) => {
      this.logger.debug({ err: toError(err).message }, 'heartbeat failed');
    });
  }

  /**
   * How far behind the server the stream reads, in seconds: 0 while it is caught up (the last
   * thing the server sent was a keepalive, after every change, and no transaction is half read);
   * otherwise now minus the time its position stands for: the commit time of the transaction
   * it reads (or read last), or the last report that found it caught up, whichever is later (a change
   * made a second after an idle hour is a second behind, not an hour). Undefined until one of
   * them is known. The commit time is the server's clock: keep the clocks in sync.
   */
  private lagSeconds(): number | undefined {
    const now = Date.now();
    if (this.stream?.caughtUp && !this.tx) {
      this.caughtUpAt = now;
      return 0;
    }
    const since = Math.max(this.readCommitMs ?? -Infinity, this.caughtUpAt ?? -Infinity);
    return Number.isFinite(since) ? Math.max(0, now - since) / 1000 : undefined;
  }

  private async reportLag(): Promise<void> {
    if (this.life.state !== 'streaming') return;
    // Read before the query: the stream's state now, not after the database answered.
    const seconds = this.lagSeconds();
    try {
      const state = await this.withAdmin('slot lag', (c) => slotState(c, this.settings.slot));
      if (!state || state.walStatus === 'lost') {
        await this.stream?.close();
        checkSlot(this.settings.slot, state);
      }
      const bytes = state?.lagBytes ?? undefined;
      if (bytes !== undefined || seconds !== undefined) {
        this.sink!.status({
          type: 'lagging',
          ...(bytes !== undefined ? { bytes } : {}),
          ...(seconds !== undefined ? { seconds } : {}),
        });
      }
    } catch (err) {
      if (err instanceof EvpubError && !err.retriable) this.failAll(err);
      else this.logger.debug({ err: toError(err).message }, 'lag check failed');
    }
  }

  /** `evpub check`: what PostgreSQL still needs (contract point 8; read-only). */
  check(
    models: readonly { name: string; settings: Readonly<Record<string, unknown>> }[],
  ): Promise<SourceCheck[]> {
    return checkPostgres(this.dataSource.name, this.settings, models, () => this.ssl());
  }

  health(): ConnectorHealth {
    const positions: Record<string, string | null> = {};
    for (const [name, model] of this.models) positions[name] = model.lastPushed;
    const failed = [...this.models.values()].filter((m) => m.failed).map((m) => m.name);
    return {
      state: this.life.state,
      positions,
      ...(failed.length > 0 ? { detail: `failed: ${failed.join(', ')}` } : {}),
    };
  }
}

function pick(row: Row, columns: string[]): Row {
  const out: Row = {};
  for (const c of columns) if (c in row) out[c] = row[c];
  return out;
}

/** The event key: the key column's value as text, or a JSON array for composite keys. */
function keyOf(row: Row, columns: string[]): string {
  if (columns.length === 1) {
    const v = row[columns[0]!];
    return typeof v === 'string' ? v : JSON.stringify(v ?? null);
  }
  return JSON.stringify(columns.map((c) => row[c]));
}

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new PostgresConnector(dataSource),
);
