/**
 * The rows a repository write touches, read inside the write's transaction, in the shape the
 * datasource's CDC connector gives them: so that an event a LoopBack write publishes cannot be
 * told from the one the connector captures for the same change.
 *
 * - Columns: every column of the table, by its database name (not the LoopBack property
 *   name), whether or not the LoopBack model declares it.
 * - Key: the primary key's columns, the value as text for one column, a JSON array for
 *   several: the connector's key. Without a primary key: PostgreSQL, every column (as an
 *   array); MySQL, the JSON of the whole row.
 * - PostgreSQL values: each column is read as text in a session set as the connector's
 *   (TimeZone UTC, DateStyle ISO, IntervalStyle iso_8601, extra_float_digits 3, bytea hex; set
 *   for the read only, with `set_config(..., true)`, and put back after it) and decoded by the
 *   connector's own `decodeValue`: int8 and numeric as strings, timestamptz as `...Z` with its
 *   microseconds, json as values, bytea as base64...
 * - MySQL / MariaDB values: the column kinds of the mysql connector's own metadata
 *   (`loadTableMeta`) and its `decodeValue`; exact kinds (BIGINT, DECIMAL, dates and times) are
 *   read as the server's text (`CAST(... AS CHAR)`) in a session at UTC (`time_zone`, put back
 *   after the read), as the connector reads them: BIGINT and DECIMAL as strings, DATETIME
 *   without a zone, TIMESTAMP in UTC with `Z`, bytes as base64, JSON parsed.
 *
 * Rows are read in id order (the events of a write follow it; locks are taken in one order).
 * `lock` reads take `FOR UPDATE`: the rows a write is about to change are locked until the
 * transaction ends, so the `before` read is the row the write changes.
 */
import { ErrorCode, EvpubError, isEvpubError } from '../../errors';
import type { Row } from '../../events/change-event';
import type { OutboxDialect } from '../../events/outbox';
import { BUILTIN_ARRAYS, decodeValue } from '../../connectors/postgres/types';
import {
  decodeValue as decodeMysqlValue,
  loadTableMeta,
  type TableMeta,
  type ValueKind,
} from '../../connectors/mysql/values';

/** What the repository needs of a loopback-connector SQL connector (postgresql or mysql). */
export interface SqlConnectorLike {
  name: string;
  table(model: string): string;
  schema(model: string): string;
  column(model: string, property: string): string;
  escapeName(name: string): string;
  buildWhere(model: string, where: object): { sql: string; params: unknown[] };
  parameterize(ps: { sql: string; params: unknown[] }): { sql: string; params: unknown[] };
  beginTransaction?: unknown;
}

/** Runs one SQL statement in the transaction (the juggler datasource's `execute`). */
export type Execute = (sql: string, params: unknown[]) => Promise<unknown>;

interface Column {
  name: string;
  /** PostgreSQL: the type's oid; its element type's for arrays in `elem`. */
  oid: number;
  elem: number;
  /** MySQL: the mysql connector's kind of the column. */
  kind?: ValueKind;
}

export interface TableShape {
  columns: Column[];
  key: string[];
  /** No primary key: the MySQL connector's key is then the JSON of the whole row. */
  keyless: boolean;
}

/** Reads and locks the rows of one model's table, in one transaction. */
export class TableRows {
  readonly dialect: OutboxDialect;
  private readonly schemaName: string;
  private readonly tableName: string;
  private readonly idColumn: string;

  constructor(
    private readonly connector: SqlConnectorLike,
    private readonly model: string,
    idProperty: string,
  ) {
    this.dialect = /mysql/i.test(connector.name) ? 'mysql' : 'postgres';
    this.schemaName = connector.schema(model);
    this.tableName = connector.table(model);
    this.idColumn = connector.column(model, idProperty);
  }

  /** The table's schema and name, for the events' `source`. */
  get names(): { schema: string; table: string } {
    return { schema: this.schemaName, table: this.tableName };
  }

