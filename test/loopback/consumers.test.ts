/**
 * `@subscribe` consumers in a real LoopBack 4 application, on the real Mosquitto (MQTT 5, QoS 1):
 * a consumer gets its own injections and the messages another client publishes; `app.stop()`
 * waits for a running handler and unsubscribes; a throwing handler is logged and counted.
 */
import { Application, inject, injectable } from '@loopback/core';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  asConsumer,
  EvpubBindings,
  EvpubConsumersObserver,
  subscribe,
  type CloudEvent,
} from '../../src/loopback';
import type { MessageMeta } from '../../src/pubsub/adapter';
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import { captureLogger, consumerApp } from '../helpers/lb-consumers';
import { requireService, uniqueName } from '../helpers/services';
import { deferred, waitFor } from '../helpers/wait';

let url: string;
const toEnd: Client[] = [];
const toStop: Application[] = [];

beforeAll(async () => {
  url = await requireService('mosquitto');
});

afterEach(async () => {
  for (const app of toStop.splice(0)) await app.stop();
  for (const c of toEnd.splice(0)) await c.end();
});

function mqtt(): Client {
  const c = createClient(url, { mqtt: { protocolVersion: 5 } });
  toEnd.push(c);
  return c;
}

class Ledger {
  readonly entries: { order: unknown; topic: string; pattern?: string }[] = [];
}

