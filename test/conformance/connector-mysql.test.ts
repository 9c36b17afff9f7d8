/** The event connector conformance suite for MySQL/MariaDB, against the shared MariaDB. */
import type { Connection } from 'mysql2/promise';
import { connectorConformance } from './connector.suite';
import { SHARED_URL, mysqlConnector, sharedConnection, uniqueTable } from '../helpers/mariadb';

let conn: Connection;
const tables: string[] = [];

connectorConformance({
  name: 'mysql (MariaDB binlog)',
  setup: async () => {
    conn = await sharedConnection();
  },
  teardown: async () => {
    for (const t of tables) await conn.query(`DROP TABLE IF EXISTS \`${t}\``);
    await conn?.end();
  },
  connector: () => mysqlConnector({ url: SHARED_URL }),
  model: async () => {
    const table = uniqueTable();
    tables.push(table);
    await conn.query(`CREATE TABLE \`${table}\` (id VARCHAR(64) PRIMARY KEY, value INT NOT NULL)`);
    return {
      name: `m_${table}`,
      settings: { table },
      create: async (key, value) => {
        await conn.query(`INSERT INTO \`${table}\` (id, value) VALUES (?, ?)`, [key, value]);
      },
      update: async (key, value) => {
        await conn.query(`UPDATE \`${table}\` SET value = ? WHERE id = ?`, [value, key]);
      },
      remove: async (key) => {
        await conn.query(`DELETE FROM \`${table}\` WHERE id = ?`, [key]);
      },
    };
  },
  valueOf: (row) => (row ? (row.value as number) : undefined),
  features: { positions: true, before: true, coalesces: false },
});
