/**
 * Bad input of the repository mixin and of `app.publishChange`: each a clear EvpubError naming
 * what is wrong and the fix.
 *
 * - outbox mode on a datasource that cannot run transactions (the memory connector): refused
 *   when the repository is made, the error naming the repository's model and the `mode` key:
 *   with EvpubComponent at `app.start()` (the component makes every publishing repository
 *   first), without it at the first request or injection, which gets the error rather than a
 *   silent write without its event;
 * - an unknown mode;
 * - `app.publishChange` for an unknown model, for another datasource than the model's, before
 *   start; an event the model's `ops` leave out is not published; one that cannot be published
 *   (larger than publisher.maxEventBytes) goes to the dead-letter topic with its reason.
 */
import { inject } from '@loopback/core';
import { createRestAppClient } from '@loopback/testlab';
import {
  DefaultTransactionalRepository,
  Entity,
  juggler,
  model,
  RepositoryMixin,
} from '@loopback/repository';
import { RestApplication } from '@loopback/rest';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { ErrorCode, EvpubError } from '../../src/errors';
import { EventPublishingRepositoryMixin, EvpubBindings, EvpubComponent } from '../../src/loopback/index';
import { PG_URL, sql } from '../helpers/postgres';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { accountsApp } from './accounts-app';

let mqttUrl: string;
const cleanups: (() => Promise<unknown>)[] = [];
beforeAll(async () => {
  mqttUrl = await requireService('mosquitto');
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe('repository mixin: bad input', () => {
  it('outbox mode on the memory datasource: an EvpubError naming the model and the mode key, at the first use', async () => {
    const lb = accountsApp({
      table: 'unused',
      url: PG_URL,
      connector: 'memory',
      publishing: { mode: 'outbox', model: 'accounts' },
    });
    await lb.start();
    cleanups.push(() => lb.stop());
    const err = await lb.get('repositories.AccountRepository').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EvpubError);
    expect((err as EvpubError).code).toBe(ErrorCode.CONFIG_INVALID);
    expect((err as EvpubError).message).toMatch(
      /AccountRepository \(model Account\).*options\.mode "outbox"/,
    );
    expect((err as EvpubError).message).toMatch(/connector "memory"\) cannot run transactions/);
    expect((err as EvpubError).context).toMatchObject({ model: 'Account', key: 'mode', connector: 'memory' });
    // A request fails with it rather than writing without the event.
    const res = await createRestAppClient(lb).post('/accounts').send({ name: 'x' });
    expect(res.status).toBe(500);
  });

  it('with EvpubComponent, outbox mode on the memory datasource fails app.start() naming the model and the key', async () => {
    @model({ name: 'Account', properties: { id: { type: 'number', id: true }, name: { type: 'string' } } })
    class Account extends Entity {
      declare id?: number;
      declare name?: string;
    }
    class AccountRepository extends EventPublishingRepositoryMixin(DefaultTransactionalRepository, {
      mode: 'outbox',
    })<Account, number, object> {
      constructor(@inject('datasources.db') ds: juggler.DataSource) {
        super(Account, ds);
      }
    }
    const app = new (class extends RepositoryMixin(RestApplication) {})({
      rest: { host: '127.0.0.1', port: 0 },
    });
    app.component(EvpubComponent);
    app.configure(EvpubBindings.COMPONENT).to({
      brokers: { default: { url: mqttUrl } },
      checkpoints: { store: 'memory' },
      logger: quietLogger(),
    });
    app.dataSource(new juggler.DataSource({ name: 'db', connector: 'memory' }), 'db');
    app.repository(AccountRepository, 'AccountRepository');
    const err = await app.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EvpubError);
    expect((err as EvpubError).code).toBe(ErrorCode.CONFIG_INVALID);
    expect((err as EvpubError).message).toMatch(
      /AccountRepository \(model Account\).*options\.mode "outbox".*cannot run transactions/,
    );
    expect((err as EvpubError).context).toMatchObject({ model: 'Account', key: 'mode' });
    // Nothing was started: the evpub app is idle (LoopBack leaves its own state at "starting").
    expect((await app.get(EvpubBindings.APP)).state).toBe('idle');
  });

  it('direct mode on the memory datasource is refused the same way (the rows are read from the table)', async () => {
    const lb = accountsApp({
      table: 'unused',
      url: PG_URL,
      connector: 'memory',
      publishing: { mode: 'direct' },
    });
    const err = await lb.get('repositories.AccountRepository').catch((e: unknown) => e);
    expect((err as EvpubError).code).toBe(ErrorCode.CONFIG_INVALID);
    expect((err as EvpubError).message).toMatch(
      /options\.mode "direct".*loopback-connector-postgresql or loopback-connector-mysql/,
    );
  });

  it('an unknown mode is refused when the class is made', () => {
    expect(() =>
      EventPublishingRepositoryMixin(DefaultTransactionalRepository, { mode: 'outbx' as 'outbox' }),
    ).toThrow(/options\.mode must be "direct" or "outbox" \(got "outbx"\)/);
  });
});

