/**
 * The repository mixin in `direct` mode over HTTP: a LoopBack 4 REST application (Account CRUD
 * over loopback-connector-postgresql) whose writes publish CloudEvents to the shared Mosquitto,
 * received by an evpub subscriber and by mosquitto_sub. The same table is captured by evpub's
 * postgres CDC connector (REPLICA IDENTITY FULL), so every write through the API arrives twice,
 * once per path, and the two must be the same event: type, subject, topic and data (op, key,
 * before, after), apart from the position, transaction and source facts.
 */
import type { RestApplication } from '@loopback/rest';
import { createRestAppClient, type Client as HttpClient } from '@loopback/testlab';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { Client } from '../../src/pubsub/client';
import { PgFixture, PG_URL, sql } from '../helpers/postgres';
import { quietLogger, subscriber, type Received } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { accountsApp } from './accounts-app';
import { jsonLines, mosquittoSub, type Lines } from './helpers';

const pg = new PgFixture();
const prefix = uniqueName('lbdirect');
let table: string;
let app: App;
let lb: RestApplication;
let http: HttpClient;
let sub: { client: Client; got: Received[] };
let mosq: Lines;

beforeAll(async () => {
  const mqttUrl = await requireService('mosquitto');
  await requireService('postgres');
  table = await pg.table(
    "id serial PRIMARY KEY, name text NOT NULL, balance numeric(12,2), opened timestamptz NOT NULL DEFAULT now(), tags text[] DEFAULT ARRAY['new']",
    'acct',
  );
  await sql(`ALTER TABLE ${table} REPLICA IDENTITY FULL`);
  app = evpub({
    logger: quietLogger(),
    brokers: { default: mqttUrl },
    checkpoints: new MemoryCheckpointStore(),
  });
  app.dataSource('pg', {
    connector: 'postgres',
    url: PG_URL,
    slot: pg.slot,
    publication: pg.publication,
    statusInterval: 200,
    heartbeatInterval: 500,
  });
  app.model('accounts', {
    dataSource: 'pg',
    topic: `${prefix}/{datasource}/{model}/{op}`,
    settings: { table },
  });
  await app.start();
  sub = await subscriber(mqttUrl, `${prefix}/#`);
  mosq = await mosquittoSub(`${prefix}/#`);
  // The application's sessions run in another time zone and date style than the connector's:
  // the rows the repository reads must not depend on them.
  const lbUrl = `${PG_URL}?options=${encodeURIComponent('-c TimeZone=America/New_York -c DateStyle=SQL,DMY')}`;
  lb = accountsApp({ table, url: lbUrl, publishing: { mode: 'direct', model: 'accounts' }, evpubApp: app });
  await lb.start();
  http = createRestAppClient(lb);
});

afterAll(async () => {
  mosq?.proc.kill('SIGKILL');
  await lb?.stop();
  await sub?.client.end();
  await app?.stop();
  await pg.drop();
});

type Ce = Record<string, unknown> & { data: Record<string, unknown> };

const fromLoopBack = (e: Ce) => (e.data.source as Record<string, unknown> | undefined)?.writer === 'loopback';

/** The two events of one change: the repository's and the CDC connector's, by type and subject. */
async function bothPaths(type: string, subject: string): Promise<{ direct: Received; cdc: Received }> {
  const of = (pick: (e: Ce) => boolean) =>
    sub.got.find((r) => r.json.type === type && r.json.subject === subject && pick(r.json as Ce));
  await waitFor(() => of(fromLoopBack) && of((e) => !fromLoopBack(e)), `${type} ${subject} from both paths`);
  return { direct: of(fromLoopBack)!, cdc: of((e) => !fromLoopBack(e))! };
}

/** What a consumer compares: everything but the id, time, position, tx and source facts. */
function shape(r: Received): Record<string, unknown> {
  const e = r.json as Ce;
  const { op, key, before, after } = e.data;
  return {
    topic: r.topic,
    specversion: e.specversion,
    source: e.source,
    type: e.type,
    subject: e.subject,
    datacontenttype: e.datacontenttype,
    data: { op, key, before, after },
  };
}

