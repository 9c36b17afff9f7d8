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
 */
import type { Position } from '../events/change-event';

export interface CheckpointStore {
  readonly name: string;
  load(feedId: string): Promise<Position | undefined>;
  save(feedId: string, position: Position): Promise<void>;
  delete(feedId: string): Promise<void>;
  close(): Promise<void>;
}
