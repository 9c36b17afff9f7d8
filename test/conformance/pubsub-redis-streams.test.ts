import { requireService } from '../helpers/services';
import { startRedisServer } from '../helpers/redis-server';
import { expireTestStreams } from '../helpers/redis-cleanup';
import { pubsubConformance } from './pubsub.suite';

pubsubConformance({
  name: 'redis (streams mode)',
  url: () => requireService('redis'),
  options: { redis: { mode: 'streams' } },
  privateBroker: () => startRedisServer(),
  unawaitedSubscribeMisses:
    'a plain streams subscription starts after the last entry the stream has once it is connected; an entry added before is history (a durable subscription with from: "earliest" reads it)',
  // The suite's `evpub/test/*` streams would otherwise stay on the shared Redis.
  teardown: async () => {
    await expireTestStreams(await requireService('redis'));
  },
});