  /** The table as the SQL statements name it (`"public"."accounts"`). */
  get qualified(): string {
    const q = (n: string) => this.connector.escapeName(n);
    return this.schemaName ? `${q(this.schemaName)}.${q(this.tableName)}` : q(this.tableName);
  }

  private placeholders(n: number, from = 1): string {
    return Array.from({ length: n }, (_, i) => (this.dialect === 'postgres' ? `$${i + from}` : '?')).join(
      ', ',
    );
  }

  /** The table's columns and key, read from the catalog (each write: a schema change shows at once). */
  async describe(execute: Execute): Promise<TableShape> {
    if (this.dialect === 'postgres') {
      const rows = (await execute(
        `SELECT a.attname AS name, a.atttypid::int AS oid,
                CASE WHEN t.typcategory = 'A' THEN t.typelem::int ELSE 0 END AS elem,
                array_position(i.indkey::int2[], a.attnum) AS pk
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
          WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p'))
            AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum`,
        [this.schemaName || 'public', this.tableName],
      )) as { name: string; oid: number; elem: number; pk: number | null }[];
      return this.shape(rows.map((r) => ({ name: r.name, oid: r.oid, elem: r.elem, pk: r.pk })));
    }
    let database = this.schemaName;
    if (!database) {
      const rows = (await execute('SELECT DATABASE() AS db', [])) as { db: string | null }[];
      database = rows[0]?.db ?? '';
    }
    let meta: TableMeta;
    try {
      meta = await loadTableMeta(
        {
          query: async (sql: string, params?: unknown) => [await execute(sql, params as unknown[])],
        } as never,
        { database, table: this.tableName },
      );
    } catch (err) {
      // The connector's "does not exist" (SOURCE_FAILED): said as for PostgreSQL below.
      if (isEvpubError(err, ErrorCode.SOURCE_FAILED)) return this.shape([]);
      throw err;
    }
    const key = meta.primaryKey;
    return this.shape(
      meta.columns.map((c) => ({
        name: c.name,
        oid: 0,
        elem: 0,
        kind: c.kind,
        pk: key.includes(c.name) ? key.indexOf(c.name) + 1 : null,
      })),
    );
  }

