import { requireService } from '../helpers/services';
import { startRedisServer } from '../helpers/redis-server';
import { pubsubConformance } from './pubsub.suite';

pubsubConformance({
  name: 'redis (pub/sub mode)',
  url: () => requireService('redis'),
  privateBroker: () => startRedisServer(),
});
