/**
 * The websocket connector against a WebSocket server started by the test (ws's
 * WebSocketServer on a free port): mapping, auth headers, reconnects (dropped connection,
 * server restart with cursor resume, dead peer found by the heartbeat), malformed messages,
 * backpressure, and the connector inside an evpub app.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { ModelFeed } from '../../src/connectors/contract';
import { initialize, WebSocketConnector } from '../../src/connectors/websocket';
import { ErrorCode, isEvpubError } from '../../src/errors';
import type { Logger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { quietLogger, subscriber } from '../helpers/publisher';
import { freePort, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import {
  startWsEventServer,
  type WsEventServer,
  type WsEventServerOptions,
} from '../helpers/ws-event-server';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function server(options: WsEventServerOptions = {}): Promise<WsEventServer> {
  const s = await startWsEventServer(options);
  cleanups.push(() => s.close());
  return s;
}

/** A logger whose lines are kept, to check what is (not) logged. */
function capturingLogger(): { logger: Logger; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString('utf8');
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), text: () => text };
}

async function connector(settings: Record<string, unknown>, logger: Logger = quietLogger()) {
  const dataSource = { name: 'ws', settings, logger, connector: undefined as unknown };
  await initialize(dataSource);
  const c = dataSource.connector as WebSocketConnector;
  cleanups.push(() => c.stop());
  return c;
}

async function started(
  settings: Record<string, unknown>,
  model: Partial<ModelFeed> = {},
  sink = new RecordingSink(),
  logger?: Logger,
) {
  const c = await connector(settings, logger);
  const feed: ModelFeed = { name: 'orders', settings: {}, from: 'now', ...model };
  await c.start({ models: [feed], sink });
  return { connector: c, sink };
}

const ORDERS = {
  subscribe: { type: 'subscribe', channel: '{model}' },
  match: { path: 'channel', value: '{model}' },
  keyPath: 'id',
  opPath: 'op',
  reconnectDelay: 20,
  maxReconnectDelay: 200,
};

