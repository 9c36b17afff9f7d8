/**
 * Settings of the MySQL / MariaDB connector, validated once in `initialize()`.
 *
 * Datasource settings (`datasources.<name>`):
 * - `url`: `mysql://user:pass@host:port/database` (or `mariadb://`); or the separate keys
 *   `host` (default 127.0.0.1), `port` (3306), `user` (root), `password`, `database`. The
 *   password is never logged (`redact()`).
 * - `serverId`: the replica server id of the binlog connections. Every binlog reader of one
 *   server needs its own; each model's stream uses `serverId + n`, n its model's place in the
 *   datasource's configured models (connector.ts). Default: random in [100000, 2^31) per
 *   connector instance, so several publishers never evict each other's streams. A configured
 *   one already read with by another live reader fails the start (replica.ts).
 * - `snapshot`: `initial` (read the table's rows once, when there is no checkpoint) or `never`
 *   (default). Models may override it.
 * - `snapshotChunk`: rows per keyset-ordered snapshot query (default 1000).
 * - `signalTable`: the table a snapshot writes its watermarks to (`table` in the datasource's
 *   database, or `database.table`; default `evpub_signal`). See snapshot.ts.
 * - `connectTimeout`: ms to connect (default 10000).
 * - `heartbeat`: ms between the server's heartbeat events on an idle binlog stream (default
 *   10000); after 3 heartbeats of silence the stream is considered dead and reopened.
 * - `reconnectDelay` / `maxReconnectDelay`: back-off after a lost connection, doubling from the
 *   first to the second (default 1000 / 30000 ms).
 * - `statusInterval`: ms between binlog lag reports (`lagging` status: bytes and seconds each
 *   model's reader is behind the server's end of the binlog; default 10000; see lag.ts).
 * - `tls`: `{ ca, cert, key, passphrase, rejectUnauthorized }` (src/util/tls.ts) for every
 *   connection (binlog and queries): mysql2's `ssl`, with the host name verified against the
 *   certificate. A client certificate is what `REQUIRE X509` asks for. `servername` is refused:
 *   mysql2 verifies the host it connects to and cannot be given another name.
 * - `outbox`: `true` or `{ table, schema, create }`: the transactional outbox this connector
 *   publishes from (kit/outbox.ts, docs/outbox.md): default table `evpub_outbox` in the
 *   datasource's database (`schema`: another database), created when missing unless
 *   `create: false`.
 *
 * Model settings (`models.<name>.settings`): `table` (`table` or `database.table`; default the model's
 * name), `database` (default the datasource's), `snapshot` (overrides the datasource's); or
 * `outbox: true` (the model's events come from the outbox, and it has no table of its own).
 */
import { randomInt } from 'node:crypto';
import { redact } from '../../errors';
import type { Logger } from '../../logger';
import { loadTls, parseTls, type LoadedTls, type TlsSettings } from '../../util/tls';
import { checkName } from '../kit/sql-names';
import { SettingsReader, settingsError, type Settings } from '../kit/settings';
import { parseOutboxSetting, type OutboxSettings } from '../kit/outbox';

export type SnapshotMode = 'initial' | 'never';

export interface MysqlSettings {
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  database: string | undefined;
  /** Where we connect, without credentials, for messages. */
  display: string;
  serverId: number;
  /** True when `serverId` was configured (not the random default). */
  serverIdSet: boolean;
  snapshot: SnapshotMode;
  snapshotChunk: number;
  /** `table` or `database.table`, as given. */
  signalTable: string;
  connectTimeout: number;
  heartbeat: number;
  reconnectDelay: number;
  maxReconnectDelay: number;
  statusInterval: number;
  /** The `tls` setting, validated; `ssl` is it loaded (withSsl), which connectionOptions uses. */
  tls: TlsSettings | undefined;
  ssl?: LoadedTls;
  /** The `outbox` setting (kit/outbox.ts), its database defaulted to the datasource's; undefined: none. */
  outbox: (OutboxSettings & { schema: string }) | undefined;
}

export interface TableRef {
  database: string;
  table: string;
}

