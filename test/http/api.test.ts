/**
 * The management HTTP API on a real server (port 0) over real HTTP: the memory connector → the
 * memory broker. Status codes of every route, the token, the OpenAPI document, pause/resume, and
 * that no reply and no log line carries a secret.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import Fastify from 'fastify';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { validateConfig } from '../../src/app/config';
import { ErrorCode, isEvpubError } from '../../src/errors';
import { evpubApi } from '../../src/http/index';
import type { FeedsView, FeedView, ReadyView } from '../../src/http/views';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { memoryStore, type MemoryConnector } from '../../src/connectors/memory';
import { quietLogger, subscriber } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const PASSWORD = `pw-${uniqueName('secret')}`;
const TOKEN = `tok-${uniqueName('token')}`;

/** A pino logger at debug whose every line is kept, to grep. */
function capturingLogger(): { logger: pino.Logger; text(): string } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), text: () => text };
}

async function setup(
  options: {
    token?: string;
    logger?: pino.Logger;
    models?: string[];
    publisher?: Record<string, number>;
  } = {},
) {
  const broker = `memory://evpub:${PASSWORD}@${uniqueName('b')}`;
  const app = evpub({
    logger: options.logger ?? quietLogger(),
    brokers: { default: broker },
    checkpoints: { store: 'memory' },
    publisher: options.publisher,
    http: { port: 0, ...(options.token ? { token: options.token } : {}) },
  });
  cleanups.push(() => app.stop());
  const ds = app.dataSource<MemoryConnector>('local', { connector: 'memory', store: uniqueName('s') });
  for (const model of options.models ?? ['accounts'])
    app.model(model, { dataSource: ds, topic: '{datasource}/{model}/{key}' });
  const sub = await subscriber(broker);
  cleanups.push(() => sub.client.end());
  await app.start();
  const { url } = await app.listen();
  return { app, url, sub, connector: ds.connector! };
}

/** A reply's fields the tests read when no view type fits. */
interface Reply {
  changed?: boolean;
  message?: string;
  state?: string;
  id?: string;
  reasons?: string[];
}
interface ConfigReply {
  datasources: Record<string, unknown>;
  brokers: Record<string, { url: string }>;
  http: unknown;
}

async function call(
  url: string,
  method: 'GET' | 'POST',
  path: string,
  options: { token?: string; body?: unknown } = {},
): Promise<{ status: number; text: string; json: <T = Reply>() => T }> {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url + path, {
    method,
    headers,
    ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, text, json: <T>() => JSON.parse(text) as T };
}

