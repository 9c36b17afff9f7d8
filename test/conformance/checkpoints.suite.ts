/**
 * The checkpoint store conformance suite: every store runs it against its real backend.
 * Each test uses its own feed ids (and the fixture its own key prefix / table / directory).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { CheckpointConfig } from '../../src/checkpoints/config';
import type { CheckpointStore } from '../../src/checkpoints/contract';
import { createCheckpointStore } from '../../src/checkpoints/index';
import { ErrorCode } from '../../src/errors';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

export interface CheckpointFeatures {
  /**
   * Positions outlive the process: a store opened after a saver process was SIGKILLed
   * mid-saves reads its last save. False for the memory store. Default true.
   */
  survivesProcess: boolean;
  /** Saves may carry a lease fence (src/checkpoints/contract.ts). Default false. */
  fencing: boolean;
}

export interface CheckpointFixture {
  name: string;
  /** The configuration of a store private to this test file. */
  config(): Promise<CheckpointConfig>;
  /**
   * A new store instance over this fixture's backend (default: `createCheckpointStore(config)`);
   * for a store whose instances share their backend only when told (the memory store's map).
   */
  open?(): CheckpointStore;
  features?: Partial<CheckpointFeatures>;
  teardown?(): Promise<void>;
}

const ROOT = path.resolve(__dirname, '../..');

/** Runs the saver child until it reported `atLeast` saves, then SIGKILLs it mid-loop. */
async function crashMidSaves(config: CheckpointConfig, feedId: string, atLeast: number): Promise<number> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'test/helpers/checkpoint-saver.ts'), JSON.stringify(config), feedId],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let last = 0;
  let partial = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    const complete = lines.filter((l) => l !== '');
    if (complete.length > 0) last = Number(complete[complete.length - 1]);
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitFor(() => last >= atLeast || child.exitCode !== null, `${atLeast} saves by the child`, 30_000);
    if (child.exitCode !== null) throw new Error(`the saver child exited: ${stderr}`);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  return last;
}