describe('LoopBack consumers on MQTT', () => {
  it('a @subscribe method receives what another client publishes, with its own injections', async () => {
    const base = `evpub/test/${uniqueName('orders')}`;

    @injectable(asConsumer)
    class OrderConsumer {
      constructor(@inject('services.Ledger') private readonly ledger: Ledger) {}

      @subscribe(`${base}/+/created`, { qos: 1 })
      onCreated(order: unknown, topic: string, meta: MessageMeta): void {
        this.ledger.entries.push({ order, topic, pattern: meta.pattern });
      }
    }

    const { logger } = captureLogger();
    const { app, observer } = consumerApp({ logger });
    const ledger = new Ledger();
    app.bind('services.Ledger').to(ledger);
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(OrderConsumer);
    await app.start();
    toStop.push(app);

    const publisher = mqtt();
    await publisher.publish(`${base}/41/updated`, JSON.stringify({ id: 41 }));
    await publisher.publish(`${base}/42/created`, JSON.stringify({ id: 42, total: 9.5 }));
    await publisher.publish(`${base}/43/created`, JSON.stringify({ id: 43, total: 1 }));

    await waitFor(() => ledger.entries.length >= 2, 'two orders handled');
    expect(ledger.entries).toEqual([
      { order: { id: 42, total: 9.5 }, topic: `${base}/42/created`, pattern: `${base}/+/created` },
      { order: { id: 43, total: 1 }, topic: `${base}/43/created`, pattern: `${base}/+/created` },
    ]);
    const [stats] = (await observer()).stats();
    expect(stats).toMatchObject({
      consumer: 'OrderConsumer.onCreated',
      binding: 'services.OrderConsumer',
      pattern: `${base}/+/created`,
      broker: 'default',
      received: 2,
      handled: 2,
      failed: 0,
    });
  });

  it('decode: cloudevent reads a binary-mode CloudEvent (MQTT 5 user properties) and a structured one; raw gives the Buffer', async () => {
    const base = `evpub/test/${uniqueName('ce')}`;
    const events: CloudEvent[] = [];
    const raws: Buffer[] = [];

    @injectable(asConsumer)
    class Audit {
      @subscribe(`${base}/ce/#`, { decode: 'cloudevent' })
      onEvent(event: CloudEvent): void {
        events.push(event);
      }

      @subscribe(`${base}/raw`, { decode: 'raw' })
      onRaw(payload: Buffer): void {
        raws.push(payload);
      }
    }

    const { logger } = captureLogger();
    const { app } = consumerApp({ logger });
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(Audit);
    await app.start();
    toStop.push(app);

    const publisher = mqtt();
    await publisher.publish(
      `${base}/ce/a`,
      JSON.stringify({
        specversion: '1.0',
        id: 'e1',
        source: '/evpub/db/accounts',
        type: 'evpub.accounts.create',
        data: { op: 'create', key: '1' },
      }),
      { contentType: 'application/cloudevents+json' },
    );
    await publisher.publish(`${base}/ce/b`, JSON.stringify({ op: 'update', key: '2' }), {
      contentType: 'application/json',
      headers: {
        specversion: '1.0',
        id: 'e2',
        source: '/evpub/db/accounts',
        type: 'evpub.accounts.update',
        subject: 'caf%C3%A9',
      },
    });
    await publisher.publish(`${base}/raw`, Buffer.from([0, 255, 1]));

    await waitFor(() => events.length >= 2 && raws.length >= 1, 'two CloudEvents and a raw payload');
    expect(events[0]).toMatchObject({
      id: 'e1',
      type: 'evpub.accounts.create',
      data: { op: 'create', key: '1' },
    });
    expect(events[1]).toMatchObject({
      specversion: '1.0',
      id: 'e2',
      type: 'evpub.accounts.update',
      subject: 'café',
      datacontenttype: 'application/json',
      data: { op: 'update', key: '2' },
    });
    expect(raws[0]).toEqual(Buffer.from([0, 255, 1]));
  });

  it('a handler that throws is logged with its class, method and topic, counted, and the next message is handled', async () => {
    const base = `evpub/test/${uniqueName('fail')}`;
    const seen: number[] = [];

    @injectable(asConsumer)
    class Fragile {
      @subscribe(`${base}/+`)
      onMessage(body: { n: number }): void {
        if (body.n === 1) throw new Error('cannot handle order 1');
        seen.push(body.n);
      }
    }

    const { logger, lines } = captureLogger();
    const { app, observer } = consumerApp({ logger });
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(Fragile);
    await app.start();
    toStop.push(app);

    const publisher = mqtt();
    await publisher.publish(`${base}/a`, JSON.stringify({ n: 1 }));
    await publisher.publish(`${base}/a`, 'not json');
    await publisher.publish(`${base}/b`, JSON.stringify({ n: 2 }));
    await waitFor(() => seen.length === 1, 'the next message handled');
    expect(seen).toEqual([2]);

    const failures = lines.filter((l) => l.level === 50 && l.consumer === 'Fragile.onMessage');
    expect(failures).toHaveLength(2);
    expect(failures[0]).toMatchObject({
      topic: `${base}/a`,
      binding: 'services.Fragile',
      pattern: `${base}/+`,
    });
    expect(JSON.stringify(failures[0]!.err)).toContain('cannot handle order 1');
    expect(failures[0]!.msg).toContain('not delivered again');
    expect(JSON.stringify(failures[1]!.err)).toContain('EVPUB_MALFORMED_INPUT');
    expect((await observer()).stats()[0]).toMatchObject({ received: 3, handled: 1, failed: 2 });
  });

  it('app.stop() waits for a running handler, then no message is handled: the pattern was unsubscribed', async () => {
    const base = `evpub/test/${uniqueName('stop')}`;
    const started = deferred();
    const release = deferred();
    const order: string[] = [];

    @injectable(asConsumer)
    class Slow {
      @subscribe(`${base}/jobs`)
      async onJob(body: { n: number }): Promise<void> {
        order.push(`begin ${body.n}`);
        if (body.n === 1) {
          started.resolve();
          await release.promise;
        }
        order.push(`end ${body.n}`);
      }
    }

    const { logger, lines } = captureLogger();
    const { app, observer } = consumerApp({ logger });
    const client = mqtt();
    app.bind(EvpubBindings.CLIENT).to(client);
    app.service(Slow);
    await app.start();

    const publisher = mqtt();
    await publisher.publish(`${base}/jobs`, JSON.stringify({ n: 1 }));
    await started.promise;

    let stopped = false;
    const stopping = app.stop().then(() => {
      stopped = true;
      order.push('stopped');
    });
    // The stop unsubscribed and now waits on the handler.
    await waitFor(
      () => lines.some((l) => /waiting for the consumers still handling/.test(l.msg)),
      'the stop to wait',
    );
    expect(stopped).toBe(false);
    release.resolve();
    await stopping;
    expect(order).toEqual(['begin 1', 'end 1', 'stopped']);

    // After stop: the client (still open) gets a sentinel on another topic, published after the
    // job by the same publisher; had the job pattern still been subscribed, the job would come first.
    const sentinel = deferred();
    const afterStop: string[] = [];
    client.on('message', (topic) => {
      afterStop.push(topic);
      if (topic === `${base}/sentinel`) sentinel.resolve();
    });
    await client.subscribe(`${base}/sentinel`);
    await publisher.publish(`${base}/jobs`, JSON.stringify({ n: 2 }));
    await publisher.publish(`${base}/sentinel`, 'x');
    await sentinel.promise;
    expect(afterStop).toEqual([`${base}/sentinel`]);
    expect(order).not.toContain('begin 2');
    expect((await observer()).stats()[0]).toMatchObject({ received: 1, handled: 1, running: 0 });
  });

  it('restarts after app.stop(); bound twice, the observer still handles each message once', async () => {
    const base = `evpub/test/${uniqueName('twice')}`;
    const got: string[] = [];

    @injectable(asConsumer)
    class Counter {
      @subscribe(`${base}/+`, { decode: 'raw' })
      on(payload: Buffer): void {
        got.push(payload.toString());
      }
    }

    const { logger } = captureLogger();
    const { app } = consumerApp({ logger });
    app.lifeCycleObserver(EvpubConsumersObserver, 'evpub.consumersAgain');
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(Counter);
    await app.start();
    toStop.push(app);
    const publisher = mqtt();
    const send = async (...bodies: string[]) => {
      for (const b of bodies) await publisher.publish(`${base}/x`, b);
    };
    await send('a', 'end1');
    await waitFor(() => got.includes('end1'), 'the first run');
    await app.stop();
    await app.start();
    await send('b', 'end2');
    await waitFor(() => got.includes('end2'), 'the second run');
    expect(got).toEqual(['a', 'end1', 'b', 'end2']);
  });

  it('a handler still running at stopTimeoutMs does not hold app.stop() for ever; it is logged', async () => {
    const base = `evpub/test/${uniqueName('hang')}`;
    const started = deferred();

    @injectable(asConsumer)
    class Hanging {
      @subscribe(`${base}/x`)
      async onX(): Promise<void> {
        started.resolve();
        await new Promise(() => undefined);
      }
    }

    const { logger, lines } = captureLogger();
    const { app } = consumerApp({ logger, stopTimeoutMs: 300 });
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(Hanging);
    await app.start();
    const publisher = mqtt();
    await publisher.publish(`${base}/x`, '{}');
    await started.promise;
    await app.stop();
    const late = lines.find((l) => l.level === 40 && /still running after stopTimeoutMs/.test(l.msg));
    expect(late?.msg).toContain('Hanging.onX');
  });
});
