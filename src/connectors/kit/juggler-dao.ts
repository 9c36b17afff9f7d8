/**
 * evpub's built-in event connectors as loopback-datasource-juggler connectors, with the seed's
 * event interface (loopback-connector-cloudantevents): the reverse of legacy-dao.ts.
 *
 * When juggler (LoopBack 3's `loopback` 3.x: juggler 3; `@loopback/repository`'s `juggler`:
 * juggler 7) creates a datasource whose `connector` is an evpub connector module, it calls
 * `initialize(dataSource, cb)` with its own DataSource. `connectorInitializer` recognises it by
 * shape (`isJugglerDataSource`: `define`, `attach` and `mixin` functions and a `settings`
 * object; juggler is never imported) and sets `dataSource.connector` to a `JugglerConnector`,
 * whose `DataAccessObject` juggler mixes into every model attached to the datasource:
 *
 * - `Model.start(listenerEmitter, cb?)` starts capturing the model's changes from `'now'` and
 *   emits `'eventMessage', modelName, msg` for each change: `msg` is what the `legacy`
 *   envelope carries as `message` (src/events/envelopes/legacy.ts: the record after the
 *   change, the record before it for a delete; for CouchDB the document, or its tombstone
 *   `{_id, _rev, _deleted: true}` for a delete), as plain JSON. `cb(err)` once reading has
 *   begun, or with the start error. Without `cb` it returns a promise.
 * - Errors after start arrive as `'error', modelName, err` on the emitter: a model's feed that
 *   failed (it stops; `stop` then `start` retries it; another model's start or stop of the
 *   same reader retries it too), each reconnect attempt of a lost
 *   source (the feed goes on by itself), input that gave no event (a dead letter: its reason).
 *   Without an `'error'` listener they are logged, never thrown into the connector.
 * - `Model.stop(cb?)` stops that model; events read before it calls back are still emitted.
 * - Errors are EvpubErrors with the datasource's credentials masked (message, context, cause).
 *
 * Several models of one datasource, started one after another: the connector's `units()`
 * (contract point 10) decides. A model that is a unit of its own (CouchDB database, MySQL
 * binlog reader, poll, websocket, bridge, memory) gets an EventConnector of its own, and the
 * other models are not touched. Models that share a unit (every PostgreSQL model of a
 * datasource shares one slot; webhook endpoints share one server) share one EventConnector:
 * starting or stopping one of them stops that connector and starts a new one with the new set
 * of models, each model already running resuming right after the last position it emitted
 * (PostgreSQL keeps the slot, acknowledged up to what was emitted, so nothing is lost or
 * emitted twice). A connector that is not resumable (webhook) restarts its models from
 * `'now'`: what arrives during that restart is refused to the sender (who retries by its own
 * policy). If the new set cannot start, the models already running are started again without
 * the new one, and the new one's callback gets the error.
 *
 * No checkpoints: every `start` reads from `'now'`, so changes made while the model is not
 * started (or the process is down) are not emitted. Positions are acknowledged to the source
 * (`commit`) as soon as the listener returned; a PostgreSQL slot (`evpub_<datasource>` unless
 * `slot` is set) stays after the process exits and keeps WAL until it is dropped.
 *
 * Backpressure: an EventEmitter cannot push back, so evpub buffers nothing here: each change
 * is emitted synchronously as it is read and the connector reads on as soon as the listener
 * returns (only the connector's own read-ahead, e.g. one chunk of a CouchDB feed, is held).
 * Anything the listener starts asynchronously (the seed's `mqttchannel.publish`) is bounded
 * by that listener's own client, not by evpub. A listener that throws is logged and the
 * change counts as emitted.
 *
 * Juggler's side: `connect(cb)` succeeds at once (feeds connect at `Model.start`, which marks
 * the datasource `connected` again after a disconnect, so that the next one stops it); `ping(cb)`
 * fails while any started model's feed has failed; `disconnect(cb)` (juggler's
 * `ds.disconnect()`, LoopBack 4's `app.stop()`, LoopBack 3's `ds.disconnect()`) stops every
 * model; `define()` records the datasource's models; `getTypes()` is `['events']`, so
 * LoopBack 3 gives such models the plain `Model` base. Juggler's own datasource keys (`debug`,
 * `lazyConnect`...) are removed before the connector validates its settings; a model's evpub
 * settings (`table`, `database`...) are its juggler settings' `evpub` object. A settings error
 * is the `initialize` callback's error (juggler emits it as the datasource's `'error'`) and
 * every `Model.start`'s.
 */
