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
