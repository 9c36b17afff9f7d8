/**
 * LeaseKeeper: holds one lease and keeps it renewed.
 *
 * `LeaseKeeper.acquire(store, unit, holder, ttlMs)` resolves with a keeper when the lease was
 * acquired (null when another holder has it). The keeper then renews every `renewInterval`
 * (default ttl / 3); a renew that
 * fails with a retriable error is tried again every ttl / 10 until it passes. `signal` is aborted
 * – once, with an EvpubError LEASE_LOST as its reason – when:
 *
 * - the store refused a renew (another instance took the unit, or it expired there): context
 *   `{ why: 'refused' }`;
 * - the deadline passed without a successful renew (the store could not be reached in time):
 *   context `{ why: 'deadline' }`. A timer fires at the deadline, so this does not wait for a
 *   hanging request.
 *
 * The owner of the unit stops reading and publishing when `signal` aborts, and must also check
 * `valid()` (the deadline on the monotonic clock) before acting after any await: timers do not
 * fire while the process is paused, and a resumed process may run code before the timer.
 * `stop({ release })` ends the renewals and, by default, releases the lease so that another
 * instance may take it at once (call it after the final checkpoint).
 */
import { ErrorCode, EvpubError, isEvpubError } from '../errors';
import type { Logger } from '../logger';
import { monotonicNow, type Lease, type LeaseStore } from './lease';

export interface KeeperOptions {
  /** ms between renews (default ttl / 3; `cluster.renewInterval`). */
  renewInterval?: number;
  logger?: Logger;
  /** A new owner's least epoch (`LeaseStore.acquire`'s `minEpoch`). */
  minEpoch?: number;
}

export class LeaseKeeper {
  private readonly controller = new AbortController();
  private renewTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private renewing: Promise<void> | undefined;

  private constructor(
    private readonly store: LeaseStore,
    private current: Lease,
    private readonly options: KeeperOptions,
  ) {
    this.armDeadline();
    this.schedule(this.interval);
  }

  static async acquire(
    store: LeaseStore,
    unit: string,
    holder: string,
    ttlMs: number,
    options: KeeperOptions = {},
  ): Promise<LeaseKeeper | null> {
    const lease = await store.acquire(unit, holder, ttlMs, options.minEpoch);
    return lease ? new LeaseKeeper(store, lease, options) : null;
  }

  /** The lease as last renewed. */
  get lease(): Lease {
    return this.current;
  }

  /** The holder's deadline (`performance.now()` ms). */
  get deadline(): number {
    return this.current.deadline;
  }

  /** Aborted when the lease is lost or its deadline passed; the reason is a LEASE_LOST EvpubError. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** True while the lease is ours: not lost and the deadline not passed. */
  valid(): boolean {
    return !this.controller.signal.aborted && monotonicNow() < this.current.deadline;
  }

  private get interval(): number {
    return this.options.renewInterval ?? Math.max(1, Math.floor(this.current.ttlMs / 3));
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.renewTimer = setTimeout(() => {
      this.renewing = this.renew();
    }, ms);
    this.renewTimer.unref?.();
  }

  private armDeadline(): void {
    clearTimeout(this.deadlineTimer);
    const wait = Math.max(0, this.current.deadline - monotonicNow());
    this.deadlineTimer = setTimeout(() => {
      if (monotonicNow() >= this.current.deadline)
        this.lose('deadline', 'its deadline passed before a renew succeeded');
      else this.armDeadline();
    }, wait);
    this.deadlineTimer.unref?.();
  }

  private async renew(): Promise<void> {
    if (this.stopped) return;
    try {
      const next = await this.store.renew(this.current);
      if (this.stopped) return;
      // A renew that came back after the deadline does not revive the lease for this keeper.
      if (this.controller.signal.aborted) return;
      this.current = next;
      this.armDeadline();
      this.schedule(this.interval);
    } catch (err) {
      if (this.stopped || this.controller.signal.aborted) return;
      if (isEvpubError(err, ErrorCode.LEASE_LOST)) {
        this.lose('refused', err.message, err);
        return;
      }
      this.options.logger?.warn({ err, unit: this.current.unit }, 'lease renew failed; retrying');
      this.schedule(Math.max(1, Math.floor(this.current.ttlMs / 10)));
    }
  }

  private lose(why: 'deadline' | 'refused', detail: string, cause?: unknown): void {
    if (this.controller.signal.aborted) return;
    const { unit, holder, epoch } = this.current;
    clearTimeout(this.renewTimer);
    clearTimeout(this.deadlineTimer);
    this.stopped = true;
    this.controller.abort(
      new EvpubError(ErrorCode.LEASE_LOST, `the lease on ${unit} (epoch ${epoch}) is lost: ${detail}`, {
        cause,
        context: { unit, holder, epoch, store: this.store.name, why },
      }),
    );
  }

  /** Ends the renewals; releases the lease unless `release: false` or it is already lost. */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    const wasLost = this.controller.signal.aborted;
    this.stopped = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.deadlineTimer);
    await this.renewing?.catch(() => undefined);
    if (!wasLost && options.release !== false) await this.store.release(this.current);
  }
}
