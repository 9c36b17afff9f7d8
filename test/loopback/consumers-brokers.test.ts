/**
 * Durable consumers on the real NATS JetStream and RabbitMQ: what docs/loopback-consumers.md says
 * of each. A message whose method threw is not acknowledged; after `app.stop()` and the client's
 * end the next run gets it again (`meta.redelivered`); and the durable subscription outlives the
 * stop, so a message published while the app is down reaches the next run too (the observer
 * does not unsubscribe durable subscriptions: on AMQP that would unbind the durable queue).
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { injectable } from '@loopback/core';
import amqplib from 'amqplib';
import { describe, expect, it } from 'vitest';
import { asConsumer, EvpubBindings, subscribe } from '../../src/loopback';
import type { MessageMeta } from '../../src/pubsub/adapter';
import { createClient } from '../../src/pubsub/registry';
import { captureLogger, consumerApp } from '../helpers/lb-consumers';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

interface BrokerCase {
  name: string;
  /** nats-server 2.9 does not count a nak'ed delivery: `meta.redelivered` stays false there. */
  flagsRedelivery: boolean;
  setup(): Promise<{
    url: string;
    options: Record<string, unknown>;
    topic: string;
    cleanup(group: string): Promise<void>;
  }>;
}

const cases: BrokerCase[] = [
  {
    name: 'NATS JetStream',
    flagsRedelivery: false,
    async setup() {
      const url = await requireService('nats');
      const root = uniqueName('lbc');
      const stream = uniqueName('LBC');
      return {
        url,
        topic: `${root}/orders`,
        options: { nats: { jetstream: true, stream, subjects: [`${root}.>`] } },
        async cleanup() {
          const nc = await connect({ servers: new URL(url).host });
          await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
          await nc.close();
        },
      };
    },
  },
  {
    name: 'RabbitMQ',
    flagsRedelivery: true,
    async setup() {
      const url = await requireService('rabbitmq');
      return {
        url,
        topic: `evpub/test/${uniqueName('orders')}`,
        options: {},
        async cleanup(group: string) {
          const conn = await amqplib.connect(url);
          const ch = await conn.createChannel();
          await ch.deleteQueue(`evpub.${group}`);
          await conn.close();
        },
      };
    },
  },
];

describe.each(cases)('LoopBack consumers, durable on $name', (c) => {
  it('a failed message and one published while stopped both reach the next run', async () => {
    const broker = await c.setup();
    const { url, options, topic } = broker;
    const group = uniqueName('g');
    const { logger } = captureLogger();
    const publisher = createClient(url, options);
    try {
      let attempts = 0;
      @injectable(asConsumer)
      class Down {
        @subscribe(topic, { durable: group })
        onOrder(): void {
          attempts++;
          throw new Error('ledger down');
        }
      }
      const first = consumerApp({ logger });
      const firstClient = createClient(url, options);
      first.app.bind(EvpubBindings.CLIENT).to(firstClient);
      first.app.service(Down);
      await first.app.start();
      await publisher.publish(topic, JSON.stringify({ n: 1 }));
      await waitFor(() => attempts === 1, 'the failing call');
      await first.app.stop();
      await firstClient.end();
      await publisher.publish(topic, JSON.stringify({ n: 2 }));

      const got: { n: number; redelivered: boolean }[] = [];
      @injectable(asConsumer)
      class Up {
        @subscribe(topic, { durable: group })
        onOrder(order: { n: number }, _topic: string, meta: MessageMeta): void {
          got.push({ n: order.n, redelivered: meta.redelivered === true });
        }
      }
      const second = consumerApp({ logger });
      const secondClient = createClient(url, options);
      second.app.bind(EvpubBindings.CLIENT).to(secondClient);
      second.app.service(Up);
      await second.app.start();
      // Within 15 s, well within JetStream's 30 s ack wait: the stop nak'ed it.
      await waitFor(() => got.length === 2, 'both messages in the next run', 15_000);
      expect(got).toEqual([
        { n: 1, redelivered: c.flagsRedelivery },
        { n: 2, redelivered: false },
      ]);
      expect(attempts).toBe(1);
      const observer = await second.observer();
      await waitFor(() => observer.stats()[0]!.handled === 2, 'both acknowledged');
      await second.app.stop();
      await secondClient.end();
      expect((await second.observer()).stats()[0]).toMatchObject({ handled: 2, failed: 0, ackFailed: 0 });
    } finally {
      await publisher.end();
      await broker.cleanup(group);
    }
  });
});
