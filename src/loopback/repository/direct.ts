/**
 * `direct` mode: the repository's events are published by the evpub app
 * (`app.publishChange`, src/app/publish-change.ts) once the write committed.
 *
 * Guarantee: at most once. The write resolves after the broker confirmed its events (in the
 * order the write made them); if publishing fails for good, the write rejects with that error
 * and says the change itself is committed. A process that dies between the commit and the
 * broker's confirmation loses those events: nothing records them. Use `outbox` where that
 * matters. With the caller's transaction the events are published once that transaction's
 * `commit()` succeeded (its `commit()` resolves after the broker confirmed; a failure is
 * logged, since the commit already happened), and nothing is published when it rolls back.
 */
import { randomUUID } from 'node:crypto';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../../errors';
import type { EventSink, RepositoryChange, WriteTransaction } from './sink';
import { modeKey, type RepositoryContext } from './context';

export class DirectSink implements EventSink {
  constructor(private readonly ctx: RepositoryContext) {}

  check(): void {
    if (!this.ctx.dialect) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `${modeKey(this.ctx)}: datasource ${this.ctx.dataSourceName} uses connector "${this.ctx.connectorName}"; ` +
          'events are read from the table, which needs loopback-connector-postgresql or loopback-connector-mysql',
        { context: { repository: this.ctx.repository, model: this.ctx.lbModel, key: 'mode' } },
      );
    }
  }

  inTransaction(events: RepositoryChange[], tx: WriteTransaction): Promise<void> {
    if (tx.callers && events.length > 0) {
      tx.afterCommit(() =>
        this.publish(events).catch((err: unknown) => {
          this.ctx
            .app()
            ?.logger.error(
              { err: toError(err), model: this.ctx.model, keys: events.map((e) => e.key) },
              'the caller committed a change whose events could not be published (direct mode)',
            );
        }),
      );
    }
    return Promise.resolve();
  }

  afterCommit(events: RepositoryChange[]): Promise<void> {
    return this.publish(events);
  }

  private async publish(events: RepositoryChange[]): Promise<void> {
    const app = this.ctx.app();
    if (!app) {
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `${modeKey(this.ctx)}: no evpub app is bound; add the component (app.component(EvpubComponent)) ` +
          'or bind EvpubBindings.APP. The change is committed; its events were not published',
        { context: { repository: this.ctx.repository, model: this.ctx.lbModel } },
      );
    }
    const sourceTime = new Date().toISOString();
    for (const event of events) {
      try {
        await app.publishChange({ ...event, id: event.id || randomUUID(), sourceTime });
      } catch (err) {
        const cause = toError(err);
        throw new EvpubError(
          isEvpubError(cause) ? cause.code : ErrorCode.PUBLISH_FAILED,
          `${this.ctx.repository}: the change to ${this.ctx.lbModel} ${event.key} is committed, but its ${event.op} event was not published: ${cause.message}`,
          { cause, context: { model: this.ctx.model, key: event.key, eventId: event.id, committed: true } },
        );
      }
    }
  }
}
