/**
 * evpub's MySQL/MariaDB connector as a juggler connector (LoopBack 4's `juggler`), the seed's
 * way: each model is a binlog reader of its own (its own unit), so a second model starts
 * beside the first without touching it, and `Model.stop` of one leaves the other. `msg` is the
 * row after a create or update, the row before a delete. Real shared MariaDB, unique tables.
 */
import { EventEmitter } from 'node:events';
import { juggler } from '@loopback/repository';
import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as mysqlConnector from '../../src/connectors/mysql/index';
import { SHARED_URL, sharedConnection, uniqueTable } from '../helpers/mariadb';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

type SeedModel = typeof juggler.ModelBase & {
  start(emitter: EventEmitter, cb?: (err?: Error | null) => void): Promise<void> | undefined;
  stop(cb?: (err?: Error | null) => void): Promise<void> | undefined;
};

function listener() {
  const emitter = new EventEmitter();
  const got: Record<string, unknown>[] = [];
  const errors: Error[] = [];
  emitter.on('eventMessage', (_model: string, msg: Record<string, unknown>) => got.push(msg));
  emitter.on('error', (_model: string, err: Error) => errors.push(err));
  return { emitter, got, errors };
}

let conn: Connection;
const tables: string[] = [];
beforeAll(async () => {
  conn = await sharedConnection();
});
afterAll(async () => {
  for (const t of tables) await conn.query(`DROP TABLE IF EXISTS \`${t}\``);
  await conn?.end();
});

async function table(): Promise<string> {
  const t = uniqueTable();
  await conn.query(`CREATE TABLE \`${t}\` (id VARCHAR(64) PRIMARY KEY, name VARCHAR(64))`);
  tables.push(t);
  return t;
}

describe('MySQL through juggler: one binlog reader per model', () => {
  it('insert, update, delete → eventMessage; a second model starts beside; stop leaves the other', async () => {
    const t1 = await table();
    const t2 = await table();
    const ds = new juggler.DataSource(uniqueName('ds'), {
      connector: mysqlConnector,
      url: SHARED_URL,
      reconnectDelay: 100,
      heartbeat: 1000,
    });
    const accounts = ds.createModel('accounts', {}, { evpub: { table: t1 } }) as unknown as SeedModel;
    const orders = ds.createModel('orders', {}, { evpub: { table: t2 } }) as unknown as SeedModel;
    const a = listener();
    const o = listener();
    try {
      await accounts.start(a.emitter);
      await conn.query(`INSERT INTO \`${t1}\` VALUES ('a1', 'James')`);
      await waitFor(() => a.got.length === 1, 'a1');

      await orders.start(o.emitter);
      await conn.query(`UPDATE \`${t1}\` SET name = 'James Bond' WHERE id = 'a1'`);
      await conn.query(`INSERT INTO \`${t2}\` VALUES ('o1', 'order')`);
      await conn.query(`DELETE FROM \`${t1}\` WHERE id = 'a1'`);
      await waitFor(() => a.got.length === 3 && o.got.length === 1, 'the update, o1 and the delete');
      expect(a.got).toEqual([
        { id: 'a1', name: 'James' },
        { id: 'a1', name: 'James Bond' },
        { id: 'a1', name: 'James Bond' }, // the row before the delete
      ]);
      expect(o.got).toEqual([{ id: 'o1', name: 'order' }]);

      await orders.stop();
      await conn.query(`INSERT INTO \`${t2}\` VALUES ('o2', 'late')`);
      await conn.query(`INSERT INTO \`${t1}\` VALUES ('a2', 'Moneypenny')`);
      await waitFor(() => a.got.length === 4, 'a2');
      // orders' reader was stopped before o2 was written: nothing of it can be emitted (a
      // reader still running would most likely have handed o2 over by the time a2 arrived).
      expect(o.got).toHaveLength(1);
      expect([...a.errors, ...o.errors]).toEqual([]);
    } finally {
      await ds.disconnect();
    }
  });
});
