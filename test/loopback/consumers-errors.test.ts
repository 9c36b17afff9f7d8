/**
 * Bad input to `@subscribe` consumers: each is an EvpubError naming the class, the method and
 * the key, at class definition (pattern, options) or at `app.start()` (bindings, brokers), before
 * anything is left subscribed. Plus a consumer on a named broker of the configuration (a client
 * of the observer's own).
 */
import { Application, inject, injectable } from '@loopback/core';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, EvpubError } from '../../src/errors';
import { asConsumer, EvpubBindings, subscribe } from '../../src/loopback';
import { overlaps } from '../../src/loopback/consumers/observer';
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import { captureLogger, consumerApp } from '../helpers/lb-consumers';
import { requireService, uniqueName } from '../helpers/services';
import { deferred, waitFor } from '../helpers/wait';

let mqttUrl: string;
let redisUrl: string;
const toEnd: Client[] = [];
const toStop: Application[] = [];

beforeAll(async () => {
  mqttUrl = await requireService('mosquitto');
  redisUrl = await requireService('redis');
});

afterEach(async () => {
  for (const app of toStop.splice(0)) await app.stop();
  for (const c of toEnd.splice(0)) await c.end();
});

function mqtt(): Client {
  const c = createClient(mqttUrl);
  toEnd.push(c);
  return c;
}

function thrown(fn: () => unknown): EvpubError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EvpubError);
    return err as EvpubError;
  }
  throw new Error('expected an EvpubError');
}

