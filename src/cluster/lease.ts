/**
 * The lease contract: which live instance owns a unit of work, and for how long.
 *
 * A *unit* is what one connector resumes as one position (a PostgreSQL slot, a binlog reader, a
 * feed); a *holder* is an instance (default `hostname-pid`). A lease says "holder H owns unit U
 * with epoch E until the store's time T". Every store builds it on its own primitives
 * (postgres.ts: a row updated by compare-and-set; redis.ts: `SET NX PX` and compare scripts;
 * nats.ts: JetStream KV revision-checked writes), never on consensus code of ours.
 *
 * Protocol:
 *
 * 1. `acquire(unit, holder, ttlMs)` resolves with a `Lease` when the unit was free, expired, or
 *    already held by `holder` (then it is renewed, same epoch), and with null when another holder
 *    has a live lease. Only one of many concurrent acquirers of a free unit wins. After an
 *    acquire by the current holder, use the lease it returned (the old object may be stale).
 * 2. The *epoch* grows by at least one on every change of owner, and never goes back: a new owner
 *    always has a greater epoch than every earlier one. It stays the same while one holder renews.
 *    `acquire(..., minEpoch)` makes a new owner's epoch at least `minEpoch` (and the counter goes
 *    on from there): for a store that lost its data and counts from 1 again, while checkpoints
 *    were saved under greater epochs (the coordinator learns the saved epoch from FENCED).
 *    Checkpoint saves carry it (fencing, src/checkpoints/contract.ts): a save with an epoch lower
 *    than the last one stored is refused, so a stale owner cannot move the position back.
 * 3. `renew(lease)` extends the lease by its `ttlMs` from the store's now. It rejects with
 *    LEASE_LOST when the lease is no longer the holder's (another took it, or it expired in the
 *    store and nobody took it yet: an expired lease is never silently revived, the caller must
 *    `acquire` again and gets a new epoch), and with a retriable LEASE_FAILED when the store did
 *    not answer (the lease may still be ours: keep trying until the deadline).
 * 4. `release(lease)` frees the unit at once when it is still the holder's (compare-and-delete):
 *    another instance may acquire it without waiting for the TTL. Releasing a lease one no longer
 *    holds does nothing. It resolves with whether something was released.
 * 5. `read(unit)` is the unit's current state (holder, epoch, expiry in store time), or undefined
 *    when nobody ever held it; for status output, never for a decision.
 * 6. Membership: `join(instance, info, ttlMs)` and `heartbeat(...)` write an entry that lives
 *    `ttlMs` unless refreshed; `leave(instance)` removes it at once; `members()` lists the live
 *    entries with their `info` (metadata: version, host, units...).
 * 7. `close()` releases connections (not the leases: they expire, or were released).
 *
 * Time. Whether a lease expired is judged by one clock, the store's, where it has one
 * (PostgreSQL `now()`, Redis key TTLs); NATS has none, see nats.ts. The holder never reads the
 * store's clock: it keeps its own *deadline* = (the monotonic time at which it *sent* the acquire
 * or renew that succeeded) + ttl − safety margin. The store stamped the expiry at some instant
 * after the send, so nobody else can acquire before send + ttl; a holder that stops working at its
 * deadline has stopped before anyone else can start, however long it was paused (GC, SIGSTOP, a
 * partition): after a pause, it finds its deadline passed and stops before doing anything. The
 * margin covers clock-rate drift between the two machines and the time between checking the
 * deadline and the effect of an action (a publish in flight). `performance.now()` is monotonic;
 * `Date.now()` can jump and is never used for deadlines.
 *
 * Failures are EvpubErrors: LEASE_LOST (renew only), LEASE_FAILED (retriable when it may pass),
 * CONFIG_INVALID (bad names, at construction).
 */
import { performance } from 'node:perf_hooks';
import { ErrorCode, EvpubError } from '../errors';