describe('management API', () => {
  it('serves health, readiness, feeds, config, metrics and the OpenAPI document', async () => {
    const { app, url, sub, connector } = await setup();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await call(url, 'GET', '/health')).json()).toEqual({ status: 'ok' });
    const ready = await call(url, 'GET', '/ready');
    expect(ready.status).toBe(200);
    expect(ready.json<ReadyView>()).toEqual({ ready: true, reasons: [] });

    for (let i = 0; i < 5; i++) connector.create('accounts', `k${i}`, { n: i });
    await waitFor(() => sub.got.length === 5, 'five events');
    await waitFor(() => app.status().feeds['local/accounts']?.committed !== null, 'a committed position');

    const feeds = await call(url, 'GET', '/api/feeds');
    expect(feeds.status).toBe(200);
    const list = feeds.json<FeedsView>();
    expect(list.state).toBe('running');
    expect(list.brokers).toEqual([expect.objectContaining({ name: 'default', state: 'connected' })]);
    expect(list.feeds).toHaveLength(1);
    const feed = list.feeds[0]!;
    expect(feed).toMatchObject({
      id: 'local/accounts',
      datasource: 'local',
      model: 'accounts',
      state: 'streaming',
      inFlight: 0,
      counters: { received: 5, published: 5, deadLettered: 0, retries: 0 },
    });
    expect(feed.position.committed).toBe('5');
    expect(feed.eventsPerSecond).toBeGreaterThan(0);

    const byPath = await call(url, 'GET', '/api/feeds/local/accounts');
    expect(byPath.status).toBe(200);
    expect(byPath.json().id).toBe('local/accounts');
    const encoded = await call(url, 'GET', `/api/feeds/${encodeURIComponent('local/accounts')}`);
    expect(encoded.status).toBe(200);
    expect(encoded.json().id).toBe('local/accounts');
    expect((await call(url, 'GET', '/api/feeds/local/nope')).status).toBe(404);
    expect((await call(url, 'GET', `/api/feeds/${encodeURIComponent('nope/x')}`)).status).toBe(404);

    const config = await call(url, 'GET', '/api/config');
    expect(config.status).toBe(200);
    expect(config.json<ConfigReply>().datasources.local).toMatchObject({ connector: 'memory' });
    expect(config.json<ConfigReply>().brokers.default?.url).not.toContain(PASSWORD);
    expect(config.json<ConfigReply>().http).toMatchObject({ host: '127.0.0.1', port: 0 });

    const metrics = await call(url, 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.text).toMatch(/^process_cpu_user_seconds_total/m);

    const doc = (await call(url, 'GET', '/openapi.json')).json<{
      openapi: string;
      paths: Record<string, object>;
    }>();
    expect(doc.openapi).toMatch(/^3\./);
    const routes = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    expect(routes.sort()).toEqual(
      [
        'GET /health',
        'GET /ready',
        'GET /api/feeds',
        'GET /api/feeds/{datasource}/{model}',
        'GET /api/feeds/{feed}',
        'POST /api/feeds/{datasource}/{model}/pause',
        'POST /api/feeds/{feed}/pause',
        'POST /api/feeds/{datasource}/{model}/resume',
        'POST /api/feeds/{feed}/resume',
        'POST /api/feeds/{datasource}/{model}/snapshot',
        'POST /api/feeds/{feed}/snapshot',
        'GET /api/config',
        'GET /api/cluster',
        'GET /metrics',
        'GET /openapi.json',
        'GET /api/events',
      ].sort(),
    );
  });

  it('pauses and resumes a feed: idempotent, nothing lost, 404 for an unknown feed, 400 for a bad body', async () => {
    const { app, url, sub, connector } = await setup({ models: ['accounts', 'orders'] });
    connector.create('accounts', 'before', { n: 0 });
    await waitFor(() => sub.got.length === 1, 'the first event');

    const paused = await call(url, 'POST', '/api/feeds/local/accounts/pause');
    expect(paused.status).toBe(200);
    expect(paused.json()).toMatchObject({
      changed: true,
      feed: { state: 'paused', pausedBy: ['local/accounts'] },
    });
    const again = await call(url, 'POST', `/api/feeds/${encodeURIComponent('local/accounts')}/pause`, {
      body: {},
    });
    expect(again.json()).toMatchObject({ changed: false, feed: { state: 'paused' } });
    // The other feed of the datasource waits (one stream per datasource); still ready.
    expect(app.status().feeds['local/orders']).toMatchObject({
      state: 'waiting',
      pausedBy: ['local/accounts'],
    });
    expect((await call(url, 'GET', '/ready')).status).toBe(200);

    for (let i = 0; i < 3; i++) connector.create('accounts', `while-${i}`, { n: i });
    connector.create('orders', 'o1', { n: 1 });
    // Not published while paused (the connector learns of the pause at its next push: the one
    // event it hands over is held, unpublished and uncommitted).
    await waitFor(
      () => (app.status().feeds['local/accounts']!.received ?? 0) >= 2,
      'the connector pushed once',
    );
    await new Promise((r) => setTimeout(r, 200));
    expect(sub.got.length).toBe(1);
    expect(app.status().feeds['local/accounts']!.received).toBe(2);
    const committedWhilePaused = app.status().feeds['local/accounts']!.committed;

    const resumed = await call(url, 'POST', '/api/feeds/local/accounts/resume', { body: { reason: 'done' } });
    expect(resumed.json()).toMatchObject({ changed: true, feed: { state: 'streaming' } });
    expect((await call(url, 'POST', '/api/feeds/local/accounts/resume')).json().changed).toBe(false);
    await waitFor(() => sub.got.length === 5, 'every event after resume');
    expect(sub.got.map((m) => m.topic).sort()).toEqual(
      [
        'local/accounts/before',
        'local/accounts/while-0',
        'local/accounts/while-1',
        'local/accounts/while-2',
        'local/orders/o1',
      ].sort(),
    );
    await waitFor(
      () => app.status().feeds['local/accounts']!.committed !== committedWhilePaused,
      'the checkpoint moves on',
    );

    expect((await call(url, 'POST', '/api/feeds/local/nope/pause')).status).toBe(404);
    expect((await call(url, 'POST', `/api/feeds/${encodeURIComponent('x/y')}/resume`)).status).toBe(404);
    const bad = await call(url, 'POST', '/api/feeds/local/accounts/pause', { body: { reason: 42 } });
    expect(bad.status).toBe(400);
    expect(bad.json().message).toContain('body.reason');
    const unknown = await call(url, 'POST', '/api/feeds/local/accounts/pause', { body: { force: true } });
    expect(unknown.status).toBe(400);
    expect(unknown.json().message).toContain('body.force');
    expect(app.status().feeds['local/accounts']!.state).toBe('streaming'); // the bad requests did nothing
  });

  it('wants the bearer token on every route but /health and /ready; 401 says nothing more', async () => {
    const { url } = await setup({ token: TOKEN });
    expect((await call(url, 'GET', '/health')).status).toBe(200);
    expect((await call(url, 'GET', '/ready')).status).toBe(200);
    const routes: ['GET' | 'POST', string][] = [
      ['GET', '/api/feeds'],
      ['GET', '/api/feeds/local/accounts'],
      ['POST', '/api/feeds/local/accounts/pause'],
      ['POST', '/api/feeds/local/accounts/resume'],
      ['POST', '/api/feeds/local/accounts/snapshot'],
      ['GET', '/api/config'],
      ['GET', '/metrics'],
      ['GET', '/openapi.json'],
      ['GET', '/api/feeds/local/nope'],
    ];
    const replies = new Set<string>();
    for (const [method, path] of routes) {
      for (const token of [undefined, 'wrong', `${TOKEN}x`, TOKEN.slice(0, -1)]) {
        const res = await call(url, method, path, { token });
        expect(res.status, `${method} ${path} with ${token ?? 'no token'}`).toBe(401);
        replies.add(res.text);
      }
      const ok = await call(url, method, path, { token: TOKEN });
      // The memory connector cannot re-snapshot: 409 (past the token check all the same).
      const expected = path.endsWith('nope') ? 404 : path.endsWith('snapshot') ? 409 : 200;
      expect(ok.status, `${method} ${path}`).toBe(expected);
    }
    expect([...replies]).toEqual([JSON.stringify({ error: 'Unauthorized' })]);
    const lower = await fetch(`${url}/api/feeds`, { headers: { authorization: `bearer ${TOKEN}` } });
    expect(lower.status).toBe(200);
  });

  it('answers 503 with the reasons when a feed failed', async () => {
    // Two events too large in a row, with a dead-letter limit of 1: the feed fails.
    const { url, connector } = await setup({ publisher: { maxEventBytes: 300, deadLetterLimit: 1 } });
    connector.create('accounts', 'big1', { text: 'x'.repeat(1000) });
    connector.create('accounts', 'big2', { text: 'x'.repeat(1000) });
    await waitFor(async () => (await call(url, 'GET', '/ready')).status === 503, 'not ready');
    const ready = await call(url, 'GET', '/ready');
    expect(ready.status).toBe(503);
    expect(ready.json().reasons).toEqual([expect.stringContaining('feed local/accounts is failed')]);
    const feed = (await call(url, 'GET', '/api/feeds/local/accounts')).json<FeedView>();
    expect(feed.state).toBe('failed');
    expect(feed.error?.code).toBe('EVPUB_PAYLOAD_TOO_LARGE');
    expect(feed.error?.message).toContain('dead-letter topic');
  });

  it('puts no secret in any reply or log line', async () => {
    const log = capturingLogger();
    const { app, url, sub, connector } = await setup({ token: TOKEN, logger: log.logger });
    connector.create('accounts', 'k', { n: 1 });
    await waitFor(() => sub.got.length === 1, 'one event');
    const bodies: string[] = [];
    for (const [method, path] of [
      ['GET', '/health'],
      ['GET', '/ready'],
      ['GET', '/api/feeds'],
      ['GET', '/api/feeds/local/accounts'],
      ['POST', '/api/feeds/local/accounts/pause'],
      ['POST', '/api/feeds/local/accounts/resume'],
      ['POST', '/api/feeds/local/nope/pause'],
      ['GET', '/api/config'],
      ['GET', '/metrics'],
      ['GET', '/openapi.json'],
    ] as const) {
      bodies.push((await call(url, method, path, { token: TOKEN })).text);
      bodies.push((await call(url, method, path)).text);
    }
    await app.stop();
    const everything = bodies.join('\n') + log.text();
    expect(log.text()).toContain('management API listening');
    expect(log.text()).toContain('feed paused');
    expect(everything).not.toContain(PASSWORD);
    expect(everything).not.toContain(TOKEN);
  });

  it("closes with app.stop(), and registers as a plugin on an application's own fastify", async () => {
    const { app, url } = await setup();
    await app.stop();
    await expect(fetch(`${url}/health`)).rejects.toThrow();

    const other = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => other.stop());
    other.dataSource('db', { connector: 'memory', store: uniqueName('s') });
    other.model('accounts', { dataSource: 'db' });
    await other.start();
    const fastify = Fastify();
    cleanups.push(() => fastify.close());
    await fastify.register(evpubApi, { app: other, token: TOKEN, prefix: '/evpub' });
    const at = await fastify.listen({ host: '127.0.0.1', port: 0 });
    expect((await call(at, 'GET', '/evpub/api/feeds/db/accounts', { token: TOKEN })).json().state).toBe(
      'streaming',
    );
    expect((await call(at, 'GET', '/evpub/api/feeds')).status).toBe(401);
  });

  it('docs/operate.md lists every route the server answers', async () => {
    const app = evpub({ logger: quietLogger(), brokers: { default: `memory://${uniqueName('b')}` } });
    const server = Fastify();
    cleanups.push(() => server.close());
    const routes = new Set<string>();
    server.addHook('onRoute', (r) => {
      for (const method of [r.method].flat()) if (method !== 'HEAD') routes.add(`${method} ${r.url}`);
    });
    await server.register(evpubApi, { app });
    await server.ready();
    const table = readFileSync(path.join(__dirname, '../../docs/operate.md'), 'utf8');
    const documented = new Set([...table.matchAll(/^\| `([A-Z]+ \/[^`]*)`/gm)].map((m) => m[1]!));
    // As the table writes them: the URL-encoded feed id's routes under their `:datasource/:model`
    // twin (the table says so), the dashboard's files as `/dashboard/*`.
    const asDocumented = (route: string) =>
      route
        .replace('/api/feeds/:feed', '/api/feeds/:datasource/:model')
        .replace(/ \/dashboard\/.*/, ' /dashboard/*');
    expect(routes.size).toBeGreaterThan(15);
    expect([...routes].map(asDocumented).filter((r) => !documented.has(r))).toEqual([]);
  });

  it('pause and resume need a known feed and a running app (JS API)', async () => {
    const { app } = await setup();
    expect(app.pause('local/accounts')).toBe(true);
    expect(app.pause('local/accounts')).toBe(false);
    expect(app.status().feeds['local/accounts']!.state).toBe('paused');
    let err: unknown;
    try {
      app.pause('local/missing');
    } catch (e) {
      err = e;
    }
    expect(isEvpubError(err, ErrorCode.FEED_NOT_FOUND)).toBe(true);
    expect(app.resume('local/accounts')).toBe(true);
    expect(app.resume('local/accounts')).toBe(false);
    await app.stop();
    expect(() => app.pause('local/accounts')).toThrow(/running app/);
  });
});

