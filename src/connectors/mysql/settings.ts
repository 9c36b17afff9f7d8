/**
 * Settings of the MySQL / MariaDB connector, validated once in `initialize()`.
 *
 * Datasource settings (`datasources.<name>`):
 * - `url`: `mysql://user:pass@host:port/database` (or `mariadb://`); or the separate keys
 *   `host` (default 127.0.0.1), `port` (3306), `user` (root), `password`, `database`. The
 *   password is never logged (`redact()`).
 * - `serverId`: the replica server id of the binlog connections. Every binlog reader of one
 *   server needs its own; each model's stream uses `serverId + n`. Default: random in
 *   [100000, 2^31), so several publishers never evict each other's streams.
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
 *
 * Model settings (`models.<name>.settings`): `table` (`table` or `database.table`; default the model's
 * name), `database` (default the datasource's), `snapshot` (overrides the datasource's).
 */
import { randomInt } from 'node:crypto';
import { redact, type EvpubError } from '../../errors';
import { APP_KEYS, SettingReader, settingError } from '../setting-readers';

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
  snapshot: SnapshotMode;
  snapshotChunk: number;
  /** `table` or `database.table`, as given. */
  signalTable: string;
  connectTimeout: number;
  heartbeat: number;
  reconnectDelay: number;
  maxReconnectDelay: number;
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
] as const;

function invalid(key: string, rule: string): EvpubError {
  return settingError('mysql', key, rule);
}

function optionalString(settings: Readonly<Record<string, unknown>>, key: string): string | undefined {
  const value = settings[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw invalid(key, 'must be a string');
  return value;
}

export function parseSnapshot(value: unknown, key: string, fallback: SnapshotMode): SnapshotMode {
  if (value === undefined || value === null) return fallback;
  if (value !== 'initial' && value !== 'never') {
    throw invalid(key, `must be "initial" or "never" (got ${JSON.stringify(value)})`);
  }
  return value;
}

function fromUrl(value: string): Pick<MysqlSettings, 'host' | 'port' | 'user' | 'password' | 'database'> {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid('url', `must be a mysql:// URL (got ${redact(value)})`);
  }
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:') {
    throw invalid('url', `must be a mysql:// or mariadb:// URL (got ${redact(value)})`);
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

/** Validates the datasource settings; throws CONFIG_INVALID naming the key. */
export function parseMysqlSettings(settings: Readonly<Record<string, unknown>>): MysqlSettings {
  for (const key of Object.keys(settings)) {
    if (
      !(MYSQL_SETTING_KEYS as readonly string[]).includes(key) &&
      !(APP_KEYS as readonly string[]).includes(key)
    ) {
      throw invalid(
        key,
        `is unknown${nearest(key, MYSQL_SETTING_KEYS)}; the mysql connector's settings are ${MYSQL_SETTING_KEYS.join(', ')}`,
      );
    }
  }
  const r = new SettingReader('mysql', settings);
  const url = optionalString(settings, 'url');
  const base = url
    ? fromUrl(url)
    : {
        host: optionalString(settings, 'host') ?? '127.0.0.1',
        port: r.positiveInt('port', 3306),
        user: optionalString(settings, 'user') ?? 'root',
        password: optionalString(settings, 'password'),
        database: optionalString(settings, 'database'),
      };
  if (url && settings.database !== undefined) base.database = optionalString(settings, 'database');
  const reconnectDelay = r.positiveInt('reconnectDelay', 1_000);
  const maxReconnectDelay = r.positiveInt('maxReconnectDelay', 30_000);
  if (maxReconnectDelay < reconnectDelay) {
    throw invalid('maxReconnectDelay', `must be at least reconnectDelay (${reconnectDelay})`);
  }
  const serverId = r.positiveInt('serverId', randomInt(100_000, 2 ** 31 - 1_000));
  if (serverId >= 2 ** 32 - 1_000) throw invalid('serverId', 'must be below 2^32 - 1000');
  return {
    ...base,
    display: `mysql://${base.user}@${base.host}:${base.port}/${base.database ?? ''}`,
    serverId,
    snapshot: parseSnapshot(settings.snapshot, 'snapshot', 'never'),
    snapshotChunk: r.positiveInt('snapshotChunk', 1_000),
    signalTable: signalSetting(optionalString(settings, 'signalTable')),
    connectTimeout: r.positiveInt('connectTimeout', 10_000),
    heartbeat: r.positiveInt('heartbeat', 10_000),
    reconnectDelay,
    maxReconnectDelay,
  };
}

function signalSetting(value: string | undefined): string {
  if (value === undefined) return 'evpub_signal';
  if (!/^[^.]+(\.[^.]+)?$/.test(value)) {
    throw invalid('signalTable', `must be "table" or "database.table" (got ${JSON.stringify(value)})`);
  }
  return value;
}

/** The snapshot signal table (`signalTable`); CONFIG_INVALID when it names no database. */
export function signalTableOf(settings: MysqlSettings): TableRef {
  const dot = settings.signalTable.indexOf('.');
  if (dot >= 0)
    return { database: settings.signalTable.slice(0, dot), table: settings.signalTable.slice(dot + 1) };
  if (settings.database === undefined) {
    throw invalid(
      'signalTable',
      `names no database (${JSON.stringify(settings.signalTable)}) and the datasource has none: write "database.table"`,
    );
  }
  return { database: settings.database, table: settings.signalTable };
}

/** ` (did you mean "x"?)` for the known key nearest to a misspelt one, when one is close. */
function nearest(key: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const candidate of known) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best === undefined ? '' : ` (did you mean "${best}"?)`;
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j]! + 1,
        current[j - 1]! + 1,
        previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** The model's table: `table` (`t` or `db.t`) and `database` settings, else the model's name. */
export function tableOf(
  model: string,
  modelSettings: Readonly<Record<string, unknown>>,
  settings: MysqlSettings,
): TableRef {
  const table = modelSettings.table ?? model;
  if (typeof table !== 'string' || table === '') {
    throw invalid(
      `models.${model}.settings.table`,
      `must be a non-empty string (got ${JSON.stringify(table)})`,
    );
  }
  const dot = table.indexOf('.');
  const database = dot >= 0 ? table.slice(0, dot) : (modelSettings.database ?? settings.database);
  if (typeof database !== 'string' || database === '') {
    throw invalid(
      `models.${model}.settings.table`,
      'names no database: write "database.table", or set the datasource\'s database',
    );
  }
  return { database, table: dot >= 0 ? table.slice(dot + 1) : table };
}

/** mysql2 connection options for both the binlog stream and queries: values as strings. */
export function connectionOptions(settings: MysqlSettings): Record<string, unknown> {
  return {
    host: settings.host,
    port: settings.port,
    user: settings.user,
    ...(settings.password !== undefined ? { password: settings.password } : {}),
    connectTimeout: settings.connectTimeout,
    // Exact values: BIGINT and DECIMAL as strings, temporal values as the server's text, in UTC.
    supportBigNumbers: true,
    bigNumberStrings: true,
    decimalNumbers: false,
    dateStrings: true,
    timezone: 'Z',
  };
}
