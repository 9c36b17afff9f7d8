/**
 * Seed-style connectors, run unchanged as an EventConnector.
 *
 * The seed's contract (loopback-connector-cloudantevents): `initialize(dataSource, cb)` sets
 * `dataSource.connector`, whose `DataAccessObject` has
 *   - `start(listenerEmitter, cb)`, called with `this` = the model (LoopBack mixes the DAO into
 *     the model class, so the code reads `this.modelName`, `this.dataSource.connector...` and
 *     keeps per-model state such as `this.feed`);
 *   - `stop(cb)`, called with the same `this`, which stops that model's feed.
 * The connector emits `'eventMessage', modelName, msg` for each change and
 * `'error', modelName, err` for failures, on the emitter it was given.
 *
 * What the wrapper does:
 * - Each model gets its own context object inheriting from the DAO, with `modelName`,
 *   `dataSource` and `settings` set, so per-model state (`this.feed`) never collides.
 * - A message becomes a ChangeEvent: `_deleted` → delete; a `_rev` starting `1-` → create;
 *   anything else → update. The key is `_id`, `id` or `key` when present. The idempotency id
 *   hashes datasource, model, key and `_rev` (or the whole message when there is no `_rev`).
 *   The position is null: such a feed cannot resume after a restart (resumable = false); where
 *   it starts is the connector's own choice (the seed's is "now").
 * - Errors are logged and reported as `reconnecting` status, not as a failed feed: the seed's
 *   errors are usually transient (its feed library retries), and the seed itself only logged them.
 * - Backpressure: a seed connector cannot be paused. When the publisher's window is full,
 *   messages are buffered per model, in order, and handed over as the window drains. Past
 *   `warnBuffered` a warning is logged (again at every doubling); at `maxBuffered` the model's
 *   feed is stopped and failed with a SOURCE_FAILED error naming the limit. Nothing is dropped
 *   silently. On `stop()` the remaining buffer is handed to the sink before `stop()` resolves.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { ErrorCode, EvpubError, redactText, toError } from '../errors';
import type { ChangeEvent, Operation, Row } from '../events/change-event';
import type { Logger } from '../logger';
import type {
  ChangeSink,
  ConnectorHealth,
  DataSourceLike,
  EventConnector,
  ModelFeed,
  StartRequest,
} from './contract';

type Callback = (err?: unknown, result?: unknown) => void;

/** The seed's DataAccessObject: `this` is the model context in both methods. */
export interface LegacyDao {
  start: (this: LegacyModelContext, listenerEmitter: EventEmitter, callback: Callback) => unknown;
  stop?: (this: LegacyModelContext, callback: Callback) => unknown;
}

/** What `this` is inside the seed's start/stop: the DAO's methods plus the model's facts. */
export interface LegacyModelContext {
  modelName: string;
  dataSource: DataSourceLike;
  settings: Readonly<Record<string, unknown>>;
  [state: string]: unknown;
}

export interface LegacyDaoOptions {
  name: string;
  dataSource: DataSourceLike;
  dao: LegacyDao;
  modelNames?: string[];
  /** Bound on each start()/stop() call (default 30 s). */
  timeoutMs?: number;
  /** Buffered events per model before a warning (default 1,000). */
  warnBuffered?: number;
  /** Buffered events per model before the feed fails (default 100,000). */
  maxBuffered?: number;
  logger?: Logger;
}

interface Feed {
  model: ModelFeed;
  ctx: LegacyModelContext;
  pending: ChangeEvent[];
  draining: boolean;
  warnAt: number;
  failed: boolean;
  lastPushed: boolean;
}

function sha(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 32);
}

