import { Redis } from 'ioredis';
import { ErrorCode } from '../../src/pubsub/index';
import { requireService, uniqueName } from '../helpers/services';
import { startRedisServer } from '../helpers/redis-server';
import { expireTestStreams } from '../helpers/redis-cleanup';
import { pubsubConformance } from './pubsub.suite';

/** Runs one command on its own connection to `url`. */
async function command(url: string, ...args: string[]): Promise<unknown> {
  const r = new Redis(url, { lazyConnect: true });
  try {
    await r.connect();
    return await r.call(args[0]!, ...args.slice(1));
  } finally {
    r.disconnect();
  }
}

pubsubConformance({
  name: 'redis (streams mode)',
  url: () => requireService('redis'),
  options: { redis: { mode: 'streams' } },
  privateBroker: () => startRedisServer(),
  // The suite's `evpub/test/*` streams would otherwise stay on the shared Redis.
  teardown: async () => {
    await expireTestStreams(await requireService('redis'));
  },
  unawaitedSubscribeMisses:
    'a plain streams subscription starts after the last entry the stream has once it is connected; an entry added before is history (a durable subscription with from: "earliest" reads it)',
  refusals: [
    {
      what: 'a key of another type named like the stream (WRONGTYPE)',
      code: ErrorCode.PUBLISH_FAILED,
      retriable: false,
      async setup() {
        const url = await requireService('redis');
        const base = `evpub/test/${uniqueName()}`;
        await command(url, 'SET', `${base}/vip`, 'a string, not a stream');
        return {
          refused: `${base}/vip`,
          allowed: `${base}/orders`,
          brokerReason: /^WRONGTYPE /,
          brokerCode: 'WRONGTYPE',
          cleanup: async () => void (await command(url, 'DEL', `${base}/vip`, `${base}/orders`)),
        };
      },
    },
    {
      what: 'a stream key the ACL user may not write (NOPERM)',
      code: ErrorCode.NOT_AUTHORIZED,
      retriable: false,
      async setup() {
        const base = `evpub/test/${uniqueName()}`;
        const allowed = `${base}/orders`;
        const server = await startRedisServer({
          args: ['--user', 'evpub', 'on', '>secret', `~${allowed}`, '+@all'],
        });
        return {
          url: server.url.replace('redis://', 'redis://evpub:secret@'),
          refused: `${base}/vip`,
          allowed,
          brokerReason: /^NOPERM .*keys/,
          brokerCode: 'NOPERM',
          cleanup: () => server.close(),
        };
      },
    },
  ],
  transients: [
    {
      what: 'Redis over its maxmemory (OOM)',
      code: ErrorCode.PUBLISH_FAILED,
      async setup() {
        const server = await startRedisServer({
          args: ['--maxmemory', '1', '--maxmemory-policy', 'noeviction'],
        });
        return {
          url: server.url,
          topic: `evpub/test/${uniqueName()}/orders`,
          brokerReason: /^OOM /,
          lift: async () => void (await command(server.url, 'CONFIG', 'SET', 'maxmemory', '0')),
          cleanup: () => server.close(),
        };
      },
    },
  ],
  refusalsNotProduced: [
    'a script or function refusing the command: evpub writes with XADD, which no script runs',
  ],
});
