/**
 * EvpubComponent in a real LoopBack 4 application: a PostgreSQL event datasource and a model
 * declared the LoopBack way, publishing to the shared Mosquitto; the CLIENT and STATUS
 * bindings; app.stop() drains and checkpoints, a second app.start() resumes with nothing lost;
 * `listen: true` serves the management API until app.stop().
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Application, inject } from '@loopback/core';
import { Entity, juggler, model, property, RepositoryMixin } from '@loopback/repository';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app/app';
import { EvpubBindings, EvpubComponent } from '../../src/loopback/index';
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import { PgFixture, sql } from '../helpers/postgres';
import { quietLogger } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('postgres');
  await requireService('mosquitto');
});

class TestApp extends RepositoryMixin(Application) {}

interface Received {
  topic: string;
  body: Record<string, unknown>;
}

/** A subscriber with evpub's own client, collecting what arrives under `prefix/#`. */
async function subscriber(prefix: string): Promise<Received[]> {
  const client = createClient(SERVICES.mosquitto.url, { logger: quietLogger() });
  cleanups.push(() => client.end());
  const received: Received[] = [];
  client.on('message', (topic, payload) => {
    received.push({ topic, body: JSON.parse(payload.toString('utf8')) as Record<string, unknown> });
  });
  await client.subscribe(`${prefix}/#`);
  return received;
}

/** A LoopBack app with the component, an event datasource on `f` and a model on `table`. */
function makeApp(
  f: PgFixture,
  table: string,
  prefix: string,
  extra: Record<string, unknown> = {},
  connector = 'postgres',
) {
  const checkpoints = mkdtempSync(path.join(tmpdir(), 'evpub-lb-'));
  cleanups.push(() => rmSync(checkpoints, { recursive: true, force: true }));

  class EventsDataSource extends juggler.DataSource {
    static dataSourceName = 'events';
    static readonly defaultConfig = {
      name: 'events',
      connector,
      url: f.url,
      slot: f.slot,
      publication: f.publication,
      statusInterval: 200,
      heartbeatInterval: 200,
    };
  }

  // The evpub connector's own setting, or (with evpub/connectors/postgres) the table the CRUD
  // connector would use for this model: one class for the repository and the feed.
  const evpub = { dataSource: 'events', topic: `${prefix}/{model}/{op}/{key}` };
  @model({
    settings:
      connector === 'postgres'
        ? { evpub: { ...evpub, settings: { table } } }
        : { evpub, postgresql: { schema: 'public', table } },
  })
  class Account extends Entity {
    @property({ type: 'number', id: true }) id!: number;
    @property({ type: 'string' }) name?: string;
  }

  const app = new TestApp();
  app.component(EvpubComponent);
  app.configure(EvpubBindings.COMPONENT).to({
    brokers: { default: { url: SERVICES.mosquitto.url } },
    checkpoints: { store: 'file', path: checkpoints },
    logger: quietLogger(),
    stopTimeout: 5000,
    ...extra,
  });
  app.dataSource(EventsDataSource);
  app.model(Account);
  cleanups.push(() => app.stop());
  return app;
}

const ids = (received: Received[], op: string) =>
  received
    .filter((r) => r.body.type === `evpub.Account.${op}`)
    .map((r) => (r.body.data as { after: { id: number } }).after.id);

