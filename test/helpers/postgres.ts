/** Helpers for PostgreSQL connector tests: admin SQL, and cleanup of slots/publications/tables. */
import { Client } from 'pg';
import { initialize, type PostgresConnector } from '../../src/connectors/postgres/index';
import { createLogger } from '../../src/logger';
import { SERVICES, uniqueName } from './services';

export const PG_URL = SERVICES.postgres.url;

export async function sql<T extends Record<string, unknown> = Record<string, unknown>>(
  text: string,
  values: unknown[] = [],
  url: string = PG_URL,
): Promise<T[]> {
  const client = new Client({ connectionString: url });
  // A server that goes away mid-query (the fault tests crash it) fails the query; the client's
  // 'error' event then says the same again and must not become an uncaught exception.
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A datasource's names (slot, publication) and the tables a test made, all dropped by `drop()`. */
export class PgFixture {
  readonly slot = uniqueName('slot');
  /** Extra slots made by `slots()`, dropped by `drop()`. */
  readonly extraSlots: string[] = [];
  readonly publication = uniqueName('pub');
  readonly tables: string[] = [];

  constructor(readonly url: string = PG_URL) {}

  async table(columns = 'id text PRIMARY KEY, value int', prefix = 'tbl'): Promise<string> {
    const name = uniqueName(prefix);
    await sql(`CREATE TABLE ${name} (${columns})`, [], this.url);
    this.tables.push(name);
    return name;
  }

  /**
   * Makes the publication for the tables and `n` slots now (before the test's changes), so
   * several connectors can each read the same changes from their own slot.
   */
  async slots(n: number): Promise<string[]> {
    await sql(`CREATE PUBLICATION ${this.publication} FOR TABLE ${this.tables.join(', ')}`, [], this.url);
    const names = [this.slot];
    for (let i = 1; i < n; i++) names.push(`${this.slot}_${i}`);
    this.extraSlots.push(...names.slice(1));
    for (const s of names)
      await sql(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [s], this.url);
    return names;
  }

  async connector(settings: Record<string, unknown> = {}, name = 'pg'): Promise<PostgresConnector> {
    const dataSource = {
      name,
      settings: {
        url: this.url,
        slot: this.slot,
        publication: this.publication,
        reconnectDelay: 50,
        maxReconnectDelay: 500,
        statusInterval: 200,
        heartbeatInterval: 200,
        ...settings,
      },
      logger: createLogger({ level: process.env.EVPUB_TEST_LOG_LEVEL ?? 'silent' }),
      connector: undefined as unknown,
    };
    await initialize(dataSource);
    return dataSource.connector as PostgresConnector;
  }

  /** Drops the slot (waiting for it to be released), the publication and the tables. */
  async drop(): Promise<void> {
    for (const slot of [this.slot, ...this.extraSlots]) await dropSlotWhenFree(slot, this.url);
    await sql(`DROP PUBLICATION IF EXISTS ${this.publication}`, [], this.url);
    for (const t of this.tables) await sql(`DROP TABLE IF EXISTS ${t}`, [], this.url);
  }
}

/** Drops a slot once no process reads it (waits up to 10 s). */
export async function dropSlotWhenFree(slot: string, url: string = PG_URL): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const rows = await sql<{ active: boolean }>(
      'SELECT active FROM pg_replication_slots WHERE slot_name = $1',
      [slot],
      url,
    );
    if (rows.length === 0) return;
    if (!rows[0]!.active) {
      await sql('SELECT pg_drop_replication_slot($1)', [slot], url).catch(() => undefined);
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
