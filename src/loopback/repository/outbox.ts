/**
 * `outbox` mode: the repository writes its events into the outbox table in the write's own
 * transaction (src/events/outbox.ts: an INSERT, then the DELETE that keeps the table empty),
 * and the datasource's CDC connector publishes them from the log (docs/outbox.md).
 *
 * Guarantee: an event is published if and only if its change committed (at least once, like
 * any CDC event; the event id is made here, so a replay keeps it), in commit order. With the
 * caller's transaction the events commit or roll back with the caller's work.
 *
 * Needs a datasource that runs transactions through loopback-connector-postgresql or
 * loopback-connector-mysql; anything else is an EvpubError when the repository is made.
 */
import { ErrorCode, EvpubError } from '../../errors';
import { DEFAULT_OUTBOX_TABLE, outboxStatements, type OutboxDialect } from '../../events/outbox';
import type { EventSink, RepositoryChange, WriteTransaction } from './sink';
import { modeKey, type RepositoryContext } from './context';

/** The outbox table as SQL names it: each part of `schema.table` quoted. */
export function quoteTable(dialect: OutboxDialect, table: string): string {
  const q =
    dialect === 'postgres'
      ? (p: string) => `"${p.replace(/"/g, '""')}"`
      : (p: string) => `\`${p.replace(/`/g, '``')}\``;
  return table.split('.').map(q).join('.');
}

export class OutboxSink implements EventSink {
  constructor(private readonly ctx: RepositoryContext) {}

  check(): void {
    const { ctx } = this;
    if (!ctx.dialect || !ctx.transactional) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `${modeKey(ctx)}: datasource ${ctx.dataSourceName} (connector "${ctx.connectorName}") cannot run transactions; ` +
          'the outbox is written in the transaction of the change, which needs loopback-connector-postgresql or ' +
          'loopback-connector-mysql: put the model on such a datasource',
        {
          context: {
            repository: ctx.repository,
            model: ctx.lbModel,
            key: 'mode',
            dataSource: ctx.dataSourceName,
            connector: ctx.connectorName,
          },
        },
      );
    }
  }

  /** The outbox table: the option, else the evpub datasource's `outbox` setting, else the default. */
  table(): string {
    const { ctx } = this;
    if (ctx.options.outboxTable) return ctx.options.outboxTable;
    const app = ctx.app();
    const config = app ? (app.effectiveConfig() ?? app.toConfig()) : undefined;
    const dataSource = ctx.options.dataSource ?? config?.models?.[ctx.model]?.dataSource;
    const setting: unknown = dataSource
      ? (config?.datasources?.[dataSource] as Record<string, unknown> | undefined)?.outbox
      : undefined;
    if (typeof setting === 'string' && setting !== '') return setting;
    if (setting && typeof setting === 'object') {
      const { table, schema } = setting as { table?: unknown; schema?: unknown };
      const name = typeof table === 'string' && table !== '' ? table : DEFAULT_OUTBOX_TABLE;
      return typeof schema === 'string' && schema !== '' ? `${schema}.${name}` : name;
    }
    return DEFAULT_OUTBOX_TABLE;
  }

  async inTransaction(events: RepositoryChange[], tx: WriteTransaction): Promise<void> {
    if (events.length === 0) return;
    const dialect = this.ctx.dialect!;
    const table = quoteTable(dialect, this.table());
    for (const event of events) {
      const statements = outboxStatements(dialect, table, {
        id: event.id,
        model: this.ctx.model,
        op: event.op,
        key: event.key,
        before: event.before ?? null,
        after: event.after ?? null,
      });
      for (const { sql, params } of statements) await tx.execute(sql, params);
    }
  }

  afterCommit(): Promise<void> {
    return Promise.resolve();
  }
}
