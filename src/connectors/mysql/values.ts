/**
 * Table metadata and JSON-safe values, the same for binlog rows (zongji) and snapshot rows
 * (mysql2 queries), so a consumer gets one shape whichever way a row arrived.
 *
 * Column kinds come from information_schema (`DATA_TYPE`, `COLUMN_TYPE`; on MariaDB a JSON
 * column is a LONGTEXT with a `json_valid()` check constraint). Values:
 * - TINYINT..INT, FLOAT, DOUBLE, YEAR: numbers. BIGINT and DECIMAL: exact strings.
 * - DATE `YYYY-MM-DD`; DATETIME `YYYY-MM-DDTHH:MM:SS[.ffffff]` (no zone, like the column);
 *   TIMESTAMP the same in UTC with `Z`; TIME `[-]HH:MM:SS[.ffffff]`. Zero dates are null.
 * - JSON: the parsed value. BINARY/VARBINARY/BLOB: base64. BIT: the unsigned integer as a
 *   decimal string. ENUM/SET/CHAR/TEXT: strings. MariaDB UUID: the canonical text. NULL: null.
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import type { Row } from '../../events/change-event';
import { ErrorCode, EvpubError } from '../../errors';
import type { TableRef } from './settings';

export type ValueKind =
  | 'int'
  | 'bigint'
  | 'decimal'
  | 'float'
  | 'date'
  | 'datetime'
  | 'timestamp'
  | 'time'
  | 'year'
  | 'json'
  | 'binary'
  | 'text'
  | 'bit'
  | 'uuid'
  | 'other';

export interface ColumnMeta {
  name: string;
  kind: ValueKind;
}

export interface TableMeta extends TableRef {
  columns: ColumnMeta[];
  byName: Map<string, ColumnMeta>;
  /** Primary key column names in key order; empty when the table has none. */
  primaryKey: string[];
}

const KINDS: Record<string, ValueKind> = {
  tinyint: 'int',
  smallint: 'int',
  mediumint: 'int',
  int: 'int',
  integer: 'int',
  bigint: 'bigint',
  decimal: 'decimal',
  numeric: 'decimal',
  float: 'float',
  double: 'float',
  real: 'float',
  date: 'date',
  datetime: 'datetime',
  timestamp: 'timestamp',
  time: 'time',
  year: 'year',
  json: 'json',
  binary: 'binary',
  varbinary: 'binary',
  tinyblob: 'binary',
  blob: 'binary',
  mediumblob: 'binary',
  longblob: 'binary',
  char: 'text',
  varchar: 'text',
  tinytext: 'text',
  text: 'text',
  mediumtext: 'text',
  longtext: 'text',
  enum: 'text',
  set: 'text',
  bit: 'bit',
  uuid: 'uuid',
  inet4: 'text',
  inet6: 'text',
};

interface ColumnRow extends RowDataPacket {
  COLUMN_NAME: string;
  DATA_TYPE: string;
}

/** Reads the table's columns, primary key and JSON columns; SOURCE_FAILED when it does not exist. */
export async function loadTableMeta(conn: Pick<Connection, 'query'>, ref: TableRef): Promise<TableMeta> {
  const [columns] = await conn.query<ColumnRow[]>(
    'SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION',
    [ref.database, ref.table],
  );
  if (columns.length === 0) {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `mysql: table ${ref.database}.${ref.table} does not exist (or this user may not read it): ` +
        'create it, or fix the model\'s "table" setting',
      { context: { database: ref.database, table: ref.table } },
    );
  }
  const [keys] = await conn.query<RowDataPacket[]>(
    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
    [ref.database, ref.table],
  );
  const jsonColumns = new Set<string>();
  try {
    const [checks] = await conn.query<RowDataPacket[]>(
      'SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?',
      [ref.database, ref.table],
    );
    for (const row of checks) {
      const match = /^json_valid\(`((?:[^`]|``)+)`\)$/i.exec(String(row.CHECK_CLAUSE).trim());
      if (match) jsonColumns.add(match[1]!.replace(/``/g, '`'));
    }
  } catch {
    // a server without CHECK_CONSTRAINTS (MySQL < 8.0.16) has native JSON columns only
  }
  const metas = columns.map((c): ColumnMeta => {
    const kind = jsonColumns.has(c.COLUMN_NAME) ? 'json' : (KINDS[c.DATA_TYPE.toLowerCase()] ?? 'other');
    return { name: c.COLUMN_NAME, kind };
  });
  return {
    ...ref,
    columns: metas,
    byName: new Map(metas.map((m) => [m.name, m])),
    primaryKey: keys.map((k) => String(k.COLUMN_NAME)),
  };
}

