/**
 * Every built-in connector reads its settings with the one reader (src/connectors/kit/settings.ts):
 * a misspelt key is a CONFIG_INVALID error at initialize naming the datasource, the key and the
 * nearest valid key, never a silent fall-back to a default.
 */
import { describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { SettingsReader, nearest } from '../../src/connectors/kit/settings';
import { parseBridgeModel, parseBridgeSettings } from '../../src/connectors/bridge/settings';
import { builtinConnectors } from '../../src/connectors/registry';
import { parseWebhookModel, parseWebhookSettings } from '../../src/connectors/webhook/settings';
import { parseWebSocketModel, parseWebSocketSettings } from '../../src/connectors/websocket/settings';
import { databaseOf } from '../../src/connectors/couchdb/settings';
import { tableOf as mysqlTableOf, parseMysqlSettings } from '../../src/connectors/mysql/settings';
import { tableOf as postgresTableOf } from '../../src/connectors/postgres/settings';
import type { EventConnector } from '../../src/connectors/contract';
import { ErrorCode, isEvpubError } from '../../src/errors';
import { RecordingSink } from '../conformance/connector.suite';
import { quietLogger } from '../helpers/publisher';

async function initError(connector: string, settings: Record<string, unknown>): Promise<unknown> {
  const module = await builtinConnectors().resolve(connector, 'datasources.shop.connector');
  const dataSource = { name: 'shop', settings: { connector, ...settings }, logger: quietLogger() };
  try {
    await new Promise<void>((resolve, reject) => {
      const result = module.initialize(dataSource, (err) => (err ? reject(err) : resolve()));
      if (result) result.then(resolve, reject);
    });
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('connector settings: a misspelt key names the nearest valid key', () => {
  it.each([
    ['postgres', { url: 'postgres://postgres@127.0.0.1:5432/test', slott: 'evpub_x' }, 'slott', 'slot'],
    ['mysql', { url: 'mysql://root@127.0.0.1:3306/test', hearbeat: 5000 }, 'hearbeat', 'heartbeat'],
    ['mariadb', { url: 'mysql://root@127.0.0.1:3306/test', serverid: 7 }, 'serverid', 'serverId'],
    ['couchdb', { url: 'http://127.0.0.1:5984', heartbeet: 5000 }, 'heartbeet', 'heartbeat'],
    ['cloudant', { url: 'http://127.0.0.1:5984', includeDoc: true }, 'includeDoc', 'includeDocs'],
    ['webhook', { port: 0, ackTimout: 5000 }, 'ackTimout', 'ackTimeout'],
    ['poll', { url: 'sqlite:/tmp/evpub-none.db', intervall: 50 }, 'intervall', 'interval'],
    ['poll', { url: 'http://127.0.0.1:1/api', requestTimout: 50 }, 'requestTimout', 'requestTimeout'],
    ['websocket', { url: 'ws://127.0.0.1:1/feed', pingIntervall: 50 }, 'pingIntervall', 'pingInterval'],
    ['bridge', { url: 'mqtt://127.0.0.1:1', maxBufferd: 50 }, 'maxBufferd', 'maxBuffered'],
    ['memory', { stor: 'shared' }, 'stor', 'store'],
  ])('%s: %j', async (connector, settings, key, near) => {
    const err = await initError(connector, settings);
    expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect((err as Error).message).toBe(`datasources.shop.${key}: unknown setting; did you mean ${near}?`);
    expect((err as { context: unknown }).context).toEqual({ setting: `datasources.shop.${key}` });
  });

  it('a key near none lists the valid keys; the keys the app sets are allowed', async () => {
    const err = await initError('couchdb', { url: 'http://127.0.0.1:5984', zzzzzz: 1 });
    expect((err as Error).message).toBe(
      'datasources.shop.zzzzzz: unknown setting; the settings here are url, feed, heartbeat, includeDocs, ' +
        'includeDesignDocs, batchLimit, connectTimeout, requestTimeout, reconnectDelay, maxReconnectDelay, ' +
        'dedupCacheSize, tls',
    );
    expect(await initError('couchdb', { url: 'http://127.0.0.1:5984', name: 'shop' })).toBeUndefined();
  });

  it('model settings too (couchdb, postgres, mysql, memory)', async () => {
    const module = await builtinConnectors().resolve('memory', 'datasources.shop.connector');
    const dataSource = { name: 'shop', settings: {}, logger: quietLogger(), connector: undefined as unknown };
    await module.initialize(dataSource);
    const memory = dataSource.connector as EventConnector;
    await expect(
      memory.start({
        models: [{ name: 'orders', settings: { table: 'x' }, from: 'now' }],
        sink: new RecordingSink(),
      }),
    ).rejects.toThrow('models.orders.settings.table: unknown setting; this connector takes none here');
    expect(memory.health().state).toBe('idle');
    expect(() => databaseOf('orders', { databse: 'x' })).toThrow(
      'models.orders.settings.databse: unknown setting; did you mean database?',
    );
    expect(() => postgresTableOf('orders', { tabel: 'x' })).toThrow(
      'models.orders.settings.tabel: unknown setting; did you mean table?',
    );
    const mysql = parseMysqlSettings({ url: 'mysql://root@127.0.0.1/test' }, 'shop');
    expect(() => mysqlTableOf('orders', { snapshots: 'initial' }, mysql)).toThrow(
      'models.orders.settings.snapshots: unknown setting; did you mean snapshot?',
    );
  });

  it('model settings too (poll, websocket, bridge, webhook)', async () => {
    const poll = await builtinConnectors().resolve('poll', 'datasources.shop.connector');
    const dataSource = {
      name: 'shop',
      settings: { url: 'sqlite:/tmp/evpub-none.db' },
      logger: quietLogger(),
      connector: undefined as unknown,
    };
    await poll.initialize(dataSource);
    await expect(
      (dataSource.connector as EventConnector).start({
        models: [{ name: 'orders', settings: { keyColum: 'id' }, from: 'now' }],
        sink: new RecordingSink(),
      }),
    ).rejects.toThrow('models.orders.settings.keyColum: unknown setting; did you mean keyColumn?');
    const ws = parseWebSocketSettings({ url: 'ws://127.0.0.1:1/feed' }, 'shop');
    expect(() => parseWebSocketModel(ws, 'orders', { keyPat: 'id' })).toThrow(
      'models.orders.settings.keyPat: unknown setting; did you mean keyPath?',
    );
    const bridge = parseBridgeSettings({ url: 'mqtt://127.0.0.1:1' }, 'shop');
    expect(() => parseBridgeModel(bridge, 'orders', { topic: 'a/b' })).toThrow(
      'models.orders.settings.topic: unknown setting; did you mean topics?',
    );
    const webhook = parseWebhookSettings({ port: 0 }, 'shop');
    expect(() => parseWebhookModel('orders', { dataPth: 'x' }, {}, webhook)).toThrow(
      'models.orders.settings.dataPth: unknown setting; did you mean dataPath?',
    );
  });

  it('CouchDB: heartbeet fails the app at start, before connecting', async () => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: 'memory://x' },
      checkpoints: { store: 'memory' },
    });
    app.dataSource('shop', { connector: 'couchdb', url: 'http://127.0.0.1:1', heartbeet: 5000 });
    app.model('orders', { dataSource: 'shop' });
    await expect(app.start()).rejects.toThrow(
      'datasources.shop.heartbeet: unknown setting; did you mean heartbeat?',
    );
    expect(app.state).toBe('idle');
  });
});