describe('LoopBack repository, direct mode, over HTTP', () => {
  it('POST, PATCH, DELETE publish create, update (with the changed fields) and delete, as the CDC connector does', async () => {
    const created = await http.post('/accounts').send({ name: 'ann', balance: 10.5 }).expect(200);
    const id = String(created.body.id);
    const c = await bothPaths('evpub.accounts.create', id);
    expect(shape(c.direct)).toEqual(shape(c.cdc));
    expect(c.direct.topic).toBe(`${prefix}/pg/accounts/create`);
    const createData = (c.direct.json as Ce).data;
    expect(createData.before).toBeNull();
    expect(createData.after).toMatchObject({ id: Number(id), name: 'ann', balance: '10.50', tags: ['new'] });
    expect(String((createData.after as Record<string, unknown>).opened)).toMatch(/Z$/);
    expect(c.direct.json.source).toBe('/evpub/pg/accounts');

    await http.patch(`/accounts/${id}`).send({ balance: 25 }).expect(204);
    const u = await bothPaths('evpub.accounts.update', id);
    expect(shape(u.direct)).toEqual(shape(u.cdc));
    const updateData = (u.direct.json as Ce).data;
    expect(updateData.before).toMatchObject({ balance: '10.50', name: 'ann' });
    expect(updateData.after).toMatchObject({ balance: '25.00', name: 'ann' });

    await http.del(`/accounts/${id}`).expect(204);
    const d = await bothPaths('evpub.accounts.delete', id);
    expect(shape(d.direct)).toEqual(shape(d.cdc));
    expect((d.direct.json as Ce).data).toMatchObject({ op: 'delete', key: id, after: null });
    expect((d.direct.json as Ce).data.before).toMatchObject({ id: Number(id), balance: '25.00' });

    // mosquitto_sub, a separate subscriber, got the repository's three events as they were sent.
    await waitFor(
      () => jsonLines(mosq.lines).filter((e) => e.subject === id && fromLoopBack(e as Ce)).length >= 3,
      'the three events at mosquitto_sub',
    );
    const seen = jsonLines(mosq.lines).filter((e) => e.subject === id && fromLoopBack(e as Ce));
    expect(seen.map((e) => e.type)).toEqual([
      'evpub.accounts.create',
      'evpub.accounts.update',
      'evpub.accounts.delete',
    ]);
    expect(seen[0]).toEqual(c.direct.json);
  });

  it('a change made directly in PostgreSQL arrives in the same shape (type, subject, data) as one made through the API', async () => {
    const viaApi = await http.post('/accounts').send({ name: 'bob', balance: 1 }).expect(200);
    const apiId = String(viaApi.body.id);
    await http.patch(`/accounts/${apiId}`).send({ name: 'bobby' }).expect(204);
    const [row] = await sql<{ id: number }>(
      `INSERT INTO ${table} (name, balance) VALUES ('cid', 1) RETURNING id`,
    );
    const pgId = String(row!.id);
    await sql(`UPDATE ${table} SET name = 'cidney' WHERE id = $1`, [row!.id]);
    const api = (await bothPaths('evpub.accounts.update', apiId)).direct.json as Ce;
    await waitFor(
      () => sub.got.find((r) => r.json.type === 'evpub.accounts.update' && r.json.subject === pgId),
      'the psql update',
    );
    const direct = sub.got.find((r) => r.json.type === 'evpub.accounts.update' && r.json.subject === pgId)!
      .json as Ce;
    // Same attributes and the same data fields, with the values of each record.
    expect(Object.keys(api).sort()).toEqual(Object.keys(direct).sort());
    expect(Object.keys(api.data.after as object).sort()).toEqual(
      Object.keys(direct.data.after as object).sort(),
    );
    expect(Object.keys(api.data.before as object).sort()).toEqual(
      Object.keys(direct.data.before as object).sort(),
    );
    expect(api.data).toMatchObject({
      op: 'update',
      key: apiId,
      before: { name: 'bob' },
      after: { name: 'bobby', balance: '1.00' },
    });
    expect(direct.data).toMatchObject({
      op: 'update',
      key: pgId,
      before: { name: 'cid' },
      after: { name: 'cidney', balance: '1.00' },
    });
  });

  it('updateAll and deleteAll publish one event per affected record; a rolled-back caller transaction publishes nothing', async () => {
    const repo = await lb.get<{
      createAll(e: object[]): Promise<{ id: number }[]>;
      updateAll(d: object, w: object): Promise<{ count: number }>;
      deleteAll(w: object): Promise<{ count: number }>;
      create(e: object, o?: object): Promise<{ id: number }>;
      beginTransaction(o?: object): Promise<{ commit(): Promise<void>; rollback(): Promise<void> }>;
    }>('repositories.AccountRepository');
    const group = uniqueName('grp');
    const made = await repo.createAll([
      { name: group, balance: 1 },
      { name: group, balance: 2 },
      { name: 'other', balance: 3 },
    ]);
    expect((await repo.updateAll({ balance: 7 }, { name: group })).count).toBe(2);
    const ids = made.slice(0, 2).map((m) => String(m.id));
    for (const id of ids) {
      const u = await bothPaths('evpub.accounts.update', id);
      expect(shape(u.direct)).toEqual(shape(u.cdc));
    }
    expect(
      sub.got.filter(
        (r) => r.json.type === 'evpub.accounts.update' && r.json.subject === String(made[2]!.id),
      ),
    ).toEqual([]);
    expect((await repo.deleteAll({ name: group })).count).toBe(2);
    for (const id of ids) await bothPaths('evpub.accounts.delete', id);

    const tx = await repo.beginTransaction({ isolationLevel: 'READ COMMITTED' });
    const rolled = await repo.create({ name: 'rolled back', balance: 0 }, { transaction: tx });
    await tx.rollback();
    const tx2 = await repo.beginTransaction({ isolationLevel: 'READ COMMITTED' });
    const kept = await repo.create({ name: 'committed', balance: 0 }, { transaction: tx2 });
    await tx2.commit();
    await bothPaths('evpub.accounts.create', String(kept.id));
    expect(sub.got.filter((r) => r.json.subject === String(rolled.id))).toEqual([]);
  });
});
