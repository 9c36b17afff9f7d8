/**
 * The app: evpub's LoopBack-style API.
 *
 *   const app = evpub({ brokers: { default: 'mqtt://localhost:1883' } });
 *   app.dataSource('db', { connector: 'couchdb', url: 'http://localhost:5984' });
 *   app.model({ name: 'accounts', base: 'Model' }, { dataSource: 'db', topic: '/v1/subutest', envelope: 'legacy' });
 *   app.on('status', (s) => ...);
 *   await app.start();
 *   ...
 *   await app.stop();
 *
 * Lifecycle, a guarded state machine:
 *
 *   idle ──start()──► starting ──► running ──stop()──► stopping ──► idle (may start again)
 *                        │ fails: undone, back to idle
 *
 * - `start()` while starting or running returns the same promise (it starts once).
 * - `stop()` while starting waits for the start to settle, then stops; `stop()` while stopping
 *   returns the same promise; `stop()` when idle resolves at once.
 * - `start()` while stopping rejects with INVALID_STATE; so do `dataSource()`/`model()` unless idle.
 *
 * The configuration the calls describe (plus `options.config`) is validated once, by
 * `validateConfig`, before anything connects.
 *
 * Operating it while it runs:
 * - `pause(feedId)` / `resume(feedId)`: stop and resume reading a feed's source (the checkpoint
 *   stays, nothing is lost; every feed of that datasource waits meanwhile: one stream per
 *   datasource). Idempotent (false when nothing changed); FEED_NOT_FOUND for an unknown feed,
 *   INVALID_STATE unless running.
 * - `resnapshot(feedId)`: reads the feed's table again beside its stream, as `snapshot` events
 *   (the feed is `snapshotting` meanwhile). Idempotent (`started: false` while one runs);
 *   FEED_NOT_FOUND, NOT_SUPPORTED for a connector that cannot, INVALID_STATE unless running.
 * - `listen(options?)`: serves the management HTTP API (src/http/, loaded on first use) and
 *   resolves with its address; `stop()` closes it.
 */
import { EventEmitter } from 'node:events';
import type { CheckpointStore } from '../checkpoints/contract';
import type { SnapshotStart } from '../connectors/contract';
import type { MemoryConnector } from '../connectors/memory';
import { builtinConnectors, type ConnectorRegistry } from '../connectors/registry';
import { ErrorCode, EvpubError, toError } from '../errors';
import { defaultLogger, type Logger } from '../logger';
import type { PublisherStatus } from '../pipeline/status';
import { builtinAdapters, type AdapterRegistry } from '../pubsub/registry';
import { validateConfig } from './config';
import { collectSecrets, redactValue } from '../util/redact';
import { httpDefaults, httpProblems, type Problem } from './config';
import type {
  BrokerConfig,
  CheckpointConfig,
  DataSourceConfig,
  EvpubConfig,
  HttpConfig,
  ModelConfig,
  PublisherConfig,
} from './config-types';
import { FeedRates } from './rates';
import { DataSource, modelName, type Model, type ModelDefinition, type ModelOptions } from './datasource';
import { PublishedEvents, type PublishedEventSource } from './published-events';
import { Runtime, type RuntimeSnapshot } from './runtime';
import type { ChangeToPublish, PublishChangeResult } from './publish-change';

