/**
 * The embedded server's continuous `_changes` feed.
 *
 * express-pouchdb's own continuous feed never stops its heartbeat timer nor its live PouchDB
 * feed when the client goes away (each reconnecting client leaks both, and the timers keep the
 * process alive after close), and it sends the headers only with its first line. This handler
 * serves `GET /{db}/_changes?feed=continuous` the way CouchDB does: headers at once, one JSON
 * line per change, a newline every `heartbeat` ms, and everything released when the connection
 * closes. Requests with options it does not handle (filters, doc_ids, limit...) go to
 * express-pouchdb.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { loadDriver } from '../../util/driver';

interface LiveFeed {
  on(event: 'change', listener: (change: unknown) => void): LiveFeed;
  on(event: 'error', listener: (err: unknown) => void): LiveFeed;
  cancel(): void;
}
interface PouchDatabase {
  changes(options: Record<string, unknown>): LiveFeed;
}
export interface PouchClass {
  allDbs(): Promise<string[]>;
}
interface DbCache {
  getOrCreateDB(pouch: PouchClass, name: string): Promise<PouchDatabase>;
}

const HANDLED = new Set(['feed', 'since', 'include_docs', 'heartbeat', 'style', 'timeout']);

/** The database name when this handler serves the request, else undefined. */
export function continuousFeedDb(req: IncomingMessage): string | undefined {
  if (req.method !== 'GET' || !req.url) return undefined;
  const url = new URL(req.url, 'http://embedded');
  const match = /^\/([^/_][^/]*)\/_changes$/.exec(url.pathname);
  if (!match || url.searchParams.get('feed') !== 'continuous') return undefined;
  for (const key of url.searchParams.keys()) if (!HANDLED.has(key)) return undefined;
  return decodeURIComponent(match[1]!);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export async function serveContinuousFeed(
  pouch: PouchClass,
  name: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const query = new URL(req.url ?? '/', 'http://embedded').searchParams;
  if (!(await pouch.allDbs()).includes(name)) {
    sendJson(res, 404, { error: 'not_found', reason: 'Database does not exist.' });
    return;
  }
  // The same cached database object express-pouchdb uses for this name.
  const cache = await loadDriver<DbCache>(
    'express-pouchdb/lib/create-or-delete-dbs.js',
    'embedded CouchDB server',
  );
  const db = await cache.getOrCreateDB(pouch, name);
  const since = query.get('since') ?? '0';
  const heartbeatParam = query.get('heartbeat');
  const heartbeat = heartbeatParam === 'true' ? 60_000 : Number(heartbeatParam);
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'must-revalidate' });
  res.flushHeaders();
  const timer = heartbeat > 0 ? setInterval(() => res.write('\n'), heartbeat) : undefined;
  const feed = db
    .changes({
      live: true,
      since: since === 'now' ? 'now' : Number(since) || 0,
      include_docs: query.get('include_docs') === 'true',
      style: query.get('style') === 'all_docs' ? 'all_docs' : 'main_only',
    })
    .on('change', (change) => res.write(`${JSON.stringify(change)}\n`))
    .on('error', (err) => {
      res.end(`${JSON.stringify({ error: 'internal_server_error', reason: String(err) })}\n`);
    });
  res.once('close', () => {
    if (timer) clearInterval(timer);
    feed.cancel();
  });
}
