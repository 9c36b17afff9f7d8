/**
 * The CouchDB connector against a CouchDB-compatible server (express-pouchdb) that the tests
 * start in a child process. (Killing, freezing and restarting that server are cases of the
 * fault matrix: test/faults/source-restart-couchdb.test.ts.)
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ModelFeed } from '../../src/connectors/contract';
import { CouchDbConnector, initialize } from '../../src/connectors/couchdb';
import { eventId } from '../../src/events/change-event';
import type { StartFrom } from '../../src/events/change-event';
import { ErrorCode, EvpubError, isEvpubError } from '../../src/errors';
import { createLogger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const logger = createLogger({ level: 'silent' });

async function connector(settings: Record<string, unknown>): Promise<CouchDbConnector> {
  const dataSource = { name: 'couch', settings, logger, connector: undefined as unknown };
  await initialize(dataSource);
  return dataSource.connector as CouchDbConnector;
}

describe('couchdb connector', () => {
  let couch: TestCouchServer;
  const running: CouchDbConnector[] = [];

  beforeAll(async () => {
    couch = await startTestCouchServer();
  });

  afterAll(async () => {
    await couch?.close();
  });

  afterEach(async () => {
    await Promise.all(running.splice(0).map((c) => c.stop()));
  });

  async function start(
    database: string,
    from: StartFrom = 'beginning',
    settings: Record<string, unknown> = {},
    model: Partial<ModelFeed> = {},
  ): Promise<{ c: CouchDbConnector; sink: RecordingSink }> {
    const c = await connector({
      url: couch.url,
      heartbeat: 500,
      reconnectDelay: 50,
      maxReconnectDelay: 200,
      ...settings,
    });
    running.push(c);
    const sink = new RecordingSink();
    await c.start({ models: [{ name: database, settings: {}, from, ...model }], sink });
    return { c, sink };
  }

  async function freshDb(): Promise<string> {
    const db = uniqueName('db');
    await couch.createDb(db);
    return db;
  }

  it.each(['continuous', 'longpoll'])(
    'publishes create, update and delete with documents, keys and revisions (%s feed)',
    async (feed) => {
      const db = await freshDb();
      const { sink } = await start(db, 'beginning', { feed });
      // _changes lists a document once, at its latest revision: wait for each change to be read
      // before the next, else (longpoll especially) the update and delete arrive as one delete.
      const rev1 = await couch.put(db, { _id: 'james', name: 'James Bond', region: 'Bangalore' });
      await waitFor(() => sink.events.length >= 1, 'the create');
      const rev2 = await couch.put(db, { _id: 'james', _rev: rev1, name: 'James Bond', region: 'London' });
      await waitFor(() => sink.events.length >= 2, 'the update');
      const rev3 = await couch.remove(db, 'james', rev2);
      await waitFor(() => sink.events.length >= 3, 'three events');
      const [created, updated, deleted] = sink.events;
      expect(created).toMatchObject({
        datasource: 'couch',
        model: db,
        op: 'create',
        key: 'james',
        before: null,
        after: { _id: 'james', _rev: rev1, name: 'James Bond', region: 'Bangalore' },
        id: eventId(db, 'james', rev1),
        source: { database: db, rev: rev1, seq: created!.position },
      });
      expect(updated).toMatchObject({ op: 'update', after: { _rev: rev2, region: 'London' }, before: null });
      expect(deleted).toMatchObject({
        op: 'delete',
        key: 'james',
        before: null,
        after: null,
        source: { rev: rev3 },
      });
      expect(sink.events.map((e) => e.position)).toEqual(['1', '2', '3']);
    },
  );

  it("reads the model's name as the database, as the seed does with `accounts`", async () => {
    await couch.createDb('accounts');
    const { sink } = await start('accounts', 'now', {}, { settings: {} });
    await couch.put('accounts', { _id: '26dd638e', name: 'James Bond', type: 'Demo', region: 'Bangalore' });
    await waitFor(() => sink.events.length === 1, 'the accounts document');
    expect(sink.events[0]!.after).toMatchObject({ _id: '26dd638e', name: 'James Bond' });
    await couch.deleteDb('accounts');
  });

  it('reads the `database` model setting', async () => {
    const db = await freshDb();
    const { sink } = await start('people', 'beginning', {}, { settings: { database: db } });
    await couch.put(db, { _id: 'p1' });
    await waitFor(() => sink.events.length === 1, 'the document');
    expect(sink.events[0]).toMatchObject({ model: 'people', key: 'p1', source: { database: db } });
  });

  it('skips design documents unless includeDesignDocs is set', async () => {
    const db = await freshDb();
    const plain = await start(db);
    const all = await start(db, 'beginning', { includeDesignDocs: true });
    await couch.put(db, { _id: '_design/views', views: {} });
    await couch.put(db, { _id: 'doc1' });
    await waitFor(() => all.sink.events.length >= 2 && plain.sink.events.length >= 1, 'the documents');
    expect(all.sink.keys()).toEqual(['_design/views', 'doc1']);
    expect(plain.sink.keys()).toEqual(['doc1']);
  });

  it('fails to start on a missing database, naming it and the URL without the password', async () => {
    const secret = await startTestCouchServer({ auth: { username: 'admin', password: 's3cret-pw' } });
    try {
      const c = await connector({ url: secret.url });
      const sink = new RecordingSink();
      const err = await c
        .start({ models: [{ name: 'nope', settings: { database: 'no_such_db' }, from: 'beginning' }], sink })
        .catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.SOURCE_FAILED)).toBe(true);
      const message = (err as EvpubError).message;
      expect(message).toContain('"no_such_db"');
      expect(message).toContain(`admin:***@127.0.0.1`);
      expect(message).not.toContain('s3cret-pw');
      expect(c.health().state).toBe('stopped');

      const wrong = await connector({ url: secret.url.replace('s3cret-pw', 'wrong') });
      const denied = await wrong
        .start({ models: [{ name: 'nope', settings: {}, from: 'beginning' }], sink })
        .catch((e: unknown) => e);
      expect(isEvpubError(denied, ErrorCode.AUTH_FAILED)).toBe(true);
      expect((denied as Error).message).not.toContain('wrong');
    } finally {
      await secret.close();
    }
  });

  it('fails to start when the server is unreachable', async () => {
    const gone = await startTestCouchServer();
    await gone.close();
    const c = await connector({ url: gone.url, connectTimeout: 2000 });
    const err = await c
      .start({ models: [{ name: 'x', settings: {}, from: 'beginning' }], sink: new RecordingSink() })
      .catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.CONNECT_FAILED)).toBe(true);
  });

  it('rejects invalid settings, naming the key', async () => {
    const bad = async (settings: Record<string, unknown>): Promise<EvpubError> => {
      const err = await connector(settings).catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
      return err as EvpubError;
    };
    expect((await bad({})).message).toContain('datasources.couch.url: is required');
    expect((await bad({ url: 'ftp://u:pw@h' })).message).not.toContain('pw');
    expect((await bad({ url: couch.url, feed: 'normal' })).message).toContain('datasources.couch.feed:');
    expect((await bad({ url: couch.url, heartbeat: -1 })).message).toContain('datasources.couch.heartbeat:');
    expect((await bad({ url: couch.url, includeDocs: 'yes' })).message).toContain(
      'datasources.couch.includeDocs:',
    );
    // initialize's callback form gets the same error
    const ds = { name: 'x', settings: { url: couch.url, batchLimit: 0 }, logger };
    const viaCallback = await new Promise<Error | null | undefined>((resolve) => {
      void initialize(ds, (e) => resolve(e));
    });
    expect(viaCallback?.message).toContain('datasources.x.batchLimit:');
    expect((await bad({ url: couch.url, heartbeet: 5000 })).message).toBe(
      'datasources.couch.heartbeet: unknown setting; did you mean heartbeat?',
    );
  });

  it('rereads from 0 when the position is past the database (recreated database)', async () => {
    const db = await freshDb();
    await couch.put(db, { _id: 'after-recreate' });
    const { sink } = await start(db, { after: '50' });
    await waitFor(() => sink.events.length === 1, 'the document of the new database');
    expect(sink.keys()).toEqual(['after-recreate']);
  });

  it('pauses reading while the sink is full, with a longpoll feed too', async () => {
    const db = await freshDb();
    const sink = new RecordingSink();
    sink.full = true;
    const c = await connector({ url: couch.url, feed: 'longpoll', heartbeat: 500, batchLimit: 2 });
    running.push(c);
    await c.start({ models: [{ name: db, settings: {}, from: 'beginning' }], sink });
    for (let i = 0; i < 5; i++) await couch.put(db, { _id: `d${i}` });
    const witness = await start(db);
    await waitFor(() => witness.sink.events.length === 5, 'all five through a second connector');
    await waitFor(() => sink.drains === 1, 'the connector to await drain()');
    expect(sink.events.length).toBe(1);
    sink.release();
    await waitFor(() => sink.events.length === 5, 'the rest');
    expect(sink.keys()).toEqual(['d0', 'd1', 'd2', 'd3', 'd4']);
  });
});
