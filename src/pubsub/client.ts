/**
 * The broker-agnostic pub/sub client, successor of strong-pubsub.
 *
 *   const client = new Client({ host: 'localhost', port: 1883 }, MqttAdapter);
 *   const client = createClient('redis://localhost:6379');
 *
 * Every method returns a Promise and also takes a trailing node-style callback. `publish` and
 * `subscribe` connect on their own. Lifecycle:
 *
 *   idle ──connect()──► connecting ──► connected ◄──► offline (the adapter reconnects)
 *                            │                │            │
 *                            └── fails: idle  └──end()──► closing ──► closed
 *
 * A publish while offline waits for the reconnect; the whole publish, waiting included, is
 * bounded by `publishTimeout` and then fails with PUBLISH_TIMEOUT: never a silent drop.
 */
import { EventEmitter } from 'node:events';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../errors';
import { defaultLogger, type Logger } from '../logger';
import type {
  AdapterConstructor,
  AdapterEvents,
  BrokerAdapter,
  ClientOptions,
  MessageMeta,
  PublishOptions,
  ResolvedClientOptions,
  SubscribeOptions,
} from './adapter';
import { assertPattern, assertTopic } from './topics';
import { parseTls } from '../util/tls';

export type ClientState = 'idle' | 'connecting' | 'connected' | 'offline' | 'closing' | 'closed';

export interface ClientEventMap {
  message: [topic: string, payload: Buffer, meta: MessageMeta];
  connect: [];
  reconnect: [];
  offline: [];
  error: [err: Error];
  close: [];
}

export type Callback<T = void> = (err: Error | null, result?: T) => void;

export type Payload = Buffer | Uint8Array | string;

/**
 * A publish the Client has not settled yet. Publishes to one topic in the same millisecond that
 * wait on the same adapter promise (NATS core confirms a whole tick with one round trip) share
 * one entry: same deadline, same outcome, one promise and one `then` instead of one per message.
 */
class PendingPublish {
  settled = false;
  /**
   * For a publish still waiting for the connection: called when it times out, so that it lets
   * go of its payload and is never sent (its caller was told it failed, and will retry).
   */
  abandon: (() => void) | undefined;
  readonly promise: Promise<void>;
  resolve!: () => void;
  reject!: (err: Error) => void;

  constructor(
    readonly deadline: number,
    readonly topic: string,
    readonly work: Promise<void>,
  ) {
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }
}

/** What a publish without options passes to the adapter; adapters only read it. */
const NO_OPTIONS: PublishOptions = Object.freeze({});

/** Topics already validated; a client publishes to few topics, many times each. */
const TOPIC_CACHE_LIMIT = 1024;

const DEFAULTS = { connectTimeout: 10_000, publishTimeout: 30_000, initialDelay: 100, maxDelay: 5_000 };

/** Settles `promise` into `cb` when one is given; returns the promise either way. */
function withCallback<T>(promise: Promise<T>, cb: Callback<T> | undefined): Promise<T> {
  if (cb) {
    promise.then(
      (v) => cb(null, v),
      (e: unknown) => cb(toError(e)),
    );
    // The caller chose callbacks: the promise's rejection is delivered there, not unhandled.
    promise.catch(() => undefined);
  }
  return promise;
}

function toBuffer(payload: Payload): Buffer {
  if (Buffer.isBuffer(payload)) return payload;
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  if (payload instanceof Uint8Array)
    return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  throw new EvpubError(ErrorCode.CONFIG_INVALID, 'publish: payload must be a Buffer, Uint8Array or string');
}

function resolveOptions(options: ClientOptions, Adapter: AdapterConstructor): ResolvedClientOptions {
  if (options === null || typeof options !== 'object') {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      'Client options must be an object like { host, port } or { url }',
    );
  }
  const logger = (options.logger ?? defaultLogger()).child({
    component: 'pubsub',
    adapter: Adapter.adapterName,
  });
  let url = options.url;
  if (url === undefined) {
    const port = options.port ?? Adapter.defaultPort;
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `port: must be an integer from 0 to 65535, got ${String(port)}`,
      );
    }
    url = `${Adapter.adapterName}://${options.host ?? 'localhost'}:${port}`;
  }
  const positive = (key: string, v: unknown, dflt: number): number => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !(v > 0)) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `${key}: must be a positive number of milliseconds`);
    }
    return v;
  };
  return {
    ...options,
    url,
    logger,
    tls: parseTls(options.tls, 'options.tls'),
    connectTimeout: positive('connectTimeout', options.connectTimeout, DEFAULTS.connectTimeout),
    publishTimeout: positive('publishTimeout', options.publishTimeout, DEFAULTS.publishTimeout),
    reconnect: {
      initialDelay: positive(
        'reconnect.initialDelay',
        options.reconnect?.initialDelay,
        DEFAULTS.initialDelay,
      ),
      maxDelay: positive('reconnect.maxDelay', options.reconnect?.maxDelay, DEFAULTS.maxDelay),
    },
  };
}

