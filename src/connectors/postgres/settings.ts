/**
 * Settings of the PostgreSQL connector, validated once in `initialize()`.
 *
 * Datasource settings (`datasources.<name>`):
 * - `url`: `postgres://user:pass@host:port/db`; or LoopBack's separate keys `host` (default
 *   127.0.0.1), `port` (5432), `user` (postgres), `password`, `database` (required then). The
 *   user needs the `REPLICATION` attribute (or superuser) and must own the tables (to create
 *   the publication). Never logged.
 * - Any other key is an error naming the nearest valid one (a typo must not fall back to a
 *   default).
 * - `slot`: the replication slot (default `evpub_<datasource>`). One datasource = one slot =
 *   one replication connection, shared by all its models.
 * - `publication`: the publication (default `evpub_<datasource>`). Created for the models'
 *   tables when missing; tables missing from an existing one are added.
 * - `snapshot`: `never` (default) or `initial`: publish the existing rows as `snapshot` events
 *   when a model starts without a checkpoint. A model's `snapshot` setting overrides it.
 * - `snapshotChunk`: rows per keyset chunk (default 1000).
 * - `heartbeatInterval`: ms between `pg_logical_emit_message` heartbeats, so an idle captured
 *   database lets the slot advance (default 10000; 0 disables).
 * - `statusInterval`: ms between standby status updates and slot lag reports (default 10000).
 * - `reconnectDelay` / `maxReconnectDelay`: back-off after a lost connection (1000 / 30000 ms).
 * - `connectTimeout`: ms to connect (default 10000).
 * - `tls`: `{ ca, cert, key, passphrase, servername, rejectUnauthorized }` (src/util/tls.ts), for
 *   every connection of the datasource (replication, admin, the metrics slot probe, the CLI).
 *   A client certificate with a `hostssl ... cert` rule authenticates as its common name. The
 *   URL's `sslmode` / `sslrootcert`... keep working when `tls` is not given; both at once is an
 *   error (one place decides).
 * - `outbox`: `true` or `{ table, schema, create }`: the transactional outbox this connector
 *   publishes from (kit/outbox.ts, docs/outbox.md): default table `public.evpub_outbox`,
 *   created when missing unless `create: false`.
 *
 * Model settings (`models.<name>.settings`): `table` (`schema.table` or `table`, default the
 * model's name in `public`), `snapshot` (`initial` / `never`); or `outbox: true` (the model's
 * events come from the outbox, and it has no table of its own).
 */
import { redact } from '../../errors';
import type { Logger } from '../../logger';
import type { ConnectionOptions } from 'node:tls';
import { hostname } from 'node:os';
import { loadTls, parseTls, verifyServername, type TlsSettings } from '../../util/tls';
import { SettingsReader, type Settings } from '../kit/settings';
import { checkName, SLOT_NAME, SLOT_RULE } from '../kit/sql-names';
import { parseOutboxSetting, type OutboxSettings } from '../kit/outbox';

export type SnapshotMode = 'initial' | 'never';

export interface PostgresSettings {
  url: string;
  displayUrl: string;
  slot: string;
  publication: string;
  snapshot: SnapshotMode;
  snapshotChunk: number;
  heartbeatInterval: number;
  statusInterval: number;
  reconnectDelay: number;
  maxReconnectDelay: number;
  connectTimeout: number;
  /** The `tls` setting, validated (undefined: the URL decides, e.g. `sslmode`). */
  tls: TlsSettings | undefined;
  /** Where `tls` sits in the configuration (`datasources.shop.tls`), for messages. */
  tlsPath: string;
  /** The `outbox` setting (kit/outbox.ts), its schema defaulted to `public`; undefined: none. */
  outbox: (OutboxSettings & { schema: string }) | undefined;
}

export interface TableRef {
  schema: string;
  table: string;
}

export const POSTGRES_SETTING_KEYS = [
  'url',
  'slot',
  'publication',
  'snapshot',
  'snapshotChunk',
  'heartbeatInterval',
  'statusInterval',
  'reconnectDelay',
  'maxReconnectDelay',
  'connectTimeout',
  'tls',
  'outbox',
] as const;

