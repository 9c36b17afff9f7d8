/**
 * Slot and publication administration over an ordinary (non-replication) connection: the
 * checks made before streaming, the publication and slot evpub creates, heartbeats, lag, and
 * what `evpub slots list|drop` show and remove.
 */
import { Client } from 'pg';
import type { ConnectionOptions } from 'node:tls';
import { ErrorCode, EvpubError } from '../../errors';
import { fixes, sourceError, sqlState } from './errors';
import { parseLsn, type Lsn } from './position';
import { APPLICATION_NAME, qualified, quoteIdent, SESSION_OPTIONS, type TableRef } from './settings';
import { BUILTIN_ARRAYS } from './types';

export const HEARTBEAT_PREFIX = 'evpub-heartbeat';

/** Every text value comes back as received: the connector decodes them itself (types.ts). */
export const RAW_TEXT = { getTypeParser: () => (value: string) => value };

/**
 * An ordinary connection; `ssl` is the datasource's `tls` setting loaded (`pgSsl`), undefined
 * when the URL decides.
 */
export async function connectAdmin(
  url: string,
  displayUrl: string,
  connectTimeout: number,
  ssl?: ConnectionOptions,
): Promise<Client> {
  const client = new Client({
    connectionString: url,
    ...(ssl ? { ssl } : {}),
    options: SESSION_OPTIONS,
    connectionTimeoutMillis: connectTimeout,
    application_name: APPLICATION_NAME,
  });
  client.on('error', () => undefined); // a lost admin connection shows on the next query
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw sourceError('cannot connect', err, displayUrl);
  }
  return client;
}

/** wal_level must be logical and the user must have REPLICATION (or be superuser). */
export async function checkServer(client: Client): Promise<{ version: number }> {
  const { rows } = await client.query<{ wal_level: string; version: string; user: string; rep: boolean }>(
    `SELECT current_setting('wal_level') AS wal_level, current_setting('server_version_num') AS version,
            current_user AS user, (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS rep`,
  );
  const row = rows[0]!;
  if (row.wal_level !== 'logical') throw fixes.walLevel(row.wal_level);
  if (!row.rep) throw fixes.noReplication(row.user);
  return { version: Number(row.version) };
}

export interface TableInfo extends TableRef {
  oid: number;
  /** Primary key columns in key order (empty when the table has none). */
  key: string[];
  replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  /** Column name → type oid. */
  columns: Map<string, number>;
}

const IDENTITY: Record<string, TableInfo['replicaIdentity']> = {
  d: 'default',
  n: 'nothing',
  f: 'full',
  i: 'index',
};

/** Describes the tables; a missing one is a CONFIG_INVALID error naming them all. */
export async function describeTables(client: Client, tables: TableRef[]): Promise<TableInfo[]> {
  const out: TableInfo[] = [];
  const missing: string[] = [];
  for (const t of tables) {
    const { rows } = await client.query<{ oid: number; ident: string }>(
      `SELECT c.oid::int AS oid, c.relreplident AS ident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
      [t.schema, t.table],
    );
    const found = rows[0];
    if (!found) {
      missing.push(`"${t.schema}.${t.table}"`);
      continue;
    }
    const cols = await client.query<{ name: string; type: number; pk: number | null }>(
      `SELECT a.attname AS name, a.atttypid::int AS type, array_position(i.indkey::int2[], a.attnum) AS pk
         FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
        WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
      [found.oid],
    );
    const key = cols.rows
      .filter((c) => c.pk !== null)
      .sort((a, b) => a.pk! - b.pk!)
      .map((c) => c.name);
    out.push({
      ...t,
      oid: found.oid,
      key,
      replicaIdentity: IDENTITY[found.ident] ?? 'default',
      columns: new Map(cols.rows.map((c) => [c.name, c.type])),
    });
  }
  if (missing.length > 0) throw fixes.missingTables(missing);
  return out;
}

