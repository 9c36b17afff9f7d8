/**
 * The HTTP-based sources over TLS, against test servers made with node:https and certificates
 * made by this run: CouchDB (the test server behind an HTTPS front), an HTTP JSON API (poll)
 * and a wss:// event server (websocket). Each captures with `tls.ca` set to the private CA; a
 * CA evpub does not trust fails start() with TLS_FAILED naming the endpoint (no password, no
 * retry); for poll, a client certificate the server requires is sent, and an expired or
 * misnamed server certificate fails too (servername accepts the other name); for websocket,
 * `rejectUnauthorized: false` connects and warns once.
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import pino from 'pino';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initialize as couchdb } from '../../src/connectors/couchdb';
import type { ConnectorModule, EventConnector } from '../../src/connectors/contract';
import { initialize as poll } from '../../src/connectors/poll/index';
import { initialize as websocket } from '../../src/connectors/websocket';
import { ErrorCode, EvpubError } from '../../src/errors';
import { createLogger, type Logger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { makePki, type Pki } from '../helpers/certs';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { httpsProxy, type HttpsProxy } from '../helpers/https-proxy';
import { startWsEventServer, type WsEventServer } from '../helpers/ws-event-server';
import { waitFor } from '../helpers/wait';

let pki: Pki;
const running: EventConnector[] = [];
const closers: (() => Promise<unknown>)[] = [];

beforeAll(() => {
  pki = makePki();
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.stop().catch(() => undefined)));
});
afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  pki?.remove();
});

type Init = ConnectorModule['initialize'];

async function start(
  init: Init,
  settings: Record<string, unknown>,
  model: { name: string; settings?: Record<string, unknown>; from?: 'now' | 'beginning' },
  logger: Logger = createLogger({ level: 'silent' }),
): Promise<{ sink: RecordingSink; error?: EvpubError }> {
  const ds = {
    name: 'src',
    settings,
    logger,
    connector: undefined as unknown,
  };
  await init(ds);
  const connector = ds.connector as EventConnector;
  running.push(connector);
  const sink = new RecordingSink();
  try {
    await connector.start({
      models: [{ name: model.name, settings: model.settings ?? {}, from: model.from ?? 'beginning' }],
      sink,
    });
    return { sink };
  } catch (err) {
    expect(err).toBeInstanceOf(EvpubError);
    return { sink, error: err as EvpubError };
  }
}

function expectUntrusted(error: EvpubError | undefined, endpoint: string): void {
  expect(error?.code).toBe(ErrorCode.TLS_FAILED);
  expect(error?.retriable).toBe(false);
  expect(error?.message).toContain(`TLS with ${endpoint} failed`);
  expect(error?.message).toMatch(/not signed by a CA evpub trusts.*tls\.ca/);
}

describe('CouchDB over HTTPS', () => {
  let couch: TestCouchServer;
  let front: HttpsProxy;
  beforeAll(async () => {
    couch = await startTestCouchServer();
    closers.push(() => couch.close());
    front = await httpsProxy({ target: couch.url, cert: pki.server.cert, key: pki.server.key });
    closers.push(() => front.close());
    await couch.createDb('orders');
    await couch.put('orders', { _id: 'o-1', total: 10 });
  }, 60_000);

  it('captures the changes feed with tls.ca', async () => {
    const { sink, error } = await start(couchdb, { url: front.url, tls: { ca: pki.ca } }, { name: 'orders' });
    expect(error).toBeUndefined();
    await waitFor(() => sink.events.length === 1, 'the existing document');
    await couch.put('orders', { _id: 'o-2', total: 20 });
    await waitFor(() => sink.events.length === 2, 'the new document, over the continuous feed');
    expect(sink.events.map((e) => e.key)).toEqual(['o-1', 'o-2']);
  });

  it('a CA evpub does not trust: TLS_FAILED at start, the password not shown', async () => {
    const url = front.url.replace('https://', 'https://admin:c0uch-Secret@');
    const { error } = await start(
      couchdb,
      { url, tls: { ca: pki.otherCa }, reconnectDelay: 30_000, maxReconnectDelay: 30_000 },
      { name: 'orders' },
    );
    expectUntrusted(error, front.url.replace('https://', 'https://admin:***@'));
    expect(error?.message).not.toContain('c0uch-Secret');
  });
});

describe('HTTP poll over HTTPS', () => {
  let api: Server;
  let url: string;
  beforeAll(async () => {
    // Asks for a client certificate and answers only requests that came with one from the CA.
    api = createServer(
      {
        cert: readFileSync(pki.server.cert),
        key: readFileSync(pki.server.key),
        ca: readFileSync(pki.ca),
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const socket = req.socket as import('node:tls').TLSSocket;
        if (!socket.authorized) {
          res.writeHead(401).end();
          return;
        }
        const cn = socket.getPeerCertificate().subject.CN;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ items: [{ id: 'p-1', by: cn }], next: null }));
      },
    );
    api.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', () => resolve()));
    url = `https://127.0.0.1:${(api.address() as AddressInfo).port}`;
    closers.push(() => new Promise((resolve) => api.close(resolve)));
  });

  const model = { name: 'items', settings: { nextCursorPath: 'next', interval: 50 } };

  it('polls with tls.ca and the client certificate', async () => {
    const { sink, error } = await start(
      poll,
      { url, tls: { ca: pki.ca, cert: pki.client.cert, key: pki.client.key } },
      model,
    );
    expect(error).toBeUndefined();
    await waitFor(() => sink.events.length >= 1, 'the item');
    expect(sink.events[0]).toMatchObject({ key: 'p-1', after: { id: 'p-1', by: 'evpub' } });
  });

  it('without the client certificate the API refuses (AUTH_FAILED); a CA evpub does not trust is TLS_FAILED', async () => {
    const refused = await start(poll, { url, tls: { ca: pki.ca } }, model);
    expect(refused.error?.code).toBe(ErrorCode.AUTH_FAILED);

    const untrusted = await start(poll, { url, tls: { ca: pki.otherCa } }, model);
    expectUntrusted(untrusted.error, `${url}/items`);
  });
});

describe('HTTP poll: the server certificate', () => {
  /** An API serving `pair`; its URL. */
  async function apiWith(pair: { cert: string; key: string }): Promise<string> {
    const api = createServer({ cert: readFileSync(pair.cert), key: readFileSync(pair.key) }, (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ items: [], next: null }));
    });
    api.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', () => resolve()));
    closers.push(() => new Promise((resolve) => api.close(resolve)));
    return `https://127.0.0.1:${(api.address() as AddressInfo).port}`;
  }
  const model = { name: 'items', settings: { nextCursorPath: 'next' } };

  it('an expired certificate and one for another host name each fail start with TLS_FAILED', async () => {
    const expired = await apiWith(pki.expired);
    const a = await start(poll, { url: expired, tls: { ca: pki.ca } }, model);
    expect(a.error?.code).toBe(ErrorCode.TLS_FAILED);
    expect(a.error?.message).toContain(
      `TLS with ${expired}/items failed: the server's certificate has expired`,
    );

    const elsewhere = await apiWith(pki.wrongHost);
    const b = await start(poll, { url: elsewhere, tls: { ca: pki.ca } }, model);
    expect(b.error?.code).toBe(ErrorCode.TLS_FAILED);
    expect(b.error?.message).toMatch(/is not for this host name \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
    // The name the certificate lists, given as servername, is accepted.
    const c = await start(
      poll,
      { url: elsewhere, tls: { ca: pki.ca, servername: 'elsewhere.example' } },
      model,
    );
    expect(c.error).toBeUndefined();
  });
});

