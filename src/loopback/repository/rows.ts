/**
 * The rows a repository write touches, read inside the write's transaction, in the shape the
 * datasource's CDC connector gives them: so that an event a LoopBack write publishes cannot be
 * told from the one the connector captures for the same change.
 *
 * - Columns: every column of the table, by its database name (not the LoopBack property
 *   name), whether or not the LoopBack model declares it.
 * - Key: the primary key's columns (else every column), the value as text for one column, a
 *   JSON array for several: the connector's key.
 * - PostgreSQL values: each column is read as text in a session set as the connector's
 *   (TimeZone UTC, DateStyle ISO, IntervalStyle iso_8601, extra_float_digits 3, bytea hex; set
 *   for the read only, with `set_config(..., true)`, and put back after it) and decoded by the
 *   connector's own `decodeValue`: int8 and numeric as strings, timestamptz as `...Z` with its
 *   microseconds, json as values, bytea as base64...
 * - MySQL values: as the mysql driver returns them, made JSON (dates as ISO 8601 text, bytes
 *   as base64); they are not checked against the mysql connector's decoding.
 *
 * `lock` reads take `FOR UPDATE`: the rows a write is about to change are locked until the
 * transaction ends, so the `before` read is the row the write changes.
 */
import { ErrorCode, EvpubError } from '../../errors';
import type { Row } from '../../events/change-event';
import type { OutboxDialect } from '../../events/outbox';
import { BUILTIN_ARRAYS, decodeValue } from '../../connectors/postgres/types';

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
}

export interface TableShape {
  columns: Column[];
  key: string[];
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
    const schema = this.schemaName ? '?' : 'DATABASE()';
    const params = this.schemaName ? [this.schemaName, this.tableName] : [this.tableName];
    const rows = (await execute(
      `SELECT c.COLUMN_NAME AS name, k.ORDINAL_POSITION AS pk
         FROM information_schema.COLUMNS c
         LEFT JOIN information_schema.KEY_COLUMN_USAGE k ON k.TABLE_SCHEMA = c.TABLE_SCHEMA
              AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME AND k.CONSTRAINT_NAME = 'PRIMARY'
        WHERE c.TABLE_SCHEMA = ${schema} AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION`,
      params,
    )) as { name: string; pk: number | null }[];
    return this.shape(rows.map((r) => ({ name: r.name, oid: 0, elem: 0, pk: r.pk })));
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
      columns: rows.map(({ name, oid, elem }) => ({ name, oid, elem })),
      key: key.length > 0 ? key : rows.map((r) => r.name),
    };
  }

  /** The ids of the rows `where` (LoopBack's) matches, locked. */
  async lockWhere(execute: Execute, where: object): Promise<unknown[]> {
    const clause = this.connector.buildWhere(this.model, where);
    const ps = this.connector.parameterize({
      sql: `SELECT ${this.connector.escapeName(this.idColumn)} AS id FROM ${this.qualified} ${clause.sql} FOR UPDATE`,
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
    const where = `${q(this.idColumn)} IN (${this.placeholders(ids.length)})${lock ? ' FOR UPDATE' : ''}`;
    if (this.dialect === 'mysql') {
      const rows = (await execute(`SELECT * FROM ${this.qualified} WHERE ${where}`, ids)) as Row[];
      for (const raw of rows) {
        const row: Row = {};
        for (const c of shape.columns) row[c.name] = mysqlValue(raw[c.name]);
        out.set(keyOf(row, shape.key), row);
      }
      return out;
    }
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

function mysqlValue(v: unknown): unknown {
  if (v instanceof Date) return v.toISOString();
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (typeof v === 'bigint') return v.toString();
  return v;
}
