/**
 * The coordinator: which units this instance works on, in a cluster of instances sharing one
 * configuration (docs/cluster.md).
 *
 * Protocol. Every `pollInterval` (a *tick*, never two at once) the coordinator:
 *
 * 1. writes its membership entry (`join` once, then `heartbeat` every `renewInterval`, or at once
 *    after its units changed), whose `info` lists the units it holds with their epochs;
 * 2. reads the live members; `share` = ceil(units / live members) (this instance counted even
 *    when its entry is not visible yet);
 * 3. holding more than `share`: hands the surplus over gracefully, one unit per tick, those it
 *    ranks last first (below): the host drains the unit's events, saves its checkpoints, and only
 *    then is the lease released, so the next owner starts from the last event published. A unit
 *    handed over is not taken back by this instance for a renew interval: the others get it. Holding
 *    `share` while every unit is held and another member holds `share − 2` or fewer (7 units
 *    over 3 instances as 3/3/1): hands one over the same way, so shares differ by one at most
 *    (backing off while that does not even them out: a member that cannot start units);
 * 4. holding fewer: tries to acquire units nobody holds (by the members' entries), in its own
 *    rank order, until it holds `share`. Every `renewInterval` it also tries the units some
 *    member's entry claims, in case that entry is stale (its lease expired: a crashed instance
 *    whose entry has not expired yet). A unit acquired is handed to the host (`startUnit`),
 *    which starts its connector from the checkpoint, gated by the lease.
 *
 * Ranks are rendezvous hashes of (instance, unit): instances starting together prefer different
 * units, and a surplus goes to whoever ranks it first. No instance decides for another: each
 * only ever acquires free units and releases its own, so a wrong view of the members costs
 * balance for a tick, never a unit owned twice (the lease store decides that).
 *
 * A lease lost (the keeper's signal: a renew refused, or the deadline passed without one) or a
 * save refused as FENCED (`fenced(unit)`, from the host) stops the unit at once without draining
 * (`stopUnit(unit, false)`): this instance may no longer publish for it. After FENCED the lease is
 * also released, and the next acquire asks for an epoch past the one the checkpoints were saved
 * under (`minEpoch`: a lease store that lost its data hands out old epochs again). A lease lost
 * at this instance's own deadline is freed too if the store still says it is ours, so the unit's
 * next run (here or elsewhere) has a new epoch. A unit the host could
 * not start is released and not tried again here for a back-off (1 s doubling to 30 s), so a
 * source that is down for one instance may be tried by another.
 *
 * `start()` runs the first tick and fails (LEASE_FAILED naming `cluster.url`) when the store does
 * not answer then (a refused TLS handshake or credentials: TLS_FAILED, AUTH_FAILED as they are); later outages are ridden out: `view().state` is `unreachable` until a tick
 * passes again, the units stop at their deadlines, and are acquired again once it answers.
 *
 * What it decides is reported as status events (`unit`: acquired, released, lost, failed;
 * `cluster`: the store unreachable or back), which the CLI logs; its own log lines are debug.
 *
 * `stop()` (SIGTERM): leaves the membership first (the others count one instance fewer at their
 * next tick), stops every unit gracefully (drain, final checkpoint) and releases each lease right
 * after its checkpoint: a rolling restart hands over within a tick or two instead of a TTL.
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { ErrorCode, EvpubError, isEvpubError, redact, toError } from '../errors';
import type { Logger } from '../logger';
import { statusError, type PublisherStatus } from '../pipeline/status';
import { backoffDelay } from '../util/retry';
import type { ClusterConfig } from './config';
import { LeaseKeeper } from './keeper';
import { monotonicNow, type LeaseStore, type Member } from './lease';

/** What the coordinator drives: the runtime's units. */
export interface UnitHost {
  /**
   * Starts working on `unit` under `keeper`: loads its feeds' checkpoints, starts its connector,
   * gates every publish and checkpoint on the lease. Rejects when it cannot (the coordinator
   * releases the lease and backs off).
   */
  startUnit(unit: string, keeper: LeaseKeeper): Promise<void>;
  /**
   * Stops working on `unit`. `graceful`: stop reading, wait for the events in flight, save the
   * final checkpoints, then resolve (the lease is released after). Otherwise the lease is gone:
   * stop reading and publishing at once; nothing more is saved.
   */
  stopUnit(unit: string, graceful: boolean): Promise<void>;
  /** The feeds of a unit (for status and logs). */
  feedsOf(unit: string): string[];
}

