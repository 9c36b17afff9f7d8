/**
 * The poll connector (built-in `poll`): for sources with no change log, changes are found by
 * polling, and the poll cursor is the checkpoint (resumable).
 *
 * The datasource `url` picks the kind of source:
 * - `sqlite:path`, `postgres://...`, `mysql://...` (or `mariadb://`): tables polled by an
 *   increasing column (sql.ts, sql-dialects.ts); one connection per datasource.
 * - `http://...` / `https://...`: JSON APIs polled with a cursor or `since` (http.ts).
 * Each model runs its own loop (loop.ts): poll, push in order, sleep `interval`, pause while
 * the publisher's window is full. Its cursor is its own position, so each model is its own unit
 * of ownership (`units`, contract point 10).
 *
 * Datasource settings: `url` (required; credentials never logged), `interval` and `batchSize`
 * (defaults for the models), for HTTP `headers` and `requestTimeout`; model settings are
 * described in sql.ts and http.ts.
 */
import { ErrorCode, EvpubError, redact } from '../../errors';
import { defaultLogger, type Logger } from '../../logger';
import type {
  ConnectorHealth,
  ConnectorModule,
  DataSourceLike,
  EventConnector,
  ModelFeed,
  StartRequest,
} from '../contract';
import { Lifecycle } from '../kit/lifecycle';
import { SettingsReader } from '../kit/settings';
import { HTTP_MODEL_KEYS, HttpSource, parseHttpModel } from './http';
import { PollLoop, type PollSource } from './loop';
import { SQL_MODEL_KEYS, SqlSource, parseSqlModel } from './sql';
import { dialectOf, openSqlDb, type SqlDb } from './sql-dialects';
import { connectorInitializer } from '../kit/initialize';
import { loadTls, parseTls, type LoadedTls, type TlsSettings } from '../../util/tls';
import { tlsFetch, type TlsFetch } from '../../util/tls-fetch';

export const POLL_SETTING_KEYS = [
  'url',
  'headers',
  'requestTimeout',
  ...new Set([...SQL_MODEL_KEYS, ...HTTP_MODEL_KEYS]),
] as const;

type Kind = 'sql' | 'http';

export class PollConnector implements EventConnector {
  readonly name = 'poll';
  readonly resumable = true;
  readonly kind: Kind;
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly requestTimeout: number;
  /** The `tls` setting (http, postgres, mysql), validated; loaded at start. */
  private readonly tls: TlsSettings | undefined;
  private fetch: TlsFetch | undefined;
  private readonly logger: Logger;
  private readonly loops = new Map<string, PollLoop<unknown>>();
  private db: SqlDb | undefined;
  private readonly life: Lifecycle;

