/**
 * A seed-style connector, installed under its own npm name in a fixture app
 * (test/fixtures/seed-app/node_modules/loopback-connector-testevents), loaded by name and run
 * unchanged through the legacy DAO wrapper. Its source is a real Redis list per model.
 */
import path from 'node:path';
import Redis from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type {
  ChangeSink,
  ConnectorStatus,
  DataSourceLike,
  EventConnector,
} from '../../src/connectors/contract';
import {
  builtinConnectors,
  initializeConnector,
  type ConnectorRegistry,
} from '../../src/connectors/registry';
import { evpub } from '../../src/app/app';
import { loadConfigFrom } from '../../src/app/config';
import { ErrorCode, EvpubError } from '../../src/errors';
import { createClient } from '../../src/pubsub/registry';
import type { ChangeEvent } from '../../src/events/change-event';
import { createLogger } from '../../src/logger';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const SEED_APP = path.resolve(__dirname, '../fixtures/seed-app');
const logger = createLogger({ level: 'silent' });

/** A sink like the publisher's: a window of `room` events; `release()` acknowledges them. */
class TestSink implements ChangeSink {
  events: ChangeEvent[] = [];
  statuses: ConnectorStatus[] = [];
  failures: { model: string; err: Error }[] = [];
  private inFlight = 0;
  private waiting: (() => void)[] = [];
  constructor(private room = Infinity) {}
  push(event: ChangeEvent): boolean {
    this.events.push(event);
    this.inFlight += 1;
    return this.inFlight < this.room;
  }
  drain(): Promise<void> {
    if (this.inFlight < this.room) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  /** The broker acknowledged everything so far. */
  release(room = this.room): void {
    this.room = room;
    this.inFlight = 0;
    this.waiting.splice(0).forEach((r) => r());
  }
  fail(model: string, err: Error): void {
    this.failures.push({ model, err });
  }
  status(status: ConnectorStatus): void {
    this.statuses.push(status);
  }
  mark(): void {
    // seed-style connectors have no positions to mark
  }
  deadLetter(): boolean {
    // seed-style connectors hand over events only
    return this.inFlight < this.room;
  }
}

let redisUrl: string;
let redis: Redis;
let registry: ConnectorRegistry;
const started: EventConnector[] = [];

beforeAll(async () => {
  redisUrl = await requireService('redis');
  redis = new Redis(redisUrl);
  registry = builtinConnectors();
});
afterEach(async () => {
  await Promise.all(started.splice(0).map((c) => c.stop()));
});
afterAll(async () => {
  await redis.quit();
});

function dataSource(settings: Record<string, unknown>): DataSourceLike {
  return { name: 'events', settings: { connector: 'testevents', ...settings }, logger };
}

async function startSeed(models: string[], sink: ChangeSink, options: { maxBuffered?: number } = {}) {
  const prefix = `${uniqueName('seed')}:`;
  const module = await registry.resolve('testevents', 'datasources.events.connector', SEED_APP);
  const ds = dataSource({ url: redisUrl, prefix });
  const connector = await initializeConnector(module, ds, models, options);
  started.push(connector);
  await connector.start({ models: models.map((name) => ({ name, settings: {}, from: 'now' })), sink });
  return { connector, prefix };
}

describe('a seed-style connector module', () => {
  it('is loaded by its npm name, or LoopBack-style without the prefix, from the app directory', async () => {
    const full = await registry.resolve(
      'loopback-connector-testevents',
      'datasources.db.connector',
      SEED_APP,
    );
    const short = await registry.resolve('testevents', 'datasources.db.connector', SEED_APP);
    expect(typeof full.initialize).toBe('function');
    expect(short).toBe(full);
    expect(registry.locate('testevents', SEED_APP)?.id).toBe('loopback-connector-testevents');
  });

  it('an unknown name is CONNECTOR_NOT_FOUND naming the setting, the built-ins and the package', async () => {
    const err = await registry
      .resolve('cloudantevents', 'datasources.cloud.connector', SEED_APP)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EvpubError);
    expect((err as EvpubError).code).toBe(ErrorCode.CONNECTOR_NOT_FOUND);
    expect((err as EvpubError).message).toMatch(
      /^datasources\.cloud\.connector: unknown connector "cloudantevents"/,
    );
    expect((err as EvpubError).message).toContain('memory, couchdb, cloudant');
    expect((err as EvpubError).message).toContain('`npm install cloudantevents`');
  });

  it('a module without initialize is CONNECTOR_NOT_FOUND naming the setting', async () => {
    const err = await registry
      .resolve('evpub-fixture-not-a-connector', 'datasources.x.connector', SEED_APP)
      .catch((e: unknown) => e);
    expect((err as EvpubError).code).toBe(ErrorCode.CONNECTOR_NOT_FOUND);
    expect((err as EvpubError).message).toBe(
      'datasources.x.connector: module "evpub-fixture-not-a-connector" is not a connector: it does not export initialize(dataSource, callback)',
    );
  });

  it('runs unchanged: documents pushed to the source become ChangeEvents, per model, in order', async () => {
    const sink = new TestSink();
    const { connector, prefix } = await startSeed(['accounts', 'orders'], sink);
    expect(connector.resumable).toBe(false);
    expect(connector.health().state).toBe('streaming');

    const doc = {
      _id: '26dd638e',
      _rev: '1-08fb96a0',
      name: 'James Bond',
      type: 'Demo',
      region: 'Bangalore',
    };
    await redis.rpush(`${prefix}accounts`, JSON.stringify(doc));
    await redis.rpush(`${prefix}accounts`, JSON.stringify({ ...doc, _rev: '2-aa', region: 'London' }));
    await redis.rpush(`${prefix}accounts`, JSON.stringify({ _id: '26dd638e', _rev: '3-bb', _deleted: true }));
    await redis.rpush(`${prefix}orders`, JSON.stringify({ id: 7, total: 12 }));
    await waitFor(() => sink.events.length === 4, 'four events');

    const accounts = sink.events.filter((e) => e.model === 'accounts');
    expect(accounts.map((e) => e.op)).toEqual(['create', 'update', 'delete']);
    expect(accounts[0]).toMatchObject({ datasource: 'events', key: '26dd638e', after: doc, position: null });
    expect(accounts[2]).toMatchObject({ before: { _deleted: true }, after: null });
    expect(new Set(accounts.map((e) => e.id)).size).toBe(3);
    const order = sink.events.find((e) => e.model === 'orders')!;
    expect(order).toMatchObject({ op: 'update', key: '7', after: { id: 7, total: 12 } });
    expect(connector.health().positions).toEqual({ accounts: null, orders: null });
  });

  it("reports the connector's errors as status, and keeps streaming", async () => {
    const sink = new TestSink();
    const { connector, prefix } = await startSeed(['accounts'], sink);
    await redis.rpush(`${prefix}accounts`, 'not json', JSON.stringify({ _id: 'a', _rev: '1-x' }));
    await waitFor(() => sink.events.length === 1, 'the event after the error');
    expect(sink.statuses).toContainEqual(
      expect.objectContaining({ type: 'reconnecting', model: 'accounts' }),
    );
    expect(sink.statuses.at(-1)).toEqual({ type: 'connected', model: 'accounts' });
    expect(sink.failures).toEqual([]);
    expect(connector.health().detail).toContain('not JSON');
  });

  it('buffers in order while the window is full, and hands over on drain', async () => {
    const sink = new TestSink(2);
    const { connector, prefix } = await startSeed(['accounts'], sink);
    const docs = Array.from({ length: 10 }, (_, i) => JSON.stringify({ _id: `d${i}`, _rev: '1-a', i }));
    await redis.rpush(`${prefix}accounts`, ...docs);
    await waitFor(() => connector.health().detail?.includes('accounts: 8 buffered'), 'eight buffered');
    expect(sink.events).toHaveLength(2);
    sink.release(Infinity);
    await waitFor(() => sink.events.length === 10, 'all ten events');
    expect(sink.events.map((e) => e.key)).toEqual(docs.map((_, i) => `d${i}`));
  });

  it('fails the feed, loudly, when the buffer limit is reached', async () => {
    const sink = new TestSink(1);
    const { prefix } = await startSeed(['accounts'], sink, { maxBuffered: 3 });
    const docs = Array.from({ length: 6 }, (_, i) => JSON.stringify({ _id: `d${i}`, _rev: '1-a' }));
    await redis.rpush(`${prefix}accounts`, ...docs);
    await waitFor(() => sink.failures.length === 1, 'the feed to fail');
    expect(sink.failures[0]!.model).toBe('accounts');
    expect(sink.failures[0]!.err).toBeInstanceOf(EvpubError);
    expect((sink.failures[0]!.err as EvpubError).code).toBe(ErrorCode.SOURCE_FAILED);
    expect(sink.failures[0]!.err.message).toContain('cannot be paused');
    expect(sink.failures[0]!.err.message).toContain('limit 3');
  });

  it('stop() stops the source and hands over what was buffered', async () => {
    const sink = new TestSink(1);
    const { connector, prefix } = await startSeed(['accounts'], sink);
    await redis.rpush(`${prefix}accounts`, ...['a', 'b', 'c'].map((id) => JSON.stringify({ _id: id })));
    await waitFor(() => connector.health().detail?.includes('2 buffered'), 'two buffered');
    await connector.stop();
    expect(sink.events.map((e) => e.key)).toEqual(['a', 'b', 'c']);
    expect(connector.health().state).toBe('stopped');
    await redis.rpush(`${prefix}accounts`, JSON.stringify({ _id: 'late' }));
    expect(await redis.llen(`${prefix}accounts`)).toBe(1); // nobody reads it any more
    await connector.stop(); // twice is harmless
  });
});

