/**
 * The repository mixin in `outbox` mode, end to end: LoopBack writes put their events in the
 * outbox in their own transaction, evpub's postgres connector (datasource `outbox`, model
 * `outbox: true`) publishes them to Mosquitto.
 *
 * - Over HTTP, POST/PATCH/DELETE arrive as create/update/delete CloudEvents whose data (op, key,
 *   before, after) equals what the CDC connector captures from the table itself for the same
 *   change (a second model on the table, REPLICA IDENTITY FULL).
 * - A caller's transaction that rolls back publishes nothing; the one that commits is published.
 * - The outbox table stays empty.
 * - kill -9 of the application process right after a commit (tsx child, outbox-app.ts, its feed
 *   paused so the event cannot have gone out): the event is published after a restart.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { RestApplication } from '@loopback/rest';
import { createRestAppClient, type Client as HttpClient } from '@loopback/testlab';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import { PgFixture, PG_URL, sql } from '../helpers/postgres';
import { quietLogger, subscriber, tempDir, type Received } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { accountsApp } from './accounts-app';
import type { OutboxAppConfig } from './outbox-app';
import { jsonLines, mosquittoSub } from './helpers';

const ROOT = path.resolve(__dirname, '../..');
const TSX = pathToFileURL(createRequire(path.join(ROOT, 'package.json')).resolve('tsx')).href;
const COLUMNS =
  "id serial PRIMARY KEY, name text NOT NULL, balance numeric(12,2), opened timestamptz NOT NULL DEFAULT now(), tags text[] DEFAULT ARRAY['new']";

let mqttUrl: string;
beforeAll(async () => {
  mqttUrl = await requireService('mosquitto');
  await requireService('postgres');
});

type Ce = Record<string, unknown> & { data: Record<string, unknown> };
const data = (r: Received) => (r.json as Ce).data;

describe('LoopBack repository, outbox mode', () => {
  const pg = new PgFixture();
  const outbox = uniqueName('outbox');
  const prefix = uniqueName('lbout');
  let table: string;
  let app: App;
  let lb: RestApplication;
  let http: HttpClient;
  let sub: Awaited<ReturnType<typeof subscriber>>;

  beforeAll(async () => {
    table = await pg.table(COLUMNS, 'acct');
    await sql(`ALTER TABLE ${table} REPLICA IDENTITY FULL`);
    app = evpub({ logger: quietLogger(), brokers: { default: mqttUrl }, checkpoints: { store: 'memory' } });
    app.dataSource('pg', {
      connector: 'postgres',
      url: PG_URL,
      slot: pg.slot,
      publication: pg.publication,
      heartbeatInterval: 200,
      outbox: { table: outbox },
    });
    // The repository's events, from the outbox; and the table's own changes, captured.
    app.model('accounts', {
      dataSource: 'pg',
      topic: `${prefix}/outbox/{op}/{key}`,
      settings: { outbox: true },
    });
    app.model('captured', { dataSource: 'pg', topic: `${prefix}/cdc/{op}/{key}`, settings: { table } });
    await app.start();
    sub = await subscriber(mqttUrl, `${prefix}/#`);
    lb = accountsApp({
      table,
      url: PG_URL,
      publishing: { mode: 'outbox', model: 'accounts' },
      evpubApp: app,
    });
    await lb.start();
    http = createRestAppClient(lb);
  });

  afterAll(async () => {
    await lb?.stop();
    await sub?.client.end();
    await app?.stop();
    await pg.drop();
    await sql(`DROP TABLE IF EXISTS ${outbox}`);
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

  it('POST, PATCH, DELETE are published from the outbox with the data the CDC connector captures from the table', async () => {
    const created = await http.post('/accounts').send({ name: 'ann', balance: 10.5 }).expect(200);
    const id = String(created.body.id);
    const c = await pair('create', id);
    expect(change(c.outbox)).toEqual(change(c.cdc));
    expect(c.outbox.json).toMatchObject({
      type: 'evpub.accounts.create',
      subject: id,
      source: '/evpub/pg/accounts',
    });
    expect(data(c.outbox).after).toMatchObject({
      id: Number(id),
      name: 'ann',
      balance: '10.50',
      tags: ['new'],
    });

    await http.patch(`/accounts/${id}`).send({ balance: 25 }).expect(204);
    const u = await pair('update', id);
    expect(change(u.outbox)).toEqual(change(u.cdc));
    expect(data(u.outbox)).toMatchObject({ before: { balance: '10.50' }, after: { balance: '25.00' } });

    await http.del(`/accounts/${id}`).expect(204);
    const d = await pair('delete', id);
    expect(change(d.outbox)).toEqual(change(d.cdc));
    expect(data(d.outbox).after).toBeNull();

    const [count] = await sql<{ n: string }>(`SELECT count(*)::text AS n FROM ${outbox}`);
    expect(count?.n).toBe('0');
  });

  it("a caller's transaction that rolls back publishes nothing; the committed one is published, in commit order", async () => {
    const repo = await lb.get<{
      create(e: object, o?: object): Promise<{ id: number }>;
      updateAll(d: object, w: object, o?: object): Promise<{ count: number }>;
      beginTransaction(o?: object): Promise<{ commit(): Promise<void>; rollback(): Promise<void> }>;
    }>('repositories.AccountRepository');
    const rolledTx = await repo.beginTransaction({ isolationLevel: 'READ COMMITTED' });
    const rolled = await repo.create({ name: 'rolled back', balance: 1 }, { transaction: rolledTx });
    await rolledTx.rollback();
    const tx = await repo.beginTransaction({ isolationLevel: 'READ COMMITTED' });
    const kept = await repo.create({ name: 'kept', balance: 2 }, { transaction: tx });
    await repo.updateAll({ balance: 3 }, { name: 'kept' }, { transaction: tx });
    await tx.commit();
    await pair('update', String(kept.id));
    const mine = sub.got.filter(
      (r) =>
        r.topic.startsWith(`${prefix}/outbox/`) &&
        [String(kept.id), String(rolled.id)].includes(String(data(r).key)),
    );
    expect(mine.map((r) => `${String(data(r).op)} ${String(data(r).key)}`)).toEqual([
      `create ${kept.id}`,
      `update ${kept.id}`,
    ]);
    // The two events of one transaction carry its id; the rolled-back row never reached the log.
    expect((data(mine[0]!).tx as { id: string }).id).toBe((data(mine[1]!).tx as { id: string }).id);
    expect(sub.got.filter((r) => String(data(r).key) === String(rolled.id))).toEqual([]);
    const [count] = await sql<{ n: string }>(`SELECT count(*)::text AS n FROM ${outbox}`);
    expect(count?.n).toBe('0');
  });
});

describe('LoopBack repository, outbox mode, kill -9', () => {
  it('kill -9 right after a commit loses nothing: the event is published after the restart (also seen by mosquitto_sub)', async () => {
    const pg = new PgFixture();
    const tmp = await tempDir('evpub-lbout-');
    const table = await pg.table(COLUMNS, 'acct');
    const outbox = uniqueName('outbox');
    const prefix = uniqueName('lbkill');
    const config: OutboxAppConfig = {
      pgUrl: PG_URL,
      mqttUrl,
      table,
      outbox,
      slot: pg.slot,
      publication: pg.publication,
      topic: `${prefix}/{model}/{op}/{key}`,
      checkpoints: path.join(tmp.dir, 'checkpoints'),
    };
    const sub = await subscriber(mqttUrl, `${prefix}/#`);
    const mosq = await mosquittoSub(`${prefix}/#`);
    const run = (c: OutboxAppConfig) => {
      const child = spawn(process.execPath, ['--import', TSX, path.join(__dirname, 'outbox-app.ts')], {
        cwd: ROOT,
        env: { ...process.env, EVPUB_OUTBOX_APP: JSON.stringify(c) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      return { child, out: () => out, err: () => err, exited };
    };
    try {
      const first = run({ ...config, write: { name: 'survivor', balance: 42 } });
      const committed = await waitFor(
        () =>
          /COMMITTED (\d+)/.exec(first.out())?.[1] ??
          (first.child.exitCode !== null ? `exit: ${first.err()}` : ''),
        'the commit in the child',
        45_000,
      );
      first.child.kill('SIGKILL');
      await first.exited;
      expect(committed).toMatch(/^\d+$/);
      expect(sub.got).toEqual([]); // its feed was paused: nothing went out before the kill

      const second = run(config);
      try {
        await waitFor(
          () =>
            sub.got.find((r) => r.topic === `${prefix}/accounts/create/${committed}`) ??
            (second.child.exitCode !== null ? Promise.reject(new Error(second.err())) : undefined),
          'the event after the restart',
          45_000,
        );
        const event = sub.got.find((r) => r.topic === `${prefix}/accounts/create/${committed}`)!;
        expect(event.json).toMatchObject({
          type: 'evpub.accounts.create',
          subject: committed,
          data: { op: 'create', key: committed, before: null, after: { name: 'survivor', balance: '42.00' } },
        });
        await waitFor(
          () => jsonLines(mosq.lines).some((e) => e.id === event.json.id),
          'the event at mosquitto_sub',
        );
        const [count] = await sql<{ n: string }>(`SELECT count(*)::text AS n FROM ${outbox}`);
        expect(count?.n).toBe('0');
      } finally {
        second.child.kill('SIGKILL');
        await second.exited;
      }
    } finally {
      mosq.proc.kill('SIGKILL');
      await sub.client.end();
      await pg.drop();
      await sql(`DROP TABLE IF EXISTS ${outbox}`);
      await tmp.remove();
    }
  });
});