  private shape(rows: (Column & { pk: number | null })[]): TableShape {
    if (rows.length === 0) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `model ${this.model}: table ${this.qualified} not found (the table LoopBack writes the model to)`,
        { context: { model: this.model, table: this.qualified } },
      );
    }
    const key = rows
      .filter((r) => r.pk !== null)
      .sort((a, b) => a.pk! - b.pk!)
      .map((r) => r.name);
    return {
      columns: rows.map(({ name, oid, elem, kind }) => ({ name, oid, elem, ...(kind ? { kind } : {}) })),
      key: key.length > 0 ? key : rows.map((r) => r.name),
      keyless: key.length === 0,
    };
  }

  /** The ids of the rows `where` (LoopBack's) matches, locked. */
  async lockWhere(execute: Execute, where: object): Promise<unknown[]> {
    const clause = this.connector.buildWhere(this.model, where);
    const ps = this.connector.parameterize({
      sql: `SELECT ${this.connector.escapeName(this.idColumn)} AS id FROM ${this.qualified} ${clause.sql} ORDER BY 1 FOR UPDATE`,
      params: clause.params,
    });
    const rows = (await execute(ps.sql, ps.params)) as { id: unknown }[];
    return rows.map((r) => r.id);
  }

  /** The rows with these ids (LoopBack id values), with their event keys; `lock`: FOR UPDATE. */
  async read(execute: Execute, shape: TableShape, ids: unknown[], lock: boolean): Promise<Map<string, Row>> {
    const out = new Map<string, Row>();
    if (ids.length === 0) return out;
    const q = (n: string) => this.connector.escapeName(n);
    const where =
      // The table's column, not the output column of the same name (read as text).
      `${q(this.idColumn)} IN (${this.placeholders(ids.length)}) ORDER BY ${this.qualified}.${q(this.idColumn)}` +
      (lock ? ' FOR UPDATE' : '');
    if (this.dialect === 'mysql') return this.readMysql(execute, shape, ids, where, out);
    const select = shape.columns.map((c) => `${q(c.name)}::text AS ${q(c.name)}`).join(', ');
    const saved = (await execute(
      `SELECT current_setting('TimeZone') AS tz, current_setting('DateStyle') AS ds,
              current_setting('IntervalStyle') AS ist, current_setting('extra_float_digits') AS efd,
              current_setting('bytea_output') AS bo`,
      [],
    )) as { tz: string; ds: string; ist: string; efd: string; bo: string }[];
    const s = saved[0]!;
    await this.settings(execute, ['UTC', 'ISO', 'iso_8601', '3', 'hex']);
    let rows: Record<string, string | null>[];
    try {
      rows = (await execute(`SELECT ${select} FROM ${this.qualified} WHERE ${where}`, ids)) as Record<
        string,
        string | null
      >[];
    } finally {
      await this.settings(execute, [s.tz, s.ds, s.ist, s.efd, s.bo]);
    }
    const elems = new Map<number, number>(Object.entries(BUILTIN_ARRAYS).map(([k, v]) => [Number(k), v]));
    for (const c of shape.columns) if (c.elem !== 0) elems.set(c.oid, c.elem);
    const elemOf = (oid: number) => elems.get(oid) ?? 0;
    for (const text of rows) {
      const row: Row = {};
      for (const c of shape.columns) row[c.name] = decodeValue(c.oid, text[c.name] ?? null, elemOf);
      out.set(keyOf(row, shape.key), row);
    }
    return out;
  }

  private async readMysql(
    execute: Execute,
    shape: TableShape,
    ids: unknown[],
    where: string,
    out: Map<string, Row>,
  ): Promise<Map<string, Row>> {
    const q = (n: string) => this.connector.escapeName(n);
    const select = shape.columns
      .map((c) => (c.kind && AS_TEXT.has(c.kind) ? `CAST(${q(c.name)} AS CHAR) AS ${q(c.name)}` : q(c.name)))
      .join(', ');
    await execute("SET @evpub_time_zone = @@session.time_zone, time_zone = '+00:00'", []);
    let rows: Row[];
    try {
      rows = (await execute(`SELECT ${select} FROM ${this.qualified} WHERE ${where}`, ids)) as Row[];
    } finally {
      await execute('SET time_zone = @evpub_time_zone', []);
    }
    for (const raw of rows) {
      const row: Row = {};
      for (const c of shape.columns) row[c.name] = decodeMysqlValue(raw[c.name], c.kind);
      out.set(shape.keyless ? JSON.stringify(row) : keyOf(row, shape.key), row);
    }
    return out;
  }

  private async settings(execute: Execute, values: string[]): Promise<void> {
    await execute(
      `SELECT set_config('TimeZone', $1, true), set_config('DateStyle', $2, true),
              set_config('IntervalStyle', $3, true), set_config('extra_float_digits', $4, true),
              set_config('bytea_output', $5, true)`,
      values,
    );
  }

  /** The transaction's id as the PostgreSQL connector gives it (`tx.id`); undefined for MySQL. */
  async txId(execute: Execute): Promise<string | undefined> {
    if (this.dialect !== 'postgres') return undefined;
    const rows = (await execute(`SELECT (txid_current() % 4294967296)::text AS xid`, [])) as {
      xid: string;
    }[];
    return rows[0]?.xid;
  }
}

/** The event key, as the CDC connectors make it. */
export function keyOf(row: Row, columns: string[]): string {
  if (columns.length === 1) {
    const v = row[columns[0]!];
    return typeof v === 'string' ? v : JSON.stringify(v ?? null);
  }
  return JSON.stringify(columns.map((c) => row[c]));
}

/** MySQL kinds read as the server's text, as the connector reads them (exact, zone-free). */
const AS_TEXT = new Set<ValueKind>(['bigint', 'decimal', 'date', 'datetime', 'timestamp', 'time']);