  constructor(private readonly dataSource: DataSourceLike) {
    this.life = new Lifecycle('poll', dataSource.name);
    const r = SettingsReader.forDataSource(dataSource.name, dataSource.settings);
    const url = r.secret('url');
    if (!url) throw r.invalid('url', 'is required: sqlite:path, postgres://, mysql:// or http(s)://');
    if (dialectOf(url)) this.kind = 'sql';
    else if (/^https?:\/\//.test(url)) this.kind = 'http';
    else {
      throw new EvpubError(
        ErrorCode.UNKNOWN_SCHEME,
        `${r.path('url')}: must be sqlite:path, postgres://, mysql:// or http(s):// (got ${redact(url)})`,
        { context: { setting: r.path('url') } },
      );
    }
    const modelKeys: readonly string[] = this.kind === 'sql' ? SQL_MODEL_KEYS : HTTP_MODEL_KEYS;
    const tlsKeys = this.kind === 'http' || !url.startsWith('sqlite:') ? ['tls'] : [];
    r.closed([
      'url',
      ...(this.kind === 'http' ? ['headers', 'requestTimeout'] : []),
      ...tlsKeys,
      ...modelKeys,
    ]);
    this.url = url;
    this.headers = r.stringMap('headers');
    this.requestTimeout = r.int('requestTimeout', 30_000);
    this.tls = parseTls(r.raw('tls'), r.path('tls'));
    if (this.tls?.servername !== undefined && dialectOf(url) === 'mysql') {
      throw r.invalid(
        'tls.servername',
        'is not supported by the MySQL driver (it verifies the host it connects to): connect by a name the certificate lists',
      );
    }
    this.logger = (dataSource.logger ?? defaultLogger()).child({
      component: 'poll',
      datasource: dataSource.name,
    });
  }

  /** The `tls` setting loaded (files read; warned when verification is off), if given. */
  private loadTls(): LoadedTls | undefined {
    return (
      this.tls &&
      loadTls(this.tls, `datasources.${this.dataSource.name}.tls`, {
        endpoint: redact(this.url),
        logger: this.logger,
      })
    );
  }

  /** A model's settings with the datasource's as defaults. */
  private modelSettings(model: ModelFeed): Record<string, unknown> {
    const keys = this.kind === 'sql' ? SQL_MODEL_KEYS : HTTP_MODEL_KEYS;
    SettingsReader.forModel(model.name, model.settings).closed(keys);
    const merged: Record<string, unknown> = {};
    for (const key of keys) {
      const value = model.settings[key] ?? this.dataSource.settings[key];
      if (value !== undefined) merged[key] = value;
    }
    return merged;
  }

  /**
   * Point 10: each model runs its own loop from its own cursor, so each model is a unit of its
   * own (an instance holding a few opens its own connection for them).
   */
  units(models: readonly string[]): string[][] {
    return models.map((model) => [model]);
  }

  async start(request: StartRequest): Promise<void> {
    this.life.begin();
    try {
      const sources: { model: ModelFeed; source: PollSource<unknown>; interval: number }[] = [];
      for (const model of request.models) {
        const settings = this.modelSettings(model);
        const ctx = { datasource: this.dataSource.name, model: model.name };
        if (this.kind === 'sql') {
          const parsed = parseSqlModel(model.name, settings);
          this.db ??= await openSqlDb(this.url, this.loadTls());
          const source = new SqlSource(this.db, { ...ctx, settings: parsed });
          sources.push({ model, source: source, interval: parsed.interval });
        } else {
          this.fetch ??= tlsFetch(this.loadTls());
          const parsed = parseHttpModel(model.name, settings, {
            fetch: this.fetch,
            url: this.url,
            headers: this.headers,
            requestTimeout: this.requestTimeout,
          });
          sources.push({
            model,
            source: new HttpSource({ ...ctx, settings: parsed }),
            interval: parsed.interval,
          });
        }
      }
      for (const { model, source, interval } of sources) {
        const loop = new PollLoop<unknown>({
          model: model.name,
          source,
          sink: request.sink,
          interval,
          logger: this.logger.child({ model: model.name }),
        });
        this.loops.set(model.name, loop);
      }
      await Promise.all(sources.map(({ model }) => this.loops.get(model.name)!.open(model.from)));
    } catch (err) {
      const error = this.life.startFailed(err);
      await this.close();
      throw error;
    }
    this.life.started();
  }

  private async close(): Promise<void> {
    await Promise.all([...this.loops.values()].map((l) => l.stop()));
    const db = this.db;
    this.db = undefined;
    await db?.close().catch((err: unknown) => this.logger.warn({ err }, 'closing the database failed'));
    this.fetch?.close();
    this.fetch = undefined;
  }

  stop(): Promise<void> {
    return this.life.stop(() => this.close());
  }

  health(): ConnectorHealth {
    const positions: Record<string, string | null> = {};
    let reconnecting = false;
    const failed: string[] = [];
    for (const [model, loop] of this.loops) {
      positions[model] = loop.lastPushed;
      if (loop.state === 'reconnecting') reconnecting = true;
      if (loop.state === 'failed') failed.push(model);
    }
    let state: ConnectorHealth['state'] = this.life.state;
    if (state === 'streaming' && failed.length > 0) state = 'failed';
    else if (state === 'streaming' && reconnecting) state = 'reconnecting';
    return { state, positions, ...(failed.length > 0 ? { detail: `failed: ${failed.join(', ')}` } : {}) };
  }
}

/** LoopBack's connector entry point: validates the settings and sets `dataSource.connector`. */
export const initialize: ConnectorModule['initialize'] = connectorInitializer(
  (dataSource) => new PollConnector(dataSource),
);