describe('websocket over wss://', () => {
  let server: WsEventServer;
  beforeAll(async () => {
    server = await startWsEventServer({ tls: { cert: pki.server.cert, key: pki.server.key } });
    closers.push(() => server.close());
  });

  const settings = { keyPath: 'id', opPath: 'op', subscribe: { type: 'subscribe', channel: '{model}' } };

  it('receives events with tls.ca', async () => {
    const { sink, error } = await start(
      websocket,
      { url: server.url, tls: { ca: pki.ca }, ...settings },
      { name: 'orders', from: 'now' },
    );
    expect(error).toBeUndefined();
    await waitFor(() => server.clients().length === 1, 'the connection');
    server.send({ channel: 'orders', op: 'create', id: 'w-1' });
    await waitFor(() => sink.events.length === 1, 'the event');
    expect(sink.events[0]).toMatchObject({ op: 'create', key: 'w-1' });
  });

  it('rejectUnauthorized: false connects to any certificate, and says so once, naming the endpoint', async () => {
    let logged = '';
    const logger = pino(
      { level: 'warn' },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          logged += chunk.toString('utf8');
          cb();
        },
      }),
    );
    const { error } = await start(
      websocket,
      { url: server.url, tls: { ca: pki.otherCa, rejectUnauthorized: false }, ...settings },
      { name: 'orders', from: 'now' },
      logger,
    );
    expect(error).toBeUndefined();
    const warnings = logged.split('\n').filter((l) => l.includes('TLS verification is off'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(server.url);
    expect(warnings[0]).toContain('datasources.src.tls.rejectUnauthorized');
  });

  it('a CA evpub does not trust: TLS_FAILED at start, not retried until connectTimeout', async () => {
    const { error } = await start(
      websocket,
      { url: server.url, tls: { ca: pki.otherCa }, connectTimeout: 60_000, ...settings },
      { name: 'orders', from: 'now' },
    );
    expectUntrusted(error, server.url);
  });
});
