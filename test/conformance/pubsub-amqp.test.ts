import { pubsubConformance } from './pubsub.suite';
import { requireService } from '../helpers/services';
import { startPrivateRabbitMq } from '../helpers/rabbitmq';

pubsubConformance({
  name: 'amqp',
  url: () => requireService('rabbitmq'),
  privateBroker: () => startPrivateRabbitMq(),
});
