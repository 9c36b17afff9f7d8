/**
 * Fenced checkpoints through the tracker, with the real Redis and PostgreSQL checkpoint stores
 * (src/pipeline/checkpoint-tracker.ts, header: a FENCED save is never retried, the tracker
 * closes, `onFenced` is called once and `flush()` rejects with it).
 *
 * The store is wrapped only to count the saves it is asked for; every save goes to the server.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointStore, SaveOptions } from '../../src/checkpoints/contract';
import { PostgresCheckpointStore } from '../../src/checkpoints/postgres';
import { RedisCheckpointStore } from '../../src/checkpoints/redis';
import { ErrorCode } from '../../src/errors';
import { CheckpointTracker } from '../../src/pipeline/checkpoint-tracker';
import { sql } from '../helpers/postgres';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

beforeAll(async () => {
  await requireService('redis');
  await requireService('postgres');
});

const STORES: { name: string; make(): CheckpointStore }[] = [
  {
    name: 'redis',
    make: () => new RedisCheckpointStore({ url: SERVICES.redis.url, prefix: `${uniqueName('fence')}:` }),
  },
  {
    name: 'postgres',
    make: () => {
      const table = uniqueName('fence');
      cleanups.push(() => sql(`DROP TABLE IF EXISTS ${table}; DROP TABLE IF EXISTS ${table}_owners`));
      return new PostgresCheckpointStore({ url: SERVICES.postgres.url, table });
    },
  },
];

/** The real store, counting the saves asked of it (with their epochs). */
function counting(store: CheckpointStore): { store: CheckpointStore; saves: (number | undefined)[] } {
  const saves: (number | undefined)[] = [];
  const wrapped: CheckpointStore = {
    name: store.name,
    fencing: store.fencing,
    load: (f) => store.load(f),
    save: (f, p, o?: SaveOptions) => {
      saves.push(o?.fence?.epoch);
      return store.save(f, p, o);
    },
    delete: (f) => store.delete(f),
    close: () => store.close(),
  };
  return { store: wrapped, saves };
}

describe.each(STORES)('fenced checkpoints, $name store', (kind) => {
  it('a FENCED save is not retried: the tracker closes, onFenced once, flush rejects with it', async () => {
    const real = kind.make();
    cleanups.push(() => real.close());
    expect(real.fencing).toBe(true);
    const feed = `ds/${uniqueName('m')}`;
    // A newer owner (epoch 2) saved the feed.
    await real.save(feed, '100', { fence: { unit: 'ds', epoch: 2 } });

    const { store, saves } = counting(real);
    const fenced: Error[] = [];
    const errors: Error[] = [];
    const tracker = new CheckpointTracker({
      feedId: feed,
      model: 'm',
      store,
      fence: { unit: 'ds', epoch: 1 },
      retry: { initialDelay: 10, maxDelay: 20 }, // a retry, were there one, would come at once
      onFenced: (err) => fenced.push(err),
      onError: (err) => errors.push(err),
    });
    tracker.ack(tracker.push('50'));
    await waitFor(() => fenced.length === 1, 'onFenced');
    expect(fenced[0]).toMatchObject({ code: ErrorCode.FENCED });
    // More acks after the refusal start no save.
    tracker.ack(tracker.push('60'));
    tracker.ack(tracker.push('70'));
    await expect(tracker.flush()).rejects.toMatchObject({ code: ErrorCode.FENCED });
    await expect(tracker.flush()).rejects.toMatchObject({ code: ErrorCode.FENCED });
    expect(saves).toEqual([1]);
    expect(fenced).toHaveLength(1);
    expect(errors).toEqual([]); // a refusal is not a failure to retry
    expect(await real.load(feed)).toBe('100');
  });

  it("two owners of one feed: epoch 1's save after epoch 2 saved is refused; the stored position is epoch 2's", async () => {
    const store = kind.make();
    cleanups.push(() => store.close());
    const feed = `ds/${uniqueName('m')}`;
    const fencedOld: Error[] = [];
    const fencedNew: Error[] = [];
    const old = new CheckpointTracker({
      feedId: feed,
      model: 'm',
      store,
      fence: { unit: 'ds', epoch: 1 },
      onFenced: (err) => fencedOld.push(err),
    });
    const next = new CheckpointTracker({
      feedId: feed,
      model: 'm',
      store,
      fence: { unit: 'ds', epoch: 2 },
      onFenced: (err) => fencedNew.push(err),
    });

    old.ack(old.push('10'));
    await old.flush();
    expect(await store.load(feed)).toBe('10');
    // The new owner resumes from there and saves.
    next.ack(next.push('20'));
    await next.flush();
    expect(await store.load(feed)).toBe('20');
    // The stale owner (past its deadline, say) saves a position of its own: refused.
    old.ack(old.push('15'));
    await expect(old.flush()).rejects.toMatchObject({ code: ErrorCode.FENCED });
    expect(fencedOld).toHaveLength(1);
    expect(fencedOld[0]!.message).toContain('epoch 2');
    expect(await store.load(feed)).toBe('20');
    // The new owner goes on.
    next.ack(next.push('30'));
    await next.flush();
    expect(await store.load(feed)).toBe('30');
    expect(fencedNew).toEqual([]);
  });
});
