/**
 * `EventPublishingRepositoryMixin`: LoopBack 4 repository writes that publish the change
 * events evpub's CDC connector would publish for the same change (docs/outbox.md, "Writing
 * events from a LoopBack repository").
 *
 *   export class AccountRepository extends EventPublishingRepositoryMixin(
 *     DefaultTransactionalRepository, { mode: 'outbox', model: 'accounts' },
 *   )<Account, number, AccountRelations> {
 *     constructor(@inject('datasources.db') ds: juggler.DataSource) { super(Account, ds); }
 *   }
 *
 * The evpub app is injected as a property (`EvpubBindings.APP`, optional); set `evpubApp`
 * yourself for a repository made outside a LoopBack context.
 *
 * Each write of `create`, `createAll`, `updateById`, `replaceById`, `deleteById`, `updateAll`,
 * `deleteAll` (and so `save`, `update`, `delete`) runs in a transaction (the caller's
 * `options.transaction` when given, else its own, READ COMMITTED):
 *
 * 1. the rows it will change are locked and read (`FOR UPDATE`: by id, or the ids `where`
 *    matches; `updateAll` / `deleteAll` then change exactly those rows);
 * 2. the write runs;
 * 3. the rows it created or changed are read again;
 * 4. one event per affected record (`create`, `update`, `delete`; key, before and after as the
 *    CDC connector gives them: rows.ts) goes to the mode's sink (sink.ts: direct.ts, outbox.ts);
 * 5. its own transaction commits (or rolls back on any error), then the sink's `afterCommit`.
 *
 * Calls the base class makes to itself (`updateById` → `updateAll`) are not captured twice.
 * Ids: one id property (LoopBack's ById methods take one).
 */
import { randomUUID } from 'node:crypto';
import { inject, type Constructor } from '@loopback/core';
import type { DefaultCrudRepository, Entity, Options, Where } from '@loopback/repository';
import type { App } from '../../app/app';
import { ErrorCode, EvpubError } from '../../errors';
import type { Operation, Row } from '../../events/change-event';
import { EvpubBindings } from '../keys';
import type { EventPublishingOptions, RepositoryContext } from './context';
import { DirectSink } from './direct';
import { OutboxSink } from './outbox';
import type { EventSink, RepositoryChange, WriteTransaction } from './sink';
import { TableRows, type Execute, type SqlConnectorLike } from './rows';

/** The caller's transaction's after-commit calls (see `afterCommit`). */
const AFTER_COMMIT = Symbol('evpub.afterCommit');

/**
 * Calls `fn` after the caller's transaction committed, before its `commit()` resolves. The
 * transaction's own `commit` is wrapped (once): LoopBack's `after commit` observers are not
 * there when the connector's loopback-connector is another copy than juggler's (the usual
 * install of loopback-connector-postgresql 8), so they cannot be relied on. `fn` never rejects.
 */
function afterCommit(tx: JugglerTransaction, fn: () => Promise<void>): void {
  const holder: JugglerTransaction & { [AFTER_COMMIT]?: (() => Promise<void>)[] } = tx;
  let calls = holder[AFTER_COMMIT];
  if (!calls) {
    const list: (() => Promise<void>)[] = [];
    calls = holder[AFTER_COMMIT] = list;
    const commit = tx.commit.bind(tx);
    holder.commit = function (cb?: (err?: Error | null) => void): Promise<void> {
      const done = commit().then(async () => {
        for (const call of list.splice(0)) await call();
      });
      if (typeof cb === 'function') {
        done.then(
          () => cb(null),
          (err: Error) => cb(err),
        );
        return undefined as unknown as Promise<void>;
      }
      return done;
    };
  }
  calls.push(fn);
}

/** Marks the options of the base class's calls made inside a captured write. */
const CAPTURED = Symbol('evpub.captured');

