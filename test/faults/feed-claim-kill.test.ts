/**
 * Feed claims after a crash (issue 14): `evpub start` (the built CLI) claims its feed; an app on
 * the same configuration fails with EVPUB_FEED_OWNED_ELSEWHERE naming that process; after a
 * `kill -9` of it, a new app on the same host starts at once (the claim's pid is gone), with the
 * file and the Redis store. (A claim of another host lapses after its TTL: feed-claims.test.ts.)
 */
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import type { CheckpointConfig } from '../../src/checkpoints/config';
import { isEvpubError } from '../../src/errors';
import type { CliProcess } from '../e2e/cli';
import { killCli } from '../e2e/cli';
import { quietLogger } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { requireFreshBuild, startEvpub, tempDir } from './evpub-process';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  requireFreshBuild();
  await requireService('redis');
});

function inProcess(checkpoints: CheckpointConfig): App {
  const a = evpub({
    logger: quietLogger(),
    brokers: { default: `memory://${uniqueName('b')}` },
    checkpoints,
  });
  a.dataSource('local', { connector: 'memory', store: uniqueName('store') });
  a.model('orders', { dataSource: 'local', topic: '{model}/{op}/{key}' });
  cleanups.push(() => a.stop());
  return a;
}

async function startCli(dir: string, checkpoints: CheckpointConfig): Promise<CliProcess> {
  const proc = await startEvpub(dir, {
    brokers: { default: { url: `memory://${uniqueName('b')}` } },
    checkpoints,
    datasources: { local: { connector: 'memory', store: uniqueName('store') } },
    models: { orders: { dataSource: 'local', topic: '{model}/{op}/{key}' } },
  });
  cleanups.push(() => killCli(proc));
  return proc;
}

async function refusedBy(checkpoints: CheckpointConfig, pid: number): Promise<void> {
  const err = await inProcess(checkpoints)
    .start()
    .catch((e: unknown) => e);
  expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
  expect((err as Error).message).toContain(
    `the feed local/orders is already published by another evpub (pid ${pid} on`,
  );
}

describe('feed claims after kill -9 of the owner', () => {
  it('file store: a new app starts at once', async () => {
    const dir = tempDir('evpub-claim-');
    cleanups.push(() => dir.remove());
    const checkpoints: CheckpointConfig = { store: 'file', path: path.join(dir.dir, 'checkpoints') };
    const owner = await startCli(dir.dir, checkpoints);
    await refusedBy(checkpoints, owner.pid);
    await killCli(owner);
    const next = inProcess(checkpoints);
    await next.start();
    expect(next.status().state).toBe('running');
  }, 60_000);

  it('redis store: a new app on the same host starts at once (the pid is gone)', async () => {
    const dir = tempDir('evpub-claim-');
    cleanups.push(() => dir.remove());
    const checkpoints: CheckpointConfig = {
      store: 'redis',
      url: SERVICES.redis.url,
      prefix: `${uniqueName('claim')}:`,
    };
    const owner = await startCli(dir.dir, checkpoints);
    await refusedBy(checkpoints, owner.pid);
    await killCli(owner);
    const next = inProcess(checkpoints);
    await next.start();
    expect(next.status().state).toBe('running');
  }, 60_000);
});
