/**
 * The checkpoint store conformance suite for the memory store. Its instances share positions
 * through the map they are given (as an app stopped and started again in one process does), and
 * nothing outlives the process, so the crash test does not apply.
 */
import { describe, expect, it } from 'vitest';
import { createCheckpointStore, MemoryCheckpointStore } from '../../src/checkpoints/index';
import type { Position } from '../../src/events/change-event';
import { checkpointConformance } from './checkpoints.suite';

const shared = new Map<string, Position>();

checkpointConformance({
  name: 'memory',
  config: async () => ({ store: 'memory' }),
  open: () => new MemoryCheckpointStore(shared),
  features: { survivesProcess: false },
});

describe('memory checkpoint store', () => {
  it('is what `checkpoints: { store: memory }` makes; instances without a shared map are apart', async () => {
    const a = createCheckpointStore({ store: 'memory' });
    expect(a).toBeInstanceOf(MemoryCheckpointStore);
    await a.save('db/m', '1');
    expect(await a.load('db/m')).toBe('1');
    expect(await createCheckpointStore({ store: 'memory' }).load('db/m')).toBeUndefined();
  });
});
