/**
 * evpub's CouchDB connector as a juggler connector under LoopBack 3 (`loopback` 3.x,
 * loopback-datasource-juggler 3), in process, the seed's way: `app.dataSource(...)`,
 * `loopback.createModel` + `app.model`, `Model.start(emitter, cb)` / `Model.stop(cb)`.
 * Each model is its own database feed (its own unit): starting or stopping one does not touch
 * the others. A lost server reaches the emitter as `'error', modelName, err`, the password
 * masked. Real embedded CouchDB-compatible server.
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as couchdb from '../../src/connectors/couchdb/index';
import { ErrorCode, isEvpubError } from '../../src/errors';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

type Callback = (err?: Error | null) => void;
interface SeedModel {
  modelName: string;
  start(emitter: EventEmitter, cb?: Callback): Promise<void> | undefined;
  stop(cb?: Callback): Promise<void> | undefined;
}
interface JugglerDs {
  connected: boolean;
  connector: { name: string };
  disconnect(): Promise<void>;
  ping(): Promise<void>;
}
interface Lb3App {
  dataSource(name: string, config: Record<string, unknown>): JugglerDs;
  model(model: SeedModel, config: { dataSource: string }): void;
}
interface Lb3 {
  (): Lb3App;
  createModel(config: { name: string; base: string }): SeedModel;
}

const loopback = createRequire(path.join(__dirname, '../../package.json'))('loopback') as Lb3;

function listener() {
  const emitter = new EventEmitter();
  const got: { model: string; msg: Record<string, unknown> }[] = [];
  const errors: [string, Error][] = [];
  emitter.on('eventMessage', (model: string, msg: Record<string, unknown>) => got.push({ model, msg }));
  emitter.on('error', (model: string, err: Error) => errors.push([model, err]));
  return { emitter, got, errors };
}

function start(m: SeedModel, emitter: EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
    void m.start(emitter, (err) => (err ? reject(err) : resolve()));
  });
}

let couch: TestCouchServer;

/** The server's admin API (the helper's own calls carry no credentials). */
async function admin(method: string, at: string, body?: unknown): Promise<Record<string, unknown>> {
  const url = new URL(couch.url);
  const auth = Buffer.from(
    `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`,
  ).toString('base64');
  url.username = '';
  url.password = '';
  const res = await fetch(new URL(at, url), {
    method,
    headers: { authorization: `Basic ${auth}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`${method} ${at}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}
const createDb = (db: string) => admin('PUT', db);
const put = async (db: string, doc: { _id: string; [k: string]: unknown }) =>
  (await admin('PUT', `${db}/${doc._id}`, doc)).rev as string;

beforeAll(async () => {
  couch = await startTestCouchServer({ auth: { username: 'admin', password: 's3cret-pw' } });
});
afterAll(async () => {
  await couch?.close();
});

describe('CouchDB through LoopBack 3: one feed per model', () => {
  it('two models stream on their own; stopping one leaves the other; a lost server is an error event without the password', async () => {
    expect(couch.url).toContain('s3cret-pw');
    const accountsDb = uniqueName('accounts');
    const ordersDb = uniqueName('orders');
    await createDb(accountsDb);
    await createDb(ordersDb);
    const app = loopback();
    const dsName = uniqueName('dsCloudAntIn');
    // `connector` as a module object (LoopBack also takes the name, resolved by require).
    const ds = app.dataSource(dsName, {
      url: couch.url,
      connector: couchdb,
      reconnectDelay: 50,
      maxReconnectDelay: 200,
    });
    const accounts = loopback.createModel({ name: accountsDb, base: 'Model' });
    const orders = loopback.createModel({ name: ordersDb, base: 'Model' });
    app.model(accounts, { dataSource: dsName });
    app.model(orders, { dataSource: dsName });
    const a = listener();
    const o = listener();
    try {
      await start(accounts, a.emitter);
      await start(orders, o.emitter);
      expect(ds.connected).toBe(true);
      expect(ds.connector.name).toBe('couchdb');
      await ds.ping();

      const rev = await put(accountsDb, { _id: 'a1', name: 'James Bond' });
      await put(ordersDb, { _id: 'o1', total: 7 });
      await waitFor(() => a.got.length === 1 && o.got.length === 1, 'a1 and o1');
      expect(a.got).toEqual([{ model: accountsDb, msg: { _id: 'a1', _rev: rev, name: 'James Bond' } }]);
      expect(o.got).toEqual([{ model: ordersDb, msg: expect.objectContaining({ _id: 'o1', total: 7 }) }]);

      await new Promise<void>((resolve, reject) => {
        void orders.stop((err) => (err ? reject(err) : resolve()));
      });
      await put(ordersDb, { _id: 'o2' });
      await put(accountsDb, { _id: 'a2' });
      await waitFor(() => a.got.length === 2, 'a2');
      expect(o.got).toHaveLength(1);

      // The server dies: the accounts feed reconnects and says so on its emitter.
      await couch.stop();
      await waitFor(() => a.errors.length > 0, "an 'error' event");
      const [model, err] = a.errors[0]!;
      expect(model).toBe(accountsDb);
      expect(isEvpubError(err, ErrorCode.SOURCE_FAILED)).toBe(true);
      expect((err as { retriable?: boolean }).retriable).toBe(true);
      expect(err.message).toContain('reconnecting');
      expect(inspect(err, { depth: 10 })).not.toContain('s3cret-pw');
      await expect(ds.ping()).resolves.toBeUndefined(); // reconnecting is not failed
      expect(o.errors).toEqual([]);
    } finally {
      await couch.start();
      await ds.disconnect();
    }
    expect(ds.connected).toBe(false);
  });

  it('a model started twice, or stop of a model never started', async () => {
    const db = uniqueName('accounts');
    await createDb(db);
    const app = loopback();
    const dsName = uniqueName('ds');
    const ds = app.dataSource(dsName, { url: couch.url, connector: couchdb });
    const m = loopback.createModel({ name: db, base: 'Model' });
    app.model(m, { dataSource: dsName });
    try {
      await m.stop(); // nothing to stop: harmless
      const l = listener();
      await m.start(l.emitter);
      const err = await m.start(l.emitter)?.catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.INVALID_STATE)).toBe(true);
      await put(db, { _id: 'x1' });
      await waitFor(() => l.got.length === 1, 'x1');
    } finally {
      await ds.disconnect();
    }
  });
});