describe('EvpubComponent with a PostgreSQL event datasource', () => {
  it(
    'publishes rows as CloudEvents, drains at app.stop() and resumes at app.start() with nothing lost',
    { timeout: 60_000 },
    async () => {
      const f = new PgFixture();
      cleanups.push(() => f.drop());
      const table = await f.table('id int PRIMARY KEY, name text');
      const prefix = `evpub/lbtest/${uniqueName('c')}`;
      const received = await subscriber(prefix);
      const app = makeApp(f, table, prefix);

      await app.start();
      const status = await app.get(EvpubBindings.STATUS);
      expect(status.state).toBe('running');
      expect(Object.keys(status.feeds)).toEqual(['events/Account']);

      await sql(`INSERT INTO ${table} VALUES (1, 'ada')`, []);
      await waitFor(() => ids(received, 'create').includes(1), 'row 1 on MQTT');
      const first = received.find((r) => r.body.type === 'evpub.Account.create')!;
      expect(first.topic).toBe(`${prefix}/Account/create/1`);
      expect(first.body).toMatchObject({
        specversion: '1.0',
        source: '/evpub/events/Account',
        subject: '1',
        data: { op: 'create', after: { id: 1, name: 'ada' } },
      });

      // The bound client publishes for a service that injects it.
      class Notifier {
        constructor(@inject(EvpubBindings.CLIENT) private readonly client: Client) {}
        notify(text: string): Promise<void> {
          return this.client.publish(`${prefix}/notes`, JSON.stringify({ text }));
        }
      }
      app.bind('services.Notifier').toClass(Notifier);
      await (await app.get<Notifier>('services.Notifier')).notify('hello');
      await waitFor(() => received.some((r) => r.topic === `${prefix}/notes`), 'the note on MQTT');
      expect(received.find((r) => r.topic === `${prefix}/notes`)!.body).toEqual({ text: 'hello' });

      await app.stop();
      const evpubApp: App = await app.get(EvpubBindings.APP);
      expect(evpubApp.state).toBe('idle');
      expect((await app.get(EvpubBindings.STATUS)).state).toBe('idle');

      // Written while stopped: published after the second start, from the checkpoint.
      await sql(`INSERT INTO ${table} SELECT g, 'n' || g FROM generate_series(2, 51) g`, []);
      await app.start();
      await waitFor(() => ids(received, 'create').length >= 51, 'the 50 rows written while stopped');
      await sql(`UPDATE ${table} SET name = 'grace' WHERE id = 1`, []);
      await waitFor(() => ids(received, 'update').includes(1), 'the update after the restart');
      const created = ids(received, 'create');
      expect([...new Set(created)].sort((a, b) => a - b)).toEqual(
        Array.from({ length: 51 }, (_, i) => i + 1),
      );
      // A drained stop saved the checkpoint: nothing was published twice.
      expect(created).toHaveLength(51);
      // STATUS is read at each resolution: this run's count (50 creates and the update) shows.
      await waitFor(
        async () => (await app.get(EvpubBindings.STATUS)).feeds['events/Account']!.published === 51,
        'the status to count the 51 events published since the restart',
      );

      // The client was ended by app.stop(); after the restart the binding gives a new one.
      await (await app.get<Notifier>('services.Notifier')).notify('again');
      await waitFor(
        () => received.filter((r) => r.topic === `${prefix}/notes`).length === 2,
        'the second note',
      );
      await app.stop();
    },
  );

  it(
    'app.stop() in the middle of a burst loses nothing: the rest arrives after app.start()',
    { timeout: 60_000 },
    async () => {
      const f = new PgFixture();
      cleanups.push(() => f.drop());
      const table = await f.table('id int PRIMARY KEY, name text');
      const prefix = `evpub/lbtest/${uniqueName('c')}`;
      const received = await subscriber(prefix);
      const app = makeApp(f, table, prefix);
      await app.start();
      const rows = 3000;
      await sql(`INSERT INTO ${table} SELECT g, 'n' || g FROM generate_series(1, ${rows}) g`, []);
      await waitFor(() => received.length > 0, 'the burst to start arriving');
      await app.stop();
      // Stopped mid-burst (here: about one window, 1,000 events, had been published).
      await app.start();
      await waitFor(() => new Set(ids(received, 'create')).size === rows, `all ${rows} rows`, 40_000);
      const created = ids(received, 'create');
      expect(new Set(created).size).toBe(rows);
      // Per key, in order: every row's one create; a graceful stop leaves no duplicate either.
      expect(created).toHaveLength(rows);
      await app.stop();
    },
  );

  it('serves the management API with `listen: true` until app.stop()', { timeout: 30_000 }, async () => {
    const f = new PgFixture();
    cleanups.push(() => f.drop());
    const table = await f.table('id int PRIMARY KEY, name text');
    const prefix = `evpub/lbtest/${uniqueName('c')}`;
    const app = makeApp(
      f,
      table,
      prefix,
      { listen: true, http: { host: '127.0.0.1', port: 0 } },
      'evpub/connectors/postgres',
    );
    // A CRUD datasource and a model without settings.evpub beside them: not feeds, left alone.
    class DbDataSource extends juggler.DataSource {
      static dataSourceName = 'db';
      static readonly defaultConfig = { name: 'db', connector: 'postgresql', url: f.url };
    }
    @model()
    class Note extends Entity {
      @property({ type: 'number', id: true }) id!: number;
    }
    app.dataSource(DbDataSource);
    app.model(Note);
    await app.start();
    const address = await (await app.get(EvpubBindings.APP)).listen();
    const res = await fetch(`${address.url}/ready`);
    expect(res.status).toBe(200);
    const config = await app.get(EvpubBindings.CONFIG);
    expect(config.listen).toBe(true);
    expect(Object.keys(config.models ?? {})).toEqual(['Account']);
    expect(config.models?.Account?.settings).toEqual({ table: `public.${table}` });
    expect(Object.keys(config.datasources ?? {})).toEqual(['events']);
    expect(config.datasources?.events?.connector).toBe('postgres');
    await app.stop();
    await expect(fetch(`${address.url}/ready`)).rejects.toThrow();
  });
});
