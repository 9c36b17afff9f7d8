/**
 * One run of the publisher, from `app.start()` to `app.stop()`: the broker clients (one per
 * distinct broker), the checkpoint store, a connector and a pipeline per datasource, a tracker
 * per feed. Built from a validated configuration; torn down in the reverse order.
 *
 * Start order: initialize the connectors (LoopBack's `initialize` only builds the connector and
 * checks its settings: a bad setting fails here, before anything connects) → connect the
 * brokers → open the checkpoint store → load each feed's checkpoint → start each connector with
 * its pipeline as the sink. Any failure undoes what was done and rejects.
 *
 * Stop order: stop the connectors (no more reading) → wait for in-flight publishes (up to
 * `stopTimeout`; what is left stays uncommitted and is read again next time) → save the
 * checkpoints → close the clients and the store.
 *
 * Pause and resume (`pause(feedId)`, `resume(feedId)`): the operator holds a feed in its
 * datasource's pipeline (see `Pipeline.hold`): the connector stops reading as for a full window,
 * the checkpoint stays, nothing is lost, and reading resumes from there. Every feed of that
 * datasource waits meanwhile (one stream per datasource).
 *
 * Re-snapshot (`resnapshot(feedId)`): asks the feed's connector to read its table again beside
 * the stream (contract point 9); the feed shows `snapshotting` with its progress until the
 * connector reports the last row. NOT_SUPPORTED for a connector without it.
 *
 * Units. The runtime reads each *unit* (a group of a datasource's models that resume as one
 * position: connector contract point 10) with a connector and a pipeline of its own. Alone (no
 * `cluster:`) a unit is a whole datasource, every unit starts at start, and the feeds are claimed
 * in the checkpoint store first. With `cluster:` the units are the connectors' own
 * (`connector.units()`), and a Coordinator (src/cluster/coordinator.ts) decides which ones this
 * instance works on: `startUnit` initializes a fresh connector with the unit's models, loads
 * their checkpoints (another instance may have moved them), and starts it with `takeover`; every
 * publish is gated on the unit's lease (`Pipeline` `gate`) and every checkpoint save carries its
 * epoch (a FENCED refusal loses the unit); `stopUnit` drains and checkpoints it (handover,
 * SIGTERM) or drops it at once (lease lost). The other units' feeds show `standby` with their
 * owner.
 */
import { localOwner, type CheckpointStore, type FeedClaim } from '../checkpoints/contract';
import { createCheckpointStore } from '../checkpoints/index';
import type { EventConnector, ModelFeed, SnapshotStart } from '../connectors/contract';
import { initializeConnector, type ConnectorRegistry } from '../connectors/registry';
import type { ConnectorModule } from '../connectors/contract';
import { createLeaseStore, type LeaseStore } from '../cluster/index';
import { Coordinator, type ClusterView, type UnitHost } from '../cluster/coordinator';
import type { LeaseKeeper } from '../cluster/keeper';
import { monotonicNow } from '../cluster/lease';
import { ErrorCode, EvpubError, isEvpubError, redact, toError } from '../errors';
import type { StartFrom } from '../events/change-event';
import { createEnvelope } from '../events/envelopes/index';
import type { Logger } from '../logger';
import { CheckpointTracker } from '../pipeline/checkpoint-tracker';
import { DEFAULT_DEAD_LETTER_TOPIC } from '../pipeline/dead-letter';
import { Pipeline, type FeedSnapshot, type FeedSpec, type PublishedEvent } from '../pipeline/pipeline';
import type { PublisherStatus } from '../pipeline/status';
import { statusError } from '../pipeline/status';
import { compileTopic, DEFAULT_TOPIC } from '../pipeline/topics';
import type { Client } from '../pubsub/client';
import { createClient, type AdapterRegistry } from '../pubsub/registry';
import type { EvpubConfig, ModelConfig } from './config-types';
import type { DataSource } from './datasource';
import {
  ChangePublisher,
  type ChangeTarget,
  type ChangeToPublish,
  type PublishChangeResult,
} from './publish-change';
import { fieldProjector } from '../pipeline/fields';

export const DEFAULT_MAX_IN_FLIGHT = 1000;
/** Least ms between two checkpoint saves of a feed (publisher.checkpointInterval). */
export const DEFAULT_CHECKPOINT_INTERVAL = 200;

export interface RuntimeDeps {
  logger: Logger;
  registry: ConnectorRegistry;
  adapters: AdapterRegistry;
  cwd: string;
  /** A store given as an object (instead of by configuration); not closed by the runtime. */
  store?: CheckpointStore;
  dataSources: Map<string, DataSource<unknown>>;
  emit(status: PublisherStatus): void;
  stopTimeout: number;
  retry?: { initialDelay?: number; maxDelay?: number };
  /** Each event the broker confirmed (the pipelines' tap; see `PipelineOptions.onPublished`). */
  onPublished?: (published: PublishedEvent) => void;
  /** Whether `onPublished` has a listener now (see `PipelineOptions.tapping`). */
  tapping?: () => boolean;
  /** Cluster mode: more for this instance's membership entry (its HTTP address). */
  memberInfo?: () => Record<string, unknown>;
}