export interface EvpubOptions {
  logger?: Logger;
  /** Connector registry (default: `builtinConnectors()`). */
  registry?: ConnectorRegistry;
  /** Broker adapter registry (default: `builtinAdapters()`). */
  adapters?: AdapterRegistry;
  /** A whole configuration; the programmatic calls add to it. */
  config?: Partial<EvpubConfig>;
  /** Named brokers: a URL, or `{ url, options }`. `default` serves models that name none. */
  brokers?: Record<string, string | BrokerConfig>;
  /** Checkpoint store, by configuration (default: files in `.evpub/checkpoints`) or as an object. */
  checkpoints?: CheckpointConfig | CheckpointStore;
  publisher?: PublisherConfig;
  /** The management HTTP server's settings (served by `listen()`; `evpub start` listens). */
  http?: HttpConfig;
  /** The application's directory: npm connectors and relative paths resolve from it. */
  cwd?: string;
  /** Install SIGTERM/SIGINT handlers that stop gracefully and exit 0 (see `handleSignals()`). */
  handleSignals?: boolean;
  /** How long `stop()` waits for unconfirmed publishes, in ms (default 30000). */
  stopTimeout?: number;
  /** Back-off of re-publishing after a failed publish, in ms (defaults 100 .. 10000). */
  retry?: { initialDelay?: number; maxDelay?: number };
  /**
   * Several instances sharing the feeds (docs/cluster.md): the `cluster` section of the
   * configuration, `{ store, url, name, leaseTtl?, ... }` (durations in ms or like `'15s'`).
   */
  cluster?: ClusterOptions;
}

/** The `cluster` section as given (validated at start by parseClusterConfig). */
export interface ClusterOptions {
  store: 'postgres' | 'redis' | 'nats';
  url: string;
  name: string;
  leaseTtl?: number | string;
  renewInterval?: number | string;
  instance?: string;
  [key: string]: unknown;
}

export type AppState = 'idle' | 'starting' | 'running' | 'stopping';

export interface AppStatus extends RuntimeSnapshot {
  state: AppState;
  startedAt: string | null;
  feeds: Record<string, RuntimeSnapshot['feeds'][string] & { eventsPerSecond: number }>;
}

/** What `listen()` serves on, and the server to close. */
export interface Listening {
  /** `http://host:port` (the port the system picked for port 0). */
  url: string;
  host: string;
  port: number;
}

/** The server `listen()` started (src/http/): closed by `stop()`. */
interface ServerHandle {
  address: Listening;
  close(): Promise<void>;
}

export interface AppEventMap {
  status: [status: PublisherStatus];
}

function isStore(value: unknown): value is CheckpointStore {
  const v = value as Partial<CheckpointStore> | undefined;
  return typeof v?.load === 'function' && typeof v.save === 'function';
}

export class App extends EventEmitter<AppEventMap> {
  readonly logger: Logger;
  private readonly registry: ConnectorRegistry;
  private readonly adapters: AdapterRegistry;
  private readonly dataSources = new Map<string, DataSource<unknown>>();
  private readonly models = new Map<string, Model>();
  private _state: AppState = 'idle';
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private runtime: Runtime | undefined;
  private config: Readonly<EvpubConfig> | undefined;
  /** The configuration's secret values, masked in `status()` wherever they appear. */
  private secrets: readonly string[] = [];
  private startedAt: string | null = null;
  private uninstallSignals: (() => void) | undefined;
  private readonly rates = new FeedRates();
  private server: Promise<ServerHandle> | undefined;
  /** Where `listen()` serves, once it does (told to the other instances of a cluster). */
  private listening: Listening | undefined;

  constructor(private readonly options: EvpubOptions = {}) {
    super({ captureRejections: false });
    this.logger = (options.logger ?? defaultLogger()).child({ component: 'app' });
    this.registry = options.registry ?? builtinConnectors();
    this.adapters = options.adapters ?? builtinAdapters();
    if (options.handleSignals) this.handleSignals();
  }

  get state(): AppState {
    return this._state;
  }

