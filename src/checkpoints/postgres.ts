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
 *
 * Fencing (contract.ts): fenced saves use two more columns, `fence_unit text, fence_epoch bigint`
 * (added by the first fenced save that misses them: ALTER TABLE ... ADD COLUMN IF NOT EXISTS,
 * which needs the table's owner; unfenced saves never need them). The upsert's `DO UPDATE` has
 * `WHERE fence_epoch IS NULL OR fence_unit IS DISTINCT FROM $unit OR fence_epoch <= $epoch`: the
 * row is locked, compared and written in one statement; no row returned means refused (FENCED).
 *
 * Claims (contract.ts): a second table, `<table>_owners (feed_id text PRIMARY KEY, instance text,
 * owner jsonb, expires_at timestamptz)`, created on the first claim. A claim is one upsert whose
 * `DO UPDATE` applies only when the row expired or is this instance's; a heartbeat pushes
 * expires_at of this instance's rows; release deletes them.
 */
import type { Pool } from 'pg';
import { ErrorCode, EvpubError, redact } from '../errors';
import type { Position } from '../events/change-event';
import type { Logger } from '../logger';
import { loadDriver } from '../util/driver';
import { quotePgTable } from '../util/pg-table';
import { loadTls, tlsFailure, verifyServername, type TlsSettings } from '../util/tls';
import {
  claimEach,
  CLAIM_RENEW_MS,
  CLAIM_TTL_MS,
  fenced,
  ownedElsewhere,
  ownerGone,
  type CheckpointStore,
  type FeedClaim,
  type FeedOwner,
  type SaveOptions,
} from './contract';

export const DEFAULT_PG_TABLE = 'evpub_checkpoints';

/** `schema.table` or `table` as a quoted SQL identifier; CONFIG_INVALID otherwise. */
export function quoteTable(name: string): string {
  return quotePgTable(name, 'checkpoints.table', DEFAULT_PG_TABLE);
}

export class PostgresCheckpointStore implements CheckpointStore {
  readonly name = 'postgres';
  readonly fencing = true;
  private readonly table: string;
  private pool: Promise<Pool> | undefined;
  private fenceColumns: Promise<unknown> | undefined;
  private ownersTable: Promise<unknown> | undefined;

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

  async save(feedId: string, position: Position, options?: SaveOptions): Promise<void> {
    if (options?.fence) return this.fencedSave(feedId, position, options.fence);
    await this.query(
      feedId,
      'save',
      `INSERT INTO ${this.table} (feed_id, position, updated_at) VALUES ($1, $2, now())
       ON CONFLICT (feed_id) DO UPDATE SET position = EXCLUDED.position, updated_at = now()`,
      [feedId, position],
    );
  }

  private async fencedSave(
    feedId: string,
    position: Position,
    fence: { unit: string; epoch: number },
  ): Promise<void> {
    const upsert = (): Promise<unknown[]> =>
      this.query(
        feedId,
        'save',
        `INSERT INTO ${this.table} AS c (feed_id, position, updated_at, fence_unit, fence_epoch)
           VALUES ($1, $2, now(), $3, $4)
         ON CONFLICT (feed_id) DO UPDATE SET position = EXCLUDED.position, updated_at = now(),
           fence_unit = EXCLUDED.fence_unit, fence_epoch = EXCLUDED.fence_epoch
         WHERE c.fence_epoch IS NULL OR c.fence_unit IS DISTINCT FROM EXCLUDED.fence_unit
           OR c.fence_epoch <= EXCLUDED.fence_epoch
         RETURNING 1`,
        [feedId, position, fence.unit, fence.epoch],
      );
    let written: unknown[];
    try {
      written = await upsert();
    } catch (err) {
      // A table from before fencing (42703: no such column): add the columns once, then again.
      if ((err as { cause?: { code?: string } }).cause?.code !== '42703') throw err;
      this.fenceColumns ??= this.query(
        feedId,
        'prepare fencing for',
        `ALTER TABLE ${this.table} ADD COLUMN IF NOT EXISTS fence_unit text, ADD COLUMN IF NOT EXISTS fence_epoch bigint`,
        [],
      ).catch((e: unknown) => {
        this.fenceColumns = undefined;
        throw e;
      });
      await this.fenceColumns;
      written = await upsert();
    }
    if (written.length > 0) return;
    const rows = await this.query(
      feedId,
      'load',
      `SELECT fence_epoch FROM ${this.table} WHERE feed_id = $1`,
      [feedId],
    );
    throw fenced(
      feedId,
      fence,
      Number((rows[0] as { fence_epoch?: string } | undefined)?.fence_epoch),
      this.name,
    );
  }

  async claim(feedIds: readonly string[], owner: FeedOwner): Promise<FeedClaim> {
    const owners = `${this.table.slice(0, -1)}_owners"`;
    const first = feedIds[0] ?? '';
    this.ownersTable ??= this.query(
      first,
      'prepare the owners table for',
      `CREATE TABLE IF NOT EXISTS ${owners} (feed_id text PRIMARY KEY, instance text NOT NULL, owner jsonb NOT NULL, expires_at timestamptz NOT NULL)`,
      [],
    ).catch((err: unknown) => {
      const code = ((err as { cause?: { code?: string } }).cause ?? {}).code;
      if (code === '23505' || code === '42P07') return; // created by another store just now
      this.ownersTable = undefined;
      throw err;
    });
    await this.ownersTable;
    const claim = await claimEach(feedIds, async (feedId) => {
      const rows = await this.query(
        feedId,
        'claim',
        `INSERT INTO ${owners} AS o (feed_id, instance, owner, expires_at)
           VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
         ON CONFLICT (feed_id) DO UPDATE
           SET instance = EXCLUDED.instance, owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
           WHERE o.expires_at < now() OR o.instance = EXCLUDED.instance
         RETURNING feed_id`,
        [feedId, owner.instance, JSON.stringify(owner), CLAIM_TTL_MS],
      );
      if (rows.length === 0) {
        const held = await this.query(
          feedId,
          'claim',
          `SELECT instance, owner FROM ${owners} WHERE feed_id = $1`,
          [feedId],
        );
        const row = held[0] as { instance?: string; owner?: Partial<FeedOwner> } | undefined;
        const other = row?.owner ?? {};
        const taken =
          row !== undefined &&
          ownerGone(other) &&
          (
            await this.query(
              feedId,
              'claim',
              `UPDATE ${owners} SET instance = $3, owner = $4, expires_at = now() + $5 * interval '1 millisecond'
                WHERE feed_id = $1 AND instance = $2 RETURNING feed_id`,
              [feedId, row.instance, owner.instance, JSON.stringify(owner), CLAIM_TTL_MS],
            )
          ).length > 0;
        if (!taken)
          throw ownedElsewhere(
            feedId,
            other,
            'postgres',
            ` (a claim of a crashed process lapses ${CLAIM_TTL_MS / 1000} s after it)`,
          );
      }
      return async () => {
        await this.query(feedId, 'release', `DELETE FROM ${owners} WHERE feed_id = $1 AND instance = $2`, [
          feedId,
          owner.instance,
        ]);
      };
    });
    const timer = setInterval(() => {
      this.query(
        first,
        'renew the claim of',
        `UPDATE ${owners} SET expires_at = now() + $3 * interval '1 millisecond' WHERE feed_id = ANY($1) AND instance = $2`,
        [[...feedIds], owner.instance, CLAIM_TTL_MS],
      ).catch((err: unknown) => this.options.logger?.warn({ err }, 'feed claim renewal failed'));
    }, CLAIM_RENEW_MS);
    timer.unref();
    return {
      release: async () => {
        clearInterval(timer);
        await claim.release();
      },
    };
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
