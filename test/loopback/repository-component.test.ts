/**
 * The repository mixin with EvpubComponent, the LoopBack way end to end: the Account model
 * names its evpub options in its settings (`evpub: { dataSource, topic, settings: { outbox:
 * true } }`), the event datasource has an `outbox`, the repository (outbox mode, no `model`
 * option) gets the app from the component's EvpubBindings.APP binding and the outbox table from
 * the event datasource's setting. POST, PATCH and DELETE over HTTP arrive on MQTT as
 * `evpub.Account.*` CloudEvents.
 */
import { inject } from '@loopback/core';
import {
  DefaultTransactionalRepository,
  Entity,
  juggler,
  model,
  RepositoryMixin,
} from '@loopback/repository';
import { del, param, patch, post, requestBody, RestApplication } from '@loopback/rest';
import { createRestAppClient } from '@loopback/testlab';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventPublishingRepositoryMixin, EvpubBindings, EvpubComponent } from '../../src/loopback/index';
import { PgFixture, PG_URL, sql } from '../helpers/postgres';
import { quietLogger, subscriber, type Received } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const BODY = { content: { 'application/json': { schema: { type: 'object' as const } } } };
const pg = new PgFixture();
const outbox = uniqueName('outbox');
let table: string;
let sub: Awaited<ReturnType<typeof subscriber>>;

beforeAll(async () => {
  await requireService('postgres');
  sub = await subscriber(await requireService('mosquitto'), 'evpub/lbcomp/#');
  table = await pg.table('id serial PRIMARY KEY, name text NOT NULL', 'acct');
});

afterAll(async () => {
  await sub?.client.end();
  await pg.drop();
  await sql(`DROP TABLE IF EXISTS ${outbox}`);
});

describe('repository mixin with EvpubComponent', () => {
  it('the model settings, the component and the repository together: HTTP writes arrive from the outbox', async () => {
    const prefix = `evpub/lbcomp/${uniqueName('c')}`;

    @model({
      name: 'Account',
      properties: {
        id: { type: 'number', id: true, generated: true },
        name: { type: 'string', required: true },
      },
      settings: {
        postgresql: { schema: 'public', table },
        evpub: { dataSource: 'events', topic: `${prefix}/{model}/{op}/{key}`, settings: { outbox: true } },
      },
    })
    class Account extends Entity {
      declare id?: number;
      declare name: string;
    }

    class AccountRepository extends EventPublishingRepositoryMixin(DefaultTransactionalRepository, {
      mode: 'outbox',
    })<Account, number, object> {
      constructor(@inject('datasources.db') ds: juggler.DataSource) {
        super(Account, ds);
      }
    }

    class AccountController {
      constructor(@inject('repositories.AccountRepository') private readonly repo: AccountRepository) {}
      @post('/accounts')
      create(@requestBody(BODY) body: Partial<Account>): Promise<Account> {
        return this.repo.create(body);
      }
      @patch('/accounts/{id}')
      update(@param.path.number('id') id: number, @requestBody(BODY) body: Partial<Account>): Promise<void> {
        return this.repo.updateById(id, body);
      }
      @del('/accounts/{id}')
      remove(@param.path.number('id') id: number): Promise<void> {
        return this.repo.deleteById(id);
      }
    }

    const app = new (class extends RepositoryMixin(RestApplication) {})({
      rest: { host: '127.0.0.1', port: 0 },
    });
    app.component(EvpubComponent);
    app.configure(EvpubBindings.COMPONENT).to({
      brokers: { default: { url: SERVICES.mosquitto.url } },
      checkpoints: { store: 'memory' },
      logger: quietLogger(),
    });
    // The event datasource, declared as a class (LoopBack's way; the component reads its config).
    class EventsDataSource extends juggler.DataSource {
      static dataSourceName = 'events';
      static readonly defaultConfig = {
        name: 'events',
        connector: 'postgres',
        url: PG_URL,
        slot: pg.slot,
        publication: pg.publication,
        heartbeatInterval: 200,
        outbox: { table: outbox },
      };
    }
    app.dataSource(EventsDataSource);
    app.dataSource(new juggler.DataSource({ name: 'db', connector: 'postgresql', url: PG_URL }), 'db');
    app.model(Account);
    app.repository(AccountRepository, 'AccountRepository');
    app.controller(AccountController);
    await app.start();
    try {
      const http = createRestAppClient(app);
      const id = String((await http.post('/accounts').send({ name: 'ann' }).expect(200)).body.id);
      await http.patch(`/accounts/${id}`).send({ name: 'anne' }).expect(204);
      await http.del(`/accounts/${id}`).expect(204);
      const mine = (): Received[] => sub.got.filter((r) => r.topic.startsWith(`${prefix}/`));
      await waitFor(() => mine().length >= 3, 'three events');
      expect(mine().map((r) => [r.topic, r.json.type, r.json.subject])).toEqual([
        [`${prefix}/Account/create/${id}`, 'evpub.Account.create', id],
        [`${prefix}/Account/update/${id}`, 'evpub.Account.update', id],
        [`${prefix}/Account/delete/${id}`, 'evpub.Account.delete', id],
      ]);
      expect(mine()[1]!.json.data).toMatchObject({
        before: { id: Number(id), name: 'ann' },
        after: { id: Number(id), name: 'anne' },
        source: { outbox: true },
      });
    } finally {
      await app.stop();
    }
  });
});
