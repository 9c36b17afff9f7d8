/**
 * The schema: the accounts table, the outbox table evpub publishes from, and the trigger that
 * puts changes made directly in SQL (psql, another service, a batch job) into the outbox too.
 * Idempotent; `main()` runs it before the application starts.
 *
 * Why a trigger (README.md, "One path for every change"): the repository writes each REST
 * change's event into the outbox in the change's own transaction, and the CDC connector
 * publishes the outbox. Streaming the accounts table as well would publish every REST write
 * twice (once from the table, once from the outbox). So the table is not streamed; instead,
 * at commit, the trigger writes an outbox row for every change of an account that no outbox
 * row of the same transaction describes already:
 *
 * 1. An INSERT into the outbox made by the application (trigger depth 0: not by this trigger)
 *    records `<model>:<key>` in a transaction-local setting (`evpub.outboxed`).
 * 2. Every INSERT, UPDATE and DELETE of an account queues a deferred constraint trigger: it
 *    runs at commit, after the repository wrote its outbox row (whatever the order of the two
 *    statements), and writes the outbox row (INSERT then DELETE, the outbox protocol:
 *    src/events/outbox.ts) unless its key was recorded. Deferred, so a transaction that rolls
 *    back writes nothing.
 *
 * Both paths so give the same event: same model, key, `before` and `after` (the whole row:
 * the table has integer and text columns only, for which to_jsonb and evpub's own decoding
 * agree), published by the same connector from the same table, in the same envelope.
 */
import type { juggler } from '@loopback/repository';

export interface Schema {
  /** The accounts table. */
  table: string;
  /** The outbox table evpub's PostgreSQL connector streams (the datasource's `outbox`). */
  outbox: string;
  /** The evpub model the outbox rows name (the topics' `{model}`, CloudEvents `type`). */
  model: string;
}

/** The statements, in order (names already checked: lower-case letters, digits, `_`). */
export function migrationStatements({ table, outbox, model }: Schema): string[] {
  const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;
  return [
    `CREATE TABLE IF NOT EXISTS ${table} (
       id serial PRIMARY KEY,
       owner text NOT NULL,
       email text NOT NULL,
       balance integer NOT NULL DEFAULT 0
     )`,
    // The outbox protocol's table (src/events/outbox.ts): empty between transactions.
    `CREATE TABLE IF NOT EXISTS ${outbox} (
       id text PRIMARY KEY, model text NOT NULL, op text NOT NULL, key text NOT NULL,
       before jsonb, after jsonb, created_at timestamptz NOT NULL DEFAULT now()
     )`,
    `CREATE OR REPLACE FUNCTION ${table}_outboxed() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF pg_trigger_depth() = 1 THEN
         PERFORM set_config('evpub.outboxed',
           coalesce(current_setting('evpub.outboxed', true), '') || '|' || NEW.model || ':' || NEW.key || '|', true);
       END IF;
       RETURN NULL;
     END $$`,
    `DROP TRIGGER IF EXISTS ${table}_outboxed ON ${outbox}`,
    `CREATE TRIGGER ${table}_outboxed AFTER INSERT ON ${outbox}
       FOR EACH ROW EXECUTE FUNCTION ${table}_outboxed()`,
    `CREATE OR REPLACE FUNCTION ${table}_changed() RETURNS trigger LANGUAGE plpgsql AS $$
     DECLARE
       k text := CASE WHEN TG_OP = 'DELETE' THEN OLD.id::text ELSE NEW.id::text END;
       event_id text := gen_random_uuid()::text;
     BEGIN
       IF position('|' || ${lit(model)} || ':' || k || '|' IN coalesce(current_setting('evpub.outboxed', true), '')) > 0 THEN
         RETURN NULL; -- the application published this change itself
       END IF;
       INSERT INTO ${outbox} (id, model, op, key, before, after) VALUES (
         event_id, ${lit(model)},
         CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update' ELSE 'delete' END,
         k,
         CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END,
         CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END);
       DELETE FROM ${outbox} WHERE id = event_id;
       RETURN NULL;
     END $$`,
    `DROP TRIGGER IF EXISTS ${table}_changed ON ${table}`,
    `CREATE CONSTRAINT TRIGGER ${table}_changed AFTER INSERT OR UPDATE OR DELETE ON ${table}
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${table}_changed()`,
  ];
}

export async function migrate(dataSource: juggler.DataSource, schema: Schema): Promise<void> {
  for (const sql of migrationStatements(schema)) {
    await dataSource.execute(sql);
  }
}
