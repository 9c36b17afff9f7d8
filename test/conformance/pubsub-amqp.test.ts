import { pubsubConformance } from './pubsub.suite';
import { requireService } from '../helpers/services';
import { startPrivateRabbitMq } from '../helpers/rabbitmq';

pubsubConformance({
  name: 'amqp',
  url: () => requireService('rabbitmq'),
  privateBroker: () => startPrivateRabbitMq(),
  unawaitedSubscribeMisses:
    'a plain subscription is a queue that must be declared, bound and consumed (three round trips after the connection) before the exchange routes to it; a message routed earlier reaches no queue',
});
