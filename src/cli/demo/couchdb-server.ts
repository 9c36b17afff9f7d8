/**
 * An embedded CouchDB-compatible server: express-pouchdb over PouchDB's memory adapter. It
 * speaks enough of CouchDB's HTTP API for the connector (databases, documents, `_changes` with
 * continuous and longpoll feeds) and is what `evpub demo` and the tests read from.
 *
 * Its continuous `_changes` feed is served by couchdb-changes.ts (CouchDB's behaviour,
 * no leaks). Nothing survives the server: data lives in memory. `inProcess: false` runs it in a child
 * process (so a test can `kill -9` it); the child exits when its parent goes away. With `auth`,
 * every request must carry those Basic credentials, else 401 as CouchDB answers it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join } from 'node:path';
import { ErrorCode, EvpubError } from '../../errors';
import { loadDriver } from '../../util/driver';
import { continuousFeedDb, serveContinuousFeed, type PouchClass } from './couchdb-changes';

export interface CouchServerOptions {
  /** Port to listen on; 0 (default) picks a free one. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default true; false runs the server in a child process. */
  inProcess?: boolean;
  /** Require these Basic credentials on every request. */
  auth?: { username: string; password: string };
}

export interface CouchServer {
  /** `http://host:port/` (with the credentials when `auth` was given). */
  url: string;
  port: number;
  /** The child's pid when not in process. */
  pid?: number;
  /** Stops the server (the child: SIGTERM, or `signal`) and resolves when it is gone. */
  close(signal?: NodeJS.Signals): Promise<void>;
}

interface PouchDBStatic extends PouchClass {
  plugin(plugin: unknown): PouchDBStatic;
  defaults(options: { adapter: string }): PouchDBStatic;
}
type ExpressPouchDB = (
  pouch: PouchDBStatic,
  options: { mode: string; inMemoryConfig: boolean; overrideMode?: { exclude?: string[] } },
) => RequestListener;

async function handler(): Promise<RequestListener> {
  const who = 'embedded CouchDB server';
  const core = await loadDriver<PouchDBStatic>('pouchdb-core', who);
  const memory = await loadDriver<unknown>('pouchdb-adapter-memory', who);
  const expressPouchDB = await loadDriver<ExpressPouchDB>('express-pouchdb', who);
  const pouch = core.plugin(memory).defaults({ adapter: 'memory' });
  // express-pouchdb is an Express 4 app: serve it from a plain http server (mounted inside an
  // Express 5 app its request objects break).
  const app = expressPouchDB(pouch, { mode: 'minimumForPouchDB', inMemoryConfig: true });
  return (req, res) => {
    const db = continuousFeedDb(req);
    if (db === undefined) {
      app(req, res);
      return;
    }
    serveContinuousFeed(pouch, db, req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'internal_server_error', reason: String(err) }));
    });
  };
}

function withAuth(app: RequestListener, auth: CouchServerOptions['auth']): RequestListener {
  if (!auth) return app;
  const expected = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
  return (req: IncomingMessage, res: ServerResponse) => {
    if (req.headers.authorization === expected) {
      app(req, res);
      return;
    }
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="evpub"' });
    res.end(JSON.stringify({ error: 'unauthorized', reason: 'Name or password is incorrect.' }));
  };
}

function urlOf(host: string, port: number, auth: CouchServerOptions['auth']): string {
  const url = new URL(`http://${host}:${port}/`);
  if (auth) {
    url.username = encodeURIComponent(auth.username);
    url.password = encodeURIComponent(auth.password);
  }
  return url.toString();
}

async function startInProcess(options: CouchServerOptions): Promise<CouchServer> {
  const host = options.host ?? '127.0.0.1';
  const server = createServer(withAuth(await handler(), options.auth));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(err));
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    url: urlOf(host, port, options.auth),
    port,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections(); // continuous feeds never end by themselves
      });
      return closing;
    },
  };
}

function startChild(options: CouchServerOptions): Promise<CouchServer> {
  const ext = extname(__filename);
  const script = join(__dirname, `couchdb-child${ext}`);
  // Running from TypeScript sources (tests): the child needs tsx to load .ts files.
  const execArgv = ext === '.ts' ? ['--import', 'tsx'] : [];
  const child: ChildProcess = fork(script, [JSON.stringify({ ...options, inProcess: true })], {
    execArgv,
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    const fail = (why: string): void =>
      reject(new EvpubError(ErrorCode.CONNECT_FAILED, `embedded CouchDB server did not start: ${why}`));
    child.once('error', (err) => fail(err.message));
    child.once('exit', (code, signal) => fail(`exited with ${signal ?? code}`));
    child.once('message', (msg: { port?: number; error?: string }) => {
      if (msg.error !== undefined || msg.port === undefined) {
        fail(msg.error ?? 'no port');
        return;
      }
      // The IPC channel stays open (the child exits when it closes, i.e. when we are gone) but
      // must not keep this process alive.
      child.unref();
      child.channel?.unref();
      resolve({
        url: urlOf(options.host ?? '127.0.0.1', msg.port, options.auth),
        port: msg.port,
        pid: child.pid,
        close: async (signal: NodeJS.Signals = 'SIGTERM') => {
          child.ref(); // awaiting the exit must keep this process alive
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          await exited;
        },
      });
    });
  });
}

/** Starts an embedded CouchDB-compatible server; see the module comment. */
export function startCouchServer(options: CouchServerOptions = {}): Promise<CouchServer> {
  return options.inProcess === false ? startChild(options) : startInProcess(options);
}
