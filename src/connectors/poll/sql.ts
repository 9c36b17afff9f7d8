/**
 * Polling a SQL table by an increasing column (SQLite, PostgreSQL, MySQL/MariaDB).
 *
 * Model settings (`models.<name>.settings`), datasource values as defaults:
 * - `table` (default: the model's name; `schema.table` allowed).
 * - `keyColumn` (default `id`): the record's key, unique, and the tie-breaker of the cursor.
 * - `cursorColumn`: a column every insert and update sets to a greater value than any before
 *   (`updated_at`, a version counter). Without it the key column alone is the cursor: only
 *   new rows of an append-only table with increasing keys are seen.
 * - `createdColumn`: the row's creation time; makes `create` distinguishable (see below).
 * - `deletedColumn`: a soft-delete column; a row where it is not null/0/false is a `delete`.
 * - `defaultOp` (default `update`): the op of a changed row when no rule below applies.
 * - `batchSize` (default 500) rows per query; `interval` (default 1000) ms between polls.
 *
 * The cursor and its query. With a cursor column the cursor is the last row's (ts, key), and
 * each poll reads
 *   WHERE ts > :ts OR (ts = :ts AND key > :key) ORDER BY ts, key LIMIT :batch
 * so rows sharing a timestamp are read in key order across batches and polls, none skipped
 * and none twice. The position of an event is its row's cursor as JSON (`{"ts":..,"id":..}`),
 * with `ts` read exactly (see sql-dialects.ts); `{}` is the start of a table that was empty.
 *
 * Operations: polling sees a row's latest state, not its history, so:
 * - `delete` when `deletedColumn` is set on the row (before = the row, after = null);
 * - without `cursorColumn`: `create` (an append-only table);
 * - with `createdColumn`: `create` when (created, key) is past the cursor at the poll, i.e. the
 *   row was created since the previous poll (an update made before that poll folds into the
 *   create), else `update`;
 * - else `defaultOp`.
 * Hard deletes are not seen.
 */
import {
  eventId,
  type ChangeEvent,
  type Operation,
  type Position,
  type StartFrom,
} from '../../events/change-event';
import { ErrorCode, EvpubError } from '../../errors';
import { scalarString } from '../kit/json-path';
import { SettingsReader, type Settings } from '../kit/settings';
import { checkName } from '../kit/sql-names';
import type { PollRound, PollSource } from './loop';
import { jsonValue, type Row, type SqlDb } from './sql-dialects';

export interface SqlCursor {
  ts?: unknown;
  id: unknown;
}

export interface SqlModelSettings {
  table: string;
  keyColumn: string;
  cursorColumn: string | undefined;
  createdColumn: string | undefined;
  deletedColumn: string | undefined;
  defaultOp: Operation;
  batchSize: number;
  interval: number;
}

export const SQL_MODEL_KEYS = [
  'table',
  'keyColumn',
  'cursorColumn',
  'createdColumn',
  'deletedColumn',
  'defaultOp',
  'batchSize',
  'interval',
] as const;

const TS = '__evpub_ts';
const ID = '__evpub_id';
const NEW = '__evpub_new';

export function parseSqlModel(model: string, settings: Settings): SqlModelSettings {
  const r = SettingsReader.forModel(model, settings);
  const createdColumn = name(r, 'createdColumn');
  const cursorColumn = name(r, 'cursorColumn');
  if (createdColumn && !cursorColumn) {
    throw r.invalid('createdColumn', 'needs cursorColumn (without it every row is a create)');
  }
  return {
    table: name(r, 'table', model),
    keyColumn: name(r, 'keyColumn', 'id'),
    cursorColumn,
    createdColumn,
    deletedColumn: name(r, 'deletedColumn'),
    defaultOp: r.op('defaultOp', 'update'),
    batchSize: r.int('batchSize', 500),
    interval: r.int('interval', 1000),
  };
}

/**
 * A table or column setting: each dot-separated part follows the name rule (kit/sql-names.ts;
 * 64 characters, the longest any of the three dialects takes).
 */
function name(r: SettingsReader, key: string, fallback: string): string;
function name(r: SettingsReader, key: string): string | undefined;
function name(r: SettingsReader, key: string, fallback?: string): string | undefined {
  const value = fallback === undefined ? r.string(key) : r.string(key, fallback);
  if (value === undefined) return undefined;
  for (const part of value.split('.')) {
    checkName(r, key, part, { max: 64, what: JSON.stringify(value), defaulted: !r.has(key) });
  }
  return value;
}

function isSet(value: unknown): boolean {
  return !(value === null || value === undefined || value === 0 || value === false || value === '0');
}

export class SqlSource implements PollSource<SqlCursor> {
  private readonly q: (identifier: string) => string;

  constructor(
    private readonly db: SqlDb,
    private readonly o: { datasource: string; model: string; settings: SqlModelSettings },
  ) {
    this.q = (identifier) => db.quote(identifier);
  }

  positionOf(cursor: SqlCursor | undefined): Position {
    return JSON.stringify(cursor ?? {});
  }

