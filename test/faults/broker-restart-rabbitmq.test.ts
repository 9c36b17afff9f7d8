/**
 * Fault matrix: a private RabbitMQ node (test/helpers/rabbitmq.ts: its own node name, ports and
 * data; the shared broker is never touched) stopped and started again while the publisher
 * streams to it; the test's durable queue (`evpub.<name>`, persistent messages) keeps what the
 * broker confirmed through the restart. See broker-fault.ts for the case and what it asserts.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { startPrivateRabbitMq } from '../helpers/rabbitmq';
import { uniqueName } from '../helpers/services';
import { runBrokerFault } from './broker-fault';

let broker: PrivateBroker;
beforeAll(async () => {
  broker = await startPrivateRabbitMq();
}, 120_000);
afterAll(async () => {
  await broker?.close();
}, 60_000);

describe('fault matrix: broker restarted mid-stream (rabbitmq)', () => {
  it(
    'a durable queue gets every change through a restart, in order per key',
    { timeout: 180_000 },
    async () => {
      await runBrokerFault({
        fault: 'broker restarted',
        broker: 'amqp (rabbitmq)',
        // The node takes seconds to stop and start, so the feed retries several times meanwhile
        // (a publish that timed out while offline is not sent again: outage-duplicates.test.ts).
        note: 'durable queue',
        publishUrl: broker.url,
        subscribeUrl: broker.url,
        subscribe: { durable: uniqueName('q') },
        down: () => broker.stop(),
        up: () => broker.start(),
        settleMs: 60_000,
      });
    },
  );
});