describe('initializeConnector', () => {
  it('accepts a promise-returning initialize and returns an EventConnector as is', async () => {
    const own: EventConnector = {
      name: 'own',
      resumable: true,
      start: async () => undefined,
      stop: async () => undefined,
      health: () => ({ state: 'idle' }),
    };
    const ds = dataSource({});
    const connector = await initializeConnector(
      {
        initialize: async (d) => {
          d.connector = own;
        },
      },
      ds,
      [],
    );
    expect(connector).toBe(own);
  });

  it('a callback error is SOURCE_FAILED naming the datasource', async () => {
    const err = await initializeConnector(
      {
        initialize: (_d, cb) => {
          setImmediate(() => cb?.(new Error('auth failed for http://u:hunter2@h')));
        },
      },
      dataSource({}),
      [],
    ).then(
      () => {
        throw new Error('expected a rejection');
      },
      (e: unknown) => e as EvpubError,
    );
    expect(err.code).toBe(ErrorCode.SOURCE_FAILED);
    expect(err.message).toContain('datasource "events": connector "testevents" failed to initialize');
    expect(err.message).toContain('http://u:***@h');
    expect(err.message).not.toContain('hunter2');
  });

  it('a callback never called is a SOURCE_FAILED timeout', async () => {
    const err = await initializeConnector({ initialize: (_d, _cb) => undefined }, dataSource({}), [], {
      timeoutMs: 50,
    }).then(
      () => {
        throw new Error('expected a rejection');
      },
      (e: unknown) => e as EvpubError,
    );
    expect(err.code).toBe(ErrorCode.SOURCE_FAILED);
    expect(err.message).toContain('did not call back within 50 ms');
  });

  it('a connector that is neither contract is CONNECTOR_NOT_FOUND', async () => {
    const err = await initializeConnector(
      {
        initialize: (d, cb) => {
          d.connector = { all: () => [] };
          cb?.();
        },
      },
      dataSource({}),
      [],
    ).then(
      () => {
        throw new Error('expected a rejection');
      },
      (e: unknown) => e as EvpubError,
    );
    expect(err.code).toBe(ErrorCode.CONNECTOR_NOT_FOUND);
    expect(err.message).toMatch(/^datasources\.events\.connector: "testevents" is not an event connector/);
  });
});