  parsePosition(position: Position): SqlCursor | undefined {
    if (position === '{}') return undefined; // the start of an empty table
    let cursor: unknown;
    try {
      cursor = JSON.parse(position);
    } catch {
      cursor = undefined;
    }
    const c = cursor as Partial<SqlCursor> | undefined;
    if (!c || typeof c !== 'object' || !('id' in c) || (this.o.settings.cursorColumn && !('ts' in c))) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `poll connector: models.${this.o.model}: the checkpoint ${JSON.stringify(position)} is not a cursor of this table's settings (cursorColumn changed?); reset the checkpoint`,
      );
    }
    return c as SqlCursor;
  }

  private selectList(): string {
    const s = this.o.settings;
    const parts = ['*', `${this.db.cursorExpr(s.keyColumn, 'id')} AS ${this.q(ID)}`];
    if (s.cursorColumn) parts.push(`${this.db.cursorExpr(s.cursorColumn, 'ts')} AS ${this.q(TS)}`);
    return parts.join(', ');
  }

  /** `(col, key) > (:ts, :id)` spelled out (row comparisons differ between dialects). */
  private after(column: string, cursor: SqlCursor): { sql: string; params: unknown[] } {
    const s = this.o.settings;
    const [c, k] = [this.q(column), this.q(s.keyColumn)];
    return { sql: `(${c} > ? OR (${c} = ? AND ${k} > ?))`, params: [cursor.ts, cursor.ts, cursor.id] };
  }

  async open(from: StartFrom, resumeAt: SqlCursor | undefined): Promise<SqlCursor | undefined> {
    const s = this.o.settings;
    // Checks that the table and columns exist (a clear error at start, not at the first poll).
    const probe = await this.db.query(`SELECT ${this.selectList()} FROM ${this.q(s.table)} WHERE 1 = 0`, []);
    void probe;
    if (from !== 'now') return resumeAt;
    const order = [s.cursorColumn, s.keyColumn]
      .filter((c): c is string => c !== undefined)
      .map((c) => `${this.q(c)} DESC`)
      .join(', ');
    const rows = await this.db.query(
      `SELECT ${this.selectList()} FROM ${this.q(s.table)} ORDER BY ${order} LIMIT 1`,
      [],
    );
    return rows[0] ? this.cursorOf(rows[0]) : undefined;
  }

  private cursorOf(row: Row): SqlCursor {
    const id = row[ID];
    return this.o.settings.cursorColumn ? { ts: row[TS], id } : { id };
  }

  async next(cursor: SqlCursor | undefined): Promise<PollRound<SqlCursor>> {
    const s = this.o.settings;
    const params: unknown[] = [];
    let select = this.selectList();
    if (s.createdColumn) {
      if (cursor) {
        const created = this.after(s.createdColumn, cursor);
        select += `, CASE WHEN ${created.sql} THEN 1 ELSE 0 END AS ${this.q(NEW)}`;
        params.push(...created.params);
      } else {
        select += `, 1 AS ${this.q(NEW)}`;
      }
    }
    let where = '';
    if (cursor) {
      if (s.cursorColumn) {
        const after = this.after(s.cursorColumn, cursor);
        where = ` WHERE ${after.sql}`;
        params.push(...after.params);
      } else {
        where = ` WHERE ${this.q(s.keyColumn)} > ?`;
        params.push(cursor.id);
      }
    }
    const order = [s.cursorColumn, s.keyColumn]
      .filter((c): c is string => c !== undefined)
      .map((c) => this.q(c))
      .join(', ');
    const rows = await this.db.query(
      `SELECT ${select} FROM ${this.q(s.table)}${where} ORDER BY ${order} LIMIT ${s.batchSize}`,
      params,
    );
    const changes = rows.map((row) => {
      const rowCursor = this.cursorOf(row);
      return { event: this.event(row, rowCursor), cursor: rowCursor };
    });
    return { changes, more: rows.length === s.batchSize };
  }

  private opOf(row: Row): Operation {
    const s = this.o.settings;
    if (s.deletedColumn && isSet(row[s.deletedColumn])) return 'delete';
    if (!s.cursorColumn) return 'create';
    if (s.createdColumn) return Number(row[NEW]) === 1 ? 'create' : 'update';
    return s.defaultOp;
  }

  private event(row: Row, cursor: SqlCursor): ChangeEvent {
    const s = this.o.settings;
    const values: Row = {};
    for (const [column, value] of Object.entries(row)) {
      if (column !== TS && column !== ID && column !== NEW) values[column] = jsonValue(value);
    }
    const op = this.opOf(row);
    const key = scalarString(jsonValue(row[s.keyColumn])) ?? JSON.stringify(jsonValue(row[s.keyColumn]));
    const position = this.positionOf(cursor);
    const stamp = s.cursorColumn ? row[s.cursorColumn] : undefined;
    return {
      id: eventId(this.o.datasource, s.table, position, op),
      datasource: this.o.datasource,
      model: this.o.model,
      op,
      key,
      before: op === 'delete' ? values : null,
      after: op === 'delete' ? null : values,
      position,
      sourceTime: stamp instanceof Date ? stamp.toISOString() : new Date().toISOString(),
      source: { table: s.table, dialect: this.db.dialect },
    };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