describe('websocket connector', () => {
  it('maps key, operation, record, id and time by path; other messages are ignored', async () => {
    const srv = await server();
    const { connector: c, sink } = await started({
      url: srv.url,
      keyPath: 'data.order.id',
      opPath: 'type',
      opMap: { 'order.created': 'create', 'order.cancelled': 'delete' },
      recordPath: 'data.order',
      idPath: 'eventId',
      timePath: 'at',
      match: { path: 'topic', values: ['shop/{model}', 'legacy/{model}'] },
    });
    expect(c.resumable).toBe(false);
    const order = { id: 42, total: 9.5 };
    srv.send({
      topic: 'shop/orders',
      type: 'order.created',
      eventId: 'e1',
      at: '2026-01-02T03:04:05Z',
      data: { order },
    });
    srv.send({ topic: 'shop/users', type: 'order.created', eventId: 'e2', data: { order: { id: 1 } } });
    srv.send({
      topic: 'legacy/orders',
      type: 'order.paid',
      eventId: 'e3',
      at: 1767322800000,
      data: { order },
    });
    srv.send({ topic: 'shop/orders', type: 'order.cancelled', eventId: 'e4', data: { order } });
    srv.send({ topic: 'shop/orders', type: 'order.cancelled', eventId: 'e4', data: { order } });
    await waitFor(() => sink.events.length >= 4, '4 events');
    expect(sink.events.map((e) => [e.op, e.key])).toEqual([
      ['create', '42'],
      ['update', '42'],
      ['delete', '42'],
      ['delete', '42'],
    ]);
    const [created, paid, cancelled, again] = sink.events;
    expect(created!.after).toEqual(order);
    expect(created!.sourceTime).toBe('2026-01-02T03:04:05.000Z');
    expect(paid!.sourceTime).toBe(new Date(1767322800000).toISOString());
    expect(cancelled).toMatchObject({
      before: order,
      after: null,
      position: null,
      model: 'orders',
      datasource: 'ws',
    });
    expect(again!.id).toBe(cancelled!.id);
    expect(new Set(sink.events.map((e) => e.id)).size).toBe(3);
  });

  it('sends headers and the subscribe message; a refused token is AUTH_FAILED; secrets never logged', async () => {
    const srv = await server({ requireToken: 's3cret-token' });
    const log = capturingLogger();
    const url = `${srv.url}?apikey=query-secret`;
    const good = { ...ORDERS, url, headers: { authorization: 'Bearer s3cret-token' } };
    const { sink } = await started(good, {}, new RecordingSink(), log.logger);
    expect(srv.connections[0]!.headers.authorization).toBe('Bearer s3cret-token');
    srv.send({ channel: 'orders', op: 'create', id: 'a' });
    srv.send({ channel: 'other', op: 'create', id: 'b' }); // filtered by the server after subscribe
    await waitFor(() => sink.events.length >= 1, 'the event');
    const bad = await connector({ ...good, headers: { authorization: 'Bearer wrong-token' } }, log.logger);
    const err = await bad
      .start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink: new RecordingSink() })
      .catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.AUTH_FAILED)).toBe(true);
    const everything = `${log.text()} ${(err as Error).message} ${JSON.stringify(bad.health())}`;
    for (const secret of ['s3cret-token', 'wrong-token', 'query-secret'])
      expect(everything).not.toContain(secret);
    expect(log.text()).toContain('websocket connected');
  });

  it('reconnects after the server drops the connection and goes on', async () => {
    const srv = await server();
    const { sink } = await started({ ...ORDERS, url: srv.url });
    srv.send({ channel: 'orders', op: 'create', id: 'before' });
    await waitFor(() => sink.events.length === 1, 'the first event');
    srv.drop();
    await waitFor(() => srv.clients().length === 1 && srv.connections.length === 2, 'a new connection');
    await waitFor(() => sink.statuses.filter((s) => s.type === 'connected').length === 2, 'connected again');
    srv.send({ channel: 'orders', op: 'create', id: 'after' });
    await waitFor(() => sink.events.length === 2, 'the event after the reconnect');
    expect(sink.keys()).toEqual(['before', 'after']);
    expect(sink.statuses.map((s) => s.type)).toEqual(['connected', 'reconnecting', 'connected']);
  });

  it('after a server restart on the same port, resumes from the last cursor: nothing lost, nothing twice', async () => {
    const srv = await server();
    const settings = { ...ORDERS, url: srv.url, resume: { param: 'since' }, cursorPath: 'seq' };
    const { connector: c, sink } = await started(settings);
    expect(c.resumable).toBe(true);
    srv.send({ channel: 'orders', op: 'create', id: 'e1' });
    const seq2 = srv.send({ channel: 'orders', op: 'update', id: 'e1' });
    await waitFor(() => sink.events.length === 2, 'two events');
    await srv.stop();
    await waitFor(() => sink.statuses.some((s) => s.type === 'reconnecting'), 'reconnecting');
    srv.send({ channel: 'orders', op: 'create', id: 'e2' }); // logged while down
    srv.send({ channel: 'orders', op: 'delete', id: 'e1' });
    await srv.start();
    await waitFor(() => sink.events.length === 4, 'the events sent while down');
    expect(srv.connections.at(-1)!.url).toBe(`/events?since=${seq2}`);
    srv.send({ channel: 'orders', op: 'create', id: 'e3' });
    await waitFor(() => sink.events.length === 5, 'a live event');
    expect(sink.events.map((e) => [e.op, e.key])).toEqual([
      ['create', 'e1'],
      ['update', 'e1'],
      ['create', 'e2'],
      ['delete', 'e1'],
      ['create', 'e3'],
    ]);
    expect(sink.events.map((e) => Number(e.position))).toEqual([1, 2, 3, 4, 5]);
    expect(c.health().positions).toEqual({ orders: '5' });
  });

  it('without resume, messages sent while disconnected are lost (documented), and the feed goes on', async () => {
    const srv = await server();
    const { sink } = await started({ ...ORDERS, url: srv.url, cursorPath: 'seq' });
    await srv.stop();
    srv.send({ channel: 'orders', op: 'create', id: 'lost' });
    await srv.start();
    await waitFor(() => sink.statuses.filter((s) => s.type === 'connected').length === 2, 'connected again');
    srv.send({ channel: 'orders', op: 'create', id: 'live' });
    await waitFor(() => sink.events.length === 1, 'the live event');
    expect(sink.keys()).toEqual(['live']);
    expect(sink.events[0]!.position).toBeNull();
    expect(sink.events[0]!.source).toMatchObject({ cursor: '2' });
  });

  it('malformed messages do not stop the stream: dead-lettered and counted, or raw, or fail the feed', async () => {
    const srv = await server();
    const skip = await started({ ...ORDERS, url: srv.url }, { name: 'orders' });
    srv.sendRaw('{"not json');
    srv.send({ channel: 'orders', op: 'create' }); // no key
    srv.send({ channel: 'orders', op: 'create', id: 'ok' });
    await waitFor(() => skip.sink.events.length === 1, 'the good event');
    expect(skip.sink.keys()).toEqual(['ok']);
    expect(skip.sink.deadLetters.map((d) => [d.model, d.raw.code, d.raw.position])).toEqual([
      ['orders', ErrorCode.MALFORMED_INPUT, null],
      ['orders', ErrorCode.MALFORMED_INPUT, null],
    ]);
    expect(skip.sink.deadLetters[0]!.raw.reason).toMatch(/^malformed message: not JSON/);
    expect(skip.sink.deadLetters[0]!.raw.payload).toEqual(Buffer.from('{"not json'));
    expect(skip.connector.health()).toMatchObject({ state: 'streaming', detail: 'orders: 2 malformed' });

    const raw = await started({ ...ORDERS, url: srv.url, onMalformed: 'raw' });
    srv.sendRaw('{"not json');
    srv.send({ channel: 'orders', op: 'create', id: 'ok2' });
    await waitFor(() => raw.sink.events.length === 2, 'raw + good');
    expect(raw.sink.events[0]).toMatchObject({
      op: 'update',
      after: { raw: Buffer.from('{"not json').toString('base64') },
    });
    expect(raw.sink.events[0]!.key).toBe(raw.sink.events[0]!.id);

    const fail = await started({ ...ORDERS, url: srv.url, onMalformed: 'fail' });
    srv.sendRaw('nope');
    await waitFor(() => fail.sink.failures.length === 1, 'the feed failure');
    expect(fail.sink.failures[0]!.err).toMatchObject({ code: ErrorCode.SOURCE_FAILED });
    expect(fail.connector.health().state).toBe('failed');
    srv.send({ channel: 'orders', op: 'create', id: 'after-fail' });
    await waitFor(() => skip.sink.events.length === 2, 'the skip feed goes on');
    expect(fail.sink.events).toEqual([]);
  });

  it('backpressure pauses the socket: the server backs up until drain, then everything arrives in order', async () => {
    const srv = await server();
    const sink = new RecordingSink();
    sink.full = true;
    await started({ ...ORDERS, url: srv.url }, {}, sink);
    const padding = 'x'.repeat(64 * 1024);
    const n = 300; // ~20 MB: more than the kernel's socket buffers hold
    for (let i = 0; i < n; i++) srv.send({ channel: 'orders', op: 'create', id: `k${i}`, padding });
    await waitFor(() => sink.drains >= 1, 'the connector to await drain()');
    // The connector stopped reading: the server cannot hand its frames to the kernel any more.
    await waitFor(() => (srv.clients()[0]?.bufferedAmount ?? 0) > 0, 'the server to back up');
    expect(sink.events.length).toBe(1);
    sink.release();
    await waitFor(() => sink.events.length === n, 'all events after drain');
    expect(sink.keys()).toEqual(Array.from({ length: n }, (_, i) => `k${i}`));
    await waitFor(() => srv.clients()[0]?.bufferedAmount === 0, 'the server to empty its buffer');
  });

  it('a peer that stops answering pings is found dead by the heartbeat and replaced', async () => {
    const srv = await server({ autoPong: false });
    const { sink } = await started({ ...ORDERS, url: srv.url, pingInterval: 100, pingTimeout: 200 });
    await waitFor(
      () => sink.statuses.some((s) => s.type === 'reconnecting' && s.error.includes('no pong')),
      'the dead connection to be noticed',
    );
    await waitFor(() => srv.connections.length >= 2, 'a new connection');
  });

  it('fails to start with CONNECT_FAILED within connectTimeout, and with CONFIG_INVALID on bad settings', async () => {
    const port = await freePort();
    const c = await connector({ ...ORDERS, url: `ws://127.0.0.1:${port}/x`, connectTimeout: 300 });
    const err = await c
      .start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink: new RecordingSink() })
      .catch((e: unknown) => e);
    expect(isEvpubError(err, ErrorCode.CONNECT_FAILED)).toBe(true);
    expect(c.health().state).toBe('stopped');

    const bad = (settings: Record<string, unknown>) =>
      Promise.resolve(initialize({ name: 'ws', settings, logger: quietLogger() })).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    expect(await bad({ url: 'http://x' })).toMatchObject({ code: ErrorCode.CONFIG_INVALID });
    expect(await bad({ url: 'ws://x', keyPth: 'id' })).toMatchObject({
      message: expect.stringContaining('keyPth') as string,
    });
    expect(await bad({ url: 'ws://x', defaultOp: 'upsert' })).toMatchObject({
      code: ErrorCode.CONFIG_INVALID,
    });
    const srv = await server();
    const noKey = await connector({ url: srv.url });
    await expect(
      noKey.start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink: new RecordingSink() }),
    ).rejects.toMatchObject({
      code: ErrorCode.CONFIG_INVALID,
      message: expect.stringContaining('keyPath') as string,
    });
    const noCursor = await connector({ url: srv.url, keyPath: 'id', resume: { param: 'since' } });
    await expect(
      noCursor.start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink: new RecordingSink() }),
    ).rejects.toMatchObject({
      code: ErrorCode.CONFIG_INVALID,
      message: expect.stringContaining('cursorPath') as string,
    });
  });

  it('runs inside an evpub app: messages become events on the model topic', async () => {
    const srv = await server();
    const broker = `memory://${uniqueName('b')}`;
    const sub = await subscriber(broker, 'feeds/#');
    cleanups.push(() => sub.client.end());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: broker },
      checkpoints: new MemoryCheckpointStore(),
    });
    cleanups.push(() => app.stop());
    app.dataSource('stream', { connector: 'websocket', url: srv.url, ...ORDERS });
    app.model('orders', { dataSource: 'stream', topic: 'feeds/{model}/{op}', envelope: 'legacy' });
    await app.start();
    srv.send({ channel: 'orders', op: 'create', id: 'o1', total: 3 });
    await waitFor(() => sub.got.length === 1, 'the published event');
    expect(sub.got[0]!.topic).toBe('feeds/orders/create');
    expect(sub.got[0]!.json).toMatchObject({ model: 'orders', message: { id: 'o1', total: 3 } });
    expect(app.status().datasources.stream).toMatchObject({ connector: 'websocket', resumable: false });
  });

  it('inside an app, a malformed message goes to the dead-letter topic with its reason; the next one is published', async () => {
    const srv = await server();
    const broker = `memory://${uniqueName('b')}`;
    const root = uniqueName('ws');
    const sub = await subscriber(broker, `${root}/#`);
    cleanups.push(() => sub.client.end());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: broker },
      checkpoints: new MemoryCheckpointStore(),
      publisher: { deadLetterTopic: `${root}/dead-letter` },
    });
    cleanups.push(() => app.stop());
    app.dataSource('stream', { connector: 'websocket', url: srv.url, ...ORDERS });
    app.model('orders', { dataSource: 'stream', topic: `${root}/{model}/{op}`, envelope: 'legacy' });
    await app.start();
    srv.sendRaw('{"not json');
    srv.send({ channel: 'orders', op: 'create' }); // no key
    srv.send({ channel: 'orders', op: 'create', id: 'o2' });
    await waitFor(() => sub.got.length === 3, 'two dead letters and the event');
    expect(sub.got.map((m) => m.topic)).toEqual([
      `${root}/dead-letter`,
      `${root}/dead-letter`,
      `${root}/orders/create`,
    ]);
    expect(sub.got[0]!.json).toMatchObject({
      code: ErrorCode.MALFORMED_INPUT,
      reason: expect.stringMatching(/^malformed message: not JSON/) as string,
      input: { datasource: 'stream', model: 'orders', position: null, source: { url: srv.url } },
      originalBytes: 10,
      original: '{"not json',
    });
    expect(sub.got[1]!.json).toMatchObject({
      code: ErrorCode.MALFORMED_INPUT,
      reason: expect.stringMatching(/^malformed message: /) as string,
      original: expect.stringContaining('"channel":"orders","op":"create"') as string,
    });
    expect(sub.got[1]!.json).not.toHaveProperty('originalEncoding');
    expect(sub.got[2]!.json).toMatchObject({ model: 'orders', message: { id: 'o2' } });
    await waitFor(() => app.status().feeds['stream/orders']?.deadLettered === 2, 'the dead letters counted');
  });
});
