/**
 * The transactional outbox: change events written by the application in the transaction that
 * makes the change, published by the datasource's own CDC connector (docs/outbox.md).
 *
 * Protocol (the same for PostgreSQL and MySQL/MariaDB):
 *
 * 1. The writer (the LoopBack repository mixin in `outbox` mode, or any application) makes its
 *    change and, in the same transaction, INSERTs one row per change event into the outbox
 *    table and DELETEs that row again before it commits (`outboxStatements`). The row never
 *    outlives the transaction, so the table does not grow; the INSERT reaches the WAL / binlog
 *    with the transaction's commit and only then: a transaction that rolls back publishes
 *    nothing, one that commits is published even if the writer dies right after the commit.
 * 2. The CDC connector of a datasource with `outbox` set streams the outbox table beside the
 *    model tables. Each INSERT of the outbox becomes the change event it describes
 *    (`outboxRowToEvent`): model, op, key, before and after come from the row; the event id is
 *    the row's `id` (made once by the writer, so a replay keeps it); the position is the
 *    INSERT's position in the log, the source time the transaction's commit time. DELETEs
 *    (and UPDATEs) of the outbox table are not events and are skipped, their positions
 *    marked. A row naming a model the connector was not started with goes to the dead-letter
 *    topic with its reason, never dropped silently.
 * 3. Positions, checkpoints and resumption are the connector's as for any table: the outbox adds
 *    no state of its own. A crash before the checkpoint re-reads the INSERT (same event id).
 * 4. A model fed from the outbox is configured with `settings: { outbox: true }`: it has no
 *    table of its own to stream or snapshot.
 *
 * The connector side: the settings in src/connectors/kit/outbox.ts, the reading in
 * src/connectors/postgres/index.ts ("The outbox") and src/connectors/mysql/outbox.ts.
 */
import { ErrorCode, EvpubError } from '../errors';
import type { ChangeEvent, Operation, Position, Row } from './change-event';

/** The outbox table's name when the datasource's `outbox` setting gives none. */
export const DEFAULT_OUTBOX_TABLE = 'evpub_outbox';

/** Operations an outbox row may carry: what a write can do to a record. */
export const OUTBOX_OPERATIONS: readonly Operation[] = ['create', 'update', 'delete'];

/** One outbox row, as the writer inserts it and the connector decodes it. */
export interface OutboxRow {
  /** The event id, unique: a UUID made by the writer. */
  id: string;
  /** The evpub model the event belongs to. */
  model: string;
  op: Operation;
  /** The record's key as a string (composite keys JSON-encoded, as the CDC connector does). */
  key: string;
  before: Row | null;
  after: Row | null;
}

export type OutboxDialect = 'postgres' | 'mysql';

/** CREATE TABLE IF NOT EXISTS for the outbox; `table` is already validated and quoted. */
export function outboxDdl(dialect: OutboxDialect, table: string): string {
  if (dialect === 'postgres') {
    return (
      `CREATE TABLE IF NOT EXISTS ${table} (id text PRIMARY KEY, model text NOT NULL, op text NOT NULL, ` +
      `key text NOT NULL, before jsonb, after jsonb, created_at timestamptz NOT NULL DEFAULT now())`
    );
  }
  return (
    `CREATE TABLE IF NOT EXISTS ${table} (id varchar(64) PRIMARY KEY, model varchar(255) NOT NULL, ` +
    'op varchar(16) NOT NULL, `key` text NOT NULL, `before` json NULL, `after` json NULL, ' +
    'created_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))'
  );
}

/**
 * The two statements a writer runs inside its transaction, with their parameters: the INSERT
 * the connector publishes, then the DELETE that keeps the table empty.
 */
export function outboxStatements(
  dialect: OutboxDialect,
  table: string,
  row: OutboxRow,
): { sql: string; params: unknown[] }[] {
  const before = row.before === null ? null : JSON.stringify(row.before);
  const after = row.after === null ? null : JSON.stringify(row.after);
  if (dialect === 'postgres') {
    return [
      {
        sql: `INSERT INTO ${table} (id, model, op, key, before, after) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)`,
        params: [row.id, row.model, row.op, row.key, before, after],
      },
      { sql: `DELETE FROM ${table} WHERE id = $1`, params: [row.id] },
    ];
  }
  return [
    {
      sql: `INSERT INTO ${table} (id, model, op, \`key\`, \`before\`, \`after\`) VALUES (?, ?, ?, ?, ?, ?)`,
      params: [row.id, row.model, row.op, row.key, before, after],
    },
    { sql: `DELETE FROM ${table} WHERE id = ?`, params: [row.id] },
  ];
}

function jsonColumn(value: unknown, column: string): Row | null {
  if (value === null || value === undefined) return null;
  const parsed: unknown = typeof value === 'string' ? JSON.parse(value) : value;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new EvpubError(ErrorCode.SOURCE_FAILED, `outbox column "${column}" is not a JSON object`);
  }
  return parsed as Row;
}

/**
 * The change event an outbox INSERT describes. `values` is the inserted row as the connector
 * decoded it (json columns as text or already parsed). Throws an EvpubError naming the column
 * for a row that does not follow the protocol (the connector dead-letters it).
 */
export function outboxRowToEvent(
  datasource: string,
  values: Row,
  at: { position: Position | null; sourceTime: string; tx?: ChangeEvent['tx'] },
): ChangeEvent {
  const text = (column: string): string => {
    const value = values[column];
    if (typeof value !== 'string' || value === '') {
      throw new EvpubError(ErrorCode.SOURCE_FAILED, `outbox column "${column}" is missing or not text`);
    }
    return value;
  };
  const op = text('op') as Operation;
  if (!OUTBOX_OPERATIONS.includes(op)) {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `outbox column "op" is "${op}"; expected one of ${OUTBOX_OPERATIONS.join(', ')}`,
    );
  }
  return {
    id: text('id'),
    datasource,
    model: text('model'),
    op,
    key: text('key'),
    before: jsonColumn(values.before, 'before'),
    after: op === 'delete' ? null : jsonColumn(values.after, 'after'),
    position: at.position,
    sourceTime: at.sourceTime,
    ...(at.tx ? { tx: at.tx } : {}),
    source: { outbox: true },
  };
}
