/**
 * Settings of the CouchDB / Cloudant connector, validated once in `initialize()`.
 *
 * Datasource settings (`datasources.<name>`):
 * - `url` (required): the server, `http(s)://user:pass@host:port[/prefix]`. Credentials are sent
 *   as HTTP Basic auth and never logged (`redact()`).
 * - `feed`: `continuous` (default) or `longpoll`.
 * - `heartbeat`: ms between the server's empty heartbeat lines (default 10000).
 * - `includeDocs`: ask for the documents (`include_docs=true`, default true).
 * - `includeDesignDocs`: also publish `_design/` documents (default false).
 * - `batchLimit`: longpoll only, the most changes one request returns (default 1000).
 * - `connectTimeout`: ms to get the answer to the database check `GET /{db}` (default 10000).
 * - `requestTimeout`: ms of silence on `_changes` (no headers, no line, not even a heartbeat)
 *   after which the feed is considered dead and reopened (default 3 × heartbeat, at least 30000).
 * - `reconnectDelay` / `maxReconnectDelay`: back-off after a lost connection, doubling from the
 *   first to the second (default 1000 / 30000 ms).
 * - `dedupCacheSize`: documents remembered per model to drop replayed revisions (default 10000).
 * - `tls`: `{ ca, cert, key, passphrase, servername, rejectUnauthorized }` for an `https://`
 *   server (src/util/tls.ts): a private CA, a client certificate.
 *
 * Model settings (`models.<name>.settings`): `database` (default: the model's name).
 *
 * Any other key is an error naming the nearest valid one (kit/settings.ts).
 */
import { redact } from '../../errors';
import type { TlsFetch } from '../../util/tls-fetch';
import { parseTls, type TlsSettings } from '../../util/tls';
import { SettingsReader, type Settings } from '../kit/settings';

export interface CouchDbSettings {
  /** The server URL without credentials, ending in `/`. */
  baseUrl: string;
  /** The URL for messages: credentials replaced by `***`. */
  displayUrl: string;
  /** `Basic ...` when the URL carried credentials. */
  authorization: string | undefined;
  feed: 'continuous' | 'longpoll';
  heartbeat: number;
  includeDocs: boolean;
  includeDesignDocs: boolean;
  batchLimit: number;
  connectTimeout: number;
  requestTimeout: number;
  reconnectDelay: number;
  maxReconnectDelay: number;
  dedupCacheSize: number;
  /** The `tls` setting, validated, and where it sits (`datasources.<name>.tls`). */
  tls: TlsSettings | undefined;
  tlsPath: string;
  /** The fetch to use (with the tls settings loaded); set by the connector, else the global one. */
  fetch?: TlsFetch;
}

/** The datasource keys this connector reads (besides `connector` and `name`, set by the app). */
export const COUCHDB_SETTING_KEYS = [
  'url',
  'feed',
  'heartbeat',
  'includeDocs',
  'includeDesignDocs',
  'batchLimit',
  'connectTimeout',
  'requestTimeout',
  'reconnectDelay',
  'maxReconnectDelay',
  'dedupCacheSize',
  'tls',
] as const;

/** The model keys this connector reads. */
export const COUCHDB_MODEL_KEYS = ['database'] as const;

function parseUrl(r: SettingsReader): Pick<CouchDbSettings, 'baseUrl' | 'displayUrl' | 'authorization'> {
  const value = r.raw('url');
  if (typeof value !== 'string' || value === '') {
    throw r.invalid('url', 'is required: the CouchDB server URL, http(s)://user:pass@host:port');
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw r.invalid('url', `must be an http(s):// URL (got ${redact(value)})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw r.invalid('url', `must be an http(s):// URL (got ${redact(value)})`);
  }
  const displayUrl = redact(value);
  let authorization: string | undefined;
  if (url.username || url.password) {
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  url.search = '';
  url.hash = '';
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return { baseUrl: url.toString(), displayUrl, authorization };
}

/**
 * Validates datasource `datasource`'s settings; throws CONFIG_INVALID naming the key (an
 * unknown key with the nearest valid one).
 */
export function parseCouchDbSettings(settings: Settings, datasource: string): CouchDbSettings {
  const r = SettingsReader.forDataSource(datasource, settings).closed(COUCHDB_SETTING_KEYS);
  const url = parseUrl(r);
  const feed = r.oneOf('feed', ['continuous', 'longpoll'] as const, 'continuous');
  const heartbeat = r.positiveInt('heartbeat', 10_000);
  const { reconnectDelay, maxReconnectDelay } = r.reconnect({
    reconnectDelay: 1_000,
    maxReconnectDelay: 30_000,
  });
  const requestTimeout = r.positiveInt('requestTimeout', Math.max(3 * heartbeat, 30_000));
  if (requestTimeout <= heartbeat) {
    throw r.invalid('requestTimeout', `must be longer than heartbeat (${heartbeat} ms)`);
  }
  return {
    ...url,
    feed,
    heartbeat,
    includeDocs: r.bool('includeDocs', true),
    includeDesignDocs: r.bool('includeDesignDocs', false),
    batchLimit: r.positiveInt('batchLimit', 1_000),
    connectTimeout: r.positiveInt('connectTimeout', 10_000),
    requestTimeout,
    reconnectDelay,
    maxReconnectDelay,
    dedupCacheSize: r.positiveInt('dedupCacheSize', 10_000),
    tls: parseTls(r.raw('tls'), r.path('tls')),
    tlsPath: r.path('tls'),
  };
}

/** The model's database: its `database` setting, else the model's name. */
export function databaseOf(model: string, settings: Settings): string {
  return SettingsReader.forModel(model, settings).closed(COUCHDB_MODEL_KEYS).string('database', model);
}
