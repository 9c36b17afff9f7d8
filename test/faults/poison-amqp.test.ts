/**
 * Poison events on RabbitMQ: a user whose topic permissions exclude the vip routing key. The
 * broker closes the channel with 403 ACCESS_REFUSED for that publish alone; the adapter reopens
 * it, the event is dead-lettered and the feed goes on.
 */
import { execFileSync } from 'node:child_process';
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { requireService, uniqueName } from '../helpers/services';
import { poisonCase, poisonRoot } from './poison.suite';

const user = uniqueName('evpub');
const exchange = uniqueName('evpub_poison');
const root = poisonRoot();
let amqpUrl: string;

const rabbitmqctl = (...args: string[]): string =>
  execFileSync('rabbitmqctl', ['-q', ...args], { encoding: 'utf8' });

beforeAll(async () => {
  amqpUrl = await requireService('rabbitmq');
  rabbitmqctl('add_user', user, 'secret');
  rabbitmqctl('set_permissions', '-p', '/', user, '.*', '.*', '.*');
  // Write to every routing key of the exchange but the vip row's.
  rabbitmqctl('set_topic_permissions', '-p', '/', user, exchange, `^(?!${root}\\.orders\\.vip$).*`, '.*');
}, 60_000);
afterAll(async () => {
  try {
    rabbitmqctl('delete_user', user);
  } catch {
    // already gone
  }
  // The exchange the adapter declared for this test.
  const conn = await amqp.connect(amqpUrl);
  const ch = await conn.createChannel();
  await ch.deleteExchange(exchange).catch(() => undefined);
  await conn.close();
});

describe('poison events on AMQP', () => {
  it('a routing key the user may not write (403): dead-lettered, the rows after it arrive', async () => {
    const url = new URL(amqpUrl);
    url.username = user;
    url.password = 'secret';
    const options = { amqp: { exchange } };
    await poisonCase(root, {
      label: 'amqp (topic permissions)',
      url: url.toString(),
      options,
      subscriberUrl: amqpUrl,
      subscriberOptions: options,
      code: ErrorCode.NOT_AUTHORIZED,
    });
  });
});