function asKey(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Maps one seed message to a ChangeEvent (exported for tests and other wrappers). */
export function legacyMessageToEvent(datasource: string, model: string, msg: unknown): ChangeEvent {
  const isRow = typeof msg === 'object' && msg !== null && !Array.isArray(msg);
  const row: Row = isRow ? (msg as Row) : { message: msg };
  const rev = typeof row._rev === 'string' ? row._rev : undefined;
  let op: Operation = 'update';
  if (row._deleted === true) op = 'delete';
  else if (rev?.startsWith('1-')) op = 'create';
  const serialized = JSON.stringify(msg) ?? String(msg);
  const key = asKey(row._id) ?? asKey(row.id) ?? asKey(row.key) ?? sha(serialized);
  const id = sha(
    rev !== undefined
      ? JSON.stringify([datasource, model, key, rev])
      : JSON.stringify([datasource, model, serialized]),
  );
  return {
    id,
    datasource,
    model,
    op,
    key,
    before: op === 'delete' ? row : undefined,
    after: op === 'delete' ? null : row,
    position: null,
    sourceTime: new Date().toISOString(),
    ...(rev !== undefined ? { source: { rev } } : {}),
  };
}

export class LegacyDaoConnector implements EventConnector {
  readonly name: string;
  readonly resumable = false;

  private readonly dataSource: DataSourceLike;
  private readonly dao: LegacyDao;
  private readonly timeoutMs: number;
  private readonly warnBuffered: number;
  private readonly maxBuffered: number;
  private readonly logger: Logger;
  private readonly feeds = new Map<string, Feed>();
  private emitter: EventEmitter | undefined;
  private sink: ChangeSink | undefined;
  private state: ConnectorHealth['state'] = 'idle';
  private lastError: string | undefined;
  private errorCount = 0;

  constructor(options: LegacyDaoOptions) {
    this.name = options.name;
    this.dataSource = options.dataSource;
    this.dao = options.dao;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxBuffered = options.maxBuffered ?? 100_000;
    this.warnBuffered = Math.min(options.warnBuffered ?? 1_000, this.maxBuffered);
    this.logger = (options.logger ?? options.dataSource.logger).child({
      component: 'connector',
      connector: options.name,
      datasource: options.dataSource.name,
      style: 'seed',
    });
  }

  async start({ models, sink }: StartRequest): Promise<void> {
    if (this.state !== 'idle') {
      throw new EvpubError(ErrorCode.INVALID_STATE, `connector "${this.name}" was already started`);
    }
    this.state = 'starting';
    this.sink = sink;
    const emitter = new EventEmitter();
    this.emitter = emitter;
    emitter.on('eventMessage', (modelName: unknown, msg: unknown) => this.onMessage(String(modelName), msg));
    emitter.on('error', (modelName: unknown, err: unknown) => this.onError(modelName, err));

    for (const model of models) {
      if (model.from !== 'now') {
        this.logger.info(
          { model: model.name },
          'seed-style connector: it decides where reading starts; changes made while evpub was down may be missed',
        );
      }
      const ctx = Object.create(this.dao) as LegacyModelContext;
      ctx.modelName = model.name;
      ctx.dataSource = this.dataSource;
      ctx.settings = model.settings;
      const feed: Feed = {
        model,
        ctx,
        pending: [],
        draining: false,
        warnAt: this.warnBuffered,
        failed: false,
        lastPushed: true,
      };
      this.feeds.set(model.name, feed);
      try {
        await this.call('start', model.name, (cb) => this.dao.start.call(ctx, emitter, cb));
      } catch (err) {
        this.state = 'failed';
        await this.stop().catch(() => undefined);
        this.state = 'failed';
        throw err;
      }
    }
    this.state = 'streaming';
    sink.status({ type: 'connected' });
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'idle') {
      this.state = 'stopped';
      return;
    }
    const wasFailed = this.state === 'failed';
    this.state = 'stopped';
    const stop = this.dao.stop;
    for (const feed of this.feeds.values()) {
      if (stop && !feed.failed) {
        await this.call('stop', feed.model.name, (cb) => stop.call(feed.ctx, cb)).catch((err: unknown) =>
          this.logger.warn({ model: feed.model.name, err: redactText(toError(err).message) }, 'stop failed'),
        );
      }
      this.flush(feed);
    }
    this.emitter?.removeAllListeners();
    // A late 'error' emitted after stop must not throw as an unhandled EventEmitter error.
    this.emitter?.on('error', () => undefined);
    if (wasFailed) this.state = 'failed';
  }

  health(): ConnectorHealth {
    const positions: Record<string, null> = {};
    const buffered: string[] = [];
    for (const [name, feed] of this.feeds) {
      positions[name] = null;
      if (feed.pending.length > 0) buffered.push(`${name}: ${feed.pending.length} buffered`);
    }
    const detail = [
      'seed-style connector: no positions, cannot resume',
      ...buffered,
      ...(this.lastError ? [`last error (${this.errorCount} so far): ${this.lastError}`] : []),
    ].join('; ');
    return { state: this.state, positions, detail };
  }

  // -------------------------------------------------------------------------------------------

  /** Calls a seed method that takes a callback and may also return a promise, with a timeout. */
  private call(what: string, model: string, invoke: (cb: Callback) => unknown): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (err?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err === undefined || err === null) return resolve();
        reject(
          new EvpubError(
            ErrorCode.SOURCE_FAILED,
            `datasource "${this.dataSource.name}", model "${model}": connector "${this.name}" ${what}() failed: ${redactText(toError(err).message)}`,
            {
              cause: err,
              retriable: true,
              context: { datasource: this.dataSource.name, model, connector: this.name },
            },
          ),
        );
      };
      const timer = setTimeout(
        () => done(new Error(`${what}() did not call back within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      try {
        const result = invoke(done);
        if (result && typeof (result as PromiseLike<unknown>).then === 'function') {
          (result as PromiseLike<unknown>).then(
            () => done(),
            (err: unknown) => done(err ?? new Error(`${what}() rejected`)),
          );
        }
      } catch (err) {
        done(err);
      }
    });
  }

  private onMessage(modelName: string, msg: unknown): void {
    const feed = this.feeds.get(modelName);
    if (!feed) {
      this.logger.warn(
        { model: modelName },
        'seed-style connector emitted a change for a model it was not started for; ignored',
      );
      return;
    }
    if (feed.failed || this.state === 'stopped' || this.state === 'failed') {
      if (feed.failed)
        this.logger.error({ model: modelName }, 'change received after the feed failed; not published');
      else this.logger.warn({ model: modelName }, 'change received after stop(); not published');
      return;
    }
    if (this.state === 'reconnecting') {
      this.state = 'streaming';
      this.sink?.status({ type: 'connected', model: modelName });
    }
    const event = legacyMessageToEvent(this.dataSource.name, modelName, msg);
    if (feed.pending.length === 0 && feed.lastPushed && this.sink) {
      feed.lastPushed = this.sink.push(event);
      if (!feed.lastPushed) this.pump(feed);
      return;
    }
    feed.pending.push(event);
    this.checkBuffer(feed);
    this.pump(feed);
  }

  private checkBuffer(feed: Feed): void {
    const n = feed.pending.length;
    if (n >= this.maxBuffered) {
      feed.failed = true;
      const err = new EvpubError(
        ErrorCode.SOURCE_FAILED,
        `datasource "${this.dataSource.name}", model "${feed.model.name}": the seed-style connector "${this.name}" ` +
          `cannot be paused and ${n} events are waiting for the broker (limit ${this.maxBuffered}); ` +
          'the feed is stopped rather than dropping events (raise publisher.maxInFlight or check the broker)',
        { context: { datasource: this.dataSource.name, model: feed.model.name, buffered: n } },
      );
      this.logger.error({ model: feed.model.name, buffered: n }, err.message);
      const stop = this.dao.stop;
      if (stop) {
        this.call('stop', feed.model.name, (cb) => stop.call(feed.ctx, cb)).catch(() => undefined);
      }
      // What was buffered is still handed over, as the window allows; only new changes stop.
      this.sink?.fail(feed.model.name, err);
    } else if (n >= feed.warnAt) {
      this.logger.warn(
        { model: feed.model.name, buffered: n, limit: this.maxBuffered },
        'the broker is slower than the source and a seed-style connector cannot be paused: buffering in memory',
      );
      feed.warnAt *= 2;
    }
  }

  /** Hands buffered events to the sink as the window drains, in order. */
  private pump(feed: Feed): void {
    if (feed.draining || !this.sink) return;
    const sink = this.sink;
    feed.draining = true;
    const loop = async () => {
      for (;;) {
        if (!feed.lastPushed) {
          await sink.drain();
          feed.lastPushed = true;
        }
        if (this.state === 'stopped') break; // stop() flushes what remains
        const next = feed.pending.shift();
        if (!next) break;
        feed.lastPushed = sink.push(next);
      }
    };
    loop()
      .catch((err: unknown) =>
        this.logger.error({ model: feed.model.name, err: toError(err).message }, 'drain failed'),
      )
      .finally(() => {
        feed.draining = false;
        if (feed.pending.length > 0 && this.state !== 'stopped') this.pump(feed);
      });
  }

  /** On stop: whatever is still buffered goes to the sink now (pushed before stop resolves). */
  private flush(feed: Feed): void {
    if (!this.sink || feed.pending.length === 0) return;
    this.logger.info(
      { model: feed.model.name, buffered: feed.pending.length },
      'handing buffered events over on stop',
    );
    for (const event of feed.pending.splice(0)) this.sink.push(event);
  }

  private onError(modelName: unknown, err: unknown): void {
    const model = typeof modelName === 'string' ? modelName : undefined;
    const error = err ?? modelName;
    const message = redactText(toError(error).message);
    this.errorCount += 1;
    this.lastError = message;
    this.logger.warn(
      { model, err: message, errors: this.errorCount },
      'seed-style connector reported an error',
    );
    if (this.state === 'streaming' || this.state === 'reconnecting') {
      this.state = 'reconnecting';
      this.sink?.status({ type: 'reconnecting', model, attempt: this.errorCount, error: message });
    }
  }
}