export interface CoordinatorOptions {
  store: LeaseStore;
  config: ClusterConfig;
  /** Every unit of the configuration, the same list in every instance. */
  units: readonly string[];
  host: UnitHost;
  logger: Logger;
  emit(status: PublisherStatus): void;
  /** More for this instance's membership entry (its HTTP address...). */
  info?: () => Record<string, unknown>;
  /** ms between ticks (default: a twelfth of the TTL, between 100 and 500). */
  pollInterval?: number;
}

/** A unit this instance holds. */
interface Held {
  unit: string;
  keeper: LeaseKeeper;
  /** When it was acquired (ISO). */
  since: string;
  /** `running` once started; `stopping` from the decision to let it go until released. */
  phase: 'starting' | 'running' | 'stopping';
  /** The start, then the stop: settles when the current phase's work is done. */
  work: Promise<void>;
  /** The lease was lost (or a save fenced): the unit stopped without a handover. */
  lost?: boolean;
}

/** One unit as status shows it. */
export interface UnitView {
  unit: string;
  feeds: string[];
  /** The instance holding it, as far as this instance knows (its own units, members' entries). */
  owner?: string;
  epoch?: number;
  since?: string;
  mine: boolean;
}

export interface ClusterView {
  instance: string;
  name: string;
  store: string;
  /** `unreachable` while the lease store does not answer (the units' deadlines run out). */
  state: 'ok' | 'unreachable';
  error?: { code: string; message: string };
  members: { instance: string; info: Readonly<Record<string, unknown>>; expiresAt: string }[];
  units: UnitView[];
}

/** What a member's entry says about its units (`info.units`). */
type UnitsInfo = Record<string, { epoch: number; since: string }>;

function rank(instance: string, unit: string): string {
  return createHash('sha1').update(`${instance}\u0000${unit}`).digest('hex');
}

export class Coordinator {
  private readonly held = new Map<string, Held>();
  /** Units not to try before a monotonic time, after a failed start; and the failures so far. */
  private readonly backoff = new Map<string, { until: number; failures: number }>();
  /** Balance handovers (tick step 3): not before `until` (monotonic), `rounds` in a row. */
  private balancing = { until: 0, rounds: 0 };
  /** Units refused as FENCED: the epoch their checkpoints were saved under (see `lose`). */
  private readonly epochFloor = new Map<string, number>();
  private members: Member[] = [];
  private state: 'ok' | 'unreachable' = 'ok';
  private lastError: Error | undefined;
  private joined = false;
  private dirty = false;
  private lastBeat = -Infinity;
  private lastFullTry = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;
  private readonly poll: number;
  private readonly logger: Logger;

  constructor(private readonly options: CoordinatorOptions) {
    const ttl = options.config.leaseTtl;
    this.poll = options.pollInterval ?? Math.min(500, Math.max(100, Math.floor(ttl / 12)));
    this.logger = options.logger;
  }

  get instance(): string {
    return this.options.config.instance;
  }