describe('SettingsReader', () => {
  it('suggests only what is near enough to be a typo', () => {
    expect(nearest('heartbeet', ['url', 'heartbeat'])).toBe('heartbeat');
    expect(nearest('prot', ['port', 'host'])).toBe('port');
    expect(nearest('KEYPATH', ['keyPath'])).toBe('keyPath');
    expect(nearest('slot', ['host', 'port', 'user'])).toBeUndefined();
    expect(nearest('x', ['y'])).toBeUndefined();
  });

  it('names nested paths and never echoes a secret', () => {
    const r = SettingsReader.forModel('o', { signature: { secret: 'hunter2', algoritm: 'sha1' } });
    expect(() => r.at('signature', '{...}').closed(['header', 'secret', 'algorithm'])).toThrow(
      'models.o.settings.signature.algoritm: unknown setting; did you mean algorithm?',
    );
    const s = SettingsReader.forDataSource('d', { password: 42 });
    expect(() => s.secret('password')).toThrow('datasources.d.password: must be a non-empty string');
    expect(() => s.int('password', 1, 50)).toThrow(
      'datasources.d.password: must be an integer of at least 50 (got 42)',
    );
    expect(() =>
      SettingsReader.forDataSource('d', { reconnectDelay: 10, maxReconnectDelay: 5 }).reconnect({
        reconnectDelay: 1,
        maxReconnectDelay: 2,
      }),
    ).toThrow('datasources.d.maxReconnectDelay: must be at least reconnectDelay (10)');
  });
});
