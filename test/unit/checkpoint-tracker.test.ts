import { describe, expect, it, vi } from 'vitest';
import { CheckpointTracker } from '../../src/pipeline/checkpoint-tracker';
import type { CheckpointStore } from '../../src/checkpoints/contract';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { deferred, waitFor } from '../helpers/wait';

/** A store whose saves resolve when the test says so, recording each call. */
function gatedStore() {
  const saves: { position: string; done: ReturnType<typeof deferred<void>> }[] = [];
  const values = new Map<string, string>();
  const store: CheckpointStore = {
    name: 'gated',
    load: async (f) => values.get(f),
    save: async (f, p) => {
      const done = deferred<void>();
      saves.push({ position: p, done });
      await done.promise;
      values.set(f, p);
    },
    delete: async (f) => void values.delete(f),
    close: async () => undefined,
  };
  return { store, saves, values };
}

describe('CheckpointTracker', () => {
  it('commits the highest contiguous acked position, whatever the ack order', async () => {
    const store = new MemoryCheckpointStore();
    const t = new CheckpointTracker({ feedId: 'd/m', model: 'm', store });
    const seqs = ['10', '20', '30', '40'].map((p) => t.push(p));
    t.ack(seqs[2]!);
    t.ack(seqs[1]!);
    expect(t.committed).toBeUndefined(); // event 0 still out
    t.ack(seqs[0]!);
    expect(t.committed).toBe('30');
    t.ack(seqs[0]!); // a repeated ack changes nothing
    expect(t.pending).toBe(1);
    t.ack(seqs[3]!);
    expect(t.committed).toBe('40');
    await t.flush();
    expect(await store.load('d/m')).toBe('40');
  });

  it('keeps every position while thousands are pending, acked out of order, some null', async () => {
    const store = new MemoryCheckpointStore();
    const t = new CheckpointTracker({ feedId: 'd/m', model: 'm', store });
    const n = 5000;
    const seqs: number[] = [];
    for (let i = 0; i < n; i++) seqs.push(t.push(i % 7 === 6 ? null : String(i)));
    expect(t.pending).toBe(n);
    // Every event but the first, from the last back (each one waits on event 0), then event 0.
    for (let i = n - 1; i >= 1; i--) t.ack(seqs[i]!);
    expect(t.committed).toBeUndefined();
    // More pushes while nothing moved: the pending run keeps growing.
    const more = [t.push('late-1'), t.push(null)];
    t.ack(seqs[0]!);
    expect(t.committed).toBe(String(n - 1 - ((n - 1) % 7 === 6 ? 1 : 0)));
    expect(t.pending).toBe(2);
    t.ack(more[1]!);
    expect(t.committed).toBe(String(n - 1 - ((n - 1) % 7 === 6 ? 1 : 0)));
    t.ack(more[0]!);
    expect(t.committed).toBe('late-1');
    expect(t.pending).toBe(0);
    await t.flush();
    expect(await store.load('d/m')).toBe('late-1');
  });

  it('starts saves at least `interval` ms apart, saving the latest; flush saves at once', async () => {
    vi.useFakeTimers(); // the interval is the behaviour under test: time moves only when told
    try {
      const { store, saves } = gatedStore();
      const t = new CheckpointTracker({ feedId: 'd/m', model: 'm', store, interval: 1000 });
      t.ack(t.push('1'));
      expect(saves.map((s) => s.position)).toEqual(['1']); // the first advance is saved at once
      saves[0]!.done.resolve();
      await vi.advanceTimersByTimeAsync(0);
      expect(t.savedPosition).toBe('1');
      t.ack(t.push('2'));
      t.ack(t.push('3'));
      await vi.advanceTimersByTimeAsync(999);
      expect(saves).toHaveLength(1); // held back by the interval
      await vi.advanceTimersByTimeAsync(1);
      expect(saves.map((s) => s.position)).toEqual(['1', '3']); // the latest, '2' skipped
      saves[1]!.done.resolve();
      await vi.advanceTimersByTimeAsync(0);
      expect(t.savedPosition).toBe('3');
      t.ack(t.push('4'));
      const flushed = t.flush(); // does not wait for the interval
      await vi.advanceTimersByTimeAsync(0);
      expect(saves[2]!.position).toBe('4');
      saves[2]!.done.resolve();
      await flushed;
      expect(t.savedPosition).toBe('4');
    } finally {
      vi.useRealTimers();
    }
  });

  it('skips null positions but still advances past them', async () => {
    const store = new MemoryCheckpointStore();
    const t = new CheckpointTracker({ feedId: 'd/m', model: 'm', store });
    const a = t.push('1');
    const b = t.push(null);
    const c = t.push('3');
    t.ack(b);
    t.ack(c);
    t.ack(a);
    expect(t.committed).toBe('3');
  });

  it('coalesces saves: one in flight, the latest wins, then commit() is called', async () => {
    const { store, saves } = gatedStore();
    const commits: string[] = [];
    const t = new CheckpointTracker({
      feedId: 'd/m',
      model: 'm',
      store,
      commit: async (_m, p) => void commits.push(p),
    });
    for (let i = 1; i <= 5; i++) t.ack(t.push(String(i)));
    expect(saves.map((s) => s.position)).toEqual(['1']);
    saves[0]!.done.resolve(undefined);
    await waitFor(() => saves.length === 2, 'the second save');
    expect(saves[1]!.position).toBe('5'); // 2..4 were coalesced away
    saves[1]!.done.resolve(undefined);
    await waitFor(() => commits.length === 2, 'two commits');
    expect(commits).toEqual(['1', '5']);
    expect(t.savedPosition).toBe('5');
  });

  it('a slow commit does not hold the next save back; commits follow saves, in order', async () => {
    const { store, saves } = gatedStore();
    const commits: { position: string; done: ReturnType<typeof deferred<void>> }[] = [];
    const t = new CheckpointTracker({
      feedId: 'd/m',
      model: 'm',
      store,
      commit: async (_m, p) => {
        expect(t.savedPosition).toBe(p); // never a position that is not saved
        const done = deferred<void>();
        commits.push({ position: p, done });
        await done.promise;
      },
    });
    t.ack(t.push('1'));
    saves[0]!.done.resolve(undefined);
    await waitFor(() => commits.length === 1, 'the first commit');
    // commit('1') hangs; acks go on and are saved meanwhile.
    t.ack(t.push('2'));
    await waitFor(() => saves.length === 2, 'the second save while the commit is pending');
    saves[1]!.done.resolve(undefined);
    t.ack(t.push('3'));
    await waitFor(() => saves.length === 3, 'the third save while the commit is pending');
    saves[2]!.done.resolve(undefined);
    await waitFor(() => t.savedPosition === '3', 'three saves');
    expect(commits.map((c) => c.position)).toEqual(['1']); // one commit in flight
    let flushed = false;
    const flush = t.flush().then(() => (flushed = true));
    commits[0]!.done.resolve(undefined);
    await waitFor(() => commits.length === 2, 'the latest saved position committed next');
    expect(commits[1]!.position).toBe('3'); // '2' was coalesced away
    expect(flushed).toBe(false); // flush waits for the commit of what it saved
    commits[1]!.done.resolve(undefined);
    await flush;
  });

  it('a failed save is reported and retried; flush saves the latest', async () => {
    let fail = true;
    const errors: string[] = [];
    const store = new MemoryCheckpointStore();
    const flaky: CheckpointStore = {
      ...store,
      name: 'flaky',
      load: (f) => store.load(f),
      delete: (f) => store.delete(f),
      close: () => store.close(),
      save: async (f, p) => {
        if (fail) throw new Error('disk full');
        await store.save(f, p);
      },
    };
    const t = new CheckpointTracker({
      feedId: 'd/m',
      model: 'm',
      store: flaky,
      onError: (e) => errors.push(e.message),
      retry: { initialDelay: 5, maxDelay: 10 },
    });
    t.ack(t.push('7'));
    await waitFor(() => errors.length >= 2, 'retried saves');
    fail = false;
    await waitFor(async () => (await store.load('d/m')) === '7', 'the save to pass');
    t.close();
  });

  it('resuming from a checkpoint counts it as saved', async () => {
    const { store, saves } = gatedStore();
    const t = new CheckpointTracker({ feedId: 'd/m', model: 'm', store }, '9');
    expect(t.committed).toBe('9');
    await t.flush();
    expect(saves).toHaveLength(0);
  });
});