describe('http config', () => {
  const base = {
    brokers: { default: { url: 'memory://x' } },
    datasources: { db: { connector: 'memory' } },
    models: { a: { dataSource: 'db' } },
  };

  it('defaults to 127.0.0.1:7401, EVPUB_HTTP_PORT and EVPUB_HTTP_TOKEN', () => {
    expect(validateConfig(base, { env: {} }).http).toEqual({ host: '127.0.0.1', port: 7401, enabled: true });
    expect(validateConfig(base, { env: { EVPUB_HTTP_PORT: '0', EVPUB_HTTP_TOKEN: 't' } }).http).toEqual({
      host: '127.0.0.1',
      port: 0,
      token: 't',
      enabled: true,
    });
    expect(
      validateConfig({ ...base, http: { port: 9000 } }, { env: { EVPUB_HTTP_PORT: '0' } }).http.port,
    ).toBe(9000);
  });

  it('refuses a non-loopback host without a token, naming http.token', () => {
    const bad = () => validateConfig({ ...base, http: { host: '0.0.0.0' } }, { env: {} });
    expect(bad).toThrow(/http\.token: is required to serve on "0\.0\.0\.0"/);
    try {
      bad();
    } catch (err) {
      expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    }
    expect(validateConfig({ ...base, http: { host: '0.0.0.0', token: 'x' } }, { env: {} }).http.host).toBe(
      '0.0.0.0',
    );
    expect(
      validateConfig({ ...base, http: { host: '0.0.0.0' } }, { env: { EVPUB_HTTP_TOKEN: 'x' } }).http.token,
    ).toBe('x');
    expect(validateConfig({ ...base, http: { host: '::1' } }, { env: {} }).http.host).toBe('::1');
    expect(() =>
      validateConfig({ ...base, http: { host: '0.0.0.0', enabled: false } }, { env: {} }),
    ).not.toThrow();
  });

  it('names bad keys and a bad EVPUB_HTTP_PORT', () => {
    expect(() => validateConfig({ ...base, http: { prot: 1 } }, { env: {} })).toThrow(/http/);
    expect(() => validateConfig({ ...base, http: { port: 70000 } }, { env: {} })).toThrow(/http\.port/);
    expect(() => validateConfig(base, { env: { EVPUB_HTTP_PORT: 'abc' } })).toThrow(
      /http\.port: EVPUB_HTTP_PORT must be a port number from 0 to 65535/,
    );
    expect(() => validateConfig(base, { env: { EVPUB_HTTP_PORT: '70000' } })).toThrow(/EVPUB_HTTP_PORT/);
  });

  it('app.listen() on a port in use says so, naming the keys to change', async () => {
    const first = evpub({ logger: quietLogger() });
    cleanups.push(() => first.stop());
    const { port } = await first.listen({ port: 0 });
    const second = evpub({ logger: quietLogger() });
    cleanups.push(() => second.stop());
    const err = await second.listen({ port }).catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect((err as Error).message).toMatch(
      new RegExp(`127\\.0\\.0\\.1:${port} is in use \\(EADDRINUSE\\); set http`),
    );
  });

  it('app.listen() refuses a non-loopback host without a token', async () => {
    const app = evpub({ logger: quietLogger() });
    await expect(app.listen({ host: '0.0.0.0', port: 0 })).rejects.toThrow(/http\.token/);
  });
});

