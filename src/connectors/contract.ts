/**
 * The event connector contract: how evpub captures a datasource's changes.
 *
 * A connector module follows LoopBack's contract: it exports `initialize(dataSource, callback?)`,
 * which sets `dataSource.connector` and calls back (or returns a promise). For evpub's own
 * connectors `dataSource.connector` is an `EventConnector`. A seed-style connector instead sets a
 * connector whose `DataAccessObject` has `start(listenerEmitter, cb)` / `stop(cb)`; evpub wraps
 * it (see legacy-dao.ts), and such a connector gives no positions.
 *
 * Protocol, as the publisher drives it:
 *
 * 1. `start({ models, sink })` is called once. For each model, reading starts from `from`:
 *    `{ after: position }` resumes right after a checkpointed position; `'beginning'` reads
 *    the whole log the source still has (or takes an initial snapshot where configured);
 *    `'now'` takes only changes made from now on. `start` resolves once reading has begun
 *    (the first connection is up); it rejects with an EvpubError when it cannot begin (bad
 *    settings, source unreachable within the connect timeout, missing table...).
 * 2. The connector hands events to `sink.push(event)` in source order per model, and positions
 *    that produced no event to `sink.mark(model, position)` (at least the start of a `'now'`). `push`
 *    returns false when the publisher's window is full (or the operator paused a feed of this
 *    datasource: the same to the connector): the connector stops reading from the source
 *    (pauses its socket or stops polling) and awaits `sink.drain()` before pushing again.
 *    It never buffers without bound.
 * 3. Input the connector receives but cannot turn into an event at all (a message that is not
 *    JSON, does not decode with its format, or whose key/operation mapping fails) is not
 *    skipped silently: it goes to `sink.deadLetter(model, raw)` with its reason. A dead letter
 *    is handed over like an event: in source order with the model's events, it counts in the
 *    window and returns false when the window is full (pause and await `drain()`, as for
 *    `push`). Its position, if any, is committed like an event's once the broker confirmed the
 *    dead letter: the stream goes on, and a restart does not re-read it.
 * 4. Lost connections are the connector's to repair: it reconnects with back-off and resumes
 *    from the last position it pushed (never skipping), reporting `sink.status(...)`. An error
 *    it cannot recover from (slot dropped, binlog purged) goes to `sink.fail(model, err)`,
 *    which stops that model's feed and surfaces the error; it is never silently skipped.
 * 5. `commit(model, position)` (optional) is called when every event of the model up to and
 *    including `position` was accepted by the broker and checkpointed: the connector may now
 *    let the source discard its log up to there (e.g. acknowledge a replication slot). A
 *    connector never commits on its own.
 * 6. `stop()` stops reading and resolves when the connections are closed. Events pushed before
 *    `stop()` resolves are still published (drained) by the publisher. Calling `stop()` twice
 *    is harmless.
 * 7. `health()` answers synchronously with what the connector knows now.
 * 8. `check(models)` (optional; `evpub check`) tells what the source still needs before capture
 *    can work, every finding at once with the command that fixes it, instead of failing `start`
 *    at the first. It only reads: it connects, asks and disconnects; it never creates a slot,
 *    a publication or a table. It is called on an initialized connector that is not started,
 *    and rejects only on a bug: an unreachable source is a finding.
 * 9. `snapshot(model)` (optional; the operator's re-snapshot: `evpub feeds snapshot`, the HTTP
 *    API, the dashboard) starts reading the running model's table again from its first row, as
 *    `snapshot` events, beside the stream, which goes on: changes made meanwhile are pushed as
 *    usual, interleaved with the snapshot's rows in the model's order. The same guarantees as
 *    the initial snapshot: every row present throughout is published again at least once, the
 *    last event a consumer gets for each key is the row's latest state (or its delete), and the
 *    positions pushed meanwhile carry the snapshot's cursor, so a restart from a checkpoint
 *    taken mid-way resumes the snapshot after the last row published instead of starting over.
 *    It resolves once the snapshot is under way (it need not have read a row) with `started:
 *    true`; while one (initial or re-) runs it changes nothing and resolves `started: false`
 *    with its progress. Progress and the end are reported as for the initial snapshot
 *    (`sink.status({ type: 'snapshot' })`, the last report with `done === total`). It rejects
 *    with an EvpubError: INVALID_STATE when the model is not streaming (connector not started
 *    or stopped, model failed), CONFIG_INVALID when its table has no primary key (a snapshot
 *    reads in key order) or the snapshot needs a setting the source lacks. A connector without
 *    it cannot re-snapshot (the operator is told so).
 * 10. `units(models)` (optional; several instances, `cluster:`) says how the models split into
 *    *units of ownership*: groups of models that resume as one position and so must be read by
 *    one instance at a time (a PostgreSQL slot: every model of the datasource; a MySQL binlog
 *    reader, a CouchDB database feed, a poll model: one model each, except a MySQL datasource's
 *    outbox models, which share one reader; a webhook endpoint set: all).
 *    It answers synchronously, before start, from the settings alone: a partition of `models`
 *    (every name in exactly one group, groups non-empty, in a stable order), the same in every
 *    instance with the same configuration. Without it the whole datasource is one unit. In
 *    cluster mode evpub initializes one connector per unit held, with that unit's models only,
 *    and starts and stops it as the unit's lease comes and goes: a connector must therefore
 *    work when several of its instances read one datasource, each with a part of its models.
 * 11. `takeover` in the start request (cluster mode) says the caller holds the lease of these
 *    models' unit: any other reader of the same position is a stale owner (paused past its
 *    deadline, or partitioned). Where the source allows only one reader (a PostgreSQL slot
 *    active for another backend) the connector ends that reader and proceeds, saying so in the
 *    log, instead of failing with FEED_OWNED_ELSEWHERE.
 */