export interface Lease {
  readonly unit: string;
  readonly holder: string;
  /** Grows on every change of owner (point 2); equal across one holder's renewals. */
  readonly epoch: number;
  /** When the store considers the lease expired, in the store's time (ms since 1970); for display. */
  readonly expiresAt: number;
  /** The lease's time to live, ms; renew extends by it. */
  readonly ttlMs: number;
  /** The holder's own deadline, `performance.now()` ms: stop working on the unit by then. */
  readonly deadline: number;
}

/** What `read(unit)` tells about a unit. */
export interface LeaseState {
  readonly unit: string;
  /** The holder, or undefined when the unit was released. */
  readonly holder: string | undefined;
  /** The epoch of the last owner (0 when never owned). */
  readonly epoch: number;
  /** Store time (ms since 1970) at which the lease expires (or expired). */
  readonly expiresAt: number;
  /** Whether the lease was live when read (by the store's judgement). */
  readonly live: boolean;
}

/** A live instance, as `members()` lists it. */
export interface Member {
  readonly instance: string;
  readonly info: Readonly<Record<string, unknown>>;
  /** Store time (ms since 1970) at which the entry expires unless refreshed. */
  readonly expiresAt: number;
}

export interface LeaseStore {
  /** `postgres`, `redis` or `nats`. */
  readonly name: string;
  acquire(unit: string, holder: string, ttlMs: number, minEpoch?: number): Promise<Lease | null>;
  renew(lease: Lease): Promise<Lease>;
  release(lease: Lease): Promise<boolean>;
  read(unit: string): Promise<LeaseState | undefined>;
  join(instance: string, info: Record<string, unknown>, ttlMs: number): Promise<void>;
  heartbeat(instance: string, info: Record<string, unknown>, ttlMs: number): Promise<void>;
  leave(instance: string): Promise<void>;
  members(): Promise<Member[]>;
  close(): Promise<void>;
}

/** The shortest TTL a store accepts, ms. */
export const MIN_TTL_MS = 100;

/** The part of a TTL the holder keeps as a safety margin: a fifth. */
export function safetyMargin(ttlMs: number): number {
  return Math.ceil(ttlMs / 5);
}

/** The holder's deadline for an acquire or renew sent at `sentAt` (performance.now()). */
export function deadlineOf(sentAt: number, ttlMs: number): number {
  return sentAt + ttlMs - safetyMargin(ttlMs);
}

/** The monotonic clock deadlines are read on. */
export const monotonicNow = (): number => performance.now();

/** Throws CONFIG_INVALID unless `ttlMs` is a whole number of ms, at least MIN_TTL_MS. */
export function checkTtl(ttlMs: number, what = 'ttlMs'): void {
  if (!Number.isInteger(ttlMs) || ttlMs < MIN_TTL_MS) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `${what}: ${String(ttlMs)} must be a whole number of milliseconds, at least ${MIN_TTL_MS}`,
    );
  }
}

/** Throws CONFIG_INVALID unless `value` is a non-empty name of at most 200 characters. */
export function checkName(value: string, what: string): void {
  if (typeof value !== 'string' || value === '' || value.length > 200) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `${what}: must be a non-empty string of at most 200 characters`,
    );
  }
}

/** The LEASE_LOST error for `lease`. */
export function leaseLost(lease: Lease, store: string, why: string): EvpubError {
  return new EvpubError(
    ErrorCode.LEASE_LOST,
    `the lease on ${lease.unit} (epoch ${lease.epoch}) is no longer held by ${lease.holder}: ${why}`,
    { context: { unit: lease.unit, holder: lease.holder, epoch: lease.epoch, store } },
  );
}

/** The retriable LEASE_FAILED error for a store that did not answer. */
export function leaseFailed(
  store: string,
  what: string,
  cause: unknown,
  context: Record<string, unknown> = {},
): EvpubError {
  return new EvpubError(ErrorCode.LEASE_FAILED, `cannot ${what} in the ${store} lease store`, {
    cause,
    retriable: true,
    context: { store, ...context },
  });
}