interface BrokerRun {
  name: string;
  url: string;
  client: Client;
}

/**
 * A connector's CONFIG_INVALID error, prefixed with the configuration path it is about
 * (`datasources.db.url: ...`): connectors name their setting (`context.setting`) but do not
 * know where the configuration put it. Other errors are returned as they are.
 */
function atSettingPath(err: unknown, dataSource: string): unknown {
  if (!isEvpubError(err) || err.code !== ErrorCode.CONFIG_INVALID) return err;
  const setting = err.context.setting;
  let at = `datasources.${dataSource}`;
  if (typeof setting === 'string') at = setting.includes('.') ? setting : `${at}.${setting}`;
  if (err.message.startsWith(`${at}:`)) return err;
  return new EvpubError(ErrorCode.CONFIG_INVALID, `${at}: ${err.message}`, {
    cause: err,
    context: { ...err.context, path: at },
  });
}

interface InitializedConnector {
  connector: EventConnector;
  modelNames: string[];
  module: ConnectorModule;
}

/** A unit of ownership (see the header): its id, datasource and models. */
interface UnitSpec {
  id: string;
  datasource: string;
  models: string[];
  /** Every model of the datasource, in configuration order (`DataSourceLike.models`). */
  datasourceModels: string[];
  module: ConnectorModule;
}

interface FeedRun {
  feedId: string;
  datasource: string;
  model: string;
  broker: string;
  topic: string;
  envelope: string;
  from: StartFrom;
  tracker: CheckpointTracker;
}

/** A unit being read: alone, a whole datasource (`id` = its name); in a cluster, a held unit. */
interface UnitRun {
  id: string;
  /** The datasource's name. */
  name: string;
  connector: EventConnector;
  pipeline: Pipeline;
  feeds: FeedRun[];
  started: boolean;
  /** Cluster mode: the unit's lease. */
  keeper?: LeaseKeeper;
}

/**
 * A feed's state, as the status and the HTTP API show it. `paused`: held by the operator;
 * `waiting`: not held, but its datasource is not read because another of its feeds is.
 */
export type FeedState =
  | 'starting'
  | 'streaming'
  | 'snapshotting'
  | 'paused'
  | 'waiting'
  | 'reconnecting'
  | 'failed'
  | 'stopped'
  /** Cluster mode: another instance owns the feed's unit (or nobody yet); see `owner`. */
  | 'standby';

/** A snapshot counts as in progress this long after its last report when its total is unknown. */
const SNAPSHOT_QUIET_MS = 10_000;

interface SnapshotProgress {
  done: number;
  total?: number;
  at: number;
}

export interface RuntimeSnapshot {
  brokers: Record<string, { url: string; adapter: string; state: string }>;
  datasources: Record<
    string,
    { connector: string; resumable: boolean; health: ReturnType<EventConnector['health']> }
  >;
  feeds: Record<
    string,
    {
      datasource: string;
      model: string;
      broker: string;
      topic: string;
      envelope: string;
      from: StartFrom;
      committed: string | null;
      saved: string | null;
      state: FeedState;
      /** For `failed`: the last error (code and message, no secrets). */
      error?: { code: string; message: string };
      /** For `snapshotting`: rows done and, where the connector knows it, the total. */
      snapshot?: { done: number; total?: number };
      /** For `paused` and `waiting`: the held feeds that stop their datasource's reading. */
      pausedBy?: string[];
      /**
       * The connector's last `lagging` report for the feed (or for its whole datasource): how
       * far behind its source it reads, and when it said so. Absent until one came (and for
       * connectors that never report it).
       */
      lag?: { seconds?: number; bytes?: number; at: string };
      /** Whether its connector can re-snapshot it (`resnapshot`). */
      canSnapshot: boolean;
      /** Cluster mode: the feed's unit and who owns it (as far as this instance knows). */
      unit?: string;
      owner?: { instance: string; epoch: number; since: string; mine: boolean };
    } & Partial<FeedSnapshot>
  >;
  /** Cluster mode: the members, the units and their owners, the lease store's state. */
  cluster?: ClusterView;
}

const HEALTH_RANK: Record<ReturnType<EventConnector['health']>['state'], number> = {
  streaming: 0,
  idle: 1,
  starting: 2,
  stopped: 3,
  reconnecting: 4,
  failed: 5,
};

