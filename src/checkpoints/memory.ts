/** A checkpoint store in this process's memory: for tests, demos and the memory connector. */
import type { Position } from '../events/change-event';
import { cannotFence, type CheckpointStore, type SaveOptions } from './contract';

export class MemoryCheckpointStore implements CheckpointStore {
  readonly name = 'memory';
  readonly fencing = false;

  /** Pass a map to share positions between store instances (e.g. across app restarts). */
  constructor(private readonly positions: Map<string, Position> = new Map()) {}

  async load(feedId: string): Promise<Position | undefined> {
    return this.positions.get(feedId);
  }

  async save(feedId: string, position: Position, options?: SaveOptions): Promise<void> {
    if (options?.fence) cannotFence(this.name);
    this.positions.set(feedId, position);
  }

  async delete(feedId: string): Promise<void> {
    this.positions.delete(feedId);
  }

  async close(): Promise<void> {}
}
