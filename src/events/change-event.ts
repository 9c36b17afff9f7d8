import { createHash } from 'node:crypto';

/**
 * The change event: what an event connector produces for every change it captures.
 *
 * - `id` is the idempotency key: the same change read twice (a replay after a restart, a
 *   CouchDB `since` that goes back) gets the same `id`, so consumers can de-duplicate.
 * - `position` is where the change sits in the source's log, opaque to everyone but the
 *   connector that made it (a CouchDB `seq`, a PostgreSQL LSN, a binlog GTID, encoded as a
 *   string). Starting the connector from a position resumes *after* it. `null` when the
 *   connector cannot give positions (seed-style connectors): such a feed cannot resume.
 * - `key` is the record's key as a string (composite keys JSON-encoded by the connector).
 * - `before` / `after` are the record's values before and after the change where the source
 *   has them: `create` has `after`, `delete` has `before` when known, `snapshot` has `after`.
 */

/** What happened to the record. `snapshot` is a row read by an initial load, not a change. */
export type Operation = 'create' | 'update' | 'delete' | 'snapshot' | 'truncate';

export const OPERATIONS: readonly Operation[] = ['create', 'update', 'delete', 'snapshot', 'truncate'];

/** An opaque, serialisable place in a source's change log. */
export type Position = string;

/** Where a feed starts when it has no checkpoint, or when told explicitly. */
export type StartFrom = 'beginning' | 'now' | { after: Position };

export type Row = Record<string, unknown>;

export interface ChangeEvent {
  /** Idempotency key, stable across replays of the same change. */
  id: string;
  datasource: string;
  model: string;
  op: Operation;
  key: string;
  before?: Row | null;
  after?: Row | null;
  position: Position | null;
  /** When the change happened at the source (ISO 8601); the read time when the source has none. */
  sourceTime: string;
  /** Transaction the change belongs to, where the source has transactions. */
  tx?: { id: string; commitPosition?: string; commitTime?: string };
  /** Connector-specific facts (a CouchDB revision, a table name, ...), carried into envelopes. */
  source?: Record<string, unknown>;
}

/**
 * An idempotency key from the parts that identify a change (datasource, table, position...):
 * the first 32 hex digits of the SHA-256 of the parts joined with NUL. The same parts give the
 * same id, so a change read again (a replay after a restart) keeps its id.
 */
export function eventId(...parts: (string | number)[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 32);
}
