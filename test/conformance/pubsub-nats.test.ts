import { pubsubConformance } from './pubsub.suite';
import { privateNatsServer } from '../helpers/nats-server';
import { requireService } from '../helpers/services';

pubsubConformance({
  name: 'nats',
  url: () => requireService('nats'),
  privateBroker: () => privateNatsServer(),
});
