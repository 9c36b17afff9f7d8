import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { PostgresLeaseStore } from '../../src/cluster/postgres';
import { privatePostgres } from '../helpers/postgres-server';
import { requireService, uniqueName } from '../helpers/services';
import { leaseConformance } from './lease.suite';

const table = uniqueName('evpub_lease');
const membersTable = uniqueName('evpub_member');

leaseConformance({
  name: 'postgres',
  open: async (cluster) =>
    new PostgresLeaseStore({ url: await requireService('postgres'), cluster, table, membersTable }),
  privateServer: async () => {
    const server = await privatePostgres();
    return {
      server,
      open: (cluster) => new PostgresLeaseStore({ url: server.url, cluster, opTimeout: 500 }),
    };
  },
  teardown: async () => {
    const client = new pg.Client({ connectionString: await requireService('postgres') });
    await client.connect();
    await client.query(`DROP TABLE IF EXISTS "${table}", "${membersTable}"`);
    await client.end();
  },
});

describe('postgres lease store', () => {
  it('refuses a table name that is not an identifier, naming the key', () => {
    expect(
      () => new PostgresLeaseStore({ url: 'postgres://x@127.0.0.1/db', cluster: 'c', table: 'a; drop' }),
    ).toThrow(/cluster\.table/);
  });
});