export function checkpointConformance(fixture: CheckpointFixture): void {
  const features: CheckpointFeatures = { survivesProcess: true, fencing: false, ...fixture.features };
  describe(`checkpoint store conformance: ${fixture.name}`, () => {
    const stores: CheckpointStore[] = [];
    let config: CheckpointConfig | undefined;

    const open = async (): Promise<CheckpointStore> => {
      config ??= await fixture.config();
      const store = fixture.open ? fixture.open() : createCheckpointStore(config);
      stores.push(store);
      return store;
    };

    afterAll(async () => {
      for (const s of stores) await s.close().catch(() => undefined);
      await fixture.teardown?.();
    });

    it('load of an unknown feed is undefined', async () => {
      const store = await open();
      expect(await store.load(`${uniqueName()}/m`)).toBeUndefined();
    });

    it('save then load returns the position; a later save replaces it', async () => {
      const store = await open();
      const feed = `${uniqueName()}/accounts`;
      await store.save(feed, '1-abc');
      expect(await store.load(feed)).toBe('1-abc');
      await store.save(feed, '2-def');
      expect(await store.load(feed)).toBe('2-def');
    });

    it('keeps feeds apart, including odd feed ids', async () => {
      const store = await open();
      const base = uniqueName();
      const feeds = [`${base}/a`, `${base}/a/b`, `${base}/ünï cødé`, `${base}/..%2F`];
      for (const [i, f] of feeds.entries()) await store.save(f, `p${i}`);
      for (const [i, f] of feeds.entries()) expect(await store.load(f)).toBe(`p${i}`);
    });

    it('carries positions verbatim (long, JSON-ish, unicode)', async () => {
      const store = await open();
      const feed = `${uniqueName()}/m`;
      const position = JSON.stringify({ lsn: '0/16B3748', seq: 'x'.repeat(2000), note: 'ünï "q"\n' });
      await store.save(feed, position);
      expect(await store.load(feed)).toBe(position);
    });

    it('delete forgets a feed', async () => {
      const store = await open();
      const feed = `${uniqueName()}/m`;
      await store.save(feed, '7');
      await store.delete(feed);
      expect(await store.load(feed)).toBeUndefined();
      await store.delete(feed); // deleting again is harmless
    });

    it('a new store instance sees what another saved (durable, not cached)', async () => {
      const a = await open();
      const feed = `${uniqueName()}/m`;
      await a.save(feed, '42');
      await a.close();
      const b = await open();
      expect(await b.load(feed)).toBe('42');
    });

    it('sequential saves: the last one wins', async () => {
      const store = await open();
      const feed = `${uniqueName()}/m`;
      for (let i = 1; i <= 50; i++) await store.save(feed, String(i));
      expect(await store.load(feed)).toBe('50');
    });

    it('says whether it fences', async () => {
      const store = await open();
      expect(store.fencing ?? false).toBe(features.fencing);
    });

    it.runIf(!features.fencing)('refuses a fenced save with CONFIG_INVALID, writing nothing', async () => {
      const store = await open();
      const feed = `${uniqueName()}/m`;
      await expect(store.save(feed, '1', { fence: { unit: 'u', epoch: 1 } })).rejects.toMatchObject({
        code: ErrorCode.CONFIG_INVALID,
      });
      expect(await store.load(feed)).toBeUndefined();
    });

    it.runIf(features.fencing)(
      'a save fenced by an older epoch is refused (FENCED) and writes nothing',
      async () => {
        const [oldOwner, newOwner] = [await open(), await open()];
        const feed = `${uniqueName()}/m`;
        await oldOwner.save(feed, '10', { fence: { unit: 'slot', epoch: 1 } });
        await newOwner.save(feed, '11', { fence: { unit: 'slot', epoch: 2 } });
        const err = await oldOwner
          .save(feed, '12', { fence: { unit: 'slot', epoch: 1 } })
          .catch((e: unknown) => e);
        expect(err).toMatchObject({ code: ErrorCode.FENCED, retriable: false, context: { storedEpoch: 2 } });
        expect(await newOwner.load(feed)).toBe('11');
        // The owner's own later saves, and a still newer owner's, pass.
        await newOwner.save(feed, '13', { fence: { unit: 'slot', epoch: 2 } });
        await oldOwner.save(feed, '14', { fence: { unit: 'slot', epoch: 5 } });
        expect(await newOwner.load(feed)).toBe('14');
      },
    );

    it.runIf(features.fencing)(
      'fences: per feed, per unit; unfenced saves pass; delete forgets the fence',
      async () => {
        const store = await open();
        const [feed, other] = [`${uniqueName()}/a`, `${uniqueName()}/b`];
        await store.save(feed, '1', { fence: { unit: 'slot', epoch: 7 } });
        // Another feed has its own fence.
        await store.save(other, '1', { fence: { unit: 'slot', epoch: 1 } });
        // Another unit (the configuration moved the feed) is not compared with the old one's epoch.
        await store.save(feed, '2', { fence: { unit: 'slot-2', epoch: 1 } });
        expect(await store.load(feed)).toBe('2');
        // A save without a fence (one instance alone) writes, and the fence stays.
        await store.save(feed, '3');
        expect(await store.load(feed)).toBe('3');
        await expect(store.save(feed, '4', { fence: { unit: 'slot-2', epoch: 0 } })).rejects.toMatchObject({
          code: ErrorCode.FENCED,
        });
        await store.delete(feed);
        await store.save(feed, '5', { fence: { unit: 'slot-2', epoch: 0 } });
        expect(await store.load(feed)).toBe('5');
      },
    );

    it.runIf(features.fencing)(
      'two owners saving at once: the older epoch never overwrites the newer',
      async () => {
        const [a, b] = [await open(), await open()];
        const feed = `${uniqueName()}/race`;
        await b.save(feed, 'b0', { fence: { unit: 'u', epoch: 2 } });
        const results = await Promise.allSettled(
          Array.from({ length: 20 }, (_, i) =>
            i % 2 === 0
              ? a.save(feed, `a${i}`, { fence: { unit: 'u', epoch: 1 } })
              : b.save(feed, `b${i}`, { fence: { unit: 'u', epoch: 2 } }),
          ),
        );
        results.forEach((r, i) => expect(r.status).toBe(i % 2 === 0 ? 'rejected' : 'fulfilled'));
        expect(await a.load(feed)).toMatch(/^b/);
      },
    );

    it.runIf(features.survivesProcess)(
      'a crash (SIGKILL) during saves leaves the old or the new value',
      async () => {
        config ??= await fixture.config();
        const feed = `${uniqueName()}/crash`;
        const reported = await crashMidSaves(config, feed, 30);
        const store = await open();
        const loaded = await store.load(feed);
        expect(loaded).toMatch(/^\d+$/);
        // Every save the child saw resolve is durable; at most the one in flight may be newer.
        expect(Number(loaded)).toBeGreaterThanOrEqual(reported);
        expect(Number(loaded)).toBeLessThanOrEqual(reported + 1);
      },
    );
  });
}