/** A juggler transaction, as the mixin uses it. */
interface JugglerTransaction {
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

interface JugglerDataSourceLike {
  name: string;
  connector?: { name?: string; beginTransaction?: unknown } & Partial<SqlConnectorLike>;
  beginTransaction(options: object): Promise<JugglerTransaction>;
  execute(sql: string, params: unknown[], options: object): Promise<unknown>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a mixin over any entity and id types
type AnyCrudRepository = DefaultCrudRepository<any, any, any>;

interface Plan<T> {
  op: Operation;
  /** The ids of the rows the write changes, locked and read before it. */
  before?: (execute: Execute, rows: TableRows) => Promise<unknown[]>;
  run: (options: Options) => Promise<T>;
  /** The ids of the rows to read after it. */
  after?: (result: T, beforeIds: unknown[]) => unknown[];
  /** Returned without writing when `before` finds no row (`updateAll` / `deleteAll`). */
  none?: T;
}

function isCaptured(opts: Options | undefined): boolean {
  return (opts as Record<symbol, unknown> | undefined)?.[CAPTURED] === true;
}

const VALID_MODES = ['direct', 'outbox'];

/**
 * Marks the classes the mixin makes (a static property), so that the component can make each
 * bound one at `app.start()`: a repository that cannot publish fails the start, not a request.
 */
export const PUBLISHING_REPOSITORY = Symbol.for('evpub.publishingRepository');

/** True for a class made by `EventPublishingRepositoryMixin` (or a subclass of one). */
export function isPublishingRepository(ctor: unknown): boolean {
  return (
    typeof ctor === 'function' &&
    (ctor as { [PUBLISHING_REPOSITORY]?: unknown })[PUBLISHING_REPOSITORY] === true
  );
}

export function EventPublishingRepositoryMixin<R extends Constructor<AnyCrudRepository>>(
  superClass: R,
  options: EventPublishingOptions,
): R {
  if (!options || !VALID_MODES.includes(options.mode)) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `EventPublishingRepositoryMixin(${superClass.name}, options): options.mode must be "direct" or "outbox" (got ${JSON.stringify(options?.mode)})`,
      { context: { key: 'mode' } },
    );
  }
  /* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return --
     a mixin over any entity and id types: the base is DefaultCrudRepository<any, any, any>, and
     the constructor takes the base's arguments */
  class EventPublishingRepository extends superClass {
    static readonly [PUBLISHING_REPOSITORY] = true;

    /** The evpub app that publishes (direct mode) and names the outbox table. */
    @inject(EvpubBindings.APP, { optional: true })
    evpubApp?: App;

    private readonly evpubSink: EventSink;
    private readonly evpubRows: TableRows | undefined;
    private readonly evpubIdProperty: string;
    private readonly evpubModel: string;

    constructor(...args: any[]) {
      super(...args);
      const lbModel = this.entityClass.modelName;
      const ds = this.dataSource as unknown as JugglerDataSourceLike;
      const connector = ds.connector ?? {};
      const connectorName = connector.name ?? 'unknown';
      const dialect =
        connectorName === 'postgresql' ? 'postgres' : connectorName === 'mysql' ? 'mysql' : undefined;
      const repository = new.target.name || 'repository';
      const ctx: RepositoryContext = {
        repository,
        lbModel,
        model: options.model ?? lbModel,
        options,
        dataSourceName: ds.name,
        connectorName,
        dialect,
        transactional: typeof connector.beginTransaction === 'function',
        app: () => this.evpubApp,
      };
      this.evpubModel = ctx.model;
      this.evpubSink = options.mode === 'outbox' ? new OutboxSink(ctx) : new DirectSink(ctx);
      this.evpubSink.check();
      const ids = this.entityClass.getIdProperties();
      if (ids.length !== 1) {
        throw new EvpubError(
          ErrorCode.CONFIG_INVALID,
          `${repository} (model ${lbModel}): EventPublishingRepositoryMixin needs one id property; the model has ${ids.length ? ids.join(', ') : 'none'}`,
          { context: { repository, model: lbModel, key: 'id' } },
        );
      }
      this.evpubIdProperty = ids[0]!;
      this.evpubRows = new TableRows(connector as SqlConnectorLike, lbModel, this.evpubIdProperty);
    }

    override create(entity: any, opts?: Options): Promise<any> {
      if (isCaptured(opts)) return super.create(entity, opts);
      return this.captured(opts, {
        op: 'create',
        run: (o) => super.create(entity, o),
        after: (created) => [this.entityClass.getIdOf(created)],
      });
    }

    override createAll(entities: any[], opts?: Options): Promise<any[]> {
      if (isCaptured(opts)) return super.createAll(entities, opts);
      return this.captured(opts, {
        op: 'create',
        run: (o) => super.createAll(entities, o),
        after: (created) => created.map((e: Entity) => this.entityClass.getIdOf(e)),
      });
    }

    override updateById(id: any, data: any, opts?: Options): Promise<void> {
      if (isCaptured(opts)) return super.updateById(id, data, opts);
      return this.captured(opts, {
        op: 'update',
        before: () => Promise.resolve([id]),
        run: (o) => super.updateById(id, data, o),
        after: () => [id],
      });
    }

