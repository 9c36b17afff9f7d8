import { Redis } from 'ioredis';
import { RedisLeaseStore } from '../../src/cluster/redis';
import { startRedisServer } from '../helpers/redis-server';
import { requireService, uniqueName } from '../helpers/services';
import { leaseConformance } from './lease.suite';

const prefix = `${uniqueName('evpublease')}:`;

leaseConformance({
  name: 'redis',
  open: async (cluster) => new RedisLeaseStore({ url: await requireService('redis'), cluster, prefix }),
  privateServer: async () => {
    const server = await startRedisServer();
    return { server, open: (cluster) => new RedisLeaseStore({ url: server.url, cluster, opTimeout: 500 }) };
  },
  teardown: async () => {
    const redis = new Redis(await requireService('redis'));
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  },
});