/** Element types of array types: built-ins known, others looked up in pg_type (cached). */
export class ArrayTypes {
  private readonly elems = new Map<number, number>(
    Object.entries(BUILTIN_ARRAYS).map(([k, v]) => [Number(k), v]),
  );

  elemOf = (oid: number): number => this.elems.get(oid) ?? 0;

  /** Whether the type's element type (0 for a scalar) is known. */
  knows(oid: number): boolean {
    return this.elems.has(oid);
  }

  async learn(client: Client, oids: Iterable<number>): Promise<void> {
    const unknown = [...new Set(oids)].filter((o) => !this.elems.has(o));
    if (unknown.length === 0) return;
    const { rows } = await client.query<{ oid: number; elem: number }>(
      `SELECT oid::int AS oid, CASE WHEN typcategory = 'A' THEN typelem::int ELSE 0 END AS elem FROM pg_type WHERE oid = ANY($1::oid[])`,
      [unknown],
    );
    for (const r of rows) this.elems.set(r.oid, r.elem);
  }
}

/**
 * Creates the publication for the tables, or adds the missing tables to an existing one.
 * Returns the tables added.
 *
 * Publications are made with `publish_via_partition_root`, so that the changes of a
 * partitioned table arrive under the table's own name (the model's), not each partition's. An
 * existing publication without it that covers a partitioned model table is switched on, since
 * otherwise those changes would match no model.
 */
