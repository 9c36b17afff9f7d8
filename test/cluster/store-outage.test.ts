/**
 * The Redis lease store going away for twice the TTL: owners stop publishing at their deadline,
 * report not ready, and resume when it is back; nothing is lost. The scenario and what it
 * asserts: outage-helpers.ts. Two ways to go away:
 * - stopped (a private redis-server ended and started again on the same port with its
 *   append-only file): connections refused, every request fails at once;
 * - frozen (SIGSTOP, then SIGCONT): the sockets stay open and requests never answer (until the
 *   store's 5 s timeout), so only the holders' own deadline timers stop them in time.
 */
import Redis from 'ioredis';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedisServer } from '../helpers/redis-server';
import { requireService } from '../helpers/services';
import { runStoreOutage } from './outage-helpers';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

beforeAll(async () => {
  await requireService('postgres');
  await requireService('redis');
  await requireService('nats');
});

describe('the redis lease store stopped for twice the TTL', () => {
  it('owners stop at their deadline, report not ready, resume when it is back; every row arrives', async () => {
    const server = await startRedisServer();
    cleanups.push(() => server.close());
    await runStoreOutage('redis', server, cleanups);
  }, 60_000);

  it('frozen (SIGSTOP): the same, though no request fails before its timeout', async () => {
    const server = await startRedisServer();
    cleanups.push(() => server.close());
    const admin = new Redis(server.url);
    const info = await admin.info('server');
    admin.disconnect();
    const pid = Number(/^process_id:(\d+)/m.exec(info)?.[1]);
    expect(pid).toBeGreaterThan(0);
    cleanups.push(async () => process.kill(pid, 'SIGCONT')); // a stopped process ignores SIGTERM
    await runStoreOutage(
      'redis',
      {
        url: server.url,
        stop: async () => void process.kill(pid, 'SIGSTOP'),
        start: async () => void process.kill(pid, 'SIGCONT'),
      },
      cleanups,
    );
  }, 60_000);
});