  /**
   * Joins and runs the first tick (acquiring this instance's share of the free units). A lease
   * store that does not answer then fails the start with LEASE_FAILED naming `cluster.url` (a
   * wrong URL is the likely cause, and an instance that cannot join would run nothing while
   * looking started); an outage after the start is ridden out (`state` unreachable, see `view`).
   */
  async start(): Promise<void> {
    try {
      const first = this.tick();
      this.ticking = first.catch(() => undefined); // stop() after a failed start waits on it
      await first;
    } catch (err) {
      // A refused handshake or credentials, a bad setting: the store's own error names the key
      // and the fix (cluster.tls, cluster.password...); passed on as it is.
      if (isEvpubError(err) && !err.retriable && err.code !== ErrorCode.LEASE_FAILED) throw err;
      const { store, config } = this.options;
      const e = toError(err);
      const cause = e.cause instanceof Error ? `: ${e.cause.message}` : '';
      throw new EvpubError(
        ErrorCode.LEASE_FAILED,
        `cluster.url: the ${store.name} lease store at ${redact(config.url)} does not answer (${e.message}${cause}); ` +
          'start it, or point cluster.url at it',
        { cause: err, retriable: true, context: { key: 'cluster.url', store: store.name } },
      );
    }
    await Promise.all([...this.held.values()].map((h) => h.work));
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.runTick().finally(() => this.schedule());
    }, this.poll);
  }

  private runTick(): Promise<void> {
    this.ticking = this.tick().catch((err: unknown) => this.storeFailed(err));
    return this.ticking;
  }

  private info(): Record<string, unknown> {
    const units: UnitsInfo = {};
    for (const h of this.held.values()) {
      if (h.phase !== 'stopping') units[h.unit] = { epoch: h.keeper.lease.epoch, since: h.since };
    }
    return { host: hostname(), pid: process.pid, ...this.options.info?.(), units };
  }

  private async tick(): Promise<void> {
    const { store, config } = this.options;
    const now = monotonicNow();
    if (!this.joined) {
      await store.join(this.instance, this.info(), config.leaseTtl);
      this.joined = true;
      this.lastBeat = now;
      this.dirty = false;
    } else if (this.dirty || now - this.lastBeat >= config.renewInterval) {
      this.dirty = false;
      await store.heartbeat(this.instance, this.info(), config.leaseTtl);
      this.lastBeat = now;
    }
    this.members = await store.members();
    if (!this.members.some((m) => m.instance === this.instance)) this.joined = false; // expired: rejoin
    this.storeOk();
    if (this.stopped) return;

    const units = this.options.units;
    const live = new Set(this.members.map((m) => m.instance));
    live.add(this.instance);
    const share = Math.ceil(units.length / live.size);
    const mine = [...this.held.values()].filter((h) => h.phase !== 'stopping');
    const lastRanked = (): Held =>
      mine.sort((a, b) => (rank(this.instance, a.unit) < rank(this.instance, b.unit) ? 1 : -1))[0]!;
    if (mine.length > share) {
      this.handOver(lastRanked());
      return;
    }

    const claimed = new Set<string>();
    let fewest = Infinity;
    for (const m of this.members) {
      if (m.instance === this.instance) continue;
      const info = m.info.units as UnitsInfo | undefined;
      for (const unit of Object.keys(info ?? {})) claimed.add(unit);
      fewest = Math.min(fewest, Object.keys(info ?? {}).length);
    }
    // Step 3 (balance): every unit held and another member two or more below the share (7 units
    // over 3 instances held 3/3/1): one unit goes, so that shares differ by one at most. A member
    // that cannot start the units it gets stays low: the balance handovers back off (the share's
    // renew interval, doubling to a minute) until the shares are even again.
    const low = fewest <= share - 2;
    const unbalanced = low && units.every((u) => claimed.has(u) || this.held.has(u));
    if (!low) this.balancing = { until: 0, rounds: 0 };
    if (mine.length === share) {
      if (unbalanced && now >= this.balancing.until) {
        const rounds = this.balancing.rounds + 1;
        const wait = backoffDelay(rounds, { initialDelay: config.renewInterval, maxDelay: 60_000 });
        this.balancing = { until: now + wait, rounds };
        this.handOver(lastRanked());
      }
      return;
    }
    const full = now - this.lastFullTry >= config.renewInterval;
    if (full) this.lastFullTry = now;
    const candidates = units
      .filter((u) => !this.held.has(u) && (full || !claimed.has(u)))
      .filter((u) => (this.backoff.get(u)?.until ?? 0) <= now)
      .sort((a, b) => (rank(this.instance, a) < rank(this.instance, b) ? -1 : 1));
    let holding = mine.length;
    for (const unit of candidates) {
      if (holding >= share || this.stopped) break;
      const keeper = await this.acquire(unit);
      if (!keeper) continue;
      if (this.stopped) {
        await keeper.stop();
        break;
      }
      holding++;
      this.begin(unit, keeper);
    }
  }

  /**
   * Acquires `unit`'s lease. After a FENCED loss (see `lose`) the new epoch must pass the one
   * the checkpoints were saved under: `minEpoch` asks the store for it (a store that lost its
   * data counts from 1 again). A lease under a lower epoch (still ours from before, renewed with
   * its epoch) is released and acquired once more.
   */
  private async acquire(unit: string): Promise<LeaseKeeper | null> {
    const { store, config } = this.options;
    const floor = this.epochFloor.get(unit);
    const acquire = () =>
      LeaseKeeper.acquire(store, unit, this.instance, config.leaseTtl, {
        renewInterval: config.renewInterval,
        logger: this.logger,
        ...(floor !== undefined ? { minEpoch: floor + 1 } : {}),
      });
    let keeper = await acquire();
    if (keeper && floor !== undefined && keeper.lease.epoch <= floor) {
      await keeper.stop();
      keeper = this.stopped ? null : await acquire();
    }
    if (keeper && floor !== undefined && keeper.lease.epoch <= floor) {
      await keeper.stop();
      return null;
    }
    if (keeper && floor !== undefined) {
      this.logger.warn(
        { unit, epoch: keeper.lease.epoch, saved: floor },
        "the lease store's epoch was behind the checkpoints' (it lost its data?): acquired past it",
      );
    }
    if (keeper) this.epochFloor.delete(unit);
    return keeper;
  }

  private storeOk(): void {
    if (this.state === 'ok') return;
    this.state = 'ok';
    this.lastError = undefined;
    this.logger.debug({ store: this.options.store.name }, 'the lease store answers again');
    this.options.emit({ type: 'cluster', state: 'ok' });
  }

  private storeFailed(err: unknown): void {
    this.lastError = toError(err);
    if (this.state === 'unreachable') return;
    this.state = 'unreachable';
    this.logger.debug(
      { err: this.lastError, store: this.options.store.name },
      'the lease store does not answer: units whose lease cannot be renewed stop at their deadline',
    );
    this.options.emit({ type: 'cluster', state: 'unreachable', error: statusError(err) });
  }

  private emitUnit(
    unit: string,
    event: 'acquired' | 'released' | 'lost' | 'failed',
    epoch: number,
    err?: unknown,
  ): void {
    this.options.emit({
      type: 'unit',
      unit,
      event,
      instance: this.instance,
      epoch,
      feeds: this.options.host.feedsOf(unit),
      ...(err !== undefined ? { error: statusError(err) } : {}),
    });
  }

  /** A unit acquired: start it; watch its lease. */
  private begin(unit: string, keeper: LeaseKeeper): void {
    const held: Held = {
      unit,
      keeper,
      since: new Date().toISOString(),
      phase: 'starting',
      work: Promise.resolve(),
    };
    this.held.set(unit, held);
    this.dirty = true;
    const { epoch } = keeper.lease;
    this.logger.debug({ unit, epoch, feeds: this.options.host.feedsOf(unit) }, 'unit acquired');
    keeper.signal.addEventListener('abort', () => this.lose(held, keeper.signal.reason), { once: true });
    held.work = this.options.host.startUnit(unit, keeper).then(
      () => {
        if (held.phase === 'starting') held.phase = 'running';
        this.backoff.delete(unit);
        // Lost while starting: `lose` said so already; an `acquired` now would outlive it.
        if (!held.lost) this.emitUnit(unit, 'acquired', epoch);
      },
      async (err: unknown) => {
        if (held.phase === 'stopping') return; // lost meanwhile: lose() stops it
        held.phase = 'stopping';
        const failures = (this.backoff.get(unit)?.failures ?? 0) + 1;
        const wait = backoffDelay(failures, { initialDelay: 1000, maxDelay: 30_000 });
        this.backoff.set(unit, { until: monotonicNow() + wait, failures });
        this.logger.debug(
          { err: toError(err), unit, retryIn: wait },
          'unit could not start; its lease is released for another instance',
        );
        this.emitUnit(unit, 'failed', epoch, err);
        await this.options.host.stopUnit(unit, false).catch(() => undefined);
        await keeper.stop().catch(() => undefined);
        this.forget(held);
      },
    );
  }

  /** More than the fair share: drain, checkpoint, then release (see the header). */
  private handOver(held: Held): void {
    if (held.phase === 'stopping') return;
    const before = held.work;
    held.phase = 'stopping';
    this.dirty = true;
    this.logger.info({ unit: held.unit }, 'handing the unit over: more than this instance’s share');
    held.work = this.release(held, before);
  }

  private async release(held: Held, before: Promise<void>): Promise<void> {
    await before.catch(() => undefined);
    const { epoch } = held.keeper.lease;
    try {
      await this.options.host.stopUnit(held.unit, true);
      await held.keeper.stop();
      this.emitUnit(held.unit, 'released', epoch);
    } catch (err) {
      this.logger.warn(
        { err: toError(err), unit: held.unit },
        'unit release failed; its lease expires by itself',
      );
      await held.keeper.stop({ release: false }).catch(() => undefined);
    }
    // Handed over for another instance: not taken back here for a renew interval (this instance
    // may be below its share now, and its next tick would otherwise win the race for it again).
    const prior = this.backoff.get(held.unit);
    this.backoff.set(held.unit, {
      until: monotonicNow() + this.options.config.renewInterval,
      failures: prior?.failures ?? 0,
    });
    this.forget(held);
  }

  /** The lease is gone (lost, or fenced): stop at once, no drain (see the header). */
  private lose(held: Held, reason: unknown): void {
    if (this.held.get(held.unit) !== held) return;
    const wasStopping = held.phase === 'stopping';
    held.phase = 'stopping';
    held.lost = true;
    this.dirty = true;
    const err = toError(reason);
    const { epoch } = held.keeper.lease;
    if (!wasStopping || !isEvpubError(err, ErrorCode.LEASE_LOST)) {
      this.logger.debug({ err, unit: held.unit, epoch }, 'unit lost: nothing more is published for it here');
      this.emitUnit(held.unit, 'lost', epoch, err);
    }
    // FENCED: a newer epoch saved a checkpoint of the unit, yet this lease may still be live in
    // the store: one that lost its epochs (a Redis without persistence restarted, a failover to
    // a replica behind) hands out epochs again from 1. Taken again under the same epoch, the unit
    // would be refused again without end, republishing from its checkpoint each time; so the
    // lease is released once the unit stopped, and the next acquire here asks for an epoch past
    // the one the checkpoint was saved under.
    const fencedOut = isEvpubError(err, ErrorCode.FENCED);
    const stored = fencedOut ? err.context.storedEpoch : undefined;
    if (typeof stored === 'number') {
      this.epochFloor.set(held.unit, Math.max(stored, this.epochFloor.get(held.unit) ?? 0));
    }
    const before = held.work;
    held.work = (async () => {
      await this.options.host.stopUnit(held.unit, false).catch(() => undefined);
      await before.catch(() => undefined);
      await held.keeper.stop({ release: fencedOut }).catch(() => undefined);
      // Lost at this instance's own deadline, the lease may still be live in the store: taken
      // again by this same holder it would keep its epoch, and two runs of the unit (the lost
      // one, whose saves may still be in flight, and the next) would share one. Freeing it
      // (compare-and-delete: a no-op once another holds it) gives the next run a new epoch.
      if (!fencedOut) await this.options.store.release(held.keeper.lease).catch(() => undefined);
      this.forget(held);
    })();
  }

  /** A save of one of the unit's feeds was refused as FENCED (from the host). */
  fenced(unit: string, err: Error): void {
    const held = this.held.get(unit);
    if (held) this.lose(held, err);
  }

  private forget(held: Held): void {
    if (this.held.get(held.unit) === held) this.held.delete(held.unit);
    this.dirty = true;
  }

  /** Leaves, then stops every unit gracefully and releases each lease after its checkpoint. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking;
    if (this.joined) {
      await this.options.store
        .leave(this.instance)
        .catch((err: unknown) =>
          this.logger.warn({ err }, 'leaving the cluster failed; the entry expires by itself'),
        );
    }
    for (const held of [...this.held.values()]) this.handOver(held);
    await Promise.all([...this.held.values()].map((h) => h.work));
  }

  /** Whether the unit's lease is held and valid here now. */
  owns(unit: string): boolean {
    const held = this.held.get(unit);
    return held !== undefined && held.phase !== 'stopping' && held.keeper.valid();
  }

  view(): ClusterView {
    const owners = new Map<string, { owner: string; epoch: number; since: string }>();
    for (const m of this.members) {
      if (m.instance === this.instance) continue;
      const info = m.info.units as UnitsInfo | undefined;
      for (const [unit, u] of Object.entries(info ?? {})) owners.set(unit, { owner: m.instance, ...u });
    }
    const units: UnitView[] = this.options.units.map((unit) => {
      const feeds = this.options.host.feedsOf(unit);
      const held = this.held.get(unit);
      if (held && held.phase !== 'stopping') {
        return {
          unit,
          feeds,
          owner: this.instance,
          epoch: held.keeper.lease.epoch,
          since: held.since,
          mine: true,
        };
      }
      const other = owners.get(unit);
      return other ? { unit, feeds, ...other, mine: false } : { unit, feeds, mine: false };
    });
    return {
      instance: this.instance,
      name: this.options.config.name,
      store: this.options.store.name,
      state: this.state,
      ...(this.lastError ? { error: statusError(this.lastError) } : {}),
      members: this.members.map((m) => ({
        instance: m.instance,
        info: m.info,
        expiresAt: new Date(m.expiresAt).toISOString(),
      })),
      units,
    };
  }
}
