/**
 * The checkpoint store contract: where a feed's committed position lives.
 *
 * A feed is one model of one datasource; its id is `${datasource}/${model}`. The publisher
 * saves a feed's position only when every event up to it was accepted by the broker (the
 * highest contiguous acknowledged position), and loads it at start to resume after it.
 *
 * - `load(feedId)` resolves with the last saved position, or undefined when there is none.
 * - `save(feedId, position)` resolves once the position is durable (fsynced, written to the
 *   server). It is atomic per feed: after a crash at any moment, `load` returns either the old
 *   or the new position, never a torn value. Saves for one feed are issued one at a time.
 * - `delete(feedId)` forgets a feed (to re-snapshot or start over).
 * - `close()` releases connections; it is called once, after the last save.
 * Failures reject with an EvpubError of code CHECKPOINT_FAILED (retriable when it may pass).
 *
 * Fencing (several instances, src/cluster/lease.ts): in cluster mode a feed is written only by
 * the owner of its unit's lease, and every save carries that lease as `{ fence: { unit, epoch } }`.
 * A store with `fencing: true` keeps, beside each feed's position, the unit and epoch of the save
 * that wrote it, and compares them in the same atomic step as the write (one SQL statement, one
 * Redis script):
 * - a fenced save is refused with FENCED (not retriable, nothing written) when the stored epoch
 *   for the same unit is greater than the save's: a newer owner has saved since, and this
 *   instance must stop working on the unit. An equal or greater epoch is written and stored.
 * - a stored fence of another unit (the configuration changed which unit a feed belongs to) does
 *   not refuse: epochs of different units are not comparable.
 * - an unfenced save (one instance alone) writes and leaves the stored fence as it was; `delete`
 *   forgets the fence with the position.
 * The file and memory stores cannot fence (`fencing` false or absent): a fenced save rejects
 * with CONFIG_INVALID, and cluster mode refuses them at start.
 *
 * Claims (one instance alone, without `cluster`): before its connectors start, evpub calls
 * `claim(feedIds, owner)`, which records `owner` as the live reader of each feed in the store, or
 * rejects with FEED_OWNED_ELSEWHERE (not retriable, nothing kept) naming the feed and the live
 * owner found (instance, hostname, pid, since). The store keeps the claim alive until
 * `release()` (called on stop; it removes only this owner's records) and lets it lapse by itself
 * after a crash:
 * - Redis: `<prefix>~owner:<feedId>` = the owner as JSON, `SET NX PX 15000`, renewed every 5 s
 *   while it still holds this owner.
 * - PostgreSQL: a row per feed in `<table>_owners` (feed_id, instance, owner, expires_at), taken
 *   when absent or expired, its expires_at pushed 15 s on every 5 s heartbeat.
 * - file: `<feed file>.owner` beside the checkpoint, created with O_EXCL, holding the owner;
 *   stale (taken over) when its hostname is this host and its pid is not alive.
 * Any store takes over at once a claim whose owner ran on this host and whose pid is no longer
 * alive (`ownerGone`: a kill -9 and a restart on the same machine do not wait for the TTL).
 * A store without `claim` (memory: one process by nature) claims nothing.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { ErrorCode, EvpubError } from '../errors';
import type { Position } from '../events/change-event';

/** The lease a save is made under: its unit and epoch (src/cluster/lease.ts). */
export interface Fence {
  readonly unit: string;
  readonly epoch: number;
}

export interface SaveOptions {
  /** Refuse the save (FENCED) if a newer epoch of this unit saved this feed. */
  fence?: Fence;
}

export interface CheckpointStore {
  readonly name: string;
  /** Whether saves may carry a `fence` (see above); absent means false. */
  readonly fencing?: boolean;
  load(feedId: string): Promise<Position | undefined>;
  save(feedId: string, position: Position, options?: SaveOptions): Promise<void>;
  delete(feedId: string): Promise<void>;
  close(): Promise<void>;
  /** Records `owner` as the live reader of the feeds (see Claims above); optional. */
  claim?(feedIds: readonly string[], owner: FeedOwner): Promise<FeedClaim>;
}

/** The error of a store that cannot fence, given a fenced save. */
export function cannotFence(store: string): never {
  throw new EvpubError(
    ErrorCode.CONFIG_INVALID,
    `checkpoints.store: the ${store} store cannot fence saves (several instances need a shared store); use the postgres or redis checkpoint store with cluster`,
  );
}

/** The FENCED error of a save refused because epoch `stored` of `fence.unit` saved `feedId`. */
export function fenced(feedId: string, fence: Fence, stored: number, store: string): EvpubError {
  return new EvpubError(
    ErrorCode.FENCED,
    `the checkpoint of ${feedId} was saved under epoch ${stored} of ${fence.unit}, newer than this instance's ${fence.epoch}: another instance owns it now`,
    { context: { feed: feedId, unit: fence.unit, epoch: fence.epoch, storedEpoch: stored, store } },
  );
}

/** Who reads a feed: one evpub instance (`instance` is unique per app start). */
export interface FeedOwner {
  readonly instance: string;
  readonly hostname: string;
  readonly pid: number;
  /** ISO time the claim was made. */
  readonly since: string;
}

/** A held claim (see above); `release()` never rejects. */
export interface FeedClaim {
  release(): Promise<void>;
}

/** How long a Redis or PostgreSQL claim outlives its last heartbeat, and the heartbeat period. */
export const CLAIM_TTL_MS = 15_000;
export const CLAIM_RENEW_MS = 5_000;

/** The owner record of this process, for a new app start. */
export function localOwner(): FeedOwner {
  return {
    instance: randomBytes(8).toString('hex'),
    hostname: hostname(),
    pid: process.pid,
    since: new Date().toISOString(),
  };
}

/** FEED_OWNED_ELSEWHERE: `feedId` is claimed in `store` by the live `owner`. */
export function ownedElsewhere(
  feedId: string,
  owner: Partial<FeedOwner>,
  store: string,
  hint = '',
): EvpubError {
  return new EvpubError(
    ErrorCode.FEED_OWNED_ELSEWHERE,
    `the feed ${feedId} is already published by another evpub (pid ${owner.pid ?? '?'} on ${owner.hostname ?? '?'}, ` +
      `since ${owner.since ?? '?'}; claim in the ${store} checkpoint store): evpub does not start a second ` +
      `publisher of a feed (it would publish twice); stop the other process, or run the instances with \`cluster\`${hint}`,
    { context: { feed: feedId, store, owner: { ...owner } } },
  );
}

/** Claims `feedIds` one by one with `one`; on a refusal releases those taken, then rejects. */
export async function claimEach(
  feedIds: readonly string[],
  one: (feedId: string) => Promise<() => Promise<void>>,
): Promise<FeedClaim> {
  const taken: (() => Promise<void>)[] = [];
  const release = async (): Promise<void> => {
    for (const r of taken.splice(0)) await r().catch(() => undefined);
  };
  try {
    for (const feedId of feedIds) taken.push(await one(feedId));
  } catch (err) {
    await release();
    throw err;
  }
  return { release };
}

/**
 * True when `owner` ran on this host and its process is gone. Another host's owner cannot be
 * checked (live until its claim lapses); this process's pid is alive (another app in it).
 */
export function ownerGone(owner: Partial<FeedOwner>): boolean {
  if (owner.hostname !== hostname() || typeof owner.pid !== 'number') return false;
  if (owner.pid === process.pid) return false;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (err) {
    return (err as { code?: string }).code === 'ESRCH';
  }
}
