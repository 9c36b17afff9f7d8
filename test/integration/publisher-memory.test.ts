/**
 * The publisher end to end inside the process: the memory connector → the pipeline → the
 * memory broker, with the file checkpoint store.
 */
import { HTTP, type CloudEvent } from 'cloudevents';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import type { ModelOptions } from '../../src/app/datasource';
import { FileCheckpointStore } from '../../src/checkpoints/file';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { memoryStore } from '../../src/connectors/memory';
import { isEvpubError } from '../../src/errors';
import { uniqueName } from '../helpers/services';
import { quietLogger, statusLog, subscriber, tempDir } from '../helpers/publisher';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(
  options: {
    publisher?: Record<string, unknown>;
    topic?: string;
    envelope?: 'legacy' | 'cloudevents' | 'cloudevents-binary';
  } = {},
) {
  const broker = `memory://${uniqueName('b')}`;
  const tmp = await tempDir();
  cleanups.push(() => tmp.remove());
  const storeName = uniqueName('store');
  const make = (): App => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: broker },
      checkpoints: { store: 'file', path: tmp.dir },
      publisher: options.publisher,
    });
    app.dataSource('local', { connector: 'memory', store: storeName });
    app.model('accounts', {
      dataSource: 'local',
      from: 'beginning',
      topic: options.topic ?? '{datasource}/{model}/{op}/{key}',
      envelope: options.envelope,
    });
    cleanups.push(() => app.stop());
    return app;
  };
  const sub = await subscriber(broker);
  cleanups.push(() => sub.client.end());
  return { broker, dir: tmp.dir, store: memoryStore(storeName), make, sub };
}

