/**
 * `evpub check` for PostgreSQL (the connector contract, point 8): what the server, the role and
 * the tables still need before logical replication can feed evpub, every finding at once with
 * the statement that fixes it. Read-only: one ordinary connection, catalog queries, closed.
 */
import type { Client } from 'pg';
import { toError } from '../../errors';
import type { SourceCheck } from '../contract';
import type { Settings } from '../kit/settings';
import type { ConnectionOptions } from 'node:tls';
import { outboxDdl } from '../../events/outbox';
import { splitForCheck } from '../kit/outbox';
import { outboxTable, qualified, tableOf, type PostgresSettings } from './settings';
import { connectAdmin } from './slot-admin';

interface ServerFacts {
  wal_level: string;
  user: string;
  replication: boolean;
  max_slots: number;
  used_slots: number;
  max_senders: number;
  slot_exists: boolean;
}

export async function checkPostgres(
  datasource: string,
  settings: PostgresSettings,
  models: readonly { name: string; settings: Settings }[],
  /** pg's `ssl` option: the connector's, loaded (and warned about) once (`pgSsl`). May throw CONFIG_INVALID. */
  ssl: () => ConnectionOptions | undefined,
): Promise<SourceCheck[]> {
  let client: Client;
  try {
    client = await connectAdmin(settings.url, settings.displayUrl, settings.connectTimeout, ssl());
  } catch (err) {
    return [
      {
        what: `connection to ${settings.displayUrl}`,
        level: 'error',
        detail: toError(err).message,
        fix: 'check the datasource url (host, port, database, user, password) and that PostgreSQL listens there',
      },
    ];
  }
  try {
    const out: SourceCheck[] = [
      { what: `connection to ${settings.displayUrl}`, level: 'ok', detail: 'connected' },
    ];
    const { rows } = await client.query<ServerFacts>(
      `SELECT current_setting('wal_level') AS wal_level, current_user AS user,
              (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS replication,
              current_setting('max_replication_slots')::int AS max_slots,
              (SELECT count(*)::int FROM pg_replication_slots) AS used_slots,
              current_setting('max_wal_senders')::int AS max_senders,
              EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1) AS slot_exists`,
      [settings.slot],
    );
    const f = rows[0]!;
    out.push(
      f.wal_level === 'logical'
        ? { what: 'wal_level', level: 'ok', detail: 'logical' }
        : {
            what: 'wal_level',
            level: 'error',
            detail: `wal_level is ${f.wal_level}; logical replication needs logical`,
            fix: 'ALTER SYSTEM SET wal_level = logical; -- as a superuser, then restart PostgreSQL',
          },
    );
    out.push(
      f.replication
        ? { what: 'REPLICATION attribute', level: 'ok', detail: `role ${f.user} may replicate` }
        : {
            what: 'REPLICATION attribute',
            level: 'error',
            detail: `role ${f.user} lacks REPLICATION`,
            fix: `ALTER ROLE "${f.user}" WITH REPLICATION; -- as a superuser`,
          },
    );
    if (f.slot_exists) {
      out.push({
        what: `replication slot ${settings.slot}`,
        level: 'ok',
        detail: 'exists; evpub resumes from it',
      });
    } else if (f.used_slots >= f.max_slots) {
      out.push({
        what: `replication slot ${settings.slot}`,
        level: 'error',
        detail: `all ${f.max_slots} replication slots are taken (max_replication_slots)`,
        fix: `drop an unused slot (evpub slots list / drop) or raise max_replication_slots (ALTER SYSTEM SET max_replication_slots = ${f.max_slots + 10}; then restart)`,
      });
    } else {
      out.push({
        what: `replication slot ${settings.slot}`,
        level: 'ok',
        detail: `created at first start (${f.max_slots - f.used_slots} of ${f.max_slots} slots free)`,
      });
    }
    if (f.max_senders < 1) {
      out.push({
        what: 'max_wal_senders',
        level: 'error',
        detail: 'max_wal_senders is 0: no replication connection is possible',
        fix: 'ALTER SYSTEM SET max_wal_senders = 10; -- then restart PostgreSQL',
      });
    }
    const pub = await client.query<{ name: string }>(
      `SELECT schemaname || '.' || tablename AS name FROM pg_publication_tables WHERE pubname = $1`,
      [settings.publication],
    );
    const published = new Set(pub.rows.map((r) => r.name));
    const { tableModels, fromOutbox } = splitForCheck('postgres', datasource, settings.outbox, models, out);
    for (const model of tableModels) {
      out.push(await checkTable(client, model, published, settings.publication));
    }
    if (fromOutbox.length > 0) out.push(await checkOutbox(client, settings, fromOutbox, published));
    return out;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The model's table: it exists, and its replica identity gives what the model asks. */
async function checkTable(
  client: Client,
  model: { name: string; settings: Settings },
  published: Set<string>,
  publication: string,
): Promise<SourceCheck> {
  let ref;
  try {
    ref = tableOf(model.name, model.settings);
  } catch (err) {
    return { what: `model ${model.name}`, level: 'error', detail: toError(err).message };
  }
  const name = `${ref.schema}.${ref.table}`;
  const what = `table ${name} (model ${model.name})`;
  const { rows } = await client.query<{ ident: string; has_key: boolean; owner: boolean }>(
    `SELECT c.relreplident AS ident,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_key,
            pg_has_role(c.relowner, 'USAGE') AS owner
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
    [ref.schema, ref.table],
  );
  const t = rows[0];
  if (!t) {
    return {
      what,
      level: 'error',
      detail: 'does not exist (or this role cannot see it)',
      fix: `create it, or set models.${model.name}.settings.table to the right "schema.table"`,
    };
  }
  if (t.ident === 'n' || (t.ident === 'd' && !t.has_key)) {
    return {
      what,
      level: 'error',
      detail: 'has no replica identity: updates and deletes fail once the table is published',
      fix: `ALTER TABLE ${name} ADD PRIMARY KEY (...); -- or: ALTER TABLE ${name} REPLICA IDENTITY FULL`,
    };
  }
  if (!t.owner && !published.has(name)) {
    return {
      what,
      level: 'error',
      detail: `this role does not own the table, so it cannot add it to the publication ${publication}`,
      fix: `as the table's owner: CREATE PUBLICATION ${publication} FOR TABLE ${name}; -- or ALTER PUBLICATION ${publication} ADD TABLE ${name}`,
    };
  }
  if (model.settings.before === 'full' && t.ident !== 'f') {
    return {
      what,
      level: 'warning',
      detail: '"before" asks for the whole old row, but the replica identity gives only the key',
      fix: `ALTER TABLE ${name} REPLICA IDENTITY FULL;`,
    };
  }
  return {
    what,
    level: 'ok',
    detail: t.ident === 'f' ? 'replica identity FULL' : 'replica identity: its key',
  };
}

/**
 * The outbox table of the models fed from it: it exists (or may be created: CREATE on its
 * schema), and the role can put it in the publication (owns it, or it is there already).
 */
async function checkOutbox(
  client: Client,
  settings: PostgresSettings,
  models: string[],
  published: Set<string>,
): Promise<SourceCheck> {
  const outbox = settings.outbox!;
  const name = `${outbox.schema}.${outbox.table}`;
  const what = `outbox table ${name} (models ${models.join(', ')})`;
  const ddl = outboxDdl('postgres', qualified(outboxTable(outbox)));
  const { rows } = await client.query<{ found: boolean; owner: boolean | null; create: boolean | null }>(
    `SELECT c.oid IS NOT NULL AS found, pg_has_role(c.relowner, 'USAGE') AS owner,
            (SELECT has_schema_privilege(n.oid, 'CREATE') FROM pg_namespace n WHERE n.nspname = $1) AS create
       FROM (SELECT 1) one
       LEFT JOIN pg_class c ON c.relname = $2 AND c.relkind IN ('r', 'p')
        AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)`,
    [outbox.schema, outbox.table],
  );
  const t = rows[0]!;
  if (!t.found) {
    if (!outbox.create) {
      return {
        what,
        level: 'error',
        detail: 'does not exist, and outbox.create is false',
        fix: `${ddl}; -- or set outbox.create to true`,
      };
    }
    if (t.create !== true) {
      return {
        what,
        level: 'error',
        detail: `does not exist, and this role may not create it (no CREATE on schema ${outbox.schema})`,
        fix: `GRANT CREATE ON SCHEMA "${outbox.schema}" TO <this role>; -- or as its owner: ${ddl}`,
      };
    }
    return { what, level: 'ok', detail: 'created at first start' };
  }
  if (!t.owner && !published.has(name)) {
    return {
      what,
      level: 'error',
      detail: `this role does not own the table, so it cannot add it to the publication ${settings.publication}`,
      fix: `as the table's owner: ALTER PUBLICATION ${settings.publication} ADD TABLE ${name}`,
    };
  }
  return { what, level: 'ok', detail: 'exists' };
}
