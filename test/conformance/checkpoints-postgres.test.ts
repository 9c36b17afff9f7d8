import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { PostgresCheckpointStore } from '../../src/checkpoints/postgres';
import { requireService, uniqueName } from '../helpers/services';
import { checkpointConformance } from './checkpoints.suite';

const tables: string[] = [];

checkpointConformance({
  name: 'postgres',
  config: async () => {
    const table = uniqueName('evpub_cp');
    tables.push(table);
    return { store: 'postgres', url: await requireService('postgres'), table };
  },
  features: { fencing: true },
  teardown: async () => {
    const client = new pg.Client({ connectionString: await requireService('postgres') });
    await client.connect();
    for (const t of tables) await client.query(`DROP TABLE IF EXISTS "${t}"`);
    await client.end();
  },
});

describe('postgres checkpoint store', () => {
  it('refuses a table name that is not an identifier', () => {
    expect(() => new PostgresCheckpointStore({ url: 'postgres://x@127.0.0.1/db', table: 'a; drop' })).toThrow(
      /checkpoints.table/,
    );
  });
});
