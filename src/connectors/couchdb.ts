/**
 * The CouchDB / Cloudant event connector (built-in `couchdb`, alias `cloudant`).
 *
 * Each model is one database, read through its `_changes` feed (see couchdb-feed.ts for the
 * protocol, couchdb-settings.ts for the settings, couchdb-revs.ts for the replay filter).
 * Positions are CouchDB seqs, kept as strings and sent back as received, so feeds resume after
 * a restart (`resumable`). CouchDB has no before image: `before` is always null, a delete has
 * `after: null` and its revision in `source.rev`. Design documents are skipped unless
 * `includeDesignDocs` is set.
 *
 * Why fetch and not nano's changesReader: the connector must stop reading the HTTP body the
 * moment the publisher's window is full and resume from the exact seq of the last change it
 * handed over. A body reader gives both directly (no read → TCP backpressure; the seq of every
 * change is ours); changesReader emits batches and keeps its own `since`.
 */
import { ErrorCode, EvpubError } from '../errors';
import { defaultLogger, type Logger } from '../logger';
import type {
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  ModelFeed,
  StartRequest,
} from './contract';
import { CouchFeed } from './couchdb-feed';
import { databaseOf, parseCouchDbSettings, type CouchDbSettings } from './couchdb-settings';
import { connectorInitializer } from './initialize';

export { parseCouchDbSettings, COUCHDB_SETTING_KEYS } from './couchdb-settings';

type LifeState = 'idle' | 'starting' | 'streaming' | 'stopped';

export class CouchDbConnector implements EventConnector {
  readonly name = 'couchdb';
  readonly resumable = true;
  readonly settings: CouchDbSettings;
  private readonly logger: Logger;
  private readonly feeds = new Map<string, CouchFeed>();
  private life: LifeState = 'idle';
  private stopping: Promise<void> | undefined;

  constructor(private readonly dataSource: DataSourceLike) {
    this.settings = parseCouchDbSettings(dataSource.settings);
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'couchdb',
      datasource: dataSource.name,
    });
  }

  async start(request: StartRequest): Promise<void> {
    if (this.life !== 'idle') {
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `couchdb connector "${this.dataSource.name}" was already started`,
      );
    }
    const feeds = request.models.map((model) => this.feed(model, request));
    this.life = 'starting';
    for (const feed of feeds) this.feeds.set(feed.model, feed);
    const opened = await Promise.allSettled(feeds.map((f) => f.open()));
    const failure = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) {
      const stoppedMeanwhile = (this.life as LifeState) === 'stopped';
      this.life = 'stopped';
      await Promise.all(feeds.map((f) => f.stop()));
      if (stoppedMeanwhile) {
        throw new EvpubError(
          ErrorCode.INVALID_STATE,
          `couchdb connector "${this.dataSource.name}" was stopped while starting`,
          {
            cause: failure.reason,
          },
        );
      }
      throw failure.reason;
    }
    if ((this.life as LifeState) === 'starting') this.life = 'streaming';
  }

  private feed(model: ModelFeed, request: StartRequest): CouchFeed {
    const database = databaseOf(model.name, model.settings);
    return new CouchFeed({
      settings: this.settings,
      datasource: this.dataSource.name,
      model: model.name,
      database,
      from: model.from,
      sink: request.sink,
      logger: this.logger.child({ model: model.name, database }),
    });
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.life = 'stopped';
      await Promise.all([...this.feeds.values()].map((f) => f.stop()));
    })();
    return this.stopping;
  }

  health(): ConnectorHealth {
    const positions: Record<string, string | null> = {};
    const states = new Set<string>();
    for (const [model, feed] of this.feeds) {
      positions[model] = feed.lastPushed;
      states.add(feed.state);
    }
    const failed = [...this.feeds].filter(([, f]) => f.state === 'failed').map(([m]) => m);
    let state: ConnectorHealth['state'];
    if (this.life === 'idle' || this.life === 'starting') state = this.life;
    else if (this.life === 'stopped') state = 'stopped';
    else if (failed.length > 0) state = 'failed';
    else if (states.has('reconnecting')) state = 'reconnecting';
    else state = 'streaming';
    const detail = failed.length > 0 ? `failed: ${failed.join(', ')}` : undefined;
    return { state, positions, ...(detail ? { detail } : {}) };
  }
}

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new CouchDbConnector(dataSource),
);