describe('publisher: memory connector → memory broker', () => {
  it('publishes creates, updates and deletes as CloudEvents on the templated topics', async () => {
    const broker = `memory://${uniqueName('b')}`;
    const sub = await subscriber(broker);
    cleanups.push(() => sub.client.end());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: broker },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    const local = app.dataSource('local', { connector: 'memory', store: uniqueName('s') });
    const idle = app.dataSource('other', { connector: 'memory', store: uniqueName('s') });
    app.model('accounts', { dataSource: local, topic: '{datasource}/{model}/{op}/{key}' });
    expect(local.connector).toBeUndefined();
    await app.start();
    expect(app.status().datasources.local?.connector).toBe('memory');
    expect(idle.connector).toBeUndefined(); // a datasource without models is not started
    const handle = { connector: local.connector! }; // typed: MemoryConnector
    handle.connector.create('accounts', 'a/1', { name: 'James' });
    handle.connector.update('accounts', 'a/1', { name: 'James Bond' });
    handle.connector.delete('accounts', 'a/1');
    await waitFor(() => sub.got.length === 3, 'three messages');
    expect(sub.got.map((m) => m.topic)).toEqual([
      'local/accounts/create/a%2F1',
      'local/accounts/update/a%2F1',
      'local/accounts/delete/a%2F1',
    ]);
    const events = sub.got.map(
      (m) =>
        HTTP.toEvent({
          headers: { 'content-type': 'application/cloudevents+json' },
          body: m.text,
        }) as CloudEvent,
    );
    for (const e of events) expect(e.validate()).toBe(true);
    expect(events.map((e) => e.type)).toEqual([
      'evpub.accounts.create',
      'evpub.accounts.update',
      'evpub.accounts.delete',
    ]);
    expect(events[1]!.data).toMatchObject({
      before: { name: 'James' },
      after: { name: 'James Bond' },
      key: 'a/1',
    });
    expect(events[2]!.data).toMatchObject({ before: { name: 'James Bond' }, after: null, op: 'delete' });
    await app.stop();
    expect(app.state).toBe('idle');
  });

  it('keeps per-key order across many keys and saves the last position at stop', async () => {
    const { make, sub, store, dir } = await setup();
    const app = make();
    await app.start();
    const keys = Array.from({ length: 20 }, (_, i) => `k${i}`);
    for (const k of keys) store.write('local', 'accounts', 'create', k, { n: 0 });
    for (let n = 1; n <= 25; n++) for (const k of keys) store.write('local', 'accounts', 'update', k, { n });
    const total = keys.length * 26;
    await waitFor(() => sub.got.length === total, `${total} messages`);
    const seen = new Map<string, number>();
    for (const m of sub.got) {
      const data = m.json.data as { key: string; after: { n: number } };
      const prev = seen.get(data.key) ?? -1;
      expect(data.after.n).toBe(prev + 1);
      seen.set(data.key, data.after.n);
    }
    await app.stop();
    expect(await new FileCheckpointStore({ path: dir }).load('local/accounts')).toBe(String(store.head));
  });

  it('the legacy envelope publishes exactly the seed message', async () => {
    const { make, sub, store } = await setup({ topic: '/v1/subutest', envelope: 'legacy' });
    const app = make();
    await app.start();
    const doc = { _id: '26dd', _rev: '1-08fb', name: 'James Bond', type: 'Demo', region: 'Bangalore' };
    store.write('local', 'accounts', 'create', doc._id, doc);
    await waitFor(() => sub.got.length === 1, 'the message');
    expect(sub.got[0]!.topic).toBe('/v1/subutest');
    expect(sub.got[0]!.text).toBe(
      '{"model":"accounts","message":{"_id":"26dd","_rev":"1-08fb","name":"James Bond","type":"Demo","region":"Bangalore"}}',
    );
  });

  it('dead-letters an oversized event and goes on; the checkpoint passes it', async () => {
    const { make, sub, store, dir } = await setup({ publisher: { maxEventBytes: 600 } });
    const app = make();
    const log = statusLog();
    app.on('status', log.listener);
    await app.start();
    store.write('local', 'accounts', 'create', 'small1', { v: 'x' });
    store.write('local', 'accounts', 'create', 'big', { v: 'y'.repeat(5000) });
    store.write('local', 'accounts', 'create', 'small2', { v: 'z' });
    await waitFor(() => sub.got.length === 3, 'three messages');
    expect(sub.got.map((m) => m.topic)).toEqual([
      'local/accounts/create/small1',
      'evpub/dead-letter',
      'local/accounts/create/small2',
    ]);
    const letter = sub.got[1]!.json;
    expect(letter).toMatchObject({
      code: 'EVPUB_PAYLOAD_TOO_LARGE',
      event: { model: 'accounts', key: 'big', op: 'create', position: String(store.head - 1) },
      topic: 'local/accounts/create/big',
    });
    expect(letter.original).toBeUndefined(); // it would not fit
    expect(letter.originalBytes).toBeGreaterThan(5000);
    expect(log.events).toContainEqual(expect.objectContaining({ type: 'dead-lettered', key: 'big' }));
    await app.stop();
    expect(await new FileCheckpointStore({ path: dir }).load('local/accounts')).toBe(String(store.head));
    expect(log.events).toContainEqual(
      expect.objectContaining({ type: 'published', feed: 'local/accounts', published: 2, deadLettered: 1 }),
    );
  });

  it('resumes after the checkpoint: no loss while down, no replay of committed events', async () => {
    const { make, sub, store } = await setup();
    const first = make();
    await first.start();
    for (let i = 1; i <= 5; i++) store.write('local', 'accounts', 'create', `r${i}`, { i });
    await waitFor(() => sub.got.length === 5, 'five messages');
    await first.stop();
    for (let i = 6; i <= 8; i++) store.write('local', 'accounts', 'create', `r${i}`, { i }); // while down
    const second = make();
    await second.start();
    store.write('local', 'accounts', 'create', 'r9', { i: 9 });
    await waitFor(() => sub.got.length >= 9, 'nine messages');
    await second.stop();
    expect(sub.got.map((m) => (m.json.data as { key: string }).key)).toEqual(
      Array.from({ length: 9 }, (_, i) => `r${i + 1}`),
    );
  });

  it('filters operations and applies include/exclude', async () => {
    const broker = `memory://${uniqueName('b')}`;
    const sub = await subscriber(broker);
    cleanups.push(() => sub.client.end());
    const storeName = uniqueName('store');
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: broker },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    app.dataSource('local', { connector: 'memory', store: storeName });
    app.model(
      { name: 'users', base: 'Model' },
      { dataSource: 'local', ops: ['create', 'delete'], exclude: ['password'] },
    );
    await app.start();
    const store = memoryStore(storeName);
    store.write('local', 'users', 'create', 'u1', { name: 'a', password: 'p' });
    store.write('local', 'users', 'update', 'u1', { name: 'b', password: 'q' });
    store.write('local', 'users', 'delete', 'u1', undefined);
    await waitFor(() => sub.got.length === 2, 'two messages');
    expect(sub.got.map((m) => m.topic)).toEqual(['local/users/create', 'local/users/delete']);
    expect((sub.got[0]!.json.data as { after: unknown }).after).toEqual({ name: 'a' });
    expect((sub.got[1]!.json.data as { before: unknown }).before).toEqual({ name: 'b' });
    await app.stop();
    expect(app.status().state).toBe('idle');
  });
});