describe("the seed's app, in LoopBack's layout, end to end", () => {
  it('publishes a document pushed to the source to MQTT with the legacy envelope', async () => {
    const mqttUrl = await requireService('mosquitto');
    const prefix = `${uniqueName('seed')}:`;
    const topic = `/v1/${uniqueName('subutest')}`;
    const loaded = loadConfigFrom({
      dir: SEED_APP,
      env: { REDIS_URL: redisUrl, MQTT_URL: mqttUrl, TESTEVENTS_PREFIX: prefix, SEED_TOPIC: topic },
    });
    expect(loaded.layout).toBe('loopback');
    expect(loaded.dir).toBe(path.join(SEED_APP, 'server'));

    const subscriber = createClient(mqttUrl);
    const received: string[] = [];
    subscriber.on('message', (t: string, payload: Buffer) => {
      if (t === topic) received.push(payload.toString());
    });
    await subscriber.subscribe(topic);
    const app = evpub({ config: loaded.config, cwd: loaded.dir, logger });
    try {
      await app.start();
      const doc = {
        _id: '26dd638e',
        _rev: '1-08fb96a0',
        name: 'James Bond',
        type: 'Demo',
        region: 'Bangalore',
      };
      await redis.rpush(`${prefix}accounts`, JSON.stringify(doc));
      await waitFor(() => received.length === 1, 'the message on MQTT');
      expect(received[0]).toBe(JSON.stringify({ model: 'accounts', message: doc }));
    } finally {
      await app.stop();
      await subscriber.end();
    }
  });
});