import type { ChangeEvent, Position, StartFrom } from '../events/change-event';
import type { Logger } from '../logger';

export interface ModelFeed {
  /** The model's name (a CouchDB database, a table, ...). */
  name: string;
  /** The model's connector-specific settings (`table`, `database`, `include`, ...). */
  settings: Readonly<Record<string, unknown>>;
  from: StartFrom;
}

export type ConnectorStatus =
  | { type: 'connected'; model?: string }
  | { type: 'reconnecting'; model?: string; attempt: number; error: string }
  | { type: 'lagging'; model?: string; seconds?: number; bytes?: number }
  | { type: 'snapshot'; model: string; done: number; total?: number };

/** Raw input a connector could not turn into an event (see `ChangeSink.deadLetter`). */
export interface RawDeadLetter {
  /** The input as received: bytes, or text. Published as UTF-8 text, or base64 when not UTF-8. */
  payload: Buffer | string;
  /** Why it is not an event (`not JSON: ...`, `no key at "id"`...). No secrets. */
  reason: string;
  /** An `ErrorCode`; defaults to `EVPUB_MALFORMED_INPUT`. */
  code?: string;
  /** Where the input was read (committed once the dead letter is confirmed); null or absent: none. */
  position?: Position | null;
  /** The input's transport headers, if any. */
  headers?: Readonly<Record<string, string>>;
  /** Where it came from, for the reader of the dead letter (`{ topic, messageId }`, `{ url }`). No secrets. */
  source?: Readonly<Record<string, unknown>>;
}

export interface ChangeSink {
  /** Hands over one event; false means "window full: pause and await drain()". */
  push(event: ChangeEvent): boolean;
  /**
   * Hands over raw input that gives no event, to be published to the dead-letter topic with its
   * reason. Like `push`: in order with the model's events, counted in the window, false means
   * "window full: pause and await drain()", and its position (if any) is committed like an
   * event's once the broker confirmed the dead letter.
   */
  deadLetter(model: string, raw: RawDeadLetter): boolean;
  /** Resolves when there is room again. */
  drain(): Promise<void>;
  /**
   * Says the model's feed has read everything up to `position` and it produced no event (the
   * point `'now'` resolved to at start, a heartbeat, a transaction with no row of this model).
   * It is committed like an event, in order after the events pushed before it, so a feed that
   * starts `'now'` and sees no change still resumes from there after a restart, and an idle
   * model does not hold the source's log back.
   */
  mark(model: string, position: Position): void;
  /** Reports an unrecoverable error for one model; its feed stops. */
  fail(model: string, err: Error): void;
  /** Reports a status change (shown by the CLI, the HTTP API and logs). */
  status(status: ConnectorStatus): void;
}

