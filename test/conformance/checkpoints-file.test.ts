import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileCheckpointStore } from '../../src/checkpoints/file';
import { checkpointConformance } from './checkpoints.suite';

const dirs: string[] = [];

checkpointConformance({
  name: 'file',
  config: async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'evpub-cp-'));
    dirs.push(dir);
    return { store: 'file', path: dir };
  },
  teardown: async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  },
});

describe('file checkpoint store', () => {
  it('leaves no temporary file behind and writes readable JSON', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'evpub-cp-'));
    try {
      const store = new FileCheckpointStore({ path: dir });
      await store.save('db/accounts', '12');
      await store.save('db/accounts', '13');
      expect(await readdir(dir)).toEqual(['db%2Faccounts.json']);
      expect(await store.load('db/accounts')).toBe('13');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('saves of several feeds at once all land; close() then save again works', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'evpub-cp-'));
    try {
      const store = new FileCheckpointStore({ path: path.join(dir, 'nested', 'checkpoints') });
      const feeds = Array.from({ length: 8 }, (_, i) => `db/m${i}`);
      await Promise.all(feeds.map((f, i) => store.save(f, String(i))));
      for (const [i, f] of feeds.entries()) expect(await store.load(f)).toBe(String(i));
      await store.close();
      await store.save('db/m0', 'again');
      expect(await store.load('db/m0')).toBe('again');
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a save that cannot be written is a CHECKPOINT_FAILED error with the cause', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'evpub-cp-'));
    try {
      const { writeFile } = await import('node:fs/promises');
      await writeFile(path.join(dir, 'plain-file'), 'x');
      const store = new FileCheckpointStore({ path: path.join(dir, 'plain-file', 'checkpoints') });
      const err = await store.save('db/m', '1').catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'EVPUB_CHECKPOINT_FAILED', retriable: false });
      expect((err as { cause?: { code?: string } }).cause?.code).toBe('ENOTDIR');
      expect(await readdir(dir)).toEqual(['plain-file']);
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a corrupt file is a CHECKPOINT_FAILED error that names the file', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'evpub-cp-'));
    try {
      const store = new FileCheckpointStore({ path: dir });
      const { writeFile } = await import('node:fs/promises');
      await writeFile(store.fileOf('x/y'), '{"position":');
      await expect(store.load('x/y')).rejects.toMatchObject({ code: 'EVPUB_CHECKPOINT_FAILED' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