export class Client extends EventEmitter<ClientEventMap> {
  readonly options: ResolvedClientOptions;
  readonly adapter: BrokerAdapter;
  private readonly logger: Logger;
  private _state: ClientState = 'idle';
  private connecting: Promise<void> | undefined;
  private ending: Promise<void> | undefined;
  /** Resolves when the connection is back; exists only while offline. */
  private online: { promise: Promise<void>; resolve: () => void } | undefined;
  private readonly subscriptions = new Map<string, SubscribeOptions>();
  /** Publishes not yet settled, oldest first (see `bounded`); settled ones before `pendingHead`. */
  private pending: (PendingPublish | undefined)[] = [];
  private pendingHead = 0;
  /** The newest entry, which the next publish may share (see PendingPublish). */
  private lastPending: PendingPublish | undefined;
  private readonly validTopics = new Set<string>();
  private sweeper: NodeJS.Timeout | undefined;
  /** How often the sweep runs: a tenth of the timeout, between 10 ms and 1 s. */
  private readonly sweepEvery: number;

  constructor(options: ClientOptions, Adapter: AdapterConstructor) {
    super({ captureRejections: false });
    if (typeof Adapter !== 'function') {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, 'Client: the second argument must be an adapter class');
    }
    this.options = resolveOptions(options, Adapter);
    this.logger = this.options.logger;
    this.sweepEvery = Math.max(10, Math.min(1000, this.options.publishTimeout / 10));
    this.adapter = new Adapter(this.options, this.adapterEvents());
  }

  get state(): ClientState {
    return this._state;
  }

  private adapterEvents(): AdapterEvents {
    return {
      message: (topic, payload, meta) => this.deliver(topic, payload, meta),
      offline: () => {
        if (this._state !== 'connected') return;
        this._state = 'offline';
        let resolve!: () => void;
        const promise = new Promise<void>((r) => (resolve = r));
        this.online = { promise, resolve };
        this.logger.warn('broker connection lost; reconnecting');
        this.safeEmit('offline');
      },
      reconnect: () => {
        if (this._state !== 'offline' && this._state !== 'connected') return;
        const wasOffline = this._state === 'offline';
        this._state = 'connected';
        this.online?.resolve();
        this.online = undefined;
        if (wasOffline) this.logger.info('broker connection restored');
        this.safeEmit('reconnect');
      },
      error: (err) => this.emitError(err),
      close: () => {
        if (this._state === 'closed') return;
        this._state = 'closed';
        this.safeEmit('close');
      },
    };
  }

  /**
   * Emits to listeners; a listener that throws is logged and reported, never propagated.
   * Returns false when a listener threw.
   */
  private safeEmit<K extends keyof ClientEventMap>(event: K, ...args: ClientEventMap[K]): boolean {
    try {
      (this.emit as (e: K, ...a: ClientEventMap[K]) => boolean)(event, ...args);
      return true;
    } catch (err) {
      this.logger.error({ err, event }, 'a client event listener threw');
      if (event !== 'error') this.emitError(toError(err));
      return false;
    }
  }

  private emitError(err: Error): void {
    if (this.listenerCount('error') === 0) {
      this.logger.error({ err }, 'pub/sub client error');
      return;
    }
    this.safeEmit('error', err);
  }

  /** Durable messages are acked after the listeners ran, unless one threw: then the broker redelivers. */
  private deliver(topic: string, payload: Buffer, meta: MessageMeta): void {
    const handled = this.safeEmit('message', topic, payload, meta);
    const sub = meta.pattern === undefined ? undefined : this.subscriptions.get(meta.pattern);
    if (handled && sub?.durable !== undefined && sub.ack !== 'manual') {
      meta.ack().catch((err: unknown) => this.emitError(toError(err)));
    }
  }

  connect(cb?: Callback): Promise<void> {
    return withCallback(this.ensureConnected(), cb);
  }

  private ensureConnected(): Promise<void> {
    if (this._state === 'connected' || this._state === 'offline') return Promise.resolve();
    if (this._state === 'closing' || this._state === 'closed') {
      return Promise.reject(
        new EvpubError(ErrorCode.CLIENT_CLOSED, 'the client was ended; create a new one'),
      );
    }
    this.connecting ??= (async () => {
      this._state = 'connecting';
      try {
        await this.adapter.connect();
      } catch (err) {
        if (this._state === 'connecting') this._state = 'idle';
        throw err;
      } finally {
        this.connecting = undefined;
      }
      // end() may have been called while connecting.
      if (this._state !== 'connecting') {
        throw new EvpubError(ErrorCode.CLIENT_CLOSED, 'the client was ended while connecting');
      }
      this._state = 'connected';
      this.logger.debug('connected');
      this.safeEmit('connect');
    })();
    return this.connecting;
  }

  publish(topic: string, payload: Payload, cb?: Callback): Promise<void>;
  publish(topic: string, payload: Payload, options: PublishOptions | undefined, cb?: Callback): Promise<void>;
  publish(
    topic: string,
    payload: Payload,
    optionsOrCb?: PublishOptions | Callback,
    cb?: Callback,
  ): Promise<void> {
    const options = typeof optionsOrCb === 'function' ? NO_OPTIONS : (optionsOrCb ?? NO_OPTIONS);
    const callback = typeof optionsOrCb === 'function' ? optionsOrCb : cb;
    return withCallback(this.doPublish(topic, payload, options), callback);
  }

  private doPublish(topic: string, payload: Payload, options: PublishOptions): Promise<void> {
    try {
      if (!this.validTopics.has(topic)) {
        assertTopic(topic);
        if (this.validTopics.size >= TOPIC_CACHE_LIMIT) this.validTopics.clear();
        this.validTopics.add(topic);
      }
      const body = toBuffer(payload);
      if (this._state === 'connected') return this.bounded(this.adapter.publish(topic, body, options), topic);
      // Offline (or not yet connected): wait for the connection, unless the publish times out
      // first. A publish that timed out is never sent afterwards: its caller was told it failed
      // and re-publishes it (the pipeline re-sends its whole window), so sending it on the
      // reconnect too would add one copy per retry of a long outage, held in memory till then.
      const deadline = Date.now() + this.options.publishTimeout;
      const held: { body: Buffer | undefined } = { body };
      return this.bounded(
        (async () => {
          await this.ensureConnected();
          if (this.online) await this.online.promise;
          if (this._state !== 'connected') {
            throw new EvpubError(ErrorCode.CLIENT_CLOSED, 'the client was ended before the publish');
          }
          if (held.body === undefined || Date.now() >= deadline) throw this.timeoutError(topic);
          await this.adapter.publish(topic, held.body, options);
        })(),
        topic,
        () => (held.body = undefined),
      );
    } catch (err) {
      return Promise.reject(toError(err));
    }
  }

  /**
   * Bounds `work` by publishTimeout. A late broker confirmation after the timeout is ignored.
   * All publishes share one timeout, so deadlines expire in publish order: one sweep timer
   * walks a FIFO of pending publishes instead of a timer per publish on the hot path.
   */
  private bounded(work: Promise<void>, topic: string, abandon?: () => void): Promise<void> {
    const deadline = Date.now() + this.options.publishTimeout;
    const last = this.lastPending;
    if (last && !last.settled && last.work === work && last.deadline === deadline && last.topic === topic) {
      return last.promise;
    }
    const entry = new PendingPublish(deadline, topic, work);
    entry.abandon = abandon;
    this.lastPending = entry;
    this.pending.push(entry);
    this.sweeper ??= setInterval(() => this.sweep(), this.sweepEvery).unref();
    work.then(
      () => this.settle(entry, undefined),
      (err: unknown) => this.settle(entry, toError(err)),
    );
    return entry.promise;
  }

  private settle(entry: PendingPublish, err: Error | undefined): void {
    if (entry.settled) return;
    entry.settled = true;
    if (err) entry.reject(err);
    else entry.resolve();
    // Brokers confirm in publish order, so this is usually the head: let settled entries go
    // at once rather than at the next sweep (held for a second, they would reach the old GC
    // generation by the hundred thousand).
    const queue = this.pending;
    let head = this.pendingHead;
    while (head < queue.length && queue[head]!.settled) queue[head++] = undefined;
    this.pendingHead = head;
  }

  private sweep(): void {
    const now = Date.now();
    const queue = this.pending;
    let head = this.pendingHead;
    while (head < queue.length) {
      const entry = queue[head]!;
      if (!entry.settled) {
        if (entry.deadline > now) break;
        entry.settled = true;
        entry.abandon?.();
        entry.reject(this.timeoutError(entry.topic));
      }
      queue[head++] = undefined;
    }
    if (head === queue.length) {
      this.pending = [];
      this.pendingHead = 0;
      this.lastPending = undefined;
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    } else if (head > 4096 && head * 2 > queue.length) {
      this.pending = queue.slice(head);
      this.pendingHead = 0;
    } else {
      this.pendingHead = head;
    }
  }

  private timeoutError(topic: string): EvpubError {
    const ms = this.options.publishTimeout;
    return new EvpubError(
      ErrorCode.PUBLISH_TIMEOUT,
      `publish to ${JSON.stringify(topic)} was not confirmed by the broker within ${ms} ms` +
        (this._state === 'offline' ? ' (the broker is unreachable)' : ''),
      { retriable: true, context: { topic } },
    );
  }

  subscribe(patterns: string | string[], cb?: Callback): Promise<void>;
  subscribe(patterns: string | string[], options: SubscribeOptions | undefined, cb?: Callback): Promise<void>;
  subscribe(
    patterns: string | string[],
    optionsOrCb?: SubscribeOptions | Callback,
    cb?: Callback,
  ): Promise<void> {
    const options = typeof optionsOrCb === 'function' ? {} : (optionsOrCb ?? {});
    const callback = typeof optionsOrCb === 'function' ? optionsOrCb : cb;
    const list = Array.isArray(patterns) ? patterns : [patterns];
    const work = (async () => {
      list.forEach((p) => assertPattern(p));
      const connected = this.ensureConnected();
      if (this._state === 'connecting' && this.adapter.subscribesWhileConnecting === true) {
        // On the wire before the connection is reported up (adapter contract, point 5); a
        // failed connect is the error the caller sees.
        const early = this.subscribeEach(list, options);
        early.catch(() => undefined);
        await connected;
        await early;
        return;
      }
      await connected;
      await this.subscribeEach(list, options);
    })();
    return withCallback(work, callback);
  }

  private async subscribeEach(list: string[], options: SubscribeOptions): Promise<void> {
    for (const pattern of list) {
      this.subscriptions.set(pattern, options);
      try {
        await this.adapter.subscribe(pattern, options);
      } catch (err) {
        this.subscriptions.delete(pattern);
        throw isEvpubError(err)
          ? err
          : new EvpubError(ErrorCode.SUBSCRIBE_FAILED, `subscribe to ${JSON.stringify(pattern)} failed`, {
              cause: err,
            });
      }
    }
  }

  unsubscribe(patterns: string | string[], cb?: Callback): Promise<void> {
    const list = Array.isArray(patterns) ? patterns : [patterns];
    const work = (async () => {
      if (this._state === 'idle') return;
      await this.ensureConnected();
      for (const pattern of list) {
        this.subscriptions.delete(pattern);
        await this.adapter.unsubscribe(pattern);
      }
    })();
    return withCallback(work, cb);
  }

  /** Closes the connection. Calling it again, or before connect, is harmless. */
  end(cb?: Callback): Promise<void> {
    this.ending ??= (async () => {
      const previous = this._state;
      if (previous === 'closed') return;
      this._state = 'closing';
      this.online?.resolve();
      this.online = undefined;
      if (this.connecting) await this.connecting.catch(() => undefined);
      if (previous !== 'idle') {
        try {
          await this.adapter.end();
        } catch (err) {
          this.logger.warn({ err }, 'error while closing the broker connection');
        }
      }
      // The adapter's close event normally got here first.
      if ((this._state as ClientState) !== 'closed') {
        this._state = 'closed';
        this.safeEmit('close');
      }
    })();
    return withCallback(this.ending, cb);
  }
}
