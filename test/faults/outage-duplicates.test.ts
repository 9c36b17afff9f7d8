/**
 * Fault matrix: a long broker outage. Nothing is lost, but the duplicates published when the
 * broker comes back should be bounded by the window (what was in flight), not grow with the
 * length of the outage.
 *
 * What once went wrong here: a publish made while the client was offline waited for the
 * reconnect inside `Client.doPublish`, and the PUBLISH_TIMEOUT its caller got did not cancel
 * that wait. The publisher, told the publish failed, retried its window; every retry during the
 * outage left one more copy of the window queued in the client (payloads held in memory), all
 * sent on the reconnect: with a 1 s publishTimeout and a window of 100, a 10 s outage delivered
 * each event 9 times. Now a publish that timed out lets go of its payload and is never sent.
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
  it(
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
      // Was ['before', 'timed out', 'after'].
      expect(got).toEqual(['before', 'after']);
    },
  );

  it(
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
        note: 'durable consumer group; duplicates: one window, not one per retry',
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
      // Was about 100 duplicates per retry (the whole window, once per attempt).
      expect(row.duplicates).toBeLessThanOrEqual(2 * maxInFlight);
    },
  );
});
