import { requireService } from '../helpers/services';
import { startRedisServer } from '../helpers/redis-server';
import { pubsubConformance } from './pubsub.suite';

pubsubConformance({
  name: 'redis (streams mode)',
  url: () => requireService('redis'),
  options: { redis: { mode: 'streams' } },
  privateBroker: () => startRedisServer(),
});
