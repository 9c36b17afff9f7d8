/**
 * Fault matrix: a private nats-server (JetStream, file store) stopped and started again while
 * the publisher streams to it in JetStream mode; the test's durable consumer reads through the
 * restart (the stream and the consumer are on disk). Core NATS keeps nothing for a subscriber
 * that is away, so only JetStream can promise the subscriber everything. See broker-fault.ts for
 * the case and what it asserts.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { privateNatsServer } from '../helpers/nats-server';
import { uniqueName } from '../helpers/services';
import { runBrokerFault } from './broker-fault';

let server: PrivateBroker;
beforeAll(async () => {
  server = await privateNatsServer();
});
afterAll(async () => {
  await server?.close();
});

describe('fault matrix: broker restarted mid-stream (nats jetstream)', () => {
  it(
    'a durable consumer gets every change through a restart, in order per key',
    { timeout: 120_000 },
    async () => {
      await runBrokerFault({
        fault: 'broker restarted',
        broker: 'nats jetstream',
        note: 'durable consumer',
        publishUrl: server.url,
        subscribeUrl: server.url,
        options: { nats: { jetstream: true } },
        subscribe: { durable: uniqueName('d'), from: 'earliest' },
        down: () => server.stop(),
        up: () => server.start(),
      });
    },
  );
});