export const MYSQL_SETTING_KEYS = [
  'url',
  'host',
  'port',
  'user',
  'password',
  'database',
  'serverId',
  'snapshot',
  'snapshotChunk',
  'signalTable',
  'connectTimeout',
  'heartbeat',
  'reconnectDelay',
  'maxReconnectDelay',
  'statusInterval',
  'tls',
  'outbox',
] as const;

/** The model keys this connector reads. */
export const MYSQL_MODEL_KEYS = ['table', 'database', 'snapshot', 'outbox'] as const;

/** A `snapshot` setting at `path` (`models.m.settings.snapshot`): `initial` or `never`. */
export function parseSnapshot(value: unknown, path: string, fallback: SnapshotMode): SnapshotMode {
  if (value === undefined || value === null) return fallback;
  if (value !== 'initial' && value !== 'never') {
    throw settingsError(path, `must be "initial" or "never" (got ${JSON.stringify(value)})`);
  }
  return value;
}

function fromUrl(
  r: SettingsReader,
  value: string,
): Pick<MysqlSettings, 'host' | 'port' | 'user' | 'password' | 'database'> {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw r.invalid('url', `must be a mysql:// URL (got ${redact(value)})`);
  }
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:') {
    throw r.invalid('url', `must be a mysql:// or mariadb:// URL (got ${redact(value)})`);
  }
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  return {
    host: url.hostname || '127.0.0.1',
    port: url.port ? Number(url.port) : 3306,
    user: url.username ? decodeURIComponent(url.username) : 'root',
    password: url.password ? decodeURIComponent(url.password) : undefined,
    database: database === '' ? undefined : database,
  };
}

/**
 * Validates datasource `datasource`'s settings; throws CONFIG_INVALID naming the key (an
 * unknown key with the nearest valid one).
 */
export function parseMysqlSettings(settings: Settings, datasource: string): MysqlSettings {
  const r = SettingsReader.forDataSource(datasource, settings).closed(MYSQL_SETTING_KEYS);
  // A string that may be empty (a password, a user...); never echoed.
  const optionalString = (key: string): string | undefined => {
    const value = r.raw(key);
    if (value !== undefined && typeof value !== 'string') throw r.invalid(key, 'must be a string');
    return value;
  };
  const url = optionalString('url');
  const base = url
    ? fromUrl(r, url)
    : {
        host: optionalString('host') ?? '127.0.0.1',
        port: r.positiveInt('port', 3306),
        user: optionalString('user') ?? 'root',
        password: optionalString('password'),
        database: optionalString('database'),
      };
  if (url && r.has('database')) base.database = optionalString('database');
  if (base.database !== undefined) {
    checkName(r, r.has('database') ? 'database' : 'url', base.database, { max: MAX_NAME });
  }
  const { reconnectDelay, maxReconnectDelay } = r.reconnect({
    reconnectDelay: 1_000,
    maxReconnectDelay: 30_000,
  });
  const tls = parseTls(r.raw('tls'), r.path('tls'));
  if (tls?.servername !== undefined) {
    throw settingsError(
      `${r.path('tls')}.servername`,
      'is not supported by the MySQL driver (it verifies the host it connects to): connect by a name the certificate lists',
    );
  }
  const serverId = r.positiveInt('serverId', randomInt(100_000, 2 ** 31 - 1_000));
  if (serverId >= 2 ** 32 - 1_000) throw r.invalid('serverId', 'must be below 2^32 - 1000');
  return {
    ...base,
    display: `mysql://${base.user}@${base.host}:${base.port}/${base.database ?? ''}`,
    serverId,
    serverIdSet: r.has('serverId'),
    snapshot: parseSnapshot(r.raw('snapshot'), r.path('snapshot'), 'never'),
    snapshotChunk: r.positiveInt('snapshotChunk', 1_000),
    signalTable: signalSetting(r, optionalString('signalTable')),
    connectTimeout: r.positiveInt('connectTimeout', 10_000),
    heartbeat: r.positiveInt('heartbeat', 10_000),
    reconnectDelay,
    maxReconnectDelay,
    statusInterval: r.int('statusInterval', 10_000, 100),
    tls,
    outbox: outboxOf(r, base.database),
  };
}

