/**
 * What the mode implementations (direct.ts, outbox.ts) know of the repository they serve.
 */
import type { App } from '../../app/app';
import type { OutboxDialect } from '../../events/outbox';

export type EventPublishingMode = 'direct' | 'outbox';

/** The mixin's options: `EventPublishingRepositoryMixin(Base, options)`. */
export interface EventPublishingOptions {
  /**
   * `direct`: published by the evpub app after the write committed (a crash between the commit
   * and the broker's confirmation loses the event). `outbox`: written to the outbox table in
   * the write's transaction, published by the datasource's CDC connector (docs/outbox.md).
   */
  mode: EventPublishingMode;
  /** The evpub model the events belong to (its topic, envelope, fields); default: the LoopBack model's name. */
  model?: string;
  /** The evpub datasource of the model (default: the model's, from the evpub configuration). */
  dataSource?: string;
  /**
   * Outbox mode: the outbox table (`table` or `schema.table`). Default: the evpub datasource's
   * `outbox` setting (`{ table, schema }`) when the app is bound, else `evpub_outbox` (found
   * through the connection's search_path / database).
   */
  outboxTable?: string;
}

export interface RepositoryContext {
  /** The repository class's name, for messages. */
  repository: string;
  /** The LoopBack model's name. */
  lbModel: string;
  /** The evpub model's name. */
  model: string;
  options: EventPublishingOptions;
  /** The LoopBack datasource's name and connector. */
  dataSourceName: string;
  connectorName: string;
  /** The SQL dialect, when the connector is loopback-connector-postgresql or -mysql. */
  dialect: OutboxDialect | undefined;
  /** Whether the connector can run transactions (`beginTransaction`). */
  transactional: boolean;
  /** The evpub app (`EvpubBindings.APP`), when bound. */
  app(): App | undefined;
}

/** `mode` as the configuration path messages name. */
export function modeKey(ctx: RepositoryContext): string {
  return `${ctx.repository} (model ${ctx.lbModel}): EventPublishingRepositoryMixin options.mode "${ctx.options.mode}"`;
}