export async function ensurePublication(client: Client, name: string, tables: TableRef[]): Promise<string[]> {
  const exists = await client.query<{ pubviaroot: boolean }>(
    'SELECT pubviaroot FROM pg_publication WHERE pubname = $1',
    [name],
  );
  const list = tables.map(qualified).join(', ');
  if (exists.rowCount === 0) {
    await client.query(
      `CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ${list} WITH (publish_via_partition_root = true)`,
    );
    return tables.map((t) => `${t.schema}.${t.table}`);
  }
  if (!exists.rows[0]!.pubviaroot) {
    const partitioned = await client.query(
      `SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'p' AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [tables.map((t) => t.schema), tables.map((t) => t.table)],
    );
    if ((partitioned.rowCount ?? 0) > 0) {
      await client.query(`ALTER PUBLICATION ${quoteIdent(name)} SET (publish_via_partition_root = true)`);
    }
  }
  const { rows } = await client.query<{ schemaname: string; tablename: string }>(
    'SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1',
    [name],
  );
  const have = new Set(rows.map((r) => `${r.schemaname}.${r.tablename}`));
  const missing = tables.filter((t) => !have.has(`${t.schema}.${t.table}`));
  if (missing.length > 0) {
    await client.query(
      `ALTER PUBLICATION ${quoteIdent(name)} ADD TABLE ${missing.map(qualified).join(', ')}`,
    );
  }
  return missing.map((t) => `${t.schema}.${t.table}`);
}

export interface SlotState {
  name: string;
  plugin: string | null;
  database: string | null;
  active: boolean;
  activePid: number | null;
  /** application_name of the process reading it (`evpub <host>:<pid>` for evpub), when active. */
  application: string | null;
  /** The address the reading process connected from (null over a Unix socket), when active. */
  clientAddr: string | null;
  /** The oldest WAL the slot keeps. */
  restartLsn: Lsn | null;
  confirmedFlush: Lsn | null;
  /** `reserved`, `extended`, `unreserved` or `lost` (the slot was invalidated). */
  walStatus: string | null;
  lagBytes: number | null;
}

export async function slotState(client: Client, slot: string): Promise<SlotState | undefined> {
  return (await listSlots(client, slot))[0];
}

export async function listSlots(client: Client, name?: string): Promise<SlotState[]> {
  const { rows } = await client.query<{
    slot_name: string;
    plugin: string | null;
    database: string | null;
    active: boolean;
    active_pid: number | null;
    application: string | null;
    client_addr: string | null;
    restart: string | null;
    confirmed: string | null;
    wal_status: string | null;
    lag: string | null;
  }>(
    `SELECT s.slot_name, s.plugin, s.database, s.active, s.active_pid, a.application_name AS application,
            host(a.client_addr) AS client_addr,
            s.restart_lsn::text AS restart, s.confirmed_flush_lsn::text AS confirmed, s.wal_status,
            pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::text AS lag
       FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
      WHERE s.slot_type = 'logical' AND ($1::text IS NULL OR s.slot_name = $1) ORDER BY s.slot_name`,
    [name ?? null],
  );
  return rows.map((r) => ({
    name: r.slot_name,
    plugin: r.plugin,
    database: r.database,
    active: r.active,
    activePid: r.active_pid,
    application: r.application,
    clientAddr: r.client_addr,
    restartLsn: r.restart ? parseLsn(r.restart) : null,
    confirmedFlush: r.confirmed ? parseLsn(r.confirmed) : null,
    walStatus: r.wal_status,
    lagBytes: r.lag === null ? null : Number(r.lag),
  }));
}

/**
 * Creates the permanent pgoutput slot when missing; fails when it is invalid. Whether it is in
 * use (`state.active`) is for the caller to judge: it names the feeds.
 */
export async function ensureSlot(
  client: Client,
  slot: string,
): Promise<{ created: boolean; state: SlotState }> {
  let state = await slotState(client, slot);
  let created = false;
  if (!state) {
    try {
      await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
      created = true;
    } catch (err) {
      if (sqlState(err) !== '42710') throw err; // 42710: another process created it just now
    }
    state = (await slotState(client, slot))!;
  }
  checkSlot(slot, { ...state, active: false });
  return { created, state };
}

/** A slot that cannot be read is an error naming the fix. */
export function checkSlot(slot: string, state: SlotState | undefined): void {
  if (!state) throw fixes.slotLost(slot, 'was dropped');
  if (state.walStatus === 'lost') throw fixes.slotLost(slot, 'was invalidated (max_slot_wal_keep_size)');
  if (state.plugin !== 'pgoutput') {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `postgres connector: the slot "${slot}" uses the plugin "${state.plugin}", evpub needs "pgoutput": ` +
        'give this datasource another "slot" setting',
    );
  }
  if (state.active) throw fixes.slotInUse(slot, state.activePid);
}

/**
 * Takeover (contract point 11): ends the backend `pid` that reads `slot` with
 * `pg_terminate_backend`. Resolves true when it was signalled, false when it had gone already.
 * PostgreSQL lets a role end the backends of its own role, or any non-superuser backend with
 * pg_signal_backend (a superuser's only as a superuser); a refusal (42501) is
 * FEED_OWNED_ELSEWHERE naming the grant.
 */
export async function terminateReader(
  client: Client,
  slot: string,
  feeds: readonly string[],
  reader: SlotState,
): Promise<boolean> {
  const pid = reader.activePid!;
  try {
    const { rows } = await client.query<{ ended: boolean }>('SELECT pg_terminate_backend($1) AS ended', [
      pid,
    ]);
    return rows[0]!.ended;
  } catch (err) {
    if (sqlState(err) !== '42501') throw err;
    const { rows } = await client.query<{ me: string; other: string | null }>(
      'SELECT current_user AS me, (SELECT usename FROM pg_stat_activity WHERE pid = $1) AS other',
      [pid],
    );
    throw fixes.takeoverRefused(
      slot,
      feeds,
      { pid, application: reader.application, clientAddr: reader.clientAddr, user: rows[0]!.other },
      rows[0]!.me,
      err,
    );
  }
}

export async function dropSlot(client: Client, slot: string): Promise<void> {
  await client.query('SELECT pg_drop_replication_slot($1)', [slot]);
}

/** A non-transactional logical message: it moves the stream on when no captured table changes. */
export async function heartbeat(client: Client): Promise<void> {
  await client.query(`SELECT pg_logical_emit_message(false, '${HEARTBEAT_PREFIX}', '')`);
}

export async function currentLsn(client: Client): Promise<Lsn> {
  const { rows } = await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  return parseLsn(rows[0]!.lsn);
}