async function rejected(p: Promise<unknown>): Promise<EvpubError> {
  const err: unknown = await p.then(
    () => new Error('expected app.start() to reject'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EvpubError);
  return err as EvpubError;
}

describe('@subscribe: bad input at class definition', () => {
  it('a bad pattern names the class, the method and the key', () => {
    const err = thrown(() => {
      class Orders {
        @subscribe('orders/#/created')
        on(): void {}
      }
      return Orders;
    });
    expect(err.code).toBe(ErrorCode.CONFIG_INVALID);
    expect(err.message).toMatch(
      /^@subscribe on Orders\.on: pattern: .*"#" must be a whole level and the last one/,
    );
  });

  it('an unknown option, a bad value, and ack without durable', () => {
    const cases: [() => unknown, RegExp][] = [
      [
        () => {
          class A {
            @subscribe('a', { durabel: 'x' } as never)
            on(): void {}
          }
          return A;
        },
        /^@subscribe on A\.on: durabel: unknown option; allowed: durable, qos, ack, from, broker, decode, concurrency/,
      ],
      [
        () => {
          class B {
            @subscribe('b', { decode: 'xml' } as never)
            on(): void {}
          }
          return B;
        },
        /^@subscribe on B\.on: decode: must be one of "json", "cloudevent", "raw", got "xml"/,
      ],
      [
        () => {
          class C {
            @subscribe('c', { ack: 'manual' })
            on(): void {}
          }
          return C;
        },
        /^@subscribe on C\.on: ack: only applies with durable/,
      ],
      [
        () => {
          class D {
            @subscribe('d', { concurrency: 0 })
            on(): void {}
          }
          return D;
        },
        /^@subscribe on D\.on: concurrency: must be an integer of 1 or more/,
      ],
    ];
    for (const [define, message] of cases) {
      const err = thrown(define);
      expect(err.code).toBe(ErrorCode.CONFIG_INVALID);
      expect(err.message).toMatch(message);
    }
  });

  it('overlapping patterns are told apart from disjoint ones', () => {
    expect(overlaps('orders/#', 'orders/+/created')).toBe(true);
    expect(overlaps('orders/#', 'orders')).toBe(true);
    expect(overlaps('orders/+/created', 'orders/42/+')).toBe(true);
    expect(overlaps('orders/+/created', 'orders/+/deleted')).toBe(false);
    expect(overlaps('orders/+', 'orders/+/created')).toBe(false);
    expect(overlaps('a/b', 'a/b')).toBe(true);
  });
});

describe('consumers: bad input at app.start()', () => {
  it('a class with @subscribe bound but not as a consumer', async () => {
    class Forgotten {
      @subscribe('x/y')
      onY(): void {}
    }
    const { logger } = captureLogger();
    const { app } = consumerApp({ logger });
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(Forgotten);
    const err = await rejected(app.start());
    expect(err.code).toBe(ErrorCode.CONFIG_INVALID);
    expect(err.message).toContain(
      'Forgotten.onY: services.Forgotten: @subscribe on a class not bound as a consumer',
    );
    expect(err.message).toContain('@injectable(asConsumer)');
  });

  it('a consumer whose injection cannot be resolved', async () => {
    @injectable(asConsumer)
    class Needy {
      constructor(@inject('services.Missing') readonly missing: unknown) {}

      @subscribe('x/+')
      onX(): void {}
    }
    const { logger } = captureLogger();
    const { app } = consumerApp({ logger });
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(Needy);
    const err = await rejected(app.start());
    expect(err.code).toBe(ErrorCode.CONFIG_INVALID);
    expect(err.message).toMatch(
      /^Needy: services\.Needy: the consumer could not be resolved from the context: .*services\.Missing/,
    );
  });

  it('a consumer without a @subscribe method', async () => {
    @injectable(asConsumer)
    class Empty {
      on(): void {}
    }
    const { logger } = captureLogger();
    const { app } = consumerApp({ logger });
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(Empty);
    const err = await rejected(app.start());
    expect(err.message).toMatch(
      /^Empty: services\.Empty: bound as a consumer .* but has no @subscribe method/,
    );
  });

  it('an unknown broker name lists the configured ones; no client and no config names the binding key', async () => {
    @injectable(asConsumer)
    class Analytics {
      @subscribe('x/+', { broker: 'analytics' })
      onX(): void {}
    }
    const { logger } = captureLogger();
    const one = consumerApp({ logger });
    one.app.bind(EvpubBindings.CLIENT).to(mqtt());
    one.app
      .bind(EvpubBindings.CONFIG)
      .to({ brokers: { default: { url: mqttUrl }, audit: { url: redisUrl } } });
    one.app.service(Analytics);
    const err = await rejected(one.app.start());
    expect(err.code).toBe(ErrorCode.CONFIG_INVALID);
    expect(err.message).toBe(
      'Analytics.onX: broker: unknown broker "analytics"; the configuration\'s brokers are "default", "audit", or give a broker URL',
    );

    @injectable(asConsumer)
    class Plain {
      @subscribe('x/+')
      onX(): void {}
    }
    const two = consumerApp({ logger });
    two.app.service(Plain);
    const err2 = await rejected(two.app.start());
    expect(err2.message).toBe(
      'Plain.onX: broker: no client for the default broker: evpub.client is not bound (add EvpubComponent, or bind a Client there)',
    );
  });

  it('two methods whose patterns match the same topics on one broker', async () => {
    @injectable(asConsumer)
    class Billing {
      @subscribe('orders/+/created')
      onCreated(): void {}
    }
    @injectable(asConsumer)
    class Audit {
      @subscribe('orders/#')
      onAny(): void {}
    }
    const { logger } = captureLogger();
    const { app } = consumerApp({ logger });
    app.bind(EvpubBindings.CLIENT).to(mqtt());
    app.service(Billing);
    app.service(Audit);
    const err = await rejected(app.start());
    expect(err.message).toMatch(
      /^(Audit\.onAny|Billing\.onCreated): pattern: "orders\/(#|\+\/created)" and "orders\/(#|\+\/created)" \((Audit\.onAny|Billing\.onCreated)\) on broker "default" match the same topics/,
    );
  });

  it('a subscribe the broker refuses names the method; what was subscribed before is undone', async () => {
    const base = `evpub/test/${uniqueName('undo')}`;
    const seen: string[] = [];
    @injectable(asConsumer)
    class First {
      @subscribe(`${base}/a`)
      onA(_: unknown, topic: string): void {
        seen.push(topic);
      }
    }
    @injectable(asConsumer)
    class Second {
      // Redis Streams refuse wildcards (a stream is a key).
      @subscribe(`${base}/+`, { broker: 'streams', durable: 'g' })
      onB(): void {}
    }
    const { logger } = captureLogger();
    const { app } = consumerApp({ logger });
    const client = mqtt();
    app.bind(EvpubBindings.CLIENT).to(client);
    app.bind(EvpubBindings.CONFIG).to({
      brokers: {
        default: { url: mqttUrl },
        streams: { url: redisUrl, options: { redis: { mode: 'streams' } } },
      },
    });
    app.service(First);
    app.service(Second);
    const err = await rejected(app.start());
    expect(err.code).toBe(ErrorCode.INVALID_TOPIC);
    expect(err.message).toContain(
      `Second.onB (binding "services.Second"): subscribe to "${base}/+" on broker "streams" failed`,
    );

    // First's pattern was unsubscribed: a message to it is not handled, and the client's own
    // sentinel subscription (published after it by the same publisher) proves it went out.
    const sentinel = deferred();
    client.on('message', (topic) => {
      if (topic === `${base}/sentinel`) sentinel.resolve();
    });
    await client.subscribe(`${base}/sentinel`);
    const publisher = mqtt();
    await publisher.publish(`${base}/a`, '{}');
    await publisher.publish(`${base}/sentinel`, '{}');
    await sentinel.promise;
    expect(seen).toEqual([]);
  });
});

describe('consumers on a named broker of the configuration', () => {
  it('subscribe through a client of its own, beside the default client; nothing is handled after stop', async () => {
    const base = `evpub/test/${uniqueName('named')}`;
    const got: string[] = [];
    @injectable(asConsumer)
    class Both {
      @subscribe(`${base}/mqtt`)
      onMqtt(_: unknown, topic: string): void {
        got.push(`default ${topic}`);
      }

      @subscribe(`${base}/mqtt`, { broker: 'second' })
      onSecond(_: unknown, topic: string): void {
        got.push(`second ${topic}`);
      }
    }
    const { logger } = captureLogger();
    const { app, observer } = consumerApp({ logger });
    const client = mqtt();
    app.bind(EvpubBindings.CLIENT).to(client);
    app.bind(EvpubBindings.CONFIG).to({ brokers: { default: { url: mqttUrl }, second: { url: mqttUrl } } });
    app.service(Both);
    await app.start();
    const publisher = mqtt();
    await publisher.publish(`${base}/mqtt`, '{}');
    await waitFor(() => got.length === 2, 'both methods');
    expect(got.sort()).toEqual([`default ${base}/mqtt`, `second ${base}/mqtt`]);
    expect(
      (await observer())
        .stats()
        .map((s) => s.broker)
        .sort(),
    ).toEqual(['default', 'second']);

    await app.stop();
    const sentinel = deferred();
    client.on('message', (topic) => {
      if (topic === `${base}/sentinel`) sentinel.resolve();
    });
    await client.subscribe(`${base}/sentinel`);
    await publisher.publish(`${base}/mqtt`, '{}');
    await publisher.publish(`${base}/sentinel`, '{}');
    await sentinel.promise;
    expect(got).toHaveLength(2);
  });
});