    override replaceById(id: any, data: any, opts?: Options): Promise<void> {
      if (isCaptured(opts)) return super.replaceById(id, data, opts);
      return this.captured(opts, {
        op: 'update',
        before: () => Promise.resolve([id]),
        run: (o) => super.replaceById(id, data, o),
        after: () => [id],
      });
    }

    override deleteById(id: any, opts?: Options): Promise<void> {
      if (isCaptured(opts)) return super.deleteById(id, opts);
      return this.captured(opts, {
        op: 'delete',
        before: () => Promise.resolve([id]),
        run: (o) => super.deleteById(id, o),
      });
    }

    override updateAll(data: any, where?: Where<any>, opts?: Options): Promise<{ count: number }> {
      if (isCaptured(opts)) return super.updateAll(data, where, opts);
      let locked: unknown[] = [];
      return this.captured(opts, {
        op: 'update',
        before: async (execute, rows) => (locked = await rows.lockWhere(execute, where ?? {})),
        run: (o) => super.updateAll(data, { [this.evpubIdProperty]: { inq: locked } }, o),
        after: (_, ids) => ids,
        none: { count: 0 },
      });
    }

    override deleteAll(where?: Where<any>, opts?: Options): Promise<{ count: number }> {
      if (isCaptured(opts)) return super.deleteAll(where, opts);
      let locked: unknown[] = [];
      return this.captured(opts, {
        op: 'delete',
        before: async (execute, rows) => (locked = await rows.lockWhere(execute, where ?? {})),
        run: (o) => super.deleteAll({ [this.evpubIdProperty]: { inq: locked } }, o),
        none: { count: 0 },
      });
    }

    /** Runs a write and its events in one transaction (see the header). */
    private async captured<T>(opts: Options | undefined, plan: Plan<T>): Promise<T> {
      const ds = this.dataSource as unknown as JugglerDataSourceLike;
      const given = opts?.transaction as JugglerTransaction | undefined;
      const tx = given ?? (await ds.beginTransaction({ isolationLevel: 'READ COMMITTED' }));
      const execute: Execute = (sql, params) => ds.execute(sql, params, { ...opts, transaction: tx });
      const write: WriteTransaction = {
        execute,
        callers: given !== undefined,
        afterCommit: (fn) => afterCommit(tx, fn),
      };
      let events: RepositoryChange[];
      let result: T;
      try {
        const rows = this.evpubRows!;
        const shape = await rows.describe(execute);
        const beforeIds = plan.before ? await plan.before(execute, rows) : [];
        if (plan.before && beforeIds.length === 0 && plan.none !== undefined) {
          if (!given) await tx.commit();
          return plan.none;
        }
        const before = await rows.read(execute, shape, beforeIds, true);
        result = await plan.run({ ...opts, transaction: tx, [CAPTURED]: true });
        const after = plan.after
          ? await rows.read(execute, shape, plan.after(result, beforeIds), false)
          : new Map<string, Row>();
        // The transaction id, as the connector gives it (the outbox's events get theirs from the log).
        const txId = options.mode === 'direct' ? await rows.txId(execute) : undefined;
        events = changes(this.evpubModel, plan.op, before, after, {
          ...(txId ? { tx: { id: txId } } : {}),
          source: { ...rows.names, writer: 'loopback' },
        });
        await this.evpubSink.inTransaction(events, write);
        if (!given) await tx.commit();
      } catch (err) {
        if (!given) await tx.rollback().catch(() => undefined);
        throw err;
      }
      if (!given) await this.evpubSink.afterCommit(events);
      return result;
    }
  }
  /* eslint-enable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return */
  return EventPublishingRepository;
}

/** One event per affected record, in the order of the reads (id order). */
function changes(
  model: string,
  op: Operation,
  before: Map<string, Row>,
  after: Map<string, Row>,
  extra: { tx?: { id: string }; source: Record<string, unknown> },
): RepositoryChange[] {
  const out: RepositoryChange[] = [];
  const base = (key: string) => ({ id: randomUUID(), model, op, key, sourceTime: '', ...extra });
  if (op === 'create') {
    for (const [key, row] of after) out.push({ ...base(key), before: null, after: row });
  } else if (op === 'delete') {
    for (const [key, row] of before) out.push({ ...base(key), before: row, after: null });
  } else {
    for (const [key, row] of after) out.push({ ...base(key), before: before.get(key) ?? null, after: row });
  }
  return out;
}
