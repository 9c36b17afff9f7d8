/**
 * The checkpoint tracker of one feed: decides what is committed. Nothing else does.
 *
 * Protocol:
 * - `push(position)` is called for every event of the feed, in source order, before it is
 *   published; it returns the event's sequence number (0, 1, 2, ...).
 * - `ack(seq)` is called when the broker accepted the event (or it was filtered out, or its
 *   dead-letter was accepted). Acks come in any order and may repeat.
 * - The committed position is the position of the highest contiguous acked event: event n is
 *   committed only when every event before it is acked too. Events without a position (seed
 *   connectors) advance the sequence but never produce a checkpoint.
 * - Saving is coalesced: at most one `store.save` is in flight for the feed; when it resolves
 *   and the committed position moved meanwhile, the latest position is saved next (intermediate
 *   ones are skipped). Saves also start at least `interval` ms apart (a durable save costs a few
 *   fsyncs: at one per transaction they were most of the CPU of a 1,000 rows/s stream); the
 *   first advance after a quiet spell is saved at once.
 * - After a save, `connector.commit(model, position)` is called if given, with the same
 *   coalescing: one commit in flight, then the latest saved position (never one not saved
 *   yet). Commits run beside the saves: a slow commit (a broker acknowledging a bridged
 *   message) does not hold the next save back, so the checkpoint keeps up with the acks.
 * - A failed save is reported through `onError` and retried with back-off; the next ack also
 *   retries it. `flush()` resolves once the latest committed position is saved and its commit
 *   has run (or rejects with the save's error).
 * - In cluster mode every save carries the unit's lease (`fence`). A save the store refuses as
 *   FENCED (a newer owner saved this feed) is never retried: the tracker closes, reports it once
 *   through `onFenced` (the owner of the feed stops working on its unit), and `flush()` rejects
 *   with it.
 */
import { ErrorCode, EvpubError, isEvpubError, toError } from '../errors';
import { backoffDelay } from '../util/retry';
import type { Position } from '../events/change-event';
import type { CheckpointStore, Fence } from '../checkpoints/contract';

export interface TrackerOptions {
  feedId: string;
  model: string;
  store: CheckpointStore;
  /** `connector.commit`, bound; called after each successful save. */
  commit?: (model: string, position: Position) => Promise<void>;
  onSaved?: (position: Position) => void;
  onError?: (err: Error, during: 'save' | 'commit') => void;
  /** Least ms between the starts of two saves (default 0: save after every advance). */
  interval?: number;
  /** Back-off bounds for save retries in ms (defaults 200 and 10000). */
  retry?: { initialDelay?: number; maxDelay?: number };
  /** Cluster mode: the lease every save is made under (see the header). */
  fence?: Fence;
  /** A save was refused as FENCED: stop working on the unit (called once; no retry follows). */
  onFenced?: (err: Error) => void;
}

export class CheckpointTracker {
  private nextSeq = 0;
  /** The lowest sequence number not yet acked. */
  private low = 0;
  /**
   * The events from `low` to `nextSeq`, in a ring (slot `seq & mask`) that doubles when full:
   * each one's position and whether it is acked. O(1) per push and per ack, no allocation.
   */
  private positions: (Position | null)[] = new Array<Position | null>(64).fill(null);
  private acked = new Uint8Array(64);
  private mask = 63;
  private latest: Position | undefined;
  private saved: Position | undefined;
  private saving: Promise<void> | undefined;
  /** The commit chain: the one in flight, and the saved position it commits next. */
  private committing: Promise<void> | undefined;
  private toCommit: Position | undefined;
  private lastError: Error | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** When the last save started (ms), and the timer of a save held back by the interval. */
  private lastSaveAt = -Infinity;
  private intervalTimer: NodeJS.Timeout | undefined;
  /** Failed saves in a row (the back-off's attempt). */
  private failures = 0;
  private closed = false;
  /** The FENCED refusal, once a save got it (see the header). */
  private fenced: Error | undefined;

  constructor(
    private readonly options: TrackerOptions,
    /** The checkpoint the feed resumed from, if any: it counts as saved. */
    resumedFrom?: Position,
  ) {
    this.latest = resumedFrom;
    this.saved = resumedFrom;
  }

  push(position: Position | null): number {
    const seq = this.nextSeq++;
    if (seq - this.low > this.mask) this.grow();
    this.positions[seq & this.mask] = position;
    return seq;
  }

  ack(seq: number): void {
    if (seq < this.low || seq >= this.nextSeq) return; // a repeated ack, or not ours
    const { acked, positions, mask } = this;
    acked[seq & mask] = 1;
    let advanced: Position | undefined;
    while (this.low < this.nextSeq && acked[this.low & mask] === 1) {
      const slot = this.low & mask;
      acked[slot] = 0;
      const position = positions[slot];
      positions[slot] = null;
      if (position !== null && position !== undefined) advanced = position;
      this.low++;
    }
    if (advanced !== undefined) {
      this.latest = advanced;
      this.scheduleSave();
    }
  }