/** Two units' health as one datasource's: the worse state, the positions of both. */
function worseHealth(
  a: ReturnType<EventConnector['health']>,
  b: ReturnType<EventConnector['health']>,
): ReturnType<EventConnector['health']> {
  const worse = HEALTH_RANK[b.state] > HEALTH_RANK[a.state] ? b : a;
  const positions = a.positions || b.positions ? { ...a.positions, ...b.positions } : undefined;
  return { ...worse, ...(positions ? { positions } : {}) };
}

export class Runtime {
  private readonly brokers = new Map<string, BrokerRun>();
  private readonly runs: UnitRun[] = [];
  private store: CheckpointStore | undefined;
  /** This run's claim of its feeds in the store (released on stop). */
  private claim: FeedClaim | undefined;
  private readonly logger: Logger;
  /** The last snapshot progress a connector reported, by feed id. */
  private readonly snapshots = new Map<string, SnapshotProgress>();
  /** The last lag a connector reported, by feed id, or by datasource name for all its feeds. */
  private readonly lags = new Map<string, { seconds?: number; bytes?: number; at: string }>();
  /** Cluster mode: every unit of the configuration, by id; the leases; who works on what. */
  private readonly units = new Map<string, UnitSpec>();
  private leaseStore: LeaseStore | undefined;
  private coordinator: Coordinator | undefined;
  /** `publishChange` (src/app/publish-change.ts), made on first use. */
  private changes: ChangePublisher | undefined;

  constructor(
    private readonly config: Readonly<EvpubConfig>,
    private readonly deps: RuntimeDeps,
  ) {
    this.logger = deps.logger;
  }

  async start(): Promise<void> {
    try {
      const connectors = await this.initializeConnectors();
      await this.connectBrokers();
      this.store =
        this.deps.store ??
        createCheckpointStore(this.config.checkpoints, {
          cwd: this.deps.cwd,
          logger: this.logger,
        });
      if (this.config.cluster) {
        await this.startCluster(connectors);
        return;
      }
      for (const [dsName, { connector, modelNames }] of connectors) {
        this.runs.push(await this.buildUnit(dsName, dsName, connector, modelNames));
      }
      // One publisher per feed (without `cluster`): claim the feeds in the checkpoint store
      // before any connector reads; a live claim of another process fails the start with
      // FEED_OWNED_ELSEWHERE (src/checkpoints/contract.ts, Claims).
      if (this.store.claim) this.claim = await this.store.claim(this.feedIds(), localOwner());
      for (const run of this.runs) {
        run.started = true;
        await run.connector.start({ models: this.modelFeeds(run), sink: run.pipeline });
      }
    } catch (err) {
      await this.stop().catch((e: unknown) => this.logger.warn({ err: e }, 'cleanup after a failed start'));
      for (const handle of this.deps.dataSources.values()) handle.connector = undefined;
      throw err;
    }
  }

  private modelFeeds(run: UnitRun): ModelFeed[] {
    return run.feeds.map((f) => ({
      name: f.model,
      settings: this.config.models[f.model]?.settings ?? {},
      from: f.from,
    }));
  }

  /** Every feed of the configuration (cluster mode: of every unit, wherever it runs). */
  feedIds(): string[] {
    if (this.units.size > 0) {
      return [...this.units.values()].flatMap((u) => u.models.map((m) => `${u.datasource}/${m}`));
    }
    return this.runs.flatMap((r) => r.feeds.map((f) => f.feedId));
  }

  // -------------------------------------------------------------------------------------------
  // Cluster mode (see the header)

  /** The units of every datasource (contract point 10), checked to be a partition. */
  private unitSpecs(connectors: Map<string, InitializedConnector>): UnitSpec[] {
    const specs: UnitSpec[] = [];
    for (const [dsName, { connector, modelNames, module }] of connectors) {
      const groups = connector.units?.(modelNames) ?? [modelNames];
      const seen = groups.flat();
      if (
        groups.some((g) => g.length === 0) ||
        seen.length !== modelNames.length ||
        new Set(seen).size !== seen.length ||
        !modelNames.every((m) => seen.includes(m))
      ) {
        throw new EvpubError(
          ErrorCode.INVALID_STATE,
          `datasource ${dsName}: the ${connector.name} connector's units() is not a partition of its models (a bug in the connector)`,
          { context: { datasource: dsName, units: groups } },
        );
      }
      for (const models of groups) {
        const id = models.length === modelNames.length ? dsName : `${dsName}/${models.join('+')}`;
        specs.push({ id, datasource: dsName, models, datasourceModels: modelNames, module });
      }
    }
    return specs;
  }