  private assertIdle(what: string): void {
    if (this._state !== 'idle') {
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `${what} is only possible before start() (the app is ${this._state})`,
      );
    }
  }

  /** Declares a datasource. Its `connector` is available from `start()` to `stop()`. */
  dataSource(name: string, settings: { connector: 'memory'; store?: string }): DataSource<MemoryConnector>;
  dataSource<C = unknown>(name: string, settings: DataSourceConfig): DataSource<C>;
  dataSource(name: string, settings: DataSourceConfig): DataSource<unknown> {
    this.assertIdle('app.dataSource()');
    if (typeof name !== 'string' || name === '') {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        'app.dataSource(name, settings): name must be a non-empty string',
      );
    }
    if (this.dataSources.has(name)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `datasources.${name}: a datasource of that name already exists`,
      );
    }
    const ds = new DataSource<unknown>(name, { ...settings });
    this.dataSources.set(name, ds);
    return ds;
  }

  /** Declares a model (a feed of changes) bound to a datasource, with its publishing options. */
  model(definition: ModelDefinition, options: ModelOptions): Model {
    this.assertIdle('app.model()');
    const name = modelName(definition);
    if (name === '') {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        'app.model(definition, options): definition must be a name or { name: "accounts", base: "Model" }',
      );
    }
    if (this.models.has(name)) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `models.${name}: a model of that name already exists`);
    }
    if (!options || typeof options !== 'object') {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `models.${name}: options with a dataSource are required`,
      );
    }
    const dataSource = typeof options.dataSource === 'string' ? options.dataSource : options.dataSource?.name;
    const config: ModelConfig = { ...options, dataSource };
    for (const key of Object.keys(config) as (keyof ModelConfig)[]) {
      if (config[key] === undefined) delete config[key];
    }
    const model: Model = { name, dataSource, config, feedId: `${dataSource}/${name}` };
    this.models.set(name, model);
    return model;
  }

  /** The configuration the app runs, as validation will see it (not yet validated). */
  toConfig(): EvpubConfig {
    const base = this.options.config ?? {};
    const brokers: Record<string, BrokerConfig> = { ...base.brokers };
    for (const [name, b] of Object.entries(this.options.brokers ?? {})) {
      brokers[name] = typeof b === 'string' ? { url: b } : b;
    }
    const checkpoints = this.options.checkpoints;
    const datasources: Record<string, DataSourceConfig> = { ...base.datasources };
    for (const ds of this.dataSources.values()) datasources[ds.name] = { ...ds.settings };
    const models: Record<string, ModelConfig> = { ...base.models };
    for (const m of this.models.values()) models[m.name] = { ...m.config };
    const config: Partial<EvpubConfig> = {
      brokers,
      datasources,
      models,
      publisher: { ...base.publisher, ...this.options.publisher },
    };
    if (base.http || this.options.http) config.http = { ...base.http, ...this.options.http };
    const cluster = this.options.cluster ?? base.cluster;
    if (cluster) config.cluster = cluster as unknown as EvpubConfig['cluster'];
    if (isStore(checkpoints)) config.checkpoints = { store: 'memory' };
    else if (checkpoints) config.checkpoints = checkpoints;
    else if (base.checkpoints) config.checkpoints = base.checkpoints;
    return config as EvpubConfig;
  }

  /**
   * Validates the configuration, connects the brokers, loads checkpoints and starts every
   * connector. Resolves when every feed is reading; rejects (with everything undone) otherwise.
   */
  start(): Promise<void> {
    if (this._state === 'starting' || this._state === 'running') return this.starting!;
    if (this._state === 'stopping') {
      return Promise.reject(
        new EvpubError(ErrorCode.INVALID_STATE, 'start() while the app is stopping; await stop() first'),
      );
    }
    this._state = 'starting';
    this.stopping = undefined;
    this.starting = this.doStart().then(
      () => {
        this._state = 'running';
      },
      (err: unknown) => {
        this._state = 'idle';
        this.runtime = undefined;
        throw err;
      },
    );
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const cwd = this.options.cwd ?? process.cwd();
    const config = validateConfig(this.toConfig(), {
      cwd,
      connectors: this.registry,
      adapters: this.adapters,
      storeObject: isStore(this.options.checkpoints),
    });
    this.config = config;
    this.secrets = collectSecrets(config);
    const runtime = new Runtime(config, {
      // The runtime makes its own children (component: pipeline, connector...) of the root logger.
      logger: this.options.logger ?? defaultLogger(),
      registry: this.registry,
      adapters: this.adapters,
      cwd,
      store: isStore(this.options.checkpoints) ? this.options.checkpoints : undefined,
      dataSources: this.dataSources,
      emit: (s) => this.emitStatus(s),
      stopTimeout: this.options.stopTimeout ?? 30_000,
      retry: this.options.retry,
      onPublished: (p) => this.published?.publish(p),
      tapping: () => (this.published?.listenerCount() ?? 0) > 0,
      memberInfo: () => (this.listening ? { api: this.listening.url } : {}),
    });
    this.runtime = runtime;
    await runtime.start();
    this.startedAt = new Date().toISOString();
    this._state = 'running'; // before 'started', so listeners see it
    this.emitStatus({ type: 'started', feeds: runtime.feedIds() });
    this.logger.info({ feeds: runtime.feedIds() }, 'evpub started');
  }

  /**
   * Stops reading, waits for in-flight publishes, saves the checkpoints and closes connectors,
   * clients and the store. Harmless when not started; waits for a start in progress.
   */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    if (this._state === 'idle') return this.closeServer();
    this.stopping = (async () => {
      if (this._state === 'starting') await this.starting!.catch(() => undefined);
      if (this._state !== 'running') return; // the start failed: nothing to stop
      this._state = 'stopping';
      this.emitStatus({ type: 'stopping' });
      try {
        await this.runtime?.stop();
      } finally {
        this.runtime = undefined;
        this.startedAt = null;
        this._state = 'idle';
        this.starting = undefined;
        this.emitStatus({ type: 'stopped' });
        this.logger.info('evpub stopped');
        await this.closeServer();
      }
    })();
    return this.stopping;
  }

  /**
   * A snapshot for humans and the HTTP API: no secrets (broker URLs, errors of feeds and
   * connectors and their causes: everything goes through the redaction of src/util/redact.ts).
   */
  status(): AppStatus {
    const snap = this.runtime?.snapshot() ?? { brokers: {}, datasources: {}, feeds: {} };
    const feeds: AppStatus['feeds'] = {};
    for (const [id, feed] of Object.entries(snap.feeds)) {
      feeds[id] = { ...feed, eventsPerSecond: this.rates.rate(id, feed.published) };
    }
    return redactValue(
      { state: this._state, startedAt: this.startedAt, ...snap, feeds },
      { known: this.secrets },
    );
  }

  /** The running runtime, or INVALID_STATE naming what was asked. */
  private running(what: string): Runtime {
    if (this._state !== 'running' || !this.runtime) {
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `${what} needs a running app (the app is ${this._state})`,
      );
    }
    return this.runtime;
  }

  /**
   * Pauses a feed (`datasource/model`): its datasource is no longer read (every feed of it
   * waits), what is in flight is still published and committed, and `resume` reads on from
   * there. True when it was not paused yet; false when it already was.
   */
  pause(feedId: string): boolean {
    return this.running('app.pause()').pause(feedId);
  }

  /** Resumes a paused feed from where it stopped. True when it was paused; false otherwise. */
  resume(feedId: string): boolean {
    return this.running('app.resume()').resume(feedId);
  }

  /**
   * Re-snapshots a feed (`datasource/model`): its connector reads the table again from the
   * first row beside the stream, which goes on (see the connector contract, point 9); a restart
   * mid-way resumes it. Resolves once it is under way: `started` false when one was running
   * already, with its progress. FEED_NOT_FOUND for an unknown feed, NOT_SUPPORTED when its
   * connector cannot re-snapshot, the connector's INVALID_STATE or CONFIG_INVALID (no primary
   * key) otherwise.
   */
  resnapshot(feedId: string): Promise<SnapshotStart> {
    try {
      return this.running('app.resnapshot()').resnapshot(feedId);
    } catch (err) {
      return Promise.reject(toError(err));
    }
  }

  /**
   * Serves the management HTTP API (health, readiness, feeds, pause/resume, config, metrics,
   * OpenAPI) and resolves with its address. `options` override the configuration's `http` (and
   * EVPUB_HTTP_PORT / EVPUB_HTTP_TOKEN); a non-loopback host without a token is refused with
   * CONFIG_INVALID naming `http.token`. Listening twice returns the same server; `stop()`
   * closes it.
   */
  listen(options: Omit<HttpConfig, 'enabled'> = {}): Promise<Listening> {
    this.server ??= (async () => {
      const problems: Problem[] = [];
      const http = httpDefaults({ ...this.toConfig().http, ...options }, process.env, problems);
      problems.push(...httpProblems({ ...http, enabled: true }));
      if (problems.length > 0) {
        throw new EvpubError(
          ErrorCode.CONFIG_INVALID,
          problems.map((p) => `${p.path}: ${p.message}`).join('\n'),
        );
      }
      // Loaded on first use: an app that never listens loads no web server (~60 ms).
      const { serve } = await import('../http/server.js');
      const handle = await serve(this, http);
      this.listening = handle.address;
      return handle;
    })();
    const pending = this.server;
    return pending.then(
      (s) => s.address,
      (err: unknown) => {
        if (this.server === pending) this.server = undefined;
        throw err;
      },
    );
  }

  /**
   * Publishes a change the application made itself (the LoopBack repository mixin's `direct`
   * mode) exactly as the model's feed publishes what its connector captures: its datasource,
   * `ops`, fields, envelope, topic template and broker. Resolves once the broker confirmed the
   * event (or its dead letter). FEED_NOT_FOUND for an unknown model, INVALID_STATE unless
   * running (see src/app/publish-change.ts).
   */
  publishChange(change: ChangeToPublish): Promise<PublishChangeResult> {
    try {
      return this.running('app.publishChange()').publishChange(change);
    } catch (err) {
      return Promise.reject(toError(err));
    }
  }

  /** The config as validated for this run (undefined before start): for `GET /api/config`. */
  effectiveConfig(): Readonly<EvpubConfig> | undefined {
    return this.config;
  }

  private async closeServer(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.listening = undefined;
    if (!server) return;
    const handle = await server.catch(() => undefined);
    await handle?.close();
  }

  // Published events (issue 12: the live event stream) --------------------------------------
  private published: PublishedEvents | undefined;

  /**
   * Every event the broker confirmed, live: `app.events().on('event', (e) => ...)`, `off` to
   * stop. Listeners are called synchronously on the publishing path: keep them quick (see
   * `published-events.ts`). Dead letters are not passed.
   */
  events(): PublishedEventSource {
    this.published ??= new PublishedEvents(this.logger);
    return this.published;
  }
  // -------------------------------------------------------------------------------------------

  /** Emits a status event; a listener that throws is logged and the others still run. */
  private emitStatus(status: PublisherStatus): void {
    this.rates.onStatus(status);
    for (const listener of this.listeners('status') as ((s: PublisherStatus) => void)[]) {
      try {
        listener(status);
      } catch (err) {
        this.logger.error({ err: toError(err), status: status.type }, 'a status listener threw');
      }
    }
  }

  /**
   * Installs SIGTERM and SIGINT handlers: stop gracefully, then `exit(0)` (1 when stopping
   * failed). Returns a function that removes them. Installing twice is harmless.
   */
  handleSignals(exit: (code: number) => void = (code) => process.exit(code)): () => void {
    if (this.uninstallSignals) return this.uninstallSignals;
    const onSignal = (signal: NodeJS.Signals): void => {
      this.logger.info({ signal }, 'signal received; stopping');
      this.stop().then(
        () => exit(0),
        (err: unknown) => {
          this.logger.error({ err: toError(err) }, 'stop failed');
          exit(1);
        },
      );
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    this.uninstallSignals = () => {
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
      this.uninstallSignals = undefined;
    };
    return this.uninstallSignals;
  }
}

/** Makes an app: `const app = evpub({ brokers: { default: 'mqtt://localhost:1883' } })`. */
export function evpub(options: EvpubOptions = {}): App {
  return new App(options);
}