describe('direct mode when the event cannot be published', () => {
  it('the evpub app is not running: the write is committed and rejects saying so (INVALID_STATE)', async () => {
    const table = uniqueName('acct');
    await sql(`CREATE TABLE ${table} (id serial PRIMARY KEY, name text NOT NULL, balance numeric)`);
    cleanups.push(() => sql(`DROP TABLE IF EXISTS ${table}`));
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: mqttUrl },
      checkpoints: { store: 'memory' },
    });
    app.dataSource('mem', { connector: 'memory' });
    app.model('accounts', { dataSource: 'mem' });
    const lb = accountsApp({
      table,
      url: PG_URL,
      publishing: { mode: 'direct', model: 'accounts' },
      evpubApp: app,
    });
    cleanups.push(async () => (await lb.get<{ disconnect(): Promise<void> }>('datasources.db')).disconnect());
    const repo = await lb.get<{ create(e: object): Promise<unknown> }>('repositories.AccountRepository');
    const err = (await repo.create({ name: 'zoe' }).catch((e: unknown) => e)) as EvpubError;
    expect(err).toBeInstanceOf(EvpubError);
    expect(err.code).toBe(ErrorCode.INVALID_STATE);
    expect(err.message).toMatch(
      /the change to Account 1 is committed, but its create event was not published: .*needs a running app/,
    );
    expect(err.context).toMatchObject({ model: 'accounts', key: '1', committed: true });
    expect(await sql(`SELECT name FROM ${table}`)).toEqual([{ name: 'zoe' }]);
  });
});

describe('app.publishChange', () => {
  const change = (model: string, key = 'k1') => ({
    id: uniqueName('ev'),
    model,
    op: 'update' as const,
    key,
    before: { id: key, v: 1 },
    after: { id: key, v: 2 },
    sourceTime: new Date().toISOString(),
  });

  it('unknown model, wrong datasource, not running: typed errors; ops filter; too large → dead letter', async () => {
    const prefix = uniqueName('pubchg');
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: mqttUrl },
      checkpoints: { store: 'memory' },
      publisher: { deadLetterTopic: `${prefix}/dead`, maxEventBytes: 2000 },
    });
    cleanups.push(() => app.stop());
    app.dataSource('mem', { connector: 'memory' });
    app.model('accounts', { dataSource: 'mem', topic: `${prefix}/{model}/{op}/{key}`, exclude: ['secret'] });
    app.model('audit', { dataSource: 'mem', topic: `${prefix}/{model}/{op}`, ops: ['create'] });

    await expect(app.publishChange(change('accounts'))).rejects.toMatchObject({
      code: ErrorCode.INVALID_STATE,
    });
    await app.start();
    const sub = await subscriber(mqttUrl, `${prefix}/#`);
    cleanups.push(() => sub.client.end());

    await expect(app.publishChange(change('acounts'))).rejects.toMatchObject({
      code: ErrorCode.FEED_NOT_FOUND,
      message: expect.stringMatching(/no model "acounts".*the models are accounts, audit/),
    });
    await expect(app.publishChange({ ...change('accounts'), datasource: 'pg' })).rejects.toMatchObject({
      code: ErrorCode.CONFIG_INVALID,
    });

    const ok = change('accounts');
    ok.after = { ...ok.after, secret: 's3cr3t' } as typeof ok.after;
    await expect(app.publishChange(ok)).resolves.toEqual({
      outcome: 'published',
      topic: `${prefix}/accounts/update/k1`,
    });
    await waitFor(() => sub.got.find((r) => r.json.id === ok.id), 'the published change');
    const got = sub.got.find((r) => r.json.id === ok.id)!;
    expect(got.json).toMatchObject({
      type: 'evpub.accounts.update',
      subject: 'k1',
      source: '/evpub/mem/accounts',
    });
    expect((got.json.data as { after: object }).after).toEqual({ id: 'k1', v: 2 }); // exclude applied

    await expect(app.publishChange(change('audit'))).resolves.toEqual({
      outcome: 'filtered',
      topic: `${prefix}/audit/update`,
    });

    const big = change('accounts', 'big');
    big.after = { id: 'big', blob: 'x'.repeat(5000) } as unknown as typeof big.after;
    await expect(app.publishChange(big)).resolves.toMatchObject({ outcome: 'dead-lettered' });
    await waitFor(() => sub.got.find((r) => r.topic === `${prefix}/dead`), 'the dead letter');
    const letter = sub.got.find((r) => r.topic === `${prefix}/dead`)!.json;
    expect(letter).toMatchObject({
      code: ErrorCode.PAYLOAD_TOO_LARGE,
      event: { id: big.id, model: 'accounts', key: 'big' },
      topic: `${prefix}/accounts/update/big`,
    });
    expect(sub.got.filter((r) => r.topic === `${prefix}/audit/update`)).toEqual([]);
  });
});
