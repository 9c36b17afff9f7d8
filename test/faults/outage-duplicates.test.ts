/**
 * Fault matrix: a long broker outage. Nothing is lost, but the duplicates published when the
 * broker comes back should be bounded by the window (what was in flight), not grow with the
 * length of the outage.
 *
 * KNOWN BUG (reported to the lead; src/pubsub is not this branch's to change): a publish made
 * while the client is offline waits for the reconnect inside `Client.doPublish`
 * (src/pubsub/client.ts: `await this.online.promise`, then `adapter.publish`), and the
 * PUBLISH_TIMEOUT that `bounded()` raises does not cancel that wait. The publisher, told the
 * publish failed, retries the window; every retry attempt during the outage therefore leaves one
 * more copy of the window queued in the client (payloads held in memory), and all of them are
 * sent when the connection is back. With a 1 s publishTimeout and a window of 100, a 10 s outage
 * delivered each of the 100 events 9 times (800 duplicates); with the defaults (publishTimeout
 * 30 s, retry maxDelay 10 s, window 1,000) an hour's outage queues about 90 copies of the window.
 * The cases below are `it.fails` until that is fixed: then they pass, and `.fails` must go.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { proxied, runBrokerFault } from './broker-fault';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe('fault matrix: a long broker outage', () => {
  it.fails(
    'client: a publish that failed with PUBLISH_TIMEOUT while offline is not sent after the reconnect',
    { timeout: 60_000 },
    async () => {
      const url = await requireService('redis');
      const { proxy, url: through } = await proxied(url);
      cleanups.push(() => proxy.close());
      const streams = { redis: { mode: 'streams' } };
      const topic = `evpub/test/${uniqueName('late')}`;
      cleanups.push(async () => {
        const redis = new Redis(url);
        await redis.del(topic);
        redis.disconnect();
      });
      const sub = createClient(url, { logger: quietLogger(), ...streams });
      cleanups.push(() => sub.end());
      const got: string[] = [];
      sub.on('message', (_t, payload) => got.push(payload.toString()));
      await sub.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
      const pub = createClient(through, {
        logger: quietLogger(),
        ...streams,
        publishTimeout: 300,
        reconnect: { initialDelay: 50, maxDelay: 100 },
      });
      cleanups.push(() => pub.end());
      await pub.publish(topic, 'before');
      await proxy.stop();
      await waitFor(() => pub.state === 'offline', 'the client to go offline');
      await expect(pub.publish(topic, 'timed out')).rejects.toMatchObject({
        code: ErrorCode.PUBLISH_TIMEOUT,
      });
      await proxy.start();
      await pub.publish(topic, 'after'); // confirmed once the client is back
      await waitFor(() => got.includes('after'), 'the publish made after the reconnect');
      // Fails today: got is ['before', 'timed out', 'after'].
      expect(got).toEqual(['before', 'after']);
    },
  );

  it.fails(
    'publisher: the duplicates after a 10-retry outage stay within two windows',
    { timeout: 120_000 },
    async () => {
      const url = await requireService('redis');
      const { proxy, url: through } = await proxied(url);
      cleanups.push(() => proxy.close());
      const maxInFlight = 100;
      const row = await runBrokerFault({
        fault: 'broker connection cut (tcp proxy), 10 retries',
        broker: 'redis streams',
        note: 'durable consumer group; known bug: duplicates grow with the outage',
        publishUrl: through,
        subscribeUrl: url,
        options: { redis: { mode: 'streams' } },
        subscribe: { durable: uniqueName('g'), from: 'earliest' },
        down: () => proxy.stop(),
        up: () => proxy.start(),
        retriesWhileDown: 10,
        maxInFlight,
        cleanup: async (topic) => {
          const redis = new Redis(url);
          await redis.del(topic);
          redis.disconnect();
        },
      });
      // Fails today: about 100 duplicates per retry (the whole window, once per attempt).
      expect(row.duplicates).toBeLessThanOrEqual(2 * maxInFlight);
    },
  );
});
