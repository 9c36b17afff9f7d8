/**
 * The CouchDB HTTP calls the connector makes, with Node's built-in fetch, and the translation of
 * their failures into EvpubErrors at this boundary:
 * - a TLS failure (untrusted, expired or misnamed certificate): TLS_FAILED (not retriable);
 * - network errors and connect timeouts: CONNECT_FAILED (retriable);
 * - 401 / 403: AUTH_FAILED; 404 on the database: SOURCE_FAILED naming the database and URL;
 * - any other non-2xx: SOURCE_FAILED (retriable for 5xx).
 *
 * Bodies are requested without compression (`accept-encoding: identity`): a gzip stream holds a
 * continuous feed's lines back until the compressor flushes, which delays changes and heartbeats.
 */
import { ErrorCode, EvpubError } from '../../errors';
import { tlsFailure } from '../../util/tls';
import type { CouchDbSettings } from './settings';

export interface Request {
  /** Aborts the request and its body (stop, idle timeout). */
  controller: AbortController;
  response: Response;
  /** Releases the request (aborts what is left of its body); call when done with it. */
  release(): void;
}

export interface DatabaseInfo {
  /** The database's current `update_seq`, as a position string. */
  updateSeq: string;
}

/** A CouchDB seq as the position string: strings as they are, anything else as its JSON text. */
export function seqToPosition(seq: unknown): string {
  return typeof seq === 'string' ? seq : JSON.stringify(seq);
}

export function databaseUrl(settings: CouchDbSettings, database: string): string {
  return `${settings.baseUrl}${encodeURIComponent(database)}`;
}

function describeCause(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message ?? String(err);
}

async function reasonOf(res: Response): Promise<string> {
  try {
    const body = (await res.json()) as { error?: string; reason?: string };
    return [body.error, body.reason].filter(Boolean).join(': ') || res.statusText;
  } catch {
    return res.statusText;
  }
}

/**
 * GETs `path` under the database, resolving once the response headers are in (the body may
 * still be streaming). Rejects with a translated EvpubError; `outer` aborts it (stop).
 * `headerTimeout` (default connectTimeout): some servers (express-pouchdb, pouchdb-server) send
 * a continuous feed's headers only with its first line, a change or a heartbeat.
 */
export async function open(
  settings: CouchDbSettings,
  database: string,
  path: string,
  outer: AbortSignal,
  headerTimeout = settings.connectTimeout,
): Promise<Request> {
  const controller = new AbortController();
  const onOuter = (): void => controller.abort(outer.reason);
  if (outer.aborted) onOuter();
  else outer.addEventListener('abort', onOuter, { once: true });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new Error('connect timeout'));
  }, headerTimeout);
  const context = { database, url: settings.displayUrl };
  const headers: Record<string, string> = { accept: 'application/json', 'accept-encoding': 'identity' };
  if (settings.authorization) headers.authorization = settings.authorization;
  let response: Response;
  try {
    response = await (settings.fetch ?? fetch)(`${databaseUrl(settings, database)}${path}`, {
      headers,
      signal: controller.signal,
    });
  } catch (err) {
    outer.removeEventListener('abort', onOuter);
    const tls = timedOut || outer.aborted ? undefined : tlsFailure(err, settings.displayUrl);
    if (tls) throw tls;
    const why = timedOut ? `no answer within ${headerTimeout} ms` : describeCause(err);
    throw new EvpubError(ErrorCode.CONNECT_FAILED, `cannot reach CouchDB at ${settings.displayUrl}: ${why}`, {
      cause: err,
      retriable: true,
      context,
    });
  } finally {
    clearTimeout(timer);
  }
  const release = (): void => {
    outer.removeEventListener('abort', onOuter);
    controller.abort();
  };
  if (response.ok) return { controller, response, release };
  const reason = await reasonOf(response);
  release();
  if (response.status === 401 || response.status === 403) {
    throw new EvpubError(
      ErrorCode.AUTH_FAILED,
      `CouchDB at ${settings.displayUrl} refused the credentials for database "${database}" (${response.status} ${reason})`,
      { context: { ...context, status: response.status } },
    );
  }
  if (response.status === 404) {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `CouchDB database "${database}" does not exist at ${settings.displayUrl} (404 ${reason})`,
      { retriable: true, context: { ...context, status: 404 } },
    );
  }
  throw new EvpubError(
    ErrorCode.SOURCE_FAILED,
    `CouchDB at ${settings.displayUrl} answered ${response.status} (${reason}) for database "${database}"`,
    { retriable: response.status >= 500, context: { ...context, status: response.status } },
  );
}

/** GET /{db}: checks that the database exists and we may read it; returns its update_seq. */
export async function databaseInfo(
  settings: CouchDbSettings,
  database: string,
  outer: AbortSignal,
): Promise<DatabaseInfo> {
  const request = await open(settings, database, '', outer);
  try {
    const body = (await request.response.json()) as { update_seq?: unknown };
    return { updateSeq: seqToPosition(body.update_seq ?? 0) };
  } finally {
    request.release();
  }
}
