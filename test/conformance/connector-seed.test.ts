/**
 * The event connector conformance suite for a seed-style connector (a DataAccessObject with
 * start(listenerEmitter, cb) / stop(cb)), run through the registry and the legacy wrapper: the
 * fixture app's loopback-connector-testevents, whose source is a real Redis list per model.
 * Each connector gets its own list prefix and every change is pushed onto the list of every
 * connector made for the test, so that connectors do not take changes from each other's lists.
 * Seed-style connectors give no positions, decide themselves where reading starts (this one:
 * whatever its list holds, so `'now'` does not apply: `history: false`), and cannot pause their
 * source: they buffer, and hand the buffer over on stop.
 */
import path from 'node:path';
import { Redis } from 'ioredis';
import type { EventConnector } from '../../src/connectors/contract';
import { builtinConnectors, initializeConnector } from '../../src/connectors/registry';
import { createLogger } from '../../src/logger';
import { requireService, uniqueName } from '../helpers/services';
import { connectorConformance } from './connector.suite';

const SEED_APP = path.resolve(__dirname, '../fixtures/seed-app');
const logger = createLogger({ level: 'silent' });
const run = uniqueName('seed');
const prefixes: string[] = [];
let url: string;
let redis: Redis;

connectorConformance({
  name: 'seed-style (testevents over Redis)',
  setup: async () => {
    url = await requireService('redis');
    redis = new Redis(url);
  },
  teardown: async () => {
    const keys = await redis.keys(`${run}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  },
  connector: async (): Promise<EventConnector> => {
    const prefix = `${run}:${prefixes.length}:`;
    prefixes.push(prefix);
    const module = await builtinConnectors().resolve('testevents', 'datasources.seed.connector', SEED_APP);
    const dataSource = { name: 'seed', settings: { connector: 'testevents', url, prefix }, logger };
    return initializeConnector(module, dataSource, []);
  },
  model: async () => {
    const name = uniqueName('m');
    const revs = new Map<string, number>();
    const change = async (key: string, doc: Record<string, unknown>): Promise<void> => {
      const rev = (revs.get(key) ?? 0) + 1;
      revs.set(key, rev);
      const message = JSON.stringify({ _id: key, _rev: `${rev}-${run}`, ...doc });
      for (const prefix of prefixes) await redis.rpush(`${prefix}${name}`, message);
    };
    return {
      name,
      settings: {},
      create: (key, value) => change(key, { value }),
      update: (key, value) => change(key, { value }),
      remove: (key) => change(key, { _deleted: true }),
    };
  },
  valueOf: (row) => (row ? (row.value as number) : undefined),
  features: { positions: false, before: false, coalesces: false, history: false, pauses: false },
});