  private async startCluster(connectors: Map<string, InitializedConnector>): Promise<void> {
    const cluster = this.config.cluster!;
    const store = this.store!;
    if (!store.fencing) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `checkpoints.store: the ${store.name} checkpoint store cannot fence saves; cluster needs the postgres or redis store, shared by the instances`,
        { context: { key: 'checkpoints.store' } },
      );
    }
    for (const spec of this.unitSpecs(connectors)) this.units.set(spec.id, spec);
    this.leaseStore = createLeaseStore(cluster, { logger: this.logger.child({ component: 'cluster' }) });
    this.coordinator = new Coordinator({
      store: this.leaseStore,
      config: cluster,
      units: [...this.units.keys()],
      host: this.unitHost(),
      logger: this.logger.child({ component: 'cluster' }),
      emit: (status) => this.deps.emit(status),
      ...(this.deps.memberInfo ? { info: this.deps.memberInfo } : {}),
    });
    await this.coordinator.start();
  }

  private unitHost(): UnitHost {
    return {
      startUnit: (unit, keeper) => this.startUnit(unit, keeper),
      stopUnit: (unit, graceful) => this.stopUnit(unit, graceful),
      feedsOf: (unit) => {
        const spec = this.units.get(unit);
        return spec ? spec.models.map((m) => `${spec.datasource}/${m}`) : [];
      },
    };
  }

  /** The models' `settings` by name (`DataSourceLike.modelSettings`). */
  private modelSettings(names: readonly string[]): Record<string, Readonly<Record<string, unknown>>> {
    return Object.fromEntries(names.map((name) => [name, this.config.models[name]?.settings ?? {}]));
  }

  private async startUnit(unitId: string, keeper: LeaseKeeper): Promise<void> {
    const spec = this.units.get(unitId)!;
    const settings = this.config.datasources[spec.datasource]!;
    const logger = this.logger.child({ component: 'connector', datasource: spec.datasource, unit: unitId });
    // `models`: every model of the datasource, so per-model numbering (a binlog reader's
    // server id) is the same in every instance whichever part of them it reads.
    const connector = await initializeConnector(
      spec.module,
      {
        name: spec.datasource,
        settings,
        logger,
        models: spec.datasourceModels,
        modelSettings: this.modelSettings(spec.datasourceModels),
      },
      spec.models,
    );
    const run = await this.buildUnit(spec.datasource, unitId, connector, spec.models, keeper);
    this.runs.push(run);
    if (!keeper.valid())
      throw keeper.signal.reason ?? new EvpubError(ErrorCode.LEASE_LOST, `lease on ${unitId} lost`);
    run.started = true;
    await connector.start({ models: this.modelFeeds(run), sink: run.pipeline, takeover: true });
  }

  private async stopUnit(unitId: string, graceful: boolean): Promise<void> {
    const run = this.runs.find((r) => r.id === unitId);
    if (!run) return;
    if (graceful) {
      const left = run.keeper ? run.keeper.deadline - monotonicNow() : this.deps.stopTimeout;
      await this.stopRuns([run], Math.min(this.deps.stopTimeout, Math.max(0, left)));
    } else {
      // The lease is gone: nothing more may be published or saved (see `Pipeline` `gate`).
      run.pipeline.close();
      for (const feed of run.feeds) feed.tracker.close();
      if (run.started) {
        await run.connector
          .stop()
          .catch((err: unknown) => this.logger.warn({ err, unit: unitId }, 'connector stop failed'));
      }
    }
    const at = this.runs.indexOf(run);
    if (at >= 0) this.runs.splice(at, 1); // a lost lease may stop a unit already being stopped
  }

  // -------------------------------------------------------------------------------------------

  private brokerOf(model: Pick<ModelConfig, 'broker'>): {
    name: string;
    url: string;
    options: Record<string, unknown>;
  } {
    const ref = model.broker ?? 'default';
    const named = this.config.brokers[ref];
    if (named) return { name: ref, url: named.url, options: named.options ?? {} };
    return { name: redact(ref), url: ref, options: {} }; // a URL (validation checked it)
  }

  /** The broker of `publisher.deadLetter`, when the dead letters do not go to each feed's own. */
  private deadLetterBroker(): BrokerRun | undefined {
    const broker = this.config.publisher.deadLetter?.broker;
    return broker === undefined ? undefined : this.brokers.get(this.brokerOf({ broker }).name);
  }

  private async connectBrokers(): Promise<void> {
    const refs: Pick<ModelConfig, 'broker'>[] = Object.values(this.config.models);
    const deadLetterBroker = this.config.publisher.deadLetter?.broker;
    if (deadLetterBroker !== undefined) refs.push({ broker: deadLetterBroker });
    for (const model of refs) {
      const { name, url, options } = this.brokerOf(model);
      if (this.brokers.has(name)) continue;
      const client = createClient(url, { ...options, logger: this.logger }, this.deps.adapters);
      this.brokers.set(name, { name, url, client });
    }
    await Promise.all([...this.brokers.values()].map((b) => b.client.connect()));
  }

  /** Resolves and initializes each datasource's connector (no I/O), in configuration order. */
  private async initializeConnectors(): Promise<Map<string, InitializedConnector>> {
    const initialized = new Map<string, InitializedConnector>();
    const byDataSource = new Map<string, string[]>();
    for (const [name, model] of Object.entries(this.config.models)) {
      const list = byDataSource.get(model.dataSource) ?? [];
      list.push(name);
      byDataSource.set(model.dataSource, list);
    }
    for (const [dsName, modelNames] of byDataSource) {
      const settings = this.config.datasources[dsName]!;
      const module = await this.deps.registry.resolve(
        settings.connector,
        `datasources.${dsName}.connector`,
        this.deps.cwd,
      );
      const logger = this.logger.child({ component: 'connector', datasource: dsName });
      const connector = await initializeConnector(
        module,
        { name: dsName, settings, logger, models: modelNames, modelSettings: this.modelSettings(modelNames) },
        modelNames,
      ).catch((err: unknown) => {
        throw atSettingPath(err, dsName);
      });
      const handle = this.deps.dataSources.get(dsName);
      if (handle) handle.connector = connector;
      if (!connector.resumable) {
        const kept = connector.whileStopped?.(
          modelNames.map((name) => ({ name, settings: this.config.models[name]!.settings ?? {} })),
        );
        const prefix = `datasource ${dsName}: connector "${connector.name}" gives no positions, so its feeds start "now"`;
        if (kept?.lossless) {
          this.logger.info({ datasource: dsName }, `${prefix}; ${kept.text}`);
        } else {
          const message = `${prefix}; ${kept?.text ?? 'changes made while evpub is not running are lost'}`;
          this.logger.warn({ datasource: dsName }, message);
          this.deps.emit({ type: 'warning', message, datasource: dsName });
        }
      }
      initialized.set(dsName, { connector, modelNames, module });
    }
    return initialized;
  }

  /**
   * A unit's feeds (checkpoints loaded) and its pipeline to the brokers. With `keeper` (cluster
   * mode) publishes are gated on the lease, saves fenced by its epoch, and events carry the
   * publishing instance and epoch as headers.
   */
  private async buildUnit(
    dsName: string,
    unitId: string,
    connector: EventConnector,
    modelNames: string[],
    keeper?: LeaseKeeper,
  ): Promise<UnitRun> {
    const feeds: FeedRun[] = [];
    for (const model of modelNames) feeds.push(await this.feedRun(dsName, model, connector, unitId, keeper));
    const publisher = this.config.publisher;
    const deadLetter = this.deadLetterBroker();
    const pipeline = new Pipeline({
      datasource: dsName,
      feeds: feeds.map((f) => this.feedSpec(f)),
      maxInFlight: publisher.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT,
      maxInFlightBytes: publisher.maxInFlightBytes,
      deadLetterTopic: publisher.deadLetter?.topic ?? publisher.deadLetterTopic ?? DEFAULT_DEAD_LETTER_TOPIC,
      ...(deadLetter
        ? {
            deadLetterClient: deadLetter.client,
            deadLetterMaxBytes: Math.min(
              publisher.maxEventBytes ?? Infinity,
              deadLetter.client.adapter.features.maxPayload,
            ),
          }
        : {}),
      maxAttempts: publisher.maxAttempts,
      deadLetterLimit: publisher.deadLetterLimit,
      logger: this.logger.child({ component: 'pipeline', datasource: dsName }),
      emit: (s) => {
        if (s.type === 'connector' && s.status.type === 'snapshot') {
          const { model, done, total } = s.status;
          this.snapshots.set(`${dsName}/${model}`, { done, total, at: Date.now() });
        }
        if (s.type === 'connector' && s.status.type === 'lagging') {
          const { model, seconds, bytes } = s.status;
          this.lags.set(model === undefined ? dsName : `${dsName}/${model}`, {
            ...(seconds !== undefined ? { seconds } : {}),
            ...(bytes !== undefined ? { bytes } : {}),
            at: new Date().toISOString(),
          });
        }
        this.deps.emit(s);
      },
      retry: this.deps.retry,
      onPublished: this.deps.onPublished,
      tapping: this.deps.tapping,
      ...(keeper
        ? {
            gate: () => keeper.valid(),
            headers: {
              'evpub-instance': keeper.lease.holder,
              'evpub-epoch': String(keeper.lease.epoch),
            },
          }
        : {}),
    });
    return {
      id: unitId,
      name: dsName,
      connector,
      pipeline,
      feeds,
      started: false,
      ...(keeper ? { keeper } : {}),
    };
  }

  /** Where the feed starts (checkpoint, else `from`) and its tracker. */
  private async feedRun(
    datasource: string,
    model: string,
    connector: EventConnector,
    unitId: string,
    keeper?: LeaseKeeper,
  ): Promise<FeedRun> {
    const config = this.config.models[model]!;
    const feedId = `${datasource}/${model}`;
    const store = this.store!;
    let from: StartFrom = config.from ?? 'now';
    let saved: string | undefined;
    if (!connector.resumable) {
      from = 'now';
    } else if (config.resetCheckpoint) {
      await store.delete(feedId);
    } else {
      saved = await store.load(feedId);
      if (saved !== undefined) from = { after: saved };
    }
    const tracker = new CheckpointTracker(
      {
        feedId,
        model,
        store,
        commit: connector.commit ? (m, p) => connector.commit!(m, p) : undefined,
        interval: this.config.publisher.checkpointInterval ?? DEFAULT_CHECKPOINT_INTERVAL,
        onSaved: (position) => this.deps.emit({ type: 'checkpoint', feed: feedId, position }),
        onError: (err, during) => {
          this.logger.warn({ err, feed: feedId, during }, 'checkpoint failed; retrying');
          this.deps.emit({ type: 'checkpoint-failed', feed: feedId, during, error: statusError(err) });
        },
        ...(keeper
          ? {
              fence: { unit: unitId, epoch: keeper.lease.epoch },
              onFenced: (err: Error) => this.coordinator?.fenced(unitId, err),
            }
          : {}),
      },
      saved,
    );
    return {
      feedId,
      datasource,
      model,
      broker: this.brokerOf(config).name,
      topic: config.topic ?? DEFAULT_TOPIC,
      envelope: config.envelope ?? 'cloudevents',
      from,
      tracker,
    };
  }

  private feedSpec(feed: FeedRun): FeedSpec {
    const config = this.config.models[feed.model]!;
    const broker = this.brokers.get(feed.broker)!;
    const features = broker.client.adapter.features;
    const limit = Math.min(this.config.publisher.maxEventBytes ?? Infinity, features.maxPayload);
    return {
      feedId: feed.feedId,
      model: feed.model,
      client: broker.client,
      envelope: createEnvelope(
        config.envelope ?? 'cloudevents',
        { headers: features.headers, name: broker.name, adapter: broker.client.adapter.name },
        this.logger,
      ),
      topic: compileTopic(feed.topic, `models.${feed.model}.topic`),
      ops: config.ops,
      include: config.include,
      exclude: config.exclude,
      maxEventBytes: limit,
      tracker: feed.tracker,
    };
  }

  /** Publishes a change the application made itself, as the model's feed would (publish-change.ts). */
  publishChange(change: ChangeToPublish): Promise<PublishChangeResult> {
    this.changes ??= new ChangePublisher({
      target: (model) => this.changeTarget(model),
      models: () => Object.keys(this.config.models),
      logger: this.logger.child({ component: 'publish-change' }),
      retry: this.deps.retry,
      maxAttempts: this.config.publisher.maxAttempts,
      emit: (s) => this.deps.emit(s),
      onPublished: this.deps.onPublished,
      tapping: this.deps.tapping,
    });
    return this.changes.publish(change);
  }

  /** What a feed of `model` publishes with, for `publishChange`; undefined for an unknown model. */
  private changeTarget(model: string): ChangeTarget | undefined {
    const config = Object.hasOwn(this.config.models, model) ? this.config.models[model] : undefined;
    if (!config) return undefined;
    const broker = this.brokers.get(this.brokerOf(config).name)!;
    const features = broker.client.adapter.features;
    const publisher = this.config.publisher;
    const maxEventBytes = Math.min(publisher.maxEventBytes ?? Infinity, features.maxPayload);
    const deadLetter = this.deadLetterBroker()?.client ?? broker.client;
    return {
      datasource: config.dataSource,
      model,
      client: broker.client,
      envelope: createEnvelope(
        config.envelope ?? 'cloudevents',
        { headers: features.headers, name: broker.name, adapter: broker.client.adapter.name },
        this.logger,
      ),
      topic: compileTopic(config.topic ?? DEFAULT_TOPIC, `models.${model}.topic`),
      ...(config.ops ? { ops: config.ops } : {}),
      project: fieldProjector(config),
      maxEventBytes,
      deadLetterTopic: publisher.deadLetter?.topic ?? publisher.deadLetterTopic ?? DEFAULT_DEAD_LETTER_TOPIC,
      deadLetterClient: deadLetter,
      deadLetterMaxBytes: Math.min(
        publisher.maxEventBytes ?? Infinity,
        deadLetter.adapter.features.maxPayload,
      ),
    };
  }

  // -------------------------------------------------------------------------------------------

  async stop(): Promise<void> {
    this.changes?.stop();
    if (this.coordinator) {
      await this.coordinator.stop(); // every held unit: drained, checkpointed, released
      this.coordinator = undefined;
    }
    await this.stopRuns(this.runs.splice(0), this.deps.stopTimeout);
    await Promise.all([...this.brokers.values()].map((b) => b.client.end().catch(() => undefined)));
    await this.claim
      ?.release()
      .catch((err: unknown) => this.logger.warn({ err }, 'feed claim release failed'));
    this.claim = undefined;
    await this.leaseStore
      ?.close()
      .catch((err: unknown) => this.logger.warn({ err }, 'lease store close failed'));
    this.leaseStore = undefined;
    if (this.store && this.store !== this.deps.store) {
      await this.store
        .close()
        .catch((err: unknown) => this.logger.warn({ err }, 'checkpoint store close failed'));
    }
  }

  /**
   * Stops reading `runs`, waits up to `timeoutMs` for their events in flight, saves their last
   * checkpoints (see the header's stop order).
   */
  private async stopRuns(runs: UnitRun[], timeoutMs: number): Promise<void> {
    await Promise.all(
      runs
        .filter((r) => r.started)
        .map((r) =>
          r.connector
            .stop()
            .catch((err: unknown) => this.logger.warn({ err, datasource: r.name }, 'connector stop failed')),
        ),
    );
    const deadline = Date.now() + timeoutMs;
    for (const run of runs) {
      run.pipeline.stopAccepting();
      const settled = await run.pipeline.settle(Math.max(0, deadline - Date.now()));
      if (!settled) {
        this.logger.warn(
          { datasource: run.name },
          'stop: some publishes were not confirmed in time; they stay uncommitted and are published again on the next start',
        );
      }
      run.pipeline.close();
    }
    for (const run of runs) {
      for (const feed of run.feeds) {
        try {
          await feed.tracker.flush();
        } catch (err) {
          this.logger.error(
            { err: toError(err), feed: feed.feedId },
            'stop: the last checkpoint could not be saved',
          );
          this.deps.emit({
            type: 'checkpoint-failed',
            feed: feed.feedId,
            during: 'save',
            error: statusError(err),
          });
        }
        feed.tracker.close();
      }
      run.pipeline.emitAllCounts();
      const handle = this.deps.dataSources.get(run.name);
      if (handle && !this.coordinator) handle.connector = undefined;
    }
  }

  /** The run and feed of a feed id; FEED_NOT_FOUND when no feed of this app has that id. */
  private feedOf(feedId: string): { run: UnitRun; feed: FeedRun } {
    for (const run of this.runs) {
      const feed = run.feeds.find((f) => f.feedId === feedId);
      if (feed) return { run, feed };
    }
    if (this.coordinator && this.feedIds().includes(feedId)) {
      const unit = this.unitOf(feedId)!;
      const owner = this.coordinator.view().units.find((u) => u.unit === unit)?.owner;
      throw new EvpubError(
        ErrorCode.FEED_OWNED_ELSEWHERE,
        `feed ${feedId} (unit ${unit}) is not run by this instance (${this.coordinator.instance}) but by ${owner ?? 'no instance right now'}; ask that instance`,
        { context: { feed: feedId, unit, ...(owner ? { owner } : {}) } },
      );
    }
    throw new EvpubError(
      ErrorCode.FEED_NOT_FOUND,
      `no feed ${JSON.stringify(feedId)}; the feeds are ${this.feedIds().join(', ') || '(none)'}`,
      { context: { feed: feedId } },
    );
  }

  /** Pauses a feed (see the header). True when it was not paused yet; false: already paused. */
  pause(feedId: string): boolean {
    const { run, feed } = this.feedOf(feedId);
    const changed = run.pipeline.hold(feed.model);
    if (changed) {
      const waiting = run.feeds.filter((f) => f !== feed).map((f) => f.feedId);
      this.logger.info(
        { feed: feedId, ...(waiting.length > 0 ? { waiting } : {}) },
        `feed paused: datasource ${run.name} is not read until it is resumed`,
      );
    }
    return changed;
  }

  /** Resumes a paused feed from where it stopped. True when it was paused; false: it was not. */
  resume(feedId: string): boolean {
    const { run, feed } = this.feedOf(feedId);
    const changed = run.pipeline.release(feed.model);
    if (changed) this.logger.info({ feed: feedId }, 'feed resumed');
    return changed;
  }

  /**
   * Re-snapshots a feed (see the header): resolves with the connector's answer (`started`
   * false: one was running already). NOT_SUPPORTED when its connector cannot; the connector's
   * INVALID_STATE or CONFIG_INVALID as they are.
   */
  async resnapshot(feedId: string): Promise<SnapshotStart> {
    const { run, feed } = this.feedOf(feedId);
    const { connector } = run;
    if (!connector.snapshot) {
      throw new EvpubError(
        ErrorCode.NOT_SUPPORTED,
        `feed ${feedId}: the ${connector.name} connector (datasource ${run.name}) cannot re-snapshot; ` +
          'the postgres and mysql connectors can',
        { context: { feed: feedId, connector: connector.name } },
      );
    }
    const start = await connector.snapshot(feed.model);
    if (start.started) {
      this.snapshots.set(feedId, { done: start.done, total: start.total, at: Date.now() });
      this.logger.info({ feed: feedId }, 'feed re-snapshot started');
    }
    return start;
  }

  /** A feed's state from its pipeline, its connector's health and the snapshot progress. */
  private feedState(
    run: UnitRun,
    feed: FeedRun,
    health: ReturnType<EventConnector['health']>,
    pipe: FeedSnapshot | undefined,
    held: string[],
  ): Pick<RuntimeSnapshot['feeds'][string], 'state' | 'error' | 'snapshot' | 'pausedBy'> {
    if (pipe?.failed !== undefined) {
      return { state: 'failed', error: { code: pipe.failedCode ?? 'ERROR', message: pipe.failed } };
    }
    if (health.state === 'failed') {
      return {
        state: 'failed',
        error: { code: ErrorCode.SOURCE_FAILED, message: health.detail ?? 'the connector failed' },
      };
    }
    if (pipe?.held) return { state: 'paused', pausedBy: held };
    if (held.length > 0) return { state: 'waiting', pausedBy: held };
    const snap = this.snapshots.get(feed.feedId);
    if (
      snap &&
      (snap.total !== undefined ? snap.done < snap.total : Date.now() - snap.at < SNAPSHOT_QUIET_MS)
    ) {
      return {
        state: 'snapshotting',
        snapshot: { done: snap.done, ...(snap.total !== undefined ? { total: snap.total } : {}) },
      };
    }
    switch (health.state) {
      case 'streaming':
        return { state: 'streaming' };
      case 'reconnecting':
        return { state: 'reconnecting' };
      case 'stopped':
        return { state: run.started ? 'stopped' : 'starting' };
      default:
        return { state: 'starting' };
    }
  }

  /** Cluster mode: the unit of a feed id. */
  private unitOf(feedId: string): string | undefined {
    for (const spec of this.units.values()) {
      if (spec.models.some((m) => `${spec.datasource}/${m}` === feedId)) return spec.id;
    }
    return undefined;
  }

  snapshot(): RuntimeSnapshot {
    const out: RuntimeSnapshot = { brokers: {}, datasources: {}, feeds: {} };
    const cluster = this.coordinator?.view();
    for (const b of this.brokers.values()) {
      out.brokers[b.name] = { url: redact(b.url), adapter: b.client.adapter.name, state: b.client.state };
    }
    for (const run of this.runs) {
      const health = run.connector.health();
      const seen = out.datasources[run.name];
      out.datasources[run.name] = {
        connector: run.connector.name,
        resumable: run.connector.resumable,
        // Cluster mode: several units of one datasource may run here; it shows the worst.
        health: seen ? worseHealth(seen.health, health) : health,
      };
      const held = run.pipeline.heldModels().map((m) => `${run.name}/${m}`);
      for (const f of run.feeds) {
        const pipe = run.pipeline.snapshot(f.model);
        const lag = this.lags.get(f.feedId) ?? this.lags.get(run.name);
        out.feeds[f.feedId] = {
          datasource: f.datasource,
          model: f.model,
          broker: f.broker,
          topic: f.topic,
          envelope: f.envelope,
          from: f.from,
          committed: f.tracker.committed ?? null,
          saved: f.tracker.savedPosition ?? null,
          ...this.feedState(run, f, health, pipe, held),
          ...(lag ? { lag } : {}),
          canSnapshot: typeof run.connector.snapshot === 'function',
          ...pipe,
        };
      }
    }
    if (cluster) {
      out.cluster = cluster;
      for (const unit of cluster.units) {
        const spec = this.units.get(unit.unit)!;
        const owner =
          unit.owner !== undefined
            ? { instance: unit.owner, epoch: unit.epoch ?? 0, since: unit.since ?? '', mine: unit.mine }
            : undefined;
        for (const model of spec.models) {
          const feedId = `${spec.datasource}/${model}`;
          const here = out.feeds[feedId];
          if (here) {
            here.unit = unit.unit;
            if (owner) here.owner = owner;
            continue;
          }
          const config = this.config.models[model]!;
          out.feeds[feedId] = {
            datasource: spec.datasource,
            model,
            broker: this.brokerOf(config).name,
            topic: config.topic ?? DEFAULT_TOPIC,
            envelope: config.envelope ?? 'cloudevents',
            from: config.from ?? 'now',
            committed: null,
            saved: null,
            state: 'standby',
            canSnapshot: false,
            unit: unit.unit,
            ...(owner ? { owner } : {}),
          };
        }
      }
    }
    return out;
  }
}
