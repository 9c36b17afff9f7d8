/**
 * The schema: the accounts table. Idempotent; `main()` runs it before the application starts
 * (`node dist/migrate.js` runs it alone).
 */
import type { juggler } from '@loopback/repository';

/** The statements, in order, for the accounts table `table` (a name already checked). */
export function migrationStatements(table: string): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${table} (
       id serial PRIMARY KEY,
       owner text NOT NULL,
       email text NOT NULL,
       balance integer NOT NULL DEFAULT 0
     )`,
    // The CDC feed's `update` and `delete` events then carry the whole old row in `before`.
    `ALTER TABLE ${table} REPLICA IDENTITY FULL`,
  ];
}

export async function migrate(dataSource: juggler.DataSource, table: string): Promise<void> {
  for (const sql of migrationStatements(table)) {
    await dataSource.execute(sql);
  }
}
