/**
 * The event connector conformance suite for the SQL poll connector, on a SQLite file, the
 * shared PostgreSQL and the shared MariaDB. Polling sees a row's latest state (coalesces) and
 * only soft deletes (the fixture's remove sets the `deleted` column).
 */
import type { EventConnector } from '../../src/connectors/contract';
import { initialize, type PollConnector } from '../../src/connectors/poll/index';
import { createLogger } from '../../src/logger';
import { createPollTable, openTestDb, type Dialect, type TestDb } from '../helpers/poll-tables';
import { connectorConformance } from './connector.suite';

for (const dialect of ['sqlite', 'postgres', 'mysql'] as Dialect[]) {
  let db: TestDb;
  connectorConformance({
    name: `poll (${dialect})`,
    setup: async () => {
      db = await openTestDb(dialect);
    },
    teardown: async () => {
      await db?.close();
    },
    connector: async (): Promise<EventConnector> => {
      const dataSource = {
        name: 'polled',
        settings: { url: db.url, interval: 20 },
        logger: createLogger({ level: 'silent' }),
        connector: undefined as unknown,
      };
      await initialize(dataSource);
      return dataSource.connector as PollConnector;
    },
    model: async () => {
      const table = await createPollTable(db);
      return {
        name: `m_${table.name}`,
        settings: {
          table: table.name,
          cursorColumn: 'updated_at',
          createdColumn: 'created_at',
          deletedColumn: 'deleted',
        },
        create: (key, value) => table.insert(key, value),
        update: (key, value) => table.update(key, value),
        remove: (key) => table.softDelete(key),
      };
    },
    valueOf: (row) => (row ? (row.value as number) : undefined),
    features: { positions: true, before: false, coalesces: true },
  });
}