import type { EventEmitter } from 'node:events';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../../errors';
import type { ChangeEvent, Position, StartFrom } from '../../events/change-event';
import { legacyEnvelope } from '../../events/envelopes/legacy';
import { defaultLogger, type Logger } from '../../logger';
import { collectSecrets, redactError, redactText, redactValue } from '../../util/redact';
import type {
  ChangeSink,
  ConnectorStatus,
  DataSourceLike,
  EventConnector,
  ModelFeed,
  RawDeadLetter,
} from '../contract';

type Callback = (err?: Error | null, result?: unknown) => void;

/** What evpub reads of a juggler DataSource (juggler 3 and 7 alike). */
export interface JugglerDataSource {
  name?: string;
  settings: Record<string, unknown>;
  connector?: unknown;
  connected?: boolean;
  define(...args: unknown[]): unknown;
  attach(...args: unknown[]): unknown;
  mixin(...args: unknown[]): unknown;
}

/** What `this` is in the DAO's methods: the juggler model class. */
interface JugglerModel {
  modelName?: string;
  settings?: Record<string, unknown>;
}

/** True for a juggler DataSource (by shape: juggler is never imported). */
export function isJugglerDataSource(value: unknown): value is JugglerDataSource {
  const ds = value as Partial<JugglerDataSource> | null | undefined;
  return (
    typeof ds === 'object' &&
    ds !== null &&
    typeof ds.define === 'function' &&
    typeof ds.attach === 'function' &&
    typeof ds.mixin === 'function' &&
    typeof ds.settings === 'object' &&
    ds.settings !== null
  );
}

/** Datasource keys juggler itself reads: not the connector's to validate. */
export const JUGGLER_KEYS = [
  'debug',
  'lazyConnect',
  'catchFailure',
  'adapter',
  'maxOfflineRequests',
  'connectionTimeout',
  'initialize',
] as const;

interface ModelState {
  name: string;
  emitter: EventEmitter;
  settings: Readonly<Record<string, unknown>>;
  /** The last position emitted or marked (null: none yet). */
  position: Position | null;
  failed: boolean;
  group: Group | undefined;
}

interface Group {
  connector: EventConnector;
  models: string[];
  /** False once the connector's stop() resolved: anything pushed later is logged, not emitted. */
  open: boolean;
}

/** The juggler-facing connector set on a juggler datasource (see the header). */
export class JugglerConnector {
  readonly name: string;
  /** Set by juggler too; kept for juggler 3, which reads it back. */
  dataSource: JugglerDataSource;
  readonly DataAccessObject: {
    start(this: JugglerModel, emitter: EventEmitter, cb?: Callback): Promise<void> | undefined;
    stop(this: JugglerModel, cb?: Callback): Promise<void> | undefined;
  };

