/**
 * The per-model feeds of a connector that reads each model through its own feed (couchdb,
 * websocket, bridge): the model → feed map, the connector's lifecycle and the parts of the
 * EventConnector protocol (contract.ts) that only fan out over the feeds.
 *
 * - `start(make)`: refuses a second start (INVALID_STATE), builds the feeds (a settings error
 *   leaves the set idle), opens them all and resolves once every feed is open. If one fails to
 *   open, every feed is stopped and the first error is rethrown; if `stop()` came meanwhile, the
 *   error is INVALID_STATE "was stopped while starting" with the open error as `cause`.
 * - `stop()`: stops every feed, once; a second call returns the same promise.
 * - `commit(model, position)`: handed to the model's feed (if it has one and commits).
 * - `health(detail?)`: idle/starting/stopped while the set is; once streaming, `failed` if any
 *   feed failed, else `reconnecting` if any reconnects, else `streaming`; with every feed's
 *   last pushed position. The wording of `detail` is the connector's (see `notes()`).
 */
import type { Position } from '../../events/change-event';
import type { ConnectorHealth } from '../contract';
import { Lifecycle } from './lifecycle';

/** What a connector's per-model feed offers the set. */
export interface ModelFeedHandle {
  readonly state: string;
  readonly lastPushed: Position | null;
  open(): Promise<void>;
  stop(): Promise<void>;
  commit?(position: Position): Promise<void>;
}

export class FeedSet<F extends ModelFeedHandle> {
  private readonly feeds = new Map<string, F>();
  private readonly life: Lifecycle;

  /** `connector` and `datasource` name the connector in error messages. */
  constructor(connector: string, datasource: string) {
    this.life = new Lifecycle(connector, datasource);
  }

  /** Builds the feeds with `make` (pairs of model name and feed) and opens them. */
  async start(make: () => [model: string, feed: F][]): Promise<void> {
    this.life.assertIdle();
    const entries = make();
    const feeds = entries.map(([, feed]) => feed);
    this.life.begin();
    for (const [model, feed] of entries) this.feeds.set(model, feed);
    const opened = await Promise.allSettled(feeds.map((f) => f.open()));
    const failure = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) {
      const error = this.life.startFailed(failure.reason);
      await Promise.all(feeds.map((f) => f.stop()));
      throw error;
    }
    this.life.started();
  }

  async commit(model: string, position: Position): Promise<void> {
    await this.feeds.get(model)?.commit?.(position);
  }

  stop(): Promise<void> {
    return this.life.stop(async () => {
      await Promise.all([...this.feeds.values()].map((f) => f.stop()));
    });
  }

  /** The models whose feed failed, in start order. */
  failed(): string[] {
    return [...this.feeds].filter(([, f]) => f.state === 'failed').map(([m]) => m);
  }

  /** The notes `each` gives per feed (false for none), joined by "; "; undefined when none. */
  notes(each: (model: string, feed: F) => (string | false)[]): string | undefined {
    const notes: string[] = [];
    for (const [model, feed] of this.feeds) {
      for (const note of each(model, feed)) if (note !== false) notes.push(note);
    }
    return notes.length > 0 ? notes.join('; ') : undefined;
  }

  health(detail?: string): ConnectorHealth {
    const positions: Record<string, Position | null> = {};
    const states = new Set<string>();
    for (const [model, feed] of this.feeds) {
      positions[model] = feed.lastPushed;
      states.add(feed.state);
    }
    let state: ConnectorHealth['state'];
    if (this.life.state !== 'streaming') state = this.life.state;
    else if (states.has('failed')) state = 'failed';
    else if (states.has('reconnecting')) state = 'reconnecting';
    else state = 'streaming';
    return { state, positions, ...(detail ? { detail } : {}) };
  }
}
