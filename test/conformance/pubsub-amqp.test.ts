import amqplib from 'amqplib';
import { ErrorCode } from '../../src/pubsub/index';
import { pubsubConformance } from './pubsub.suite';
import { requireService, uniqueName } from '../helpers/services';
import { rabbitMqUserWithTopicWrite, startPrivateRabbitMq } from '../helpers/rabbitmq';

/** Runs `fn` on a channel of its own to the shared broker. */
async function withChannel(fn: (ch: amqplib.Channel) => Promise<unknown>): Promise<void> {
  const conn = await amqplib.connect(await requireService('rabbitmq'));
  try {
    await fn(await conn.createChannel());
  } finally {
    await conn.close();
  }
}

pubsubConformance({
  name: 'amqp',
  url: () => requireService('rabbitmq'),
  privateBroker: () => startPrivateRabbitMq(),
  unawaitedSubscribeMisses:
    'a plain subscription is a queue that must be declared, bound and consumed (three round trips after the connection) before the exchange routes to it; a message routed earlier reaches no queue',
  refusals: [
    {
      what: 'a routing key the user may not write (topic permissions, 403)',
      code: ErrorCode.NOT_AUTHORIZED,
      retriable: false,
      async setup() {
        const exchange = uniqueName('evpub');
        const base = `evpub/test/${uniqueName()}`;
        const allowedKey = `${base.split('/').join('.')}.orders`;
        const user = await rabbitMqUserWithTopicWrite(
          await requireService('rabbitmq'),
          exchange,
          `^${allowedKey.replace(/\./g, '\\.')}$`,
        );
        return {
          url: user.url,
          options: { amqp: { exchange } },
          refused: `${base}/vip`,
          allowed: `${base}/orders`,
          brokerReason: /^ACCESS_REFUSED - access to topic '.*\.vip' in exchange/,
          brokerCode: 403,
          cleanup: async () => {
            await user.remove();
            await withChannel((ch) => ch.deleteExchange(exchange));
          },
        };
      },
    },
  ],
  transients: [
    {
      what: 'a queue full with x-overflow reject-publish (basic.nack)',
      code: ErrorCode.PUBLISH_FAILED,
      async setup() {
        const exchange = uniqueName('evpub');
        const queue = uniqueName('full');
        const topic = `evpub/test/${uniqueName()}/orders`;
        await withChannel(async (ch) => {
          await ch.assertExchange(exchange, 'topic', { durable: true });
          await ch.assertQueue(queue, { arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' } });
          await ch.bindQueue(queue, exchange, topic.split('/').join('.'));
        });
        return {
          options: { amqp: { exchange } },
          topic,
          brokerReason: /basic\.nack/,
          lift: () => withChannel((ch) => ch.deleteQueue(queue)),
          cleanup: () => withChannel((ch) => ch.deleteExchange(exchange)),
        };
      },
    },
  ],
  refusalsNotProduced: [
    "a message over the broker's max_message_size (406): evpub refuses it before sending at amqp.maxPayload; set lower than the broker's, the broker's 406 is PAYLOAD_TOO_LARGE (unit test)",
  ],
});
