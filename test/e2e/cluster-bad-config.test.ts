/**
 * A bad `cluster` configuration, through `evpub start` (exits 1 printing the key and the fix,
 * no stack, no secret) and through the JS API (`start()` rejects with the same message).
 *
 * Configuration mistakes are found before anything connects: every URL points at a TCP server
 * of the test's that counts connections, and it must count none. A lease store that does not
 * answer at start is not a configuration mistake one can see without connecting: the start fails
 * with LEASE_FAILED naming `cluster.url` (the decision: an instance that cannot join would run
 * nothing while looking started; a supervisor restarts it), within the store's connect timeout.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import type { EvpubConfig } from '../../src/app/config-types';
import { ErrorCode } from '../../src/errors';
import { quietLogger } from '../helpers/publisher';
import { freePort, uniqueName } from '../helpers/services';
import { spawnCli } from './cli';

let server: Server;
let port: number;
let connections = 0;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-cluster-badconf-'));
  server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

interface Parts {
  brokers: Record<string, unknown>;
  checkpoints: Record<string, unknown>;
  cluster: Record<string, unknown>;
  datasources: Record<string, unknown>;
  models: Record<string, Record<string, unknown>>;
}

function parts(change: (p: Parts) => void = () => undefined): Parts {
  const p: Parts = {
    brokers: { default: { url: `mqtt://u:hunter2@127.0.0.1:${port}` } },
    checkpoints: { store: 'redis', url: `redis://u:hunter2@127.0.0.1:${port}` },
    cluster: { store: 'redis', url: `redis://u:hunter2@127.0.0.1:${port}`, name: 'orders', leaseTtl: '15s' },
    datasources: { db: { connector: 'couchdb', url: `http://127.0.0.1:${port}/` } },
    models: { accounts: { dataSource: 'db' } },
  };
  change(p);
  return p;
}

const CASES: { name: string; parts: () => Parts; message: string }[] = [
  {
    name: 'cluster with the file checkpoint store',
    parts: () => parts((p) => (p.checkpoints = { store: 'file', path: 'checkpoints' })),
    message: 'checkpoints.store: "file" cannot serve cluster',
  },
  {
    name: 'an unknown lease store',
    parts: () => parts((p) => (p.cluster.store = 'etcd')),
    message: 'cluster.store: "etcd" is not a lease store; use one of postgres, redis, nats',
  },
  {
    name: 'a TTL shorter than 3 × the renew interval',
    parts: () => parts((p) => Object.assign(p.cluster, { leaseTtl: '10s', renewInterval: '4s' })),
    message: 'cluster.leaseTtl: 10000 ms must be at least 3 × renewInterval (4000 ms)',
  },
  {
    name: 'a misspelt key',
    parts: () => parts((p) => Object.assign(p.cluster, { leaseTTL: '5s' })),
    message: 'cluster.leaseTTL: unknown key; did you mean leaseTtl?',
  },
  {
    name: 'resetCheckpoint with cluster',
    parts: () => parts((p) => (p.models.accounts!.resetCheckpoint = true)),
    message: 'models.accounts.resetCheckpoint: not with cluster',
  },
];

describe('a bad cluster configuration', () => {
  it.each(CASES)('evpub start, $name: exits 1 naming the key, opens no connection', async (c) => {
    const file = path.join(dir, `${c.name.replace(/\W+/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(c.parts()));
    const run = spawnCli(['start', '--config', file], { cwd: dir, env: { EVPUB_LOG_LEVEL: 'info' } });
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toContain(c.message);
    expect(run.stderr()).not.toMatch(/\n\s+at /); // a message, not a stack
    expect(run.stderr() + run.stdout()).not.toContain('hunter2');
    expect(run.stdout()).not.toContain('evpub started');
    expect(connections).toBe(0);
  });

  it.each(CASES)('JS API, $name: start() rejects with CONFIG_INVALID naming the key', async (c) => {
    const p = c.parts();
    const app = evpub({
      logger: quietLogger(),
      cwd: dir,
      brokers: p.brokers as Record<string, string>,
      checkpoints: p.checkpoints as never,
      cluster: p.cluster as never,
      config: { datasources: p.datasources, models: p.models } as unknown as Partial<EvpubConfig>,
    });
    const err = await app.start().then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    );
    await app.stop();
    expect(err?.code).toBe(ErrorCode.CONFIG_INVALID);
    expect(err?.message).toContain(c.message);
    expect(err?.message).not.toContain('hunter2');
    expect(connections).toBe(0);
  });
});

describe('a lease store that does not answer at start', () => {
  /** A configuration that starts (memory broker and source) but whose lease store is down. */
  async function unreachable(): Promise<{ config: Parts; leasePort: number }> {
    const leasePort = await freePort(); // nobody listens there
    const config = parts((p) => {
      p.brokers = { default: { url: `memory://${uniqueName('b')}` } };
      p.checkpoints = { store: 'redis', url: 'redis://127.0.0.1:6379', prefix: `${uniqueName('cp')}:` };
      p.cluster.url = `redis://u:hunter2@127.0.0.1:${leasePort}`;
      p.datasources = { db: { connector: 'memory' } };
    });
    return { config, leasePort };
  }

  it('evpub start exits 1 naming cluster.url, without printing the password', async () => {
    const { config, leasePort } = await unreachable();
    const file = path.join(dir, 'unreachable.json');
    writeFileSync(file, JSON.stringify(config));
    const run = spawnCli(['start', '--config', file], { cwd: dir, env: { EVPUB_LOG_LEVEL: 'info' } });
    expect(await run.exited).toBe(1);
    expect(run.stderr()).toContain(
      `cluster.url: the redis lease store at redis://u:***@127.0.0.1:${leasePort} does not answer`,
    );
    expect(run.stderr()).toContain('start it, or point cluster.url at it');
    expect(run.stderr()).not.toMatch(/\n\s+at /);
    expect(run.stderr() + run.stdout()).not.toContain('hunter2');
    expect(run.stdout()).not.toContain('evpub started');
  });

  it('JS API: start() rejects with LEASE_FAILED naming cluster.url; the app is idle again', async () => {
    const { config, leasePort } = await unreachable();
    const app = evpub({
      logger: quietLogger(),
      cwd: dir,
      brokers: config.brokers as Record<string, string>,
      checkpoints: config.checkpoints as never,
      cluster: config.cluster as never,
      config: { datasources: config.datasources, models: config.models } as unknown as Partial<EvpubConfig>,
    });
    const err = await app.start().then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string; context?: Record<string, unknown> },
    );
    expect(err?.code).toBe(ErrorCode.LEASE_FAILED);
    expect(err?.message).toContain(
      `cluster.url: the redis lease store at redis://u:***@127.0.0.1:${leasePort}`,
    );
    expect(err?.message).not.toContain('hunter2');
    expect(err?.context?.key).toBe('cluster.url');
    expect(app.status().state).toBe('idle');
    await app.stop();
  });
});
