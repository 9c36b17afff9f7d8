/**
 * Fault matrix: a private redis-server (append-only file, fsync always) stopped and started
 * again while the publisher streams to it in streams mode; the test's durable consumer group
 * reads through the restart. See broker-fault.ts for the case and what it asserts (nothing
 * lost, order per key, a bounded window while the broker is down).
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { startRedisServer } from '../helpers/redis-server';
import { uniqueName } from '../helpers/services';
import { runBrokerFault } from './broker-fault';

let server: PrivateBroker;
beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  await server?.close();
});

describe('fault matrix: broker restarted mid-stream (redis)', () => {
  it(
    'bounds the window while the broker is down, retries in order, and loses nothing',
    { timeout: 120_000 },
    async () => {
      await runBrokerFault({
        fault: 'broker restarted',
        broker: 'redis streams',
        note: 'durable consumer group',
        publishUrl: server.url,
        subscribeUrl: server.url,
        options: { redis: { mode: 'streams' } },
        subscribe: { durable: uniqueName('g'), from: 'earliest' },
        down: () => server.stop(),
        up: () => server.start(),
      });
    },
  );
});
