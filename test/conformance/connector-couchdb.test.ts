/** The event connector conformance suite for CouchDB, with each kind of feed. */
import { CouchDbConnector, initialize } from '../../src/connectors/couchdb';
import type { EventConnector } from '../../src/connectors/contract';
import { createLogger } from '../../src/logger';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { uniqueName } from '../helpers/services';
import { connectorConformance } from './connector.suite';

for (const feed of ['continuous', 'longpoll'] as const) {
  let couch: TestCouchServer;

  connectorConformance({
    name: `couchdb (${feed})`,
    setup: async () => {
      couch = await startTestCouchServer();
    },
    teardown: async () => {
      await couch?.close();
    },
    connector: async (): Promise<EventConnector> => {
      const dataSource = {
        name: 'couch',
        settings: { url: couch.url, feed, heartbeat: 1000, reconnectDelay: 100 },
        logger: createLogger({ level: 'silent' }),
        connector: undefined as unknown,
      };
      await initialize(dataSource);
      return dataSource.connector as CouchDbConnector;
    },
    model: async () => {
      const database = uniqueName('db');
      await couch.createDb(database);
      const revs = new Map<string, string>();
      return {
        name: `m_${database}`,
        settings: { database },
        create: async (key, value) => {
          revs.set(key, await couch.put(database, { _id: key, value }));
        },
        update: async (key, value) => {
          revs.set(key, await couch.put(database, { _id: key, _rev: revs.get(key), value }));
        },
        remove: async (key) => {
          revs.set(key, await couch.remove(database, key, revs.get(key)!));
        },
      };
    },
    valueOf: (row) => (row ? (row.value as number) : undefined),
    features: { positions: true, before: false, coalesces: true },
  });
}