describe('pause and stop', () => {
  it('stops at once with held events: they stay uncommitted and are read again at the next start', async () => {
    const store = new MemoryCheckpointStore();
    const broker = `memory://${uniqueName('b')}`;
    const storeName = uniqueName('s');
    const sub = await subscriber(broker);
    cleanups.push(() => sub.client.end());
    const make = () => {
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: broker },
        checkpoints: store,
        stopTimeout: 20_000,
      });
      app.dataSource<MemoryConnector>('local', { connector: 'memory', store: storeName });
      app.model('accounts', { dataSource: 'local', topic: '{model}/{key}', from: 'beginning' });
      cleanups.push(() => app.stop());
      return app;
    };
    const first = make();
    await first.start();
    const connector = () => first.status().datasources.local!;
    expect(connector().connector).toBe('memory');
    memoryStore(storeName).write('local', 'accounts', 'create', 'a', { n: 1 });
    await waitFor(() => sub.got.length === 1, 'the first event');
    first.pause('local/accounts');
    memoryStore(storeName).write('local', 'accounts', 'create', 'b', { n: 2 });
    await waitFor(() => first.status().feeds['local/accounts']!.received === 2, 'the held event');
    const began = Date.now();
    await first.stop();
    expect(Date.now() - began).toBeLessThan(5000); // not the 20 s stopTimeout
    expect(sub.got.map((m) => m.topic)).toEqual(['accounts/a']);

    const second = make();
    await second.start();
    await waitFor(() => sub.got.length === 2, 'the held event, read again');
    expect(sub.got.map((m) => m.topic)).toEqual(['accounts/a', 'accounts/b']);
  });
});
