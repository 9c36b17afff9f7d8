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
 */
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