describe('publisher: start positions and binary envelope', () => {
  it('from: now (the default) skips the past; beginning reads it; resetCheckpoint forgets the checkpoint', async () => {
    const broker = `memory://${uniqueName('b')}`;
    const sub = await subscriber(broker);
    cleanups.push(() => sub.client.end());
    const storeName = uniqueName('s');
    const store = memoryStore(storeName);
    const checkpoints = new MemoryCheckpointStore();
    const run = async (model: Partial<ModelOptions>): Promise<void> => {
      const app = evpub({ logger: quietLogger(), brokers: { default: broker }, checkpoints });
      cleanups.push(() => app.stop());
      app.dataSource('local', { connector: 'memory', store: storeName });
      app.model('m', { dataSource: 'local', topic: '{key}', ...model });
      await app.start();
      store.write('local', 'm', 'create', `live${store.head}`, {});
      await waitFor(
        () => checkpoints.load('local/m').then((p) => p === String(store.head)),
        'the checkpoint',
      );
      await app.stop();
    };
    store.write('local', 'm', 'create', 'old', {});
    await run({});
    expect(sub.got.map((m) => m.topic)).toEqual(['live1']); // 'now': the old record is not published
    sub.got.length = 0;
    await run({ from: 'beginning' }); // a checkpoint exists: resume after it, `from` does not apply
    expect(sub.got.map((m) => m.topic)).toEqual(['live2']);
    sub.got.length = 0;
    await run({ from: 'beginning', resetCheckpoint: true });
    expect(sub.got.map((m) => m.topic)).toEqual(['old', 'live1', 'live2', 'live3']);
  });

  it("a feed started 'now' that saw no change still resumes from there: changes made while down are published", async () => {
    const broker = `memory://${uniqueName('b')}`;
    const sub = await subscriber(broker);
    cleanups.push(() => sub.client.end());
    const storeName = uniqueName('s');
    const store = memoryStore(storeName);
    const checkpoints = new MemoryCheckpointStore();
    store.write('local', 'm', 'create', 'before-first-start', {});
    const make = (): App => {
      const app = evpub({ logger: quietLogger(), brokers: { default: broker }, checkpoints });
      cleanups.push(() => app.stop());
      app.dataSource('local', { connector: 'memory', store: storeName });
      app.model('m', { dataSource: 'local', topic: '{key}' });
      return app;
    };
    const first = make();
    await first.start();
    await first.stop(); // no change happened while it ran
    expect(await checkpoints.load('local/m')).toBe('1');
    store.write('local', 'm', 'create', 'while-down', {});
    const second = make();
    await second.start();
    await waitFor(() => sub.got.length === 1, 'the change made while evpub was down');
    expect(sub.got.map((m) => m.topic)).toEqual(['while-down']);
  });

  it('cloudevents-binary carries the attributes as ce-* headers on a broker with headers', async () => {
    const broker = `memory://${uniqueName('b')}`;
    const sub = await subscriber(broker);
    cleanups.push(() => sub.client.end());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: broker },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    const ds = app.dataSource('local', { connector: 'memory', store: uniqueName('s') });
    app.model('m', { dataSource: ds, envelope: 'cloudevents-binary' });
    await app.start();
    const event = ds.connector!.create('m', 'k1', { a: 1 });
    await waitFor(() => sub.got.length === 1, 'the message');
    const msg = sub.got[0]!;
    expect(msg.headers).toMatchObject({ 'ce-id': event.id, 'ce-type': 'evpub.m.create', 'ce-subject': 'k1' });
    const ce = HTTP.toEvent({ headers: msg.headers!, body: msg.text }) as CloudEvent;
    expect(ce.validate()).toBe(true);
    expect(ce.data).toMatchObject({ op: 'create', after: { a: 1 } });
  });
});

describe('app lifecycle', () => {
  it('start twice is one start; stop during start waits and stops; stop twice is harmless', async () => {
    const { make } = await setup();
    const app = make();
    const a = app.start();
    const b = app.start();
    expect(b).toBe(a);
    const stopped = app.stop();
    await a;
    await stopped;
    expect(app.state).toBe('idle');
    await app.stop();
    await app.start(); // may start again after a stop
    expect(app.state).toBe('running');
    expect(() => app.dataSource('late', { connector: 'memory' })).toThrow(/only possible before start/);
    const stopping = app.stop();
    await expect(app.start()).rejects.toSatisfy((e: unknown) => isEvpubError(e, 'EVPUB_INVALID_STATE'));
    await stopping;
  });

  it('invalid configuration fails before connecting, naming the path', async () => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: 'memory://x' },
      checkpoints: { store: 'memory' },
    });
    app.dataSource('db', { connector: 'no-such-connector-xyz' });
    app.model('m', { dataSource: 'db', topic: '{model}/{nope}' });
    await expect(app.start()).rejects.toThrow(
      /datasources\.db\.connector[\s\S]*models\.m\.topic|models\.m\.topic[\s\S]*datasources\.db\.connector/,
    );
    expect(app.state).toBe('idle');
  });

  it('status() is a snapshot without secrets; a throwing status listener does not stop the publisher', async () => {
    const brokerName = uniqueName('b');
    const sub = await subscriber(`memory://${brokerName}`);
    cleanups.push(() => sub.client.end());
    const storeName = uniqueName('s');
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://user:s3cret@${brokerName}` },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    app.on('status', () => {
      throw new Error('listener bug');
    });
    const log = statusLog();
    app.on('status', log.listener);
    app.dataSource('local', { connector: 'memory', store: storeName });
    app.model('m', { dataSource: 'local' });
    await app.start();
    memoryStore(storeName).write('local', 'm', 'create', 'k', { a: 1 });
    await waitFor(() => sub.got.length === 1, 'the message');
    const status = app.status();
    expect(JSON.stringify(status)).not.toContain('s3cret');
    expect(status.brokers.default?.url).toBe(`memory://user:***@${brokerName}`);
    expect(status.feeds['local/m']).toMatchObject({ model: 'm', published: 1, inFlight: 0, from: 'now' });
    expect(log.events.map((e) => e.type)).toContain('started');
  });
});
