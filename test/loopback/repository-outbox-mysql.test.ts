/**
 * The repository mixin in `outbox` mode on MariaDB (loopback-connector-mysql): LoopBack writes
 * over HTTP are published from the outbox by evpub's mysql connector, with the data (op, key,
 * before, after) the same connector captures from the table itself for the same change (a
 * second model on the table): BIGINT and DECIMAL as strings, DATETIME without a zone, TIMESTAMP
 * in UTC, whatever the caller's session time zone (put back after the read). A caller's transaction that rolls back
 * publishes nothing; the outbox table stays empty.
 */
import type { RestApplication } from '@loopback/rest';
import { createRestAppClient, type Client as HttpClient } from '@loopback/testlab';
import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { SHARED_URL, sharedConnection } from '../helpers/mariadb';
import { quietLogger, subscriber, type Received } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { accountsApp } from './accounts-app';

type Ce = Record<string, unknown> & { data: Record<string, unknown> };
const data = (r: Received) => (r.json as Ce).data;

describe('LoopBack repository, outbox mode, MariaDB', () => {
  const table = uniqueName('acct');
  const outbox = uniqueName('outbox');
  const prefix = uniqueName('lbmy');
  let admin: Connection;
  let app: App;
  let lb: RestApplication;
  let http: HttpClient;
  let sub: Awaited<ReturnType<typeof subscriber>>;

  beforeAll(async () => {
    const mqttUrl = await requireService('mosquitto');
    admin = await sharedConnection();
    await admin.query(
      `CREATE TABLE \`${table}\` (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL,
        balance DECIMAL(12,2), big BIGINT DEFAULT 9007199254740993,
        opened TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), born DATETIME NULL DEFAULT '1999-12-31 23:59:58')`,
    );
    app = evpub({
      logger: quietLogger(),
      brokers: { default: mqttUrl },
      checkpoints: new MemoryCheckpointStore(),
    });
    app.dataSource('my', {
      connector: 'mysql',
      url: SHARED_URL,
      heartbeat: 1000,
      reconnectDelay: 100,
      outbox: { table: outbox },
    });
    app.model('accounts', {
      dataSource: 'my',
      topic: `${prefix}/outbox/{op}/{key}`,
      settings: { outbox: true },
    });
    app.model('captured', { dataSource: 'my', topic: `${prefix}/cdc/{op}/{key}`, settings: { table } });
    await app.start();
    sub = await subscriber(mqttUrl, `${prefix}/#`);
    // The application's driver converts dates at +05:00.
    lb = accountsApp({
      table,
      url: SHARED_URL,
      connector: 'mysql',
      publishing: { mode: 'outbox', model: 'accounts' },
      evpubApp: app,
      settings: { timezone: '+05:00' },
    });
    await lb.start();
    http = createRestAppClient(lb);
  });

  afterAll(async () => {
    await lb?.stop();
    await sub?.client.end();
    await app?.stop();
    await admin?.query(`DROP TABLE IF EXISTS \`${table}\``);
    await admin?.query(`DROP TABLE IF EXISTS \`${outbox}\``);
    await admin?.end();
  });

  const on = (topic: string) => sub.got.filter((r) => r.topic === topic);
  async function pair(op: string, key: string): Promise<{ outbox: Received; cdc: Received }> {
    await waitFor(
      () => on(`${prefix}/outbox/${op}/${key}`).length > 0 && on(`${prefix}/cdc/${op}/${key}`).length > 0,
      `${op} ${key} from the outbox and the table`,
    );
    return { outbox: on(`${prefix}/outbox/${op}/${key}`)[0]!, cdc: on(`${prefix}/cdc/${op}/${key}`)[0]! };
  }
  const change = (r: Received) => {
    const { op, key, before, after } = data(r);
    return { op, key, before, after };
  };

  it('POST, PATCH, DELETE: the same data as the mysql connector captures from the table', async () => {
    const created = await http.post('/accounts').send({ name: 'ann', balance: 10.5 }).expect(200);
    const id = String(created.body.id);
    const c = await pair('create', id);
    expect(change(c.outbox)).toEqual(change(c.cdc));
    expect(data(c.outbox).after).toMatchObject({
      id: Number(id),
      name: 'ann',
      balance: '10.50',
      big: '9007199254740993',
      born: '1999-12-31T23:59:58',
    });
    expect(String((data(c.outbox).after as Record<string, unknown>).opened)).toMatch(/Z$/);

    await http.patch(`/accounts/${id}`).send({ balance: 25 }).expect(204);
    const u = await pair('update', id);
    expect(change(u.outbox)).toEqual(change(u.cdc));
    expect(data(u.outbox)).toMatchObject({ before: { balance: '10.50' }, after: { balance: '25.00' } });

    await http.del(`/accounts/${id}`).expect(204);
    const d = await pair('delete', id);
    expect(change(d.outbox)).toEqual(change(d.cdc));

    const repo = await lb.get<{
      create(e: object, o?: object): Promise<{ id: number }>;
      execute(sql: string, params: unknown[], o?: object): Promise<unknown>;
      beginTransaction(o?: object): Promise<{ commit(): Promise<void>; rollback(): Promise<void> }>;
    }>('repositories.AccountRepository');
    const tx = await repo.beginTransaction({ isolationLevel: 'READ COMMITTED' });
    const rolled = await repo.create({ name: 'rolled back', balance: 1 }, { transaction: tx });
    await tx.rollback();
    // A caller's transaction whose session is at +05:00: the rows are still read at UTC.
    const zoned = await repo.beginTransaction({ isolationLevel: 'READ COMMITTED' });
    await repo.execute("SET time_zone = '+05:00'", [], { transaction: zoned });
    const kept = await repo.create({ name: 'kept', balance: 2 }, { transaction: zoned });
    const [zone] = (await repo.execute('SELECT @@session.time_zone AS tz', [], { transaction: zoned })) as {
      tz: string;
    }[];
    expect(zone!.tz).toBe('+05:00'); // put back after the repository's read
    await zoned.commit();
    const k = await pair('create', String(kept.id));
    expect(change(k.outbox)).toEqual(change(k.cdc));
    expect(sub.got.filter((r) => r.topic === `${prefix}/outbox/create/${rolled.id}`)).toEqual([]);
    const [rows] = await admin.query(`SELECT COUNT(*) AS n FROM \`${outbox}\``);
    expect((rows as { n: number }[])[0]!.n).toBe(0);
  });
});
