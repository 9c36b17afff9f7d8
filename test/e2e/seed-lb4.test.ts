/**
 * The seed's server.js on juggler under LoopBack 4 (test/fixtures/seed-lb4/server.js:
 * `@loopback/repository`'s `juggler.DataSource` + `ds.createModel`, juggler 7) with a PostgreSQL
 * datasource (`evpub/connectors/postgres`, logical replication) and `evpub/pubsub`: rows
 * inserted, updated and deleted with SQL arrive on the shared Mosquitto's `/v1/subutest` as
 * `{"model":"accounts","message":{...row...}}`, read by `mosquitto_sub` (picked out by the
 * row's unique id). SIGTERM disconnects the datasource (LoopBack 4's `app.stop()` does the
 * same): the replication slot is released.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PG_URL, PgFixture, sql } from '../helpers/postgres';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { ROOT } from './cli';
import {
  collectLines,
  ensureBuilt,
  evpubNodePath,
  mosquittoSub,
  SEED_TOPIC,
  waitForLine,
  type Lines,
} from './seed-loopback';

const SERVER = path.join(ROOT, 'test/fixtures/seed-lb4/server.js');

const pg = new PgFixture();
let nodePath: Awaited<ReturnType<typeof evpubNodePath>>;
const children: Lines[] = [];
beforeAll(async () => {
  await requireService('mosquitto');
  await requireService('postgres');
  ensureBuilt();
  nodePath = await evpubNodePath();
}, 200_000);
afterAll(async () => {
  for (const child of children) child.proc.kill('SIGKILL');
  await pg.drop();
  await nodePath?.remove();
});

describe("the seed's server.js on LoopBack 4's juggler with evpub/connectors/postgres", () => {
  it('insert, update and delete arrive on /v1/subutest in the seed envelope; SIGTERM releases the slot', async () => {
    const table = await pg.table('id text PRIMARY KEY, name text, region text');
    const mosq = await mosquittoSub(SEED_TOPIC);
    children.push(mosq);
    const server = collectLines(process.execPath, [SERVER], {
      NODE_PATH: nodePath.dir,
      PG_URL,
      PG_SLOT: pg.slot,
      PG_PUBLICATION: pg.publication,
      ACCOUNTS_TABLE: table,
    });
    children.push(server);
    await waitForLine(server, 'accounts', 'the model to be active ("accounts")');

    const id = uniqueName('bond');
    const mine = (line: string): boolean => line.includes(`"id":"${id}"`);
    await sql(`INSERT INTO ${table} VALUES ($1, 'James Bond', 'Bangalore')`, [id]);
    await sql(`UPDATE ${table} SET region = 'London' WHERE id = $1`, [id]);
    await sql(`DELETE FROM ${table} WHERE id = $1`, [id]);
    await waitFor(() => mosq.lines.filter(mine).length === 3, 'three messages on mosquitto_sub');
    expect(mosq.lines.filter(mine)).toEqual([
      JSON.stringify({ model: 'accounts', message: { id, name: 'James Bond', region: 'Bangalore' } }),
      JSON.stringify({ model: 'accounts', message: { id, name: 'James Bond', region: 'London' } }),
      // Without REPLICA IDENTITY FULL, PostgreSQL gives a delete's key columns only.
      JSON.stringify({ model: 'accounts', message: { id } }),
    ]);

    const active = async () =>
      (
        await sql<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [
          pg.slot,
        ])
      )[0]?.active;
    expect(await active()).toBe(true);
    server.proc.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    expect(server.lines).toContain('stopped');
    // The server's walsender lets go of the slot just after the connection closed.
    await waitFor(async () => (await active()) === false, 'the slot to be released');
    expect(server.lines.join('\n')).not.toMatch(/Error/);
  });
});