  private readonly facade: DataSourceLike;
  // Not `logger` nor `log`: juggler sets both on its connector.
  private readonly evpubLog: Logger;
  private readonly secrets: string[];
  private readonly defined = new Set<string>();
  private readonly started = new Map<string, ModelState>();
  private template: EventConnector | undefined;
  private readonly initError: EvpubError | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    dataSource: JugglerDataSource,
    private readonly make: (dataSource: DataSourceLike) => EventConnector,
  ) {
    this.dataSource = dataSource;
    const settings: Record<string, unknown> = { ...dataSource.settings };
    for (const key of JUGGLER_KEYS) delete settings[key];
    this.secrets = collectSecrets(settings);
    const name = typeof dataSource.name === 'string' && dataSource.name !== '' ? dataSource.name : 'juggler';
    this.evpubLog = defaultLogger().child({ component: 'juggler', datasource: name });
    const defined = this.defined;
    this.facade = {
      name,
      settings,
      logger: this.evpubLog,
      get models() {
        return [...defined];
      },
    };
    try {
      this.template = make(this.facade);
    } catch (err) {
      this.initError = this.publicError(err, ErrorCode.CONFIG_INVALID);
    }
    // Without a connector (a settings error), the module's last path segment: `couchdb`.
    const module =
      typeof dataSource.settings.connector === 'string' ? dataSource.settings.connector : 'evpub';
    this.name = this.template?.name ?? module.split('/').pop()!;
    const start = (model: JugglerModel, emitter: EventEmitter, cb?: Callback) =>
      this.callback(cb, () => this.start(model, emitter));
    const stop = (model: JugglerModel, cb?: Callback) =>
      this.callback(cb, () => this.stopModel(modelName(model)));
    // Juggler copies these onto each model class: `this` is the model.
    this.DataAccessObject = {
      start(emitter, cb) {
        return start(this, emitter, cb);
      },
      stop(cb) {
        return stop(this, cb);
      },
    };
  }

  /**
   * A new, idle EventConnector with this datasource's settings (juggler's keys removed), for
   * evpub's own publisher (checkpoints, envelopes, brokers). It shares nothing with the models
   * started here: do not run both on one PostgreSQL slot. Throws the settings error, if any.
   */
  eventConnector(): EventConnector {
    if (this.initError) throw this.initError;
    return this.make(this.facade);
  }

  /** The settings error found at `initialize`, if any. */
  get error(): EvpubError | undefined {
    return this.initError;
  }

  // --- juggler's connector interface ---------------------------------------------------------

  connect(cb?: Callback): void {
    process.nextTick(() => cb?.(this.initError ?? null));
  }

  disconnect(cb?: Callback): Promise<void> | undefined {
    return this.callback(cb, () => this.serial(() => this.stopAll()));
  }

  ping(cb?: Callback): void {
    const failed = [...this.started.values()].filter((m) => m.failed).map((m) => m.name);
    const err =
      this.initError ??
      (failed.length > 0
        ? new EvpubError(
            ErrorCode.SOURCE_FAILED,
            `datasource "${this.facade.name}": the feed of ${failed.join(', ')} failed`,
            { context: { datasource: this.facade.name, models: failed } },
          )
        : null);
    process.nextTick(() => cb?.(err));
  }

  define(definition: { model?: { modelName?: string }; settings?: unknown }): void {
    const name = definition?.model?.modelName;
    if (typeof name === 'string') this.defined.add(name);
  }

  getTypes(): string[] {
    return ['events'];
  }

  // --- the DAO ---------------------------------------------------------------------------------

  private start(model: JugglerModel, emitter: EventEmitter): Promise<void> {
    const name = modelName(model);
    const shape = emitter as Partial<EventEmitter> | null | undefined;
    if (typeof shape?.emit !== 'function' || typeof shape.listenerCount !== 'function') {
      return Promise.reject(
        new EvpubError(
          ErrorCode.CONFIG_INVALID,
          `${name}.start(listenerEmitter, cb): listenerEmitter must be an EventEmitter`,
        ),
      );
    }
    const evpub = model.settings?.evpub;
    if (evpub !== undefined && (typeof evpub !== 'object' || evpub === null || Array.isArray(evpub))) {
      return Promise.reject(
        new EvpubError(
          ErrorCode.CONFIG_INVALID,
          `models.${name}.settings.evpub: must be an object of the connector's model settings`,
          { context: { setting: `models.${name}.settings.evpub` } },
        ),
      );
    }
    return this.serial(async () => {
      if (this.initError) throw this.initError;
      if (this.started.has(name)) {
        throw new EvpubError(
          ErrorCode.INVALID_STATE,
          `datasource "${this.facade.name}", model "${name}": already started; call ${name}.stop() first`,
        );
      }
      this.defined.add(name);
      const state: ModelState = {
        name,
        emitter,
        settings: (evpub as Record<string, unknown> | undefined) ?? {},
        position: null,
        failed: false,
        group: undefined,
      };
      const unit = this.unitOf(name);
      const sharing = this.groupsOf(unit);
      const running = sharing.flatMap((g) => g.models);
      for (const group of sharing) await this.stopGroup(group);
      this.started.set(name, state);
      try {
        await this.startGroup([...running, name]);
      } catch (err) {
        this.started.delete(name);
        if (running.length > 0) await this.restartOrFail(running);
        throw this.publicError(err);
      }
      // After a disconnect juggler calls disconnect() again only on a connected datasource.
      this.dataSource.connected = true;
    });
  }

  private stopModel(name: string): Promise<void> {
    return this.serial(async () => {
      const state = this.started.get(name);
      if (!state) return;
      const group = state.group;
      if (group) await this.stopGroup(group);
      this.started.delete(name);
      const rest = group ? group.models.filter((m) => m !== name && this.started.has(m)) : [];
      if (rest.length > 0) await this.restartOrFail(rest);
    });
  }

  private async stopAll(): Promise<void> {
    const groups = new Set([...this.started.values()].map((m) => m.group).filter((g) => g !== undefined));
    for (const group of groups) await this.stopGroup(group);
    this.started.clear();
  }

  // --- groups ------------------------------------------------------------------------------

  /** The started-or-starting models that share `name`'s unit of ownership (with it). */
  private unitOf(name: string): string[] {
    const all = [...this.started.keys(), name];
    const units = this.template?.units?.(all) ?? [all];
    return units.find((u) => u.includes(name)) ?? [name];
  }

  private groupsOf(models: string[]): Group[] {
    const groups = new Set<Group>();
    for (const m of models) {
      const group = this.started.get(m)?.group;
      if (group) groups.add(group);
    }
    return [...groups];
  }

  private async stopGroup(group: Group): Promise<void> {
    try {
      await group.connector.stop();
    } catch (err) {
      this.evpubLog.warn({ err: this.publicError(err), models: group.models }, 'stopping a feed failed');
    }
    group.open = false;
    for (const m of group.models) {
      const state = this.started.get(m);
      if (state?.group === group) state.group = undefined;
    }
  }

  /** Starts one connector for `models` (all in `started`), each from its last position. */
  private async startGroup(models: string[]): Promise<void> {
    const connector = this.make(this.facade);
    const group: Group = { connector, models, open: true };
    const feeds: ModelFeed[] = models.map((m) => {
      const state = this.started.get(m)!;
      state.failed = false;
      return { name: m, settings: state.settings, from: this.from(state) };
    });
    for (const m of models) this.started.get(m)!.group = group;
    try {
      await connector.start({ models: feeds, sink: this.sink(group) });
    } catch (err) {
      group.open = false;
      for (const m of models) {
        const state = this.started.get(m);
        if (state?.group === group) state.group = undefined;
      }
      await connector.stop().catch(() => undefined);
      throw err;
    }
  }

  /** A running model resumes after what it emitted; a new one (or a non-resumable source) at 'now'. */
  private from(state: ModelState): StartFrom {
    return state.position !== null && this.template?.resumable ? { after: state.position } : 'now';
  }

  /** Starts `models` again after a restart of their group; if that fails each gets the error. */
  private async restartOrFail(models: string[]): Promise<void> {
    try {
      await this.startGroup(models);
    } catch (err) {
      const error = this.publicError(err);
      for (const m of models) {
        const state = this.started.get(m);
        if (!state) continue;
        state.failed = true;
        this.emitError(state, error);
      }
    }
  }

  // --- the sink ---------------------------------------------------------------------------------

  private sink(group: Group): ChangeSink {
    const current = (model: string): ModelState | undefined => {
      const state = this.started.get(model);
      if (state?.group === group && group.open) return state;
      this.evpubLog.warn({ model }, 'a stopped feed handed over a change; not emitted');
      return undefined;
    };
    return {
      push: (event: ChangeEvent) => {
        const state = current(event.model);
        if (!state) return true;
        this.emitMessage(state, event);
        this.advance(group, state, event.position);
        return true;
      },
      deadLetter: (model: string, raw: RawDeadLetter) => {
        const state = current(model);
        if (!state) return true;
        this.emitError(
          state,
          new EvpubError(
            (raw.code as ErrorCode | undefined) ?? ErrorCode.MALFORMED_INPUT,
            `datasource "${this.facade.name}", model "${model}": input that gives no event: ${raw.reason}`,
            {
              context: { datasource: this.facade.name, model, ...(raw.source ? { source: raw.source } : {}) },
            },
          ),
        );
        this.advance(group, state, raw.position ?? null);
        return true;
      },
      drain: () => Promise.resolve(),
      mark: (model: string, position: Position) => {
        const state = current(model);
        if (state) this.advance(group, state, position);
      },
      fail: (model: string, err: Error) => {
        const state = current(model);
        if (!state) return;
        state.failed = true;
        this.emitError(state, this.publicError(err));
      },
      status: (status: ConnectorStatus) => this.onStatus(group, status),
    };
  }

  private advance(group: Group, state: ModelState, position: Position | null): void {
    if (position === null) return;
    state.position = position;
    // Emitted is as far as this path goes: the source may let go of it.
    group.connector
      .commit?.(state.name, position)
      .catch((err: unknown) =>
        this.evpubLog.warn(
          { model: state.name, err: this.publicError(err) },
          'acknowledging a position failed',
        ),
      );
  }

  private onStatus(group: Group, status: ConnectorStatus): void {
    if (status.type !== 'reconnecting') {
      this.evpubLog.debug({ status }, 'feed status');
      return;
    }
    const models = status.model !== undefined ? [status.model] : group.models;
    for (const m of models) {
      const state = this.started.get(m);
      if (state?.group !== group) continue;
      const error = new EvpubError(
        ErrorCode.SOURCE_FAILED,
        `datasource "${this.facade.name}", model "${m}": source connection lost, reconnecting (attempt ${status.attempt}): ${status.error}`,
        { retriable: true, context: { datasource: this.facade.name, model: m, attempt: status.attempt } },
      );
      this.emitError(state, this.publicError(error));
    }
  }

  private emitMessage(state: ModelState, event: ChangeEvent): void {
    let msg: unknown;
    try {
      // Exactly what the legacy envelope publishes as `message`, as plain JSON.
      const body = JSON.parse(legacyEnvelope.encode(event).payload.toString('utf8')) as { message: unknown };
      msg = body.message;
    } catch (err) {
      this.emitError(state, this.publicError(err));
      return;
    }
    try {
      state.emitter.emit('eventMessage', state.name, msg);
    } catch (err) {
      this.evpubLog.error({ model: state.name, err: toError(err) }, "an 'eventMessage' listener threw");
    }
  }

  private emitError(state: ModelState, err: Error): void {
    if (state.emitter.listenerCount('error') === 0) {
      this.evpubLog.error({ model: state.name, err }, "no 'error' listener on the model's emitter");
      return;
    }
    try {
      state.emitter.emit('error', state.name, err);
    } catch (thrown) {
      this.evpubLog.error({ model: state.name, err: toError(thrown) }, "an 'error' listener threw");
    }
  }

  // --- helpers ------------------------------------------------------------------------------

  /** Runs `work` after every earlier start/stop/disconnect of this datasource. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Node-style when `cb` is given (on a later tick), else the promise. */
  private callback(cb: Callback | undefined, work: () => Promise<void>): Promise<void> | undefined {
    let promise: Promise<void>;
    try {
      promise = work();
    } catch (err) {
      promise = Promise.reject(toError(err));
    }
    const safe = promise.catch((err: unknown) => Promise.reject(this.publicError(err)));
    if (typeof cb !== 'function') return safe;
    safe.then(
      () => cb(null),
      (err: Error) => cb(err),
    );
    return undefined;
  }

  /** An EvpubError whose message, context and cause carry no credential of this datasource. */
  private publicError(err: unknown, code: ErrorCode = ErrorCode.SOURCE_FAILED): EvpubError {
    const e = toError(err);
    const known = this.secrets;
    const message = redactText(e.message, known);
    const context = isEvpubError(e) ? redactValue(e.context, { known }) : { datasource: this.facade.name };
    const cause = e.cause === undefined ? undefined : redactError(toError(e.cause), { known });
    if (isEvpubError(e) && message === e.message && e.cause === undefined) return e;
    return new EvpubError(isEvpubError(e) ? e.code : code, message, {
      retriable: isEvpubError(e) ? e.retriable : false,
      context,
      ...(cause !== undefined ? { cause } : {}),
    });
  }
}

function modelName(model: JugglerModel): string {
  const name = model?.modelName;
  if (typeof name !== 'string' || name === '') {
    throw new EvpubError(
      ErrorCode.INVALID_STATE,
      'start()/stop() must be called on a model class attached to the datasource (Model.start(emitter, cb))',
    );
  }
  return name;
}

/**
 * `initialize(dataSource, cb)` for a juggler datasource: sets a JugglerConnector and calls
 * back (next tick) with its settings error, if any.
 */
export function initializeForJuggler(
  dataSource: JugglerDataSource,
  make: (dataSource: DataSourceLike) => EventConnector,
  callback?: (err?: Error | null) => void,
): Promise<void> | undefined {
  const connector = new JugglerConnector(dataSource, make);
  dataSource.connector = connector;
  const error = connector.error ?? null;
  if (callback) {
    process.nextTick(() => callback(error));
    return undefined;
  }
  return error ? Promise.reject(error) : Promise.resolve();
}
