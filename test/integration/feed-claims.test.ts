/**
 * One publisher per feed without `cluster` (issue 14): an app claims its feeds in the checkpoint
 * store before its connectors start; a second app on the same configuration (same feeds, same
 * store) fails start() with EVPUB_FEED_OWNED_ELSEWHERE naming the feed and the owner, and a new
 * one starts once the first stopped. Real stores: a temp directory, the Redis and PostgreSQL on
 * loopback.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import type { CheckpointConfig } from '../../src/checkpoints/config';
import { FileCheckpointStore } from '../../src/checkpoints/file';
import { isEvpubError, type EvpubError } from '../../src/errors';
import { PG_URL, sql } from '../helpers/postgres';
import { Redis } from 'ioredis';
import { waitFor } from '../helpers/wait';
import { quietLogger } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('redis');
});

type Checkpoints = CheckpointConfig;

function app(checkpoints: Checkpoints, broker: string, storeName: string): App {
  const a = evpub({ logger: quietLogger(), brokers: { default: broker }, checkpoints });
  a.dataSource('local', { connector: 'memory', store: storeName });
  a.model('orders', { dataSource: 'local', topic: '{model}/{op}/{key}' });
  cleanups.push(() => a.stop());
  return a;
}

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'evpub-claims-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function twoApps(checkpoints: Checkpoints, store: string): Promise<void> {
  const broker = `memory://${uniqueName('b')}`;
  const storeName = uniqueName('store');
  const first = app(checkpoints, broker, storeName);
  await first.start();
  const second = app(checkpoints, broker, storeName);
  const err = await second.start().catch((e: unknown) => e);
  expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
  const e = err as EvpubError;
  expect(e.retriable).toBe(false);
  expect(e.message).toContain('the feed local/orders is already published by another evpub');
  expect(e.message).toContain(`pid ${process.pid} on ${hostname()}`);
  expect(e.message).toContain(`${store} checkpoint store`);
  expect(e.context).toMatchObject({
    feed: 'local/orders',
    store,
    owner: { pid: process.pid, hostname: hostname() },
  });
  expect(second.status().state).toBe('idle');
  expect(first.status().state).toBe('running');

  await first.stop();
  const third = app(checkpoints, broker, storeName);
  await third.start();
  expect(third.status().state).toBe('running');
}

describe('feed claims in the checkpoint store', () => {
  it('file store: the second app fails with the code; after the first stops a new one starts', async () => {
    await twoApps({ store: 'file', path: tempDir() }, 'file');
  });

  it('redis store: the second app fails with the code; after the first stops a new one starts', async () => {
    await twoApps({ store: 'redis', url: SERVICES.redis.url, prefix: `${uniqueName('claims')}:` }, 'redis');
  });

  it('postgres store: the second app fails with the code; after the first stops a new one starts', async () => {
    await requireService('postgres');
    const table = uniqueName('claims');
    cleanups.push(async () => {
      await sql(`DROP TABLE IF EXISTS ${table}`);
      await sql(`DROP TABLE IF EXISTS ${table}_owners`);
    });
    await twoApps({ store: 'postgres', url: PG_URL, table }, 'postgres');
  });

  it('postgres store: a claim no longer renewed (its process died) is taken over once expired', async () => {
    await requireService('postgres');
    const table = uniqueName('claims');
    cleanups.push(async () => {
      await sql(`DROP TABLE IF EXISTS ${table}`);
      await sql(`DROP TABLE IF EXISTS ${table}_owners`);
    });
    const checkpoints: CheckpointConfig = { store: 'postgres', url: PG_URL, table };
    const broker = `memory://${uniqueName('b')}`;
    const first = app(checkpoints, broker, uniqueName('store'));
    await first.start();
    const owners = await sql<{ instance: string }>(`SELECT instance FROM ${table}_owners`);
    expect(owners).toHaveLength(1);
    // As after a crash: the row stays, nobody renews it, it expires.
    await sql(`UPDATE ${table}_owners SET instance = 'crashed', expires_at = now() - interval '1 second'`);
    const second = app(checkpoints, broker, uniqueName('store'));
    await second.start();
    expect(second.status().state).toBe('running');
  });

  it('redis store: a claim of another host no longer renewed lapses after its TTL', async () => {
    const prefix = `${uniqueName('claims')}:`;
    const redis = new Redis(SERVICES.redis.url);
    cleanups.push(() => redis.quit());
    const other = { instance: 'x', hostname: 'elsewhere', pid: 7, since: '2026-01-01T00:00:00.000Z' };
    await redis.set(`${prefix}~owner:local/orders`, JSON.stringify(other), 'PX', 1500);
    const checkpoints: CheckpointConfig = { store: 'redis', url: SERVICES.redis.url, prefix };
    const broker = `memory://${uniqueName('b')}`;
    const err = await app(checkpoints, broker, uniqueName('store'))
      .start()
      .catch((e: unknown) => e);
    expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    expect((err as Error).message).toContain('pid 7 on elsewhere');
    const next = await waitFor(
      () => {
        const a = app(checkpoints, broker, uniqueName('store'));
        return a.start().then(
          () => a,
          () => undefined,
        );
      },
      'the claim to lapse',
      10_000,
    );
    expect(next?.status().state).toBe('running');
  });

  it('redis and postgres stores: a claim of a gone process of this host is taken over at once', async () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    const gone = { instance: 'y', hostname: hostname(), pid: dead, since: '2026-01-01T00:00:00.000Z' };
    const prefix = `${uniqueName('claims')}:`;
    const redis = new Redis(SERVICES.redis.url);
    cleanups.push(() => redis.quit());
    await redis.set(`${prefix}~owner:local/orders`, JSON.stringify(gone), 'PX', 60_000);
    const a = app(
      { store: 'redis', url: SERVICES.redis.url, prefix },
      `memory://${uniqueName('b')}`,
      uniqueName('store'),
    );
    await a.start();
    expect(JSON.parse((await redis.get(`${prefix}~owner:local/orders`))!)).toMatchObject({
      pid: process.pid,
    });

    await requireService('postgres');
    const table = uniqueName('claims');
    cleanups.push(async () => {
      await sql(`DROP TABLE IF EXISTS ${table}`);
      await sql(`DROP TABLE IF EXISTS ${table}_owners`);
    });
    const checkpoints: CheckpointConfig = { store: 'postgres', url: PG_URL, table };
    const probe = app(checkpoints, `memory://${uniqueName('b')}`, uniqueName('store'));
    await probe.start(); // creates the tables
    await probe.stop();
    await sql(`INSERT INTO ${table}_owners VALUES ('local/orders', 'y', $1, now() + interval '1 minute')`, [
      JSON.stringify(gone),
    ]);
    const b = app(checkpoints, `memory://${uniqueName('b')}`, uniqueName('store'));
    await b.start();
    expect(b.status().state).toBe('running');
  });

  it('file store: an owner file of a process of this host that is gone is taken over', async () => {
    const dir = tempDir();
    const dead = spawnSync(process.execPath, ['-e', '']).pid; // exited: its pid is not alive
    const files = new FileCheckpointStore({ path: dir });
    writeFileSync(
      files.ownerFileOf('local/orders'),
      JSON.stringify({ instance: 'x', hostname: hostname(), pid: dead, since: new Date().toISOString() }),
    );
    const a = app({ store: 'file', path: dir }, `memory://${uniqueName('b')}`, uniqueName('store'));
    await a.start();
    expect(a.status().state).toBe('running');
  });

  it('file store: an owner file of another host is live: the message says which file to delete', async () => {
    const dir = tempDir();
    const files = new FileCheckpointStore({ path: dir });
    writeFileSync(
      files.ownerFileOf('local/orders'),
      JSON.stringify({ instance: 'x', hostname: 'elsewhere', pid: 1, since: '2026-01-01T00:00:00.000Z' }),
    );
    const a = app({ store: 'file', path: dir }, `memory://${uniqueName('b')}`, uniqueName('store'));
    const err = await a.start().catch((e: unknown) => e);
    expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    expect((err as Error).message).toContain('pid 1 on elsewhere, since 2026-01-01T00:00:00.000Z');
    expect((err as Error).message).toContain(`delete ${files.ownerFileOf('local/orders')}`);
  });
});
