import { requireService } from '../helpers/services';
import { startRedisServer } from '../helpers/redis-server';
import { expireTestStreams } from '../helpers/redis-cleanup';
import { pubsubConformance } from './pubsub.suite';

pubsubConformance({
  name: 'redis (streams mode)',
  url: () => requireService('redis'),
  options: { redis: { mode: 'streams' } },
  privateBroker: () => startRedisServer(),
  // The suite's `evpub/test/*` streams would otherwise stay on the shared Redis.
  teardown: async () => {
    await expireTestStreams(await requireService('redis'));
  },
});
