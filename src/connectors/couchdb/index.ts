/**
 * The CouchDB / Cloudant event connector (built-in `couchdb`, alias `cloudant`).
 *
 * Each model is one database, read through its `_changes` feed (see feed.ts for the
 * protocol, settings.ts for the settings, revs.ts for the replay filter).
 * Positions are CouchDB seqs, kept as strings and sent back as received, so feeds resume after
 * a restart (`resumable`); each model resumes on its own, so each is its own unit (`units`). CouchDB has no before image: `before` is always null, a delete has
 * `after: null` and its revision in `source.rev`. Design documents are skipped unless
 * `includeDesignDocs` is set.
 *
 * Why fetch and not nano's changesReader: the connector must stop reading the HTTP body the
 * moment the publisher's window is full and resume from the exact seq of the last change it
 * handed over. A body reader gives both directly (no read → TCP backpressure; the seq of every
 * change is ours); changesReader emits batches and keeps its own `since`.
 */
import { defaultLogger, type Logger } from '../../logger';
import type {
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  ModelFeed,
  StartRequest,
} from '../contract';
import { CouchFeed } from './feed';
import { databaseOf, parseCouchDbSettings, type CouchDbSettings } from './settings';
import { connectorInitializer } from '../kit/initialize';
import { loadTls } from '../../util/tls';
import { tlsFetch } from '../../util/tls-fetch';
import { FeedSet } from '../kit/feed-set';

export { parseCouchDbSettings, COUCHDB_SETTING_KEYS } from './settings';

export class CouchDbConnector implements EventConnector {
  readonly name = 'couchdb';
  readonly resumable = true;
  readonly settings: CouchDbSettings;
  private readonly logger: Logger;
  private readonly feeds: FeedSet<CouchFeed>;

  constructor(private readonly dataSource: DataSourceLike) {
    const settings = parseCouchDbSettings(dataSource.settings, dataSource.name);
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'couchdb',
      datasource: dataSource.name,
    });
    this.settings = settings.tls
      ? {
          ...settings,
          fetch: tlsFetch(
            loadTls(settings.tls, settings.tlsPath, { endpoint: settings.displayUrl, logger: this.logger }),
          ),
        }
      : settings;
    this.feeds = new FeedSet(this.name, dataSource.name);
  }

  /**
   * Point 10: each model is its own database feed resuming from its own seq, so each model is
   * a unit of its own (two models on one database are still two feeds, each with its seq).
   */
  units(models: readonly string[]): string[][] {
    return models.map((model) => [model]);
  }

  start(request: StartRequest): Promise<void> {
    return this.feeds.start(() => request.models.map((model) => [model.name, this.feed(model, request)]));
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

  async stop(): Promise<void> {
    await this.feeds.stop();
    this.settings.fetch?.close();
  }

  health(): ConnectorHealth {
    const failed = this.feeds.failed();
    return this.feeds.health(failed.length > 0 ? `failed: ${failed.join(', ')}` : undefined);
  }
}

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new CouchDbConnector(dataSource),
);