export interface StartRequest {
  models: ModelFeed[];
  sink: ChangeSink;
  /** Point 11: the caller holds these models' unit lease; a stale reader may be ended. */
  takeover?: boolean;
}

export interface ConnectorHealth {
  state: 'idle' | 'starting' | 'streaming' | 'reconnecting' | 'stopped' | 'failed';
  /** Per model, the last position pushed. */
  positions?: Record<string, Position | null>;
  detail?: string;
}

export interface EventConnector {
  /** The connector's name (`couchdb`, `postgres`, a module name...). */
  readonly name: string;
  /** True when events carry positions, so feeds can resume after a restart. */
  readonly resumable: boolean;
  /**
   * For a connector that is not resumable: what becomes of the changes made while evpub is
   * stopped, for these models, when it is not simply "they are lost" (e.g. a source that keeps
   * them for a durable subscription): one sentence (no secrets), and whether none is lost.
   * Called before start; undefined means they are lost.
   */
  whileStopped?(
    models: readonly { name: string; settings: Readonly<Record<string, unknown>> }[],
  ): { text: string; lossless: boolean } | undefined;
  start(request: StartRequest): Promise<void>;
  stop(): Promise<void>;
  commit?(model: string, position: Position): Promise<void>;
  health(): ConnectorHealth;
  check?(
    models: readonly { name: string; settings: Readonly<Record<string, unknown>> }[],
  ): Promise<SourceCheck[]>;
  /** Re-snapshots a running model's table (point 9). */
  snapshot?(model: string): Promise<SnapshotStart>;
  /** How the models split into units of ownership (point 10); absent: one unit, all models. */
  units?(models: readonly string[]): string[][];
}

/** What `EventConnector.snapshot` answers (point 9). */
export interface SnapshotStart {
  /** True: this call started it; false: one was running already (nothing changed). */
  started: boolean;
  /** Rows published by the running snapshot so far. */
  done: number;
  /** The rows the table had when the snapshot counted them, where known. */
  total?: number;
}

/** One finding of `EventConnector.check` (point 8). No secrets. */
export interface SourceCheck {
  /** What was checked: `wal_level`, `REPLICATION attribute`, `table public.orders`, ... */
  what: string;
  /** `ok`; `warning`: capture works but not fully (e.g. no old row in `before`); `error`: it cannot. */
  level: 'ok' | 'warning' | 'error';
  /** What was found (`wal_level is replica`). */
  detail: string;
  /** The command or setting that fixes it, when not ok. */
  fix?: string;
}

/** What `initialize()` receives: a LoopBack-like datasource. */
export interface DataSourceLike {
  name: string;
  /** The datasource settings (url, credentials...). Secrets must never be logged. */
  settings: Readonly<Record<string, unknown>>;
  logger: Logger;
  /**
   * Every model of the datasource, in configuration order, also when this connector instance
   * is started with only some of them (cluster mode: one instance per unit, point 10). A
   * connector that numbers something per model (a MySQL binlog reader's server id) numbers it
   * by this list, so instances reading different models never clash. Absent: not known (the
   * connector falls back to the models `start` gets).
   */
  models?: readonly string[];
  /**
   * Each model's `settings` (`models.<name>.settings`), by name, for what a connector decides
   * from them before start (units(): a MySQL datasource's outbox models share one unit). Absent:
   * not known.
   */
  modelSettings?: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  /** Set by `initialize()`. */
  connector?: unknown;
}

/** A connector module, LoopBack style. */
export interface ConnectorModule {
  initialize(dataSource: DataSourceLike, callback?: (err?: Error | null) => void): void | Promise<void>;
}
