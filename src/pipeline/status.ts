/**
 * Status as typed events: what the app emits on `app.on('status', listener)`, what logs, the
 * CLI and a later HTTP API show as-is. Each is a plain JSON-able object with no secrets (broker
 * URLs are redacted). A listener that throws is logged; it never stops the publisher.
 */
import type { ConnectorStatus } from '../connectors/contract';
import type { Operation, Position } from '../events/change-event';

/** An error as status carries it: code and message, no stack, no secrets. */
export interface StatusError {
  code: string;
  message: string;
}

export type PublisherStatus =
  /** The app started: every feed is reading. */
  | { type: 'started'; feeds: string[] }
  /** Counters of a feed: at most once a second while events are confirmed, and at stop. */
  | {
      type: 'published';
      feed: string;
      published: number;
      /** `published` by operation (they add up to it). */
      publishedOps: Record<Operation, number>;
      deadLettered: number;
      filtered: number;
      inFlight: number;
      /**
       * The source's commit time of the event whose confirmation emitted these counts, where
       * the source gives one (`tx.commitTime`): one sample of end-to-end latency per feed and
       * interval (absent in the counts emitted at stop, and for sources without commit times).
       */
      sourceTime?: string;
    }
  /** A feed's committed position was saved to the checkpoint store. */
  | { type: 'checkpoint'; feed: string; position: Position }
  /** Saving a checkpoint (or the connector's commit) failed; it is retried. */
  | { type: 'checkpoint-failed'; feed: string; during: 'save' | 'commit'; error: StatusError }
  /** Backpressure: the feed's window is full (or it is retrying), the source is paused. */
  | { type: 'paused'; feed: string; reason: 'window-full' | 'retrying'; inFlight: number }
  /** The feed has room again; the source reads on. */
  | { type: 'resumed'; feed: string }
  /**
   * The operator paused a feed (`app.pause()`, `POST /api/feeds/…/pause`): its datasource is not
   * read until it is resumed (every feed of that datasource waits: they share one stream).
   */
  | { type: 'feed-paused'; feed: string; datasource: string }
  /** The operator resumed a paused feed: reading goes on from where it stopped. */
  | { type: 'feed-resumed'; feed: string; datasource: string }
  /** A publish failed and will be retried, with every event after it, after `delayMs`. */
  | { type: 'retrying'; feed: string; attempt: number; delayMs: number; events: number; error: StatusError }
  /** An event that cannot be published went to the dead-letter topic (and counts as done). */
  | {
      type: 'dead-lettered';
      feed: string;
      eventId: string;
      key: string;
      position: Position | null;
      topic: string;
      error: StatusError;
    }
  /** A feed stopped for good (the connector reported an unrecoverable error). */
  | { type: 'feed-failed'; feed: string; error: StatusError }
  /** What a connector reported (connected, reconnecting, lagging, snapshot progress). */
  | { type: 'connector'; datasource: string; status: ConnectorStatus }
  /** Something the operator should know that is not an error (e.g. a feed that cannot resume). */
  | { type: 'warning'; message: string; feed?: string; datasource?: string }
  /**
   * Cluster mode (docs/cluster.md): this instance took a unit (its feeds start from their
   * checkpoints), handed it over (drained, checkpointed, released), lost it (its lease could not
   * be renewed before its deadline, or a newer owner's epoch refused a save: nothing more is
   * published), or could not start it (released, tried again later).
   */
  | {
      type: 'unit';
      unit: string;
      event: 'acquired' | 'released' | 'lost' | 'failed';
      instance: string;
      epoch: number;
      feeds: string[];
      error?: StatusError;
    }
  /** Cluster mode: the lease store stopped answering (`unreachable`), or answers again (`ok`). */
  | { type: 'cluster'; state: 'ok' | 'unreachable'; error?: StatusError }
  | { type: 'stopping' }
  | { type: 'stopped' };

export type PublisherStatusType = PublisherStatus['type'];

export function statusError(err: unknown): StatusError {
  const e = err as { code?: unknown; message?: unknown };
  return {
    code: typeof e?.code === 'string' ? e.code : 'ERROR',
    message: typeof e?.message === 'string' ? e.message : String(err),
  };
}