/** Query parameters of a PostgreSQL URL by which the URL itself asks for TLS. */
/** pg's TLS parameters of a URL: they override the `ssl` option, so they do not go with `tls`. */
export const URL_SSL_PARAMS = ['ssl', 'sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'sslnegotiation'];

/** A slot or publication name: PostgreSQL's slot rule for both (`[a-z0-9_]`, at most 63). */
function ident(r: SettingsReader, key: string, fallback: string): string {
  const value = r.raw(key) ?? fallback;
  if (typeof value !== 'string' || !SLOT_NAME.test(value)) {
    throw r.invalid(key, `${SLOT_RULE} (got ${JSON.stringify(value)})`);
  }
  return value;
}

/** The `snapshot` setting of `r` (the datasource's or a model's). */
export function snapshotMode(r: SettingsReader, fallback: SnapshotMode): SnapshotMode {
  return r.oneOf('snapshot', ['initial', 'never'] as const, fallback);
}

/** The default slot/publication name for a datasource: `evpub_<name>`, lower-cased and safe. */
export function defaultName(datasource: string): string {
  return `evpub_${datasource.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`.slice(0, 63);
}

/** LoopBack's separate connection keys, used when there is no `url`. */
const PART_KEYS = ['host', 'port', 'user', 'password', 'database'];

function urlOf(r: SettingsReader): string {
  if (r.has('url')) {
    const url = r.raw('url');
    if (typeof url !== 'string' || !/^postgres(ql)?:\/\//.test(url)) {
      throw r.invalid('url', 'must be a URL: postgres://user:password@host:5432/database');
    }
    try {
      new URL(url);
    } catch {
      // The driver would throw a bare TypeError at start; the message shows the URL redacted.
      throw r.invalid(
        'url',
        `${JSON.stringify(redact(url))} is not a valid URL (percent-encode @ : / ? # in the password): ` +
          'postgres://user:password@host:5432/database',
      );
    }
    const parts = PART_KEYS.filter((k) => r.has(k));
    if (parts.length > 0) throw r.invalid(parts[0]!, 'cannot be given with "url": put it in the URL');
    return url;
  }
  const database = r.string('database');
  if (database === undefined) {
    throw r.invalid(
      'url',
      'is required: postgres://user:password@host:5432/database (or host, port, user, password, database)',
    );
  }
  const port = r.int('port', 5432, 1);
  const password = r.secret('password');
  const auth = `${encodeURIComponent(r.string('user', 'postgres'))}${password === undefined ? '' : `:${encodeURIComponent(password)}`}`;
  return `postgres://${auth}@${r.string('host', '127.0.0.1')}:${port}/${encodeURIComponent(database)}`;
}

/**
 * Validates datasource `datasource`'s settings; throws CONFIG_INVALID naming the key (an
 * unknown key with the nearest valid one).
 */
export function parsePostgresSettings(datasource: string, settings: Settings): PostgresSettings {
  const r = SettingsReader.forDataSource(datasource, settings).closed([
    ...POSTGRES_SETTING_KEYS,
    ...PART_KEYS,
  ]);
  const url = urlOf(r);
  const tls = parseTls(r.raw('tls'), r.path('tls'));
  if (tls !== undefined) {
    const params = new URL(url).searchParams;
    const inUrl = URL_SSL_PARAMS.find((p) => params.has(p));
    if (inUrl !== undefined) {
      throw r.invalid(
        'tls',
        `cannot be given with "${inUrl}" in the url: remove ${inUrl} from the url (tls turns TLS on) or remove tls`,
      );
    }
  }
  const { reconnectDelay, maxReconnectDelay } = r.reconnect({
    reconnectDelay: 1_000,
    maxReconnectDelay: 30_000,
  });
  return {
    url,
    displayUrl: redact(url),
    slot: ident(r, 'slot', defaultName(datasource)),
    publication: ident(r, 'publication', defaultName(datasource)),
    snapshot: snapshotMode(r, 'never'),
    snapshotChunk: r.int('snapshotChunk', 1_000, 1),
    heartbeatInterval: r.int('heartbeatInterval', 10_000, 0),
    statusInterval: r.int('statusInterval', 10_000, 100),
    reconnectDelay,
    maxReconnectDelay,
    connectTimeout: r.int('connectTimeout', 10_000, 1),
    tls,
    tlsPath: r.path('tls'),
    outbox: outboxOf(r),
  };
}

function outboxOf(r: SettingsReader): PostgresSettings['outbox'] {
  const outbox = parseOutboxSetting(r, 63);
  return outbox && { ...outbox, schema: outbox.schema ?? 'public' };
}

/** The outbox table of the datasource's `outbox` setting. */
export function outboxTable(outbox: NonNullable<PostgresSettings['outbox']>): TableRef {
  return { schema: outbox.schema, table: outbox.table };
}

/**
 * pg's `ssl` option for the datasource's connections, from its `tls` setting (reads the
 * certificate files; warns when verification is off): undefined when `tls` is not set (the
 * URL's `sslmode`, if any, decides).
 */
export function pgSsl(settings: PostgresSettings, logger?: Logger): ConnectionOptions | undefined {
  if (settings.tls === undefined) return undefined;
  // pg sends the URL's host name as servername: a `servername` setting is checked instead.
  return verifyServername(loadTls(settings.tls, settings.tlsPath, { endpoint: settings.displayUrl, logger }));
}

/** The model keys this connector reads. */
export const POSTGRES_MODEL_KEYS = ['table', 'snapshot', 'outbox'] as const;

/**
 * The model's table: `settings.table` (`schema.table` or `table`), else the model's name in
 * `public`. Each part is checked against the name rule (kit/sql-names.ts), 63 characters.
 */
export function tableOf(model: string, settings: Settings): TableRef {
  const r = SettingsReader.forModel(model, settings).closed(POSTGRES_MODEL_KEYS);
  const value = r.raw('table') ?? model;
  if (typeof value !== 'string' || value === '') {
    throw r.invalid('table', `must be "schema.table" or "table" (got ${JSON.stringify(value)})`);
  }
  const dot = value.indexOf('.');
  const ref =
    dot < 0
      ? { schema: 'public', table: value }
      : { schema: value.slice(0, dot), table: value.slice(dot + 1) };
  const defaulted = !r.has('table');
  checkName(r, 'table', ref.schema, { max: 63, what: `the schema ${JSON.stringify(ref.schema)}`, defaulted });
  checkName(r, 'table', ref.table, { max: 63, what: JSON.stringify(value), defaulted });
  return ref;
}

/** `"schema"."table"`, quoted for SQL. */
export function qualified(t: TableRef): string {
  return `${quoteIdent(t.schema)}.${quoteIdent(t.table)}`;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Connection options that make values come out the same on every connection (ISO, UTC). */
/**
 * The application_name of evpub's connections: `evpub <host>:<pid>`, so that a second process
 * finding the slot active can name this one (pg_stat_activity; at most 63 bytes).
 */
export const APPLICATION_NAME = `evpub ${hostname()}:${process.pid}`.slice(0, 63);

export const SESSION_OPTIONS =
  '-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex';
