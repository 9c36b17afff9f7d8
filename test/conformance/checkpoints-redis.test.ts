import { describe, expect, it } from 'vitest';
import { RedisCheckpointStore } from '../../src/checkpoints/redis';
import { requireService, uniqueName } from '../helpers/services';
import { checkpointConformance } from './checkpoints.suite';

checkpointConformance({
  name: 'redis',
  config: async () => ({
    store: 'redis',
    url: await requireService('redis'),
    prefix: `${uniqueName('evpubcp')}:`,
  }),
  features: { fencing: true },
});

describe('redis checkpoint store', () => {
  it('an unreachable server is a retriable CHECKPOINT_FAILED error', async () => {
    const store = new RedisCheckpointStore({ url: 'redis://127.0.0.1:1', connectTimeout: 500 });
    await expect(store.load('a/b')).rejects.toMatchObject({
      code: 'EVPUB_CHECKPOINT_FAILED',
      retriable: true,
    });
    await store.close();
  });
});
