/**
 * Where a repository write's change events go, inside and after its transaction (one
 * implementation per mode: direct.ts, outbox.ts). The mixin (mixin.ts) drives it:
 *
 * 1. `check()` once, when the repository is made: a mode the datasource cannot serve is an
 *    EvpubError naming the model and the setting.
 * 2. `inTransaction(events, tx)` after the change ran, before the commit, in its transaction
 *    (`tx.execute` runs SQL there). Rejecting rolls the change back (own transaction) or
 *    leaves the caller's transaction to the caller, who must then roll it back.
 * 3. `afterCommit(events)` once the repository's own transaction committed; its rejection is
 *    the write's (the change stays committed: the error says so). With the caller's
 *    transaction the sink hooks its commit in `inTransaction` instead.
 */
import type { ChangeEvent } from '../../events/change-event';

/** A change event as the repository makes it; the evpub app fills in datasource and position. */
export type RepositoryChange = Omit<ChangeEvent, 'datasource' | 'position'>;

/** The write's transaction, as the sinks see it. */
export interface WriteTransaction {
  /** Runs one statement in the transaction. */
  execute(sql: string, params: unknown[]): Promise<unknown>;
  /** The caller's transaction (not the repository's own): its commit is the caller's. */
  callers: boolean;
  /** Calls `fn` once the transaction committed (the caller's: once its `commit()` succeeded, before it resolves). */
  afterCommit(fn: () => Promise<void>): void;
}

export interface EventSink {
  check(): void;
  inTransaction(events: RepositoryChange[], tx: WriteTransaction): Promise<void>;
  afterCommit(events: RepositoryChange[]): Promise<void>;
}