  /** Doubles the ring, keeping each pending event at its slot for the new mask. */
  private grow(): void {
    const size = (this.mask + 1) * 2;
    const positions = new Array<Position | null>(size).fill(null);
    const acked = new Uint8Array(size);
    for (let seq = this.low; seq < this.nextSeq - 1; seq++) {
      positions[seq & (size - 1)] = this.positions[seq & this.mask]!;
      acked[seq & (size - 1)] = this.acked[seq & this.mask]!;
    }
    this.positions = positions;
    this.acked = acked;
    this.mask = size - 1;
  }

  /** Events pushed and not yet committed (acked ones waiting on an earlier one included). */
  get pending(): number {
    return this.nextSeq - this.low;
  }

  /** The highest contiguous acked position (saved or about to be). */
  get committed(): Position | undefined {
    return this.latest;
  }

  get savedPosition(): Position | undefined {
    return this.saved;
  }

  private scheduleSave(): void {
    if (this.saving || this.closed || this.latest === undefined || this.latest === this.saved) return;
    if (this.retryTimer || this.intervalTimer) return; // a save is already scheduled; it saves the latest
    const wait = this.lastSaveAt + (this.options.interval ?? 0) - Date.now();
    if (wait > 0) {
      this.intervalTimer = setTimeout(() => {
        this.intervalTimer = undefined;
        this.scheduleSave();
      }, wait);
      this.intervalTimer.unref(); // stopping flushes: the timer need not hold the process
      return;
    }
    this.lastSaveAt = Date.now();
    const position = this.latest;
    this.saving = this.saveOnce(position).finally(() => {
      this.saving = undefined;
      if (this.lastError === undefined) this.scheduleSave();
    });
  }

  private async saveOnce(position: Position): Promise<void> {
    const { store, feedId, model, fence } = this.options;
    try {
      await (fence ? store.save(feedId, position, { fence }) : store.save(feedId, position));
    } catch (err) {
      if (isEvpubError(err, ErrorCode.FENCED)) {
        this.lastError = err;
        if (this.fenced === undefined) {
          this.fenced = toError(err);
          this.close();
          this.options.onFenced?.(err);
        }
        return;
      }
      this.lastError = toError(err);
      this.options.onError?.(this.lastError, 'save');
      this.scheduleRetry();
      return;
    }
    this.lastError = undefined;
    this.failures = 0;
    this.saved = position;
    this.options.onSaved?.(position);
    if (this.options.commit) {
      this.toCommit = position;
      // `.finally` runs after this assignment even when every commit settles synchronously.
      this.committing ??= this.commitLoop(model).finally(() => (this.committing = undefined));
    }
  }

  /** Commits the latest saved position until none is waiting; one commit at a time, in order. */
  private async commitLoop(model: string): Promise<void> {
    while (this.toCommit !== undefined) {
      const position = this.toCommit;
      this.toCommit = undefined;
      try {
        await this.options.commit!(model, position);
      } catch (err) {
        this.options.onError?.(toError(err), 'commit');
      }
    }
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer) return;
    this.failures += 1;
    const delay = backoffDelay(this.failures, {
      initialDelay: this.options.retry?.initialDelay ?? 200,
      maxDelay: this.options.retry?.maxDelay ?? 10_000,
    });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.lastError = undefined;
      this.scheduleSave();
    }, delay);
    this.retryTimer.unref();
  }

  /**
   * Saves the latest committed position now and resolves when it is saved; rejects with
   * CHECKPOINT_FAILED when that save fails (one attempt, no back-off: for shutdown).
   */
  async flush(): Promise<void> {
    if (this.intervalTimer) {
      clearTimeout(this.intervalTimer);
      this.intervalTimer = undefined;
      this.lastSaveAt = -Infinity;
    }
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.lastError = undefined;
    }
    while (this.saving) await this.saving;
    this.throwIfFenced();
    if (this.latest === undefined || this.latest === this.saved) {
      while (this.committing) await this.committing;
      return;
    }
    this.lastError = undefined;
    const position = this.latest;
    this.saving = this.saveOnce(position).finally(() => (this.saving = undefined));
    await this.saving;
    while (this.committing) await this.committing;
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.throwIfFenced(); // the save above may have been refused
    if (this.saved !== position) {
      throw new EvpubError(
        ErrorCode.CHECKPOINT_FAILED,
        `could not save the checkpoint of ${this.options.feedId}`,
        {
          cause: this.lastError,
          context: { feed: this.options.feedId },
        },
      );
    }
  }

  private throwIfFenced(): void {
    if (this.fenced) throw this.fenced;
  }

  /** Stops retrying; no save is started after this. */
  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.intervalTimer) clearTimeout(this.intervalTimer);
    this.retryTimer = undefined;
    this.intervalTimer = undefined;
  }
}
