/**
 * A private CouchDB-compatible server for tests: the embedded server (express-pouchdb, memory
 * adapter) in a child process on a free port, so a test can kill -9 it and start it again on
 * the same port. The memory adapter keeps nothing: after `start()` the databases are gone and
 * seqs begin at 0 again (the test recreates what it needs).
 */
import { startCouchServer, type CouchServer } from '../../src/cli/demo/couchdb-server';
import { freePort } from './services';
import { waitFor } from './wait';

export interface Doc {
  _id: string;
  _rev?: string;
  [field: string]: unknown;
}

export interface TestCouchServer {
  url: string;
  /** kill -9 the server. */
  stop(): Promise<void>;
  /** Starts it again on the same port (empty). */
  start(): Promise<void>;
  /** Stops it for good. */
  close(): Promise<void>;
  /** SIGSTOP / SIGCONT the server: connections stay open but nothing is sent (a hung server). */
  freeze(): void;
  thaw(): void;
  /** Writes documents with their given revisions (`new_edits: false`), as a restore does. */
  restore(db: string, docs: Doc[]): Promise<void>;
  createDb(name: string): Promise<void>;
  deleteDb(name: string): Promise<void>;
  /** PUTs the document; returns its new rev. */
  put(db: string, doc: Doc): Promise<string>;
  /** Deletes the document at `rev`; returns the deletion's rev. */
  remove(db: string, id: string, rev: string): Promise<string>;
}

/** A document's path: `_design/x` keeps its slash, everything else is encoded. */
function docPath(id: string): string {
  return id.startsWith('_design/') ? `_design/${encodeURIComponent(id.slice(8))}` : encodeURIComponent(id);
}

async function call(url: string, method: string, body?: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

export async function startTestCouchServer(options: { auth?: { username: string; password: string } } = {}) {
  const port = await freePort();
  let server: CouchServer | undefined;
  const launch = async (): Promise<void> => {
    server = await waitFor(
      () => startCouchServer({ port, inProcess: false, ...options }).catch(() => undefined),
      `the CouchDB test server on port ${port}`,
    );
  };
  await launch();
  const base = `http://127.0.0.1:${port}/`;
  const db = (name: string): string => `${base}${encodeURIComponent(name)}`;
  const couch: TestCouchServer = {
    url: server!.url,
    stop: async () => {
      await server?.close('SIGKILL');
      server = undefined;
    },
    start: launch,
    close: async () => {
      await server?.close('SIGKILL');
      server = undefined;
    },
    freeze: () => process.kill(server!.pid!, 'SIGSTOP'),
    thaw: () => process.kill(server!.pid!, 'SIGCONT'),
    restore: async (name, docs) => {
      await call(`${db(name)}/_bulk_docs`, 'POST', { docs, new_edits: false });
    },
    createDb: async (name) => {
      await call(db(name), 'PUT');
    },
    deleteDb: async (name) => {
      await call(db(name), 'DELETE');
    },
    put: async (name, doc) => {
      const res = await call(`${db(name)}/${docPath(doc._id)}`, 'PUT', doc);
      return res.rev as string;
    },
    remove: async (name, id, rev) => {
      const res = await call(`${db(name)}/${docPath(id)}?rev=${encodeURIComponent(rev)}`, 'DELETE');
      return res.rev as string;
    },
  };
  return couch;
}