function outboxOf(r: SettingsReader, database: string | undefined): MysqlSettings['outbox'] {
  const outbox = parseOutboxSetting(r, MAX_NAME);
  if (outbox === undefined) return undefined;
  const schema = outbox.schema ?? database;
  if (schema === undefined) {
    throw settingsError(
      `${r.path('outbox')}.schema`,
      'is required: the datasource names no database, so say which database holds the outbox table',
    );
  }
  return { ...outbox, schema };
}

/** The outbox table of the datasource's `outbox` setting. */
export function outboxTable(outbox: NonNullable<MysqlSettings['outbox']>): TableRef {
  return { database: outbox.schema, table: outbox.table };
}

/**
 * `settings` with the `tls` setting loaded (certificate files read; a warning when verification
 * is off), once, when the connector is made.
 */
export function withSsl(settings: MysqlSettings, datasource: string, logger?: Logger): MysqlSettings {
  if (settings.tls === undefined) return settings;
  const path = `datasources.${datasource}.tls`;
  return { ...settings, ssl: loadTls(settings.tls, path, { endpoint: settings.display, logger }) };
}

function signalSetting(r: SettingsReader, value: string | undefined): string {
  if (value === undefined) return 'evpub_signal';
  if (!/^[^.]+(\.[^.]+)?$/.test(value)) {
    throw r.invalid('signalTable', `must be "table" or "database.table" (got ${JSON.stringify(value)})`);
  }
  for (const part of value.split('.')) checkName(r, 'signalTable', part, { max: MAX_NAME });
  return value;
}

/** MySQL's and MariaDB's longest database, table and column name. */
const MAX_NAME = 64;

/** The snapshot signal table (`signalTable`); CONFIG_INVALID when it names no database. */
export function signalTableOf(settings: MysqlSettings, datasource: string): TableRef {
  const dot = settings.signalTable.indexOf('.');
  if (dot >= 0)
    return { database: settings.signalTable.slice(0, dot), table: settings.signalTable.slice(dot + 1) };
  if (settings.database === undefined) {
    throw settingsError(
      `datasources.${datasource}.signalTable`,
      `names no database (${JSON.stringify(settings.signalTable)}) and the datasource has none: write "database.table"`,
    );
  }
  return { database: settings.database, table: settings.signalTable };
}

/** The model's table: `table` (`t` or `db.t`) and `database` settings, else the model's name. */
export function tableOf(model: string, modelSettings: Settings, settings: MysqlSettings): TableRef {
  const r = SettingsReader.forModel(model, modelSettings).closed(MYSQL_MODEL_KEYS);
  const table = r.string('table', model);
  const dot = table.indexOf('.');
  const database = dot >= 0 ? table.slice(0, dot) : r.string('database', settings.database ?? '');
  if (database === '') {
    throw r.invalid('table', 'names no database: write "database.table", or set the datasource\'s database');
  }
  const ref = { database, table: dot >= 0 ? table.slice(dot + 1) : table };
  const key = dot < 0 && r.has('database') ? 'database' : 'table';
  checkName(r, key, ref.database, { max: MAX_NAME, what: `the database ${JSON.stringify(ref.database)}` });
  checkName(r, 'table', ref.table, { max: MAX_NAME, defaulted: !r.has('table') });
  return ref;
}

/** mysql2 connection options for both the binlog stream and queries: values as strings. */
export function connectionOptions(settings: MysqlSettings): Record<string, unknown> {
  return {
    host: settings.host,
    port: settings.port,
    user: settings.user,
    ...(settings.password !== undefined ? { password: settings.password } : {}),
    connectTimeout: settings.connectTimeout,
    // A copy per connection (mysql2 writes to it). verifyIdentity: the host name is checked.
    ...(settings.ssl
      ? { ssl: { ...settings.ssl, verifyIdentity: settings.ssl.rejectUnauthorized !== false } }
      : {}),
    // Exact values: BIGINT and DECIMAL as strings, temporal values as the server's text, in UTC.
    supportBigNumbers: true,
    bigNumberStrings: true,
    decimalNumbers: false,
    dateStrings: true,
    timezone: 'Z',
  };
}
