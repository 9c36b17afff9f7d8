/**
 * Which LoopBack datasources are event datasources (the `evpub: true` marker), and
 * EvpubComponent's bad input: each a CONFIG_INVALID EvpubError at app.start() naming the model
 * (its LoopBack class) and the key, before anything connects; the bound configuration fails
 * with the same error as evpub.config.*. Nothing here reaches a server: the datasource points
 * at a port nobody listens on, so a mistake that got past validation would fail differently.
 */
import { Application } from '@loopback/core';
import { Entity, juggler, model, property, RepositoryMixin } from '@loopback/repository';
import { afterEach, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/app/config';
import { ErrorCode, EvpubError } from '../../src/errors';
import { EvpubBindings, EvpubComponent, eventConnector } from '../../src/loopback/index';
import { quietLogger } from '../helpers/publisher';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

class TestApp extends RepositoryMixin(Application) {}

const UNREACHABLE = 'postgres://postgres@127.0.0.1:1/none';

function makeApp(config: Record<string, unknown> = {}): TestApp {
  const app = new TestApp();
  app.component(EvpubComponent);
  app.configure(EvpubBindings.COMPONENT).to({
    brokers: { default: { url: 'memory://lb-config' } },
    checkpoints: { store: 'memory' },
    logger: quietLogger(),
    ...config,
  });
  // A failed start leaves a LoopBack app 'starting' (LoopBack's behaviour), where stop() throws.
  cleanups.push(() => (app.state === 'starting' ? undefined : app.stop()));
  return app;
}

function eventsDataSource(connector = 'postgres', name = 'events') {
  return class extends juggler.DataSource {
    static dataSourceName = name;
    static readonly defaultConfig = { name, connector, url: UNREACHABLE };
  };
}

function accountModel(evpub: unknown) {
  @model({ settings: { evpub } })
  class Account extends Entity {
    @property({ type: 'number', id: true }) id!: number;
  }
  return Account;
}

async function startError(app: TestApp): Promise<EvpubError> {
  const err: unknown = await app.start().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EvpubError);
  expect((err as EvpubError).code).toBe(ErrorCode.CONFIG_INVALID);
  return err as EvpubError;
}

describe('EvpubComponent: which datasources are event datasources', () => {
  it('a CRUD connector name marked `evpub: true` is an event datasource; the marker is not passed on', async () => {
    const app = makeApp();
    class MarkedDataSource extends juggler.DataSource {
      static dataSourceName = 'marked';
      static readonly defaultConfig = { name: 'marked', connector: 'memory', evpub: true };
    }
    class CrudDataSource extends juggler.DataSource {
      static dataSourceName = 'db';
      static readonly defaultConfig = { name: 'db', connector: 'memory' };
    }
    app.dataSource(MarkedDataSource);
    app.dataSource(CrudDataSource);
    app.model(accountModel({ dataSource: 'marked' }));
    await app.start();
    expect(Object.keys((await app.get(EvpubBindings.STATUS)).feeds)).toEqual(['marked/Account']);
    expect((await app.get(EvpubBindings.CONFIG)).datasources).toEqual({
      marked: { name: 'marked', connector: 'memory' },
    });
    await app.stop();
  });
});

describe('EvpubComponent: bad input', () => {
  it('a typo in settings.evpub names the model, the key and the nearest valid key', async () => {
    const app = makeApp();
    app.dataSource(eventsDataSource());
    app.model(accountModel({ dataSource: 'events', topc: 'accounts/{op}' }));
    const err = await startError(app);
    expect(err.message).toContain(
      'model Account (settings.evpub.topc): unknown key "topc" (did you mean "topic"?)',
    );
    expect(app.state).not.toBe('started');
  });

  it('a model on an unknown event datasource names the model, the key and the datasources there are', async () => {
    const app = makeApp();
    app.dataSource(eventsDataSource());
    app.model(accountModel({ dataSource: 'evnts' }));
    const err = await startError(app);
    expect(err.message).toContain('model Account (settings.evpub.dataSource): unknown datasource "evnts"');
    expect(err.message).toContain('did you mean "events"?');
  });

  it('a model on a CRUD datasource is an error naming the model, the datasource and the fix', async () => {
    const app = makeApp();
    app.dataSource(eventsDataSource('memory', 'db'));
    app.model(accountModel({ dataSource: 'db' }));
    const err = await startError(app);
    expect(err.message).toContain(
      'model Account (settings.evpub.dataSource): datasource "db" is not an event datasource',
    );
    expect(err.message).toContain('evpub/connectors/');
  });

  it('an evpub option of the wrong type is named where it was declared', async () => {
    const app = makeApp();
    app.dataSource(eventsDataSource());
    app.model(accountModel({ dataSource: 'events', ops: ['create', 'upsert'] }));
    const err = await startError(app);
    expect(err.message).toMatch(/model Account \(settings\.evpub\.ops\[?\.?1\]?\): must be one of/);
  });

  it('the bound configuration fails with the same error as evpub.config.*', async () => {
    const config = {
      brokers: { default: { url: 'memory://lb-config' } },
      datasources: { db: { connector: 'memory' } },
      models: { accounts: { dataSource: 'db', envelop: 'legacy' } },
    };
    const app = makeApp(config);
    const err = await startError(app);
    let expected: unknown;
    try {
      validateConfig({ ...config, checkpoints: { store: 'memory' } });
    } catch (e) {
      expected = e;
    }
    expect(expected).toBeInstanceOf(EvpubError);
    expect(err.message).toBe((expected as EvpubError).message);
    expect(err.message).toContain('models.accounts: unknown key "envelop" (did you mean "envelope"?)');
  });

  it('an extension that shadows a built-in connector is an error naming its binding', async () => {
    const app = makeApp();
    app.add(eventConnector('postgres', { initialize: () => undefined }));
    const err = await startError(app);
    expect(err.message).toContain(
      'extension evpub.connectors.postgres: connector "postgres" is already registered; register it under another name',
    );
  });

  it('a model declared both in the configuration and the LoopBack way is named once with both places', async () => {
    const app = makeApp({
      datasources: { events: { connector: 'postgres', url: UNREACHABLE } },
      models: { Account: { dataSource: 'events' } },
    });
    app.dataSource(eventsDataSource('evpub/connectors/postgres', 'more'));
    app.model(accountModel({ dataSource: 'more' }));
    const err = await startError(app);
    expect(err.message).toContain(
      'model Account (settings.evpub): "Account" is also in the component\'s configuration (models.Account)',
    );
  });
});
