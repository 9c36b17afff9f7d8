/**
 * The extension points of EvpubComponent: a third-party event connector in the seed's shape
 * (test/fixtures/seed-app/node_modules/loopback-connector-testevents: CommonJS, a
 * DataAccessObject with start/stop, a Redis list per model), registered as an extension of
 * EvpubBindings.CONNECTORS, is found by its name and its events reach Mosquitto; a broker
 * adapter registered as an extension of EvpubBindings.ADAPTERS serves its URL scheme for the
 * feeds and for the bound CLIENT.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { Application, createBindingFromClass, injectable } from '@loopback/core';
import { Entity, juggler, model, property, RepositoryMixin } from '@loopback/repository';
import Redis from 'ioredis';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ConnectorModule } from '../../src/connectors/contract';
import { ErrorCode, EvpubError } from '../../src/errors';
import {
  asEventConnector,
  brokerAdapter,
  EvpubBindings,
  EvpubComponent,
  type EventConnectorExtension,
} from '../../src/loopback/index';
import { MemoryAdapter } from '../../src/pubsub/adapters/memory';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const SEED_APP = path.resolve(__dirname, '../fixtures/seed-app');
const requireFromSeed = createRequire(path.join(SEED_APP, 'package.json'));

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('redis');
  await requireService('mosquitto');
});

class TestApp extends RepositoryMixin(Application) {}

/** How a connector package would register itself: an injectable class carrying the template. */
@injectable(asEventConnector)
class TestEventsConnector implements EventConnectorExtension {
  readonly name = 'testevents';
  readonly module = requireFromSeed('loopback-connector-testevents') as ConnectorModule;
}

function seedApp(prefix: string, topic: string, withExtension: boolean): TestApp {
  class SeedDataSource extends juggler.DataSource {
    static dataSourceName = 'seed';
    static readonly defaultConfig = {
      name: 'seed',
      connector: 'testevents',
      url: SERVICES.redis.url,
      prefix,
    };
  }
  @model({ name: 'orders', settings: { evpub: { dataSource: 'seed', topic, envelope: 'cloudevents' } } })
  class Order extends Entity {
    @property({ type: 'string', id: true }) id!: string;
  }
  const app = new TestApp();
  app.component(EvpubComponent);
  app.configure(EvpubBindings.COMPONENT).to({
    brokers: { default: { url: SERVICES.mosquitto.url } },
    checkpoints: { store: 'memory' },
    logger: quietLogger(),
    stopTimeout: 5000,
  });
  if (withExtension) app.add(createBindingFromClass(TestEventsConnector));
  app.dataSource(SeedDataSource);
  app.model(Order);
  cleanups.push(() => (app.state === 'starting' ? undefined : app.stop()));
  return app;
}

describe('EvpubComponent extension points', () => {
  it(
    'a seed-style connector package registered as an extension is found and used',
    { timeout: 30_000 },
    async () => {
      const prefix = `${uniqueName('testevents')}:`;
      const topic = `evpub/lbtest/${uniqueName('x')}/{model}/{op}`;
      const redis = new Redis(SERVICES.redis.url);
      cleanups.push(async () => {
        await redis.del(`${prefix}orders`);
        redis.disconnect();
      });
      const sub = createClient(SERVICES.mosquitto.url, { logger: quietLogger() });
      cleanups.push(() => sub.end());
      const received: Record<string, unknown>[] = [];
      sub.on('message', (_topic, payload) =>
        received.push(JSON.parse(payload.toString()) as Record<string, unknown>),
      );
      await sub.subscribe(topic.replace('/{model}/{op}', '/#'));

      // Not installed where the app resolves npm connectors: without the extension it is unknown.
      const without = seedApp(prefix, topic, false);
      const err: unknown = await without.start().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(EvpubError);
      expect((err as EvpubError).code).toBe(ErrorCode.CONFIG_INVALID);
      expect((err as EvpubError).message).toContain('datasource "seed" is not an event datasource');

      const app = seedApp(prefix, topic, true);
      await app.start();
      expect(Object.keys((await app.get(EvpubBindings.STATUS)).feeds)).toEqual(['seed/orders']);
      await redis.rpush(`${prefix}orders`, JSON.stringify({ _id: 'o1', _rev: '1-a', total: 5 }));
      await redis.rpush(`${prefix}orders`, JSON.stringify({ _id: 'o1', _rev: '2-b', total: 7 }));
      await waitFor(() => received.length >= 2, 'both changes on MQTT');
      expect(received.map((e) => [e.type, e.subject])).toEqual([
        ['evpub.orders.create', 'o1'],
        ['evpub.orders.update', 'o1'],
      ]);
      expect(received[0]).toMatchObject({ source: '/evpub/seed/orders' });
      await app.stop();
    },
  );

  it('a broker adapter registered as an extension serves its scheme for the feeds and the CLIENT', async () => {
    const hub = uniqueName('hub');
    const app = new TestApp();
    app.component(EvpubComponent);
    app.add(brokerAdapter(['lbmem'], MemoryAdapter));
    app.configure(EvpubBindings.COMPONENT).to({
      brokers: { default: { url: `lbmem://${hub}` } },
      datasources: { mem: { connector: 'memory' } },
      models: { notes: { dataSource: 'mem' } },
      checkpoints: { store: 'memory' },
      logger: quietLogger(),
    });
    cleanups.push(() => app.stop());
    // The same in-process broker, through the built-in scheme.
    const sub = createClient(`memory://${hub}`, { logger: quietLogger() });
    cleanups.push(() => sub.end());
    const topics: string[] = [];
    sub.on('message', (topic) => topics.push(topic));
    await sub.subscribe('#');

    await app.start();
    const client = await app.get(EvpubBindings.CLIENT);
    await client.publish('lb/notes', 'hi');
    await waitFor(() => topics.includes('lb/notes'), 'the note through the extension adapter');
    expect((await app.get(EvpubBindings.STATUS)).brokers).toHaveProperty('default');
    await app.stop();
    expect(client.state).toBe('closed');
  });
});
