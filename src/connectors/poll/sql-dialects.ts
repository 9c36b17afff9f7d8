/**
 * The three SQL dialects the poller speaks, chosen by the datasource url's scheme:
 * `sqlite:path/to/file.db` (better-sqlite3, opened read-only), `postgres://` or
 * `postgresql://` (pg), `mysql://` or `mariadb://` (mysql2). Each gives queries with `?`-style
 * parameters rewritten to its own, identifier quoting, and how a cursor column is read back
 * exactly: PostgreSQL and MySQL timestamps are selected as text (a JS Date would drop
 * microseconds, and a truncated cursor would read the same row forever), and sent back as
 * parameters that the server converts to the column's type.
 */
import { ErrorCode, EvpubError, redact, toError } from '../../errors';
import { loadDriver } from '../../util/driver';
import { tlsFailure, verifyServername, type LoadedTls } from '../../util/tls';
import { mysqlTlsFailure } from '../mysql/errors';

export type Row = Record<string, unknown>;
export type DialectName = 'sqlite' | 'postgres' | 'mysql';

export interface SqlDb {
  readonly dialect: DialectName;
  /** Runs a query with `?` placeholders. */
  query(sql: string, params: unknown[]): Promise<Row[]>;
  quote(identifier: string): string;
  /** The expression that reads `column` exactly, for a cursor; `kind` says which part. */
  cursorExpr(column: string, kind: 'ts' | 'id'): string;
  close(): Promise<void>;
}

export function dialectOf(url: string): DialectName | undefined {
  if (url.startsWith('sqlite:')) return 'sqlite';
  if (/^postgres(ql)?:\/\//.test(url)) return 'postgres';
  if (/^(mysql|mariadb):\/\//.test(url)) return 'mysql';
  return undefined;
}

function quoteWith(q: string) {
  return (identifier: string): string =>
    identifier
      .split('.')
      .map((part) => `${q}${part.split(q).join(q + q)}${q}`)
      .join('.');
}

/** TLS options for PostgreSQL and MySQL (`tls`, loaded); undefined: none asked. */
export type SqlTls = LoadedTls | undefined;

function sourceError(dialect: DialectName, url: string, err: unknown): EvpubError {
  // A TLS failure (untrusted, expired or misnamed certificate) is not retried.
  const tls = dialect === 'mysql' ? mysqlTlsFailure(err, redact(url)) : tlsFailure(err, redact(url));
  if (tls) return tls;
  return new EvpubError(
    ErrorCode.SOURCE_FAILED,
    `poll connector (${dialect} ${redact(url)}): ${toError(err).message}`,
    { cause: err, retriable: true },
  );
}

export async function openSqlDb(url: string, tls?: SqlTls): Promise<SqlDb> {
  const dialect = dialectOf(url);
  if (dialect === 'sqlite') return openSqlite(url);
  if (dialect === 'postgres') return openPostgres(url, tls);
  if (dialect === 'mysql') return openMysql(url, tls);
  throw new EvpubError(ErrorCode.UNKNOWN_SCHEME, `poll connector: no SQL dialect for ${redact(url)}`);
}

async function openSqlite(url: string): Promise<SqlDb> {
  const Database = await loadDriver<typeof import('better-sqlite3')>(
    'better-sqlite3',
    'poll connector (SQLite)',
  );
  const file = url.slice('sqlite:'.length).replace(/^\/\//, '');
  let db: import('better-sqlite3').Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw sourceError('sqlite', url, err);
  }
  return {
    dialect: 'sqlite',
    query: (sql, params) => {
      try {
        return Promise.resolve(db.prepare(sql).all(...params) as Row[]);
      } catch (err) {
        return Promise.reject(sourceError('sqlite', url, err));
      }
    },
    quote: quoteWith('"'),
    cursorExpr: (column) => quoteWith('"')(column),
    close: () => {
      db.close();
      return Promise.resolve();
    },
  };
}

async function openPostgres(url: string, tls: SqlTls): Promise<SqlDb> {
  const pg = await loadDriver<typeof import('pg')>('pg', 'poll connector (PostgreSQL)');
  const pool = new pg.Pool({ connectionString: url, max: 1, ...(tls ? { ssl: verifyServername(tls) } : {}) });
  pool.on('error', () => undefined); // an idle client's lost connection: the next query reconnects
  const quote = quoteWith('"');
  const db: SqlDb = {
    dialect: 'postgres',
    query: async (sql, params) => {
      let n = 0;
      const text = sql.replace(/\?/g, () => `$${++n}`);
      try {
        return (await pool.query(text, params)).rows as Row[];
      } catch (err) {
        throw sourceError('postgres', url, err);
      }
    },
    quote,
    cursorExpr: (column) => `CAST(${quote(column)} AS text)`,
    close: () => pool.end(),
  };
  await db.query('SELECT 1', []);
  return db;
}

async function openMysql(url: string, tls: SqlTls): Promise<SqlDb> {
  const mysql = await loadDriver<typeof import('mysql2/promise')>('mysql2/promise', 'poll connector (MySQL)');
  const uri = url.replace(/^mariadb:/, 'mysql:');
  const pool = mysql.createPool({
    uri,
    connectionLimit: 1,
    // verifyIdentity: mysql2 checks the host name only when asked.
    ...(tls
      ? { ssl: { ...tls, verifyIdentity: tls.rejectUnauthorized !== false } as import('mysql2').SslOptions }
      : {}),
    supportBigNumbers: true,
    bigNumberStrings: false,
  });
  const quote = quoteWith('`');
  const db: SqlDb = {
    dialect: 'mysql',
    query: async (sql, params) => {
      try {
        const [rows] = await pool.query(sql, params);
        return rows as Row[];
      } catch (err) {
        throw sourceError('mysql', url, err);
      }
    },
    quote,
    // Timestamps as text keep their microseconds; ids stay numbers (exact up to 2^53).
    cursorExpr: (column, kind) => (kind === 'ts' ? `CAST(${quote(column)} AS CHAR)` : quote(column)),
    close: () => pool.end(),
  };
  await db.query('SELECT 1', []);
  return db;
}

/** A row value as JSON-safe data: Dates as ISO strings, bytes as base64, bigints as strings. */
export function jsonValue(value: unknown): unknown {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (Buffer.isBuffer(value)) return value.toString('base64');
  if (typeof value === 'bigint') return value.toString();
  return value;
}
