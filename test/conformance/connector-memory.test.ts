/** The event connector conformance suite for the built-in memory connector. */
import type { EventConnector } from '../../src/connectors/contract';
import { initialize, memoryStore } from '../../src/connectors/memory';
import { createLogger } from '../../src/logger';
import { uniqueName } from '../helpers/services';
import { connectorConformance } from './connector.suite';

const storeName = uniqueName('conformance');
const store = memoryStore(storeName);

connectorConformance({
  name: 'memory',
  connector: async (): Promise<EventConnector> => {
    const dataSource = {
      name: 'mem',
      settings: { store: storeName },
      logger: createLogger({ level: 'silent' }),
      connector: undefined as unknown,
    };
    await initialize(dataSource);
    return dataSource.connector as EventConnector;
  },
  model: async () => {
    const name = uniqueName('m');
    const values = new Map<string, number>();
    return {
      name,
      settings: {},
      create: async (key, value) => {
        values.set(key, value);
        store.write('mem', name, 'create', key, { value });
      },
      update: async (key, value) => {
        store.write('mem', name, 'update', key, { value });
      },
      remove: async (key) => {
        store.write('mem', name, 'delete', key, undefined);
      },
    };
  },
  valueOf: (row) => (row ? (row.value as number) : undefined),
  features: { positions: true, before: false, coalesces: false },
});