const ZERO_DATE = /^0000-00-00/;

function scalar(value: unknown): string {
  return typeof value === 'number' || typeof value === 'bigint' ? value.toString() : text(value);
}

/** A scalar's text (driver values here are strings, numbers or bigints). */
function text(value: unknown): string {
  return typeof value === 'string'
    ? value
    : JSON.stringify(typeof value === 'bigint' ? value.toString() : value);
}

function temporal(value: unknown, kind: 'date' | 'datetime' | 'timestamp'): string | null {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) return null;
    const iso = value.toISOString();
    return kind === 'date' ? iso.slice(0, 10) : kind === 'datetime' ? iso.slice(0, -1) : iso;
  }
  const t = text(value);
  if (ZERO_DATE.test(t)) return null;
  if (kind === 'date') return t;
  const iso = t.replace(' ', 'T');
  return kind === 'timestamp' ? `${iso}Z` : iso;
}

function uuidText(buffer: Buffer): string {
  const hex = buffer.toString('hex').padEnd(32, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A value of a column the metadata does not know (added since): made JSON-safe by its type. */
function generic(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return value.toString('base64');
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (typeof value === 'bigint') return value.toString();
  return value;
}

export function decodeValue(value: unknown, kind: ValueKind | undefined): unknown {
  if (value === null || value === undefined) return null;
  switch (kind) {
    case 'int':
    case 'float':
    case 'year':
      return typeof value === 'number' ? value : Number(value);
    case 'bigint':
    case 'decimal':
      return scalar(value);
    case 'date':
    case 'datetime':
    case 'timestamp':
      return temporal(value, kind);
    case 'time':
      return scalar(value);
    case 'json':
      if (Buffer.isBuffer(value)) value = value.toString('utf8');
      if (typeof value !== 'string') return value;
      try {
        return JSON.parse(value) as unknown;
      } catch {
        return value; // not valid JSON after all (no check constraint enforced it)
      }
    case 'binary':
      return Buffer.isBuffer(value)
        ? value.toString('base64')
        : Buffer.from(scalar(value)).toString('base64');
    case 'text':
      return Buffer.isBuffer(value) ? value.toString('utf8') : scalar(value);
    case 'bit':
      return Buffer.isBuffer(value)
        ? (value.length === 0 ? 0n : BigInt(`0x${value.toString('hex')}`)).toString()
        : scalar(value);
    case 'uuid':
      return Buffer.isBuffer(value) ? uuidText(value) : scalar(value);
    default:
      return generic(value);
  }
}

/** The row with every value JSON-safe. */
export function decodeRow(meta: TableMeta, raw: Record<string, unknown>): Row {
  const row: Row = {};
  for (const [name, value] of Object.entries(raw))
    row[name] = decodeValue(value, meta.byName.get(name)?.kind);
  return row;
}

/**
 * The record key of a decoded row: the primary key value as a string, a JSON array for a
 * composite key, the JSON of the whole row for a table without a primary key.
 */
export function keyOf(meta: TableMeta, row: Row): string {
  if (meta.primaryKey.length === 0) return JSON.stringify(row);
  if (meta.primaryKey.length === 1) {
    const value = row[meta.primaryKey[0]!];
    return typeof value === 'string' ? value : JSON.stringify(value);
  }
  return JSON.stringify(meta.primaryKey.map((k) => row[k] ?? null));
}

/** `db`.`table`, quoted for SQL. */
export function quoteTable(ref: TableRef): string {
  return `${quoteId(ref.database)}.${quoteId(ref.table)}`;
}

export function quoteId(name: string): string {
  return `\`${name.replace(/`/g, '``')}\``;
}
