/**
 * The NATS JetStream KV lease store going away (a private nats-server with JetStream, stopped
 * with SIGTERM for twice the TTL, started again on the same port and store dir): owners stop
 * publishing at their deadline, report not ready, and resume when it is back; nothing is lost.
 * The scenario and what it asserts: outage-helpers.ts.
 */
import { afterEach, beforeAll, describe, it } from 'vitest';
import { privateNatsServer } from '../helpers/nats-server';
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

describe('the nats lease store stopped for twice the TTL', () => {
  it('owners stop at their deadline, report not ready, resume when it is back; every row arrives', async () => {
    const server = await privateNatsServer();
    cleanups.push(() => server.close());
    await runStoreOutage('nats', server, cleanups);
  }, 60_000);
});
