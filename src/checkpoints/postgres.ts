/**
 * The PostgreSQL checkpoint store: one row per feed in a table (default `evpub_checkpoints`,
 * optionally `schema.table`), created if missing:
 *
 *   CREATE TABLE IF NOT EXISTS evpub_checkpoints (
 *     feed_id text PRIMARY KEY, position text NOT NULL, updated_at timestamptz NOT NULL)
 *
 * A save is one upsert (`INSERT ... ON CONFLICT (feed_id) DO UPDATE`), atomic and durable when
 * it commits. pg is loaded on first use; the store keeps a small pool.
 *
 * `tls` (`checkpoints.tls`, src/util/tls.ts) gives pg's `ssl` option: a private CA, a client
 * certificate (`hostssl ... cert`), a servername. Without it the URL decides (`sslmode`). A
 * TLS failure is EVPUB_TLS_FAILED, refused credentials EVPUB_AUTH_FAILED, neither retried.
 */
import type { Pool } from 'pg';
import { ErrorCode, EvpubError, redact } from '../errors';
import type { Position } from '../events/change-event';
import type { Logger } from '../logger';
import { loadDriver } from '../util/driver';
import { loadTls, tlsFailure, verifyServername, type TlsSettings } from '../util/tls';
import type { CheckpointStore } from './contract';

export const DEFAULT_PG_TABLE = 'evpub_checkpoints';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** `schema.table` or `table` as a quoted SQL identifier; CONFIG_INVALID otherwise. */
export function quoteTable(name: string): string {
  const parts = name.split('.');
  if (parts.length > 2 || !parts.every((p) => IDENTIFIER.test(p))) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `checkpoints.table: ${JSON.stringify(name)} must be a table name like evpub_checkpoints or myschema.checkpoints`,
    );
  }
  return parts.map((p) => `"${p}"`).join('.');
}

export class PostgresCheckpointStore implements CheckpointStore {
  readonly name = 'postgres';
  private readonly table: string;
  private pool: Promise<Pool> | undefined;

  constructor(
    private readonly options: {
      url: string;
      table?: string;
      connectTimeout?: number;
      tls?: TlsSettings;
      logger?: Logger;
    },
  ) {
    this.table = quoteTable(options.table ?? DEFAULT_PG_TABLE);
  }

  private connect(): Promise<Pool> {
    this.pool ??= (async () => {
      const pg = await loadDriver<typeof import('pg')>('pg', 'PostgreSQL checkpoint store');
      const endpoint = redact(this.options.url);
      const { tls, logger } = this.options;
      let ssl;
      try {
        ssl = tls && verifyServername(loadTls(tls, 'checkpoints.tls', { endpoint, logger }));
      } catch (err) {
        this.pool = undefined;
        throw err;
      }
      const pool = new pg.Pool({
        connectionString: this.options.url,
        ...(ssl ? { ssl } : {}),
        max: 2,
        connectionTimeoutMillis: this.options.connectTimeout ?? 10_000,
      });
      pool.on('error', () => undefined); // an idle client's error; the next query reports it
      try {
        await pool.query(
          `CREATE TABLE IF NOT EXISTS ${this.table} (feed_id text PRIMARY KEY, position text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
        );
      } catch (err) {
        // Two stores creating the table at once: one of them loses the race on the catalog.
        const code = (err as { code?: string }).code;
        if (code !== '23505' && code !== '42P07') {
          this.pool = undefined;
          await pool.end().catch(() => undefined);
          const tlsError = tlsFailure(err, endpoint);
          if (tlsError) throw tlsError;
          if (code === '28000' || code === '28P01') {
            throw new EvpubError(
              ErrorCode.AUTH_FAILED,
              `the PostgreSQL checkpoint store at ${endpoint} refused the credentials (${code}): check the user, password or client certificate`,
              { cause: err, context: { store: 'postgres', sqlState: code } },
            );
          }
          throw new EvpubError(
            ErrorCode.CHECKPOINT_FAILED,
            `cannot prepare the PostgreSQL checkpoint table ${this.table} at ${endpoint}`,
            { cause: err, retriable: true, context: { store: 'postgres' } },
          );
        }
      }
      return pool;
    })();
    return this.pool;
  }

  private async query(feedId: string, what: string, sql: string, params: unknown[]): Promise<unknown[]> {
    const pool = await this.connect();
    try {
      return (await pool.query(sql, params)).rows as unknown[];
    } catch (err) {
      throw new EvpubError(
        ErrorCode.CHECKPOINT_FAILED,
        `cannot ${what} the checkpoint of ${feedId} in PostgreSQL`,
        {
          cause: err,
          retriable: true,
          context: { feed: feedId, store: 'postgres' },
        },
      );
    }
  }

  async load(feedId: string): Promise<Position | undefined> {
    const rows = await this.query(feedId, 'load', `SELECT position FROM ${this.table} WHERE feed_id = $1`, [
      feedId,
    ]);
    return (rows[0] as { position?: string } | undefined)?.position;
  }

  async save(feedId: string, position: Position): Promise<void> {
    await this.query(
      feedId,
      'save',
      `INSERT INTO ${this.table} (feed_id, position, updated_at) VALUES ($1, $2, now())
       ON CONFLICT (feed_id) DO UPDATE SET position = EXCLUDED.position, updated_at = now()`,
      [feedId, position],
    );
  }

  async delete(feedId: string): Promise<void> {
    await this.query(feedId, 'delete', `DELETE FROM ${this.table} WHERE feed_id = $1`, [feedId]);
  }

  async close(): Promise<void> {
    const pending = this.pool;
    this.pool = undefined;
    if (!pending) return;
    const pool = await pending.catch(() => undefined);
    await pool?.end();
  }
}
