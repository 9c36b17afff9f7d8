/**
 * Leases in PostgreSQL: one row per unit, changed only by compare-and-set statements, judged by
 * the server's clock (`now()`). Tables (created if missing; names configurable):
 *
 *   evpub_leases  (cluster text, unit text, holder text NULL, epoch bigint, expires_at timestamptz,
 *                  PRIMARY KEY (cluster, unit))
 *   evpub_members (cluster text, instance text, info jsonb, expires_at timestamptz,
 *                  PRIMARY KEY (cluster, instance))
 *
 * - acquire: `INSERT ... ON CONFLICT (cluster, unit) DO UPDATE ... WHERE expires_at <= now() OR
 *   holder IS NULL OR holder = $holder RETURNING epoch`. Concurrent acquirers of one row are
 *   serialised by the row lock ON CONFLICT takes; the WHERE is evaluated on the latest committed
 *   version, so one wins and the others get no row (null). The epoch is kept when the same holder
 *   still held it live, and incremented otherwise (new owner, or a lease that had lapsed).
 * - renew: `UPDATE ... WHERE holder = $holder AND epoch = $epoch AND expires_at > now()`; no row
 *   means the lease was lost (LEASE_LOST).
 * - release: the same compare, setting holder to NULL and expires_at to now(). The row stays so
 *   that the next owner's epoch continues from it.
 * - members: upserts with an expiry; `members()` reads the rows not yet expired (and deletes the
 *   expired ones); `leave` deletes.
 *
 * pg is loaded on first use; the store keeps a pool of two connections. Every query is bounded
 * by `opTimeout` (default 5 s): a server that does not answer is a retriable LEASE_FAILED.
 *
 * Security: the user and password are the URL's; `tls` (`cluster.tls`, src/util/tls.ts) gives pg's
 * `ssl` option (a private CA, a client certificate for `hostssl ... cert`, a servername); without
 * it the URL's `sslmode` decides. When the first connection fails, a TLS failure is
 * EVPUB_TLS_FAILED naming `cluster.tls`, refused credentials EVPUB_AUTH_FAILED: neither is
 * retriable (the next attempt fails the same way until the configuration changes).
 */
import type { Pool } from 'pg';
import { ErrorCode, EvpubError, redact } from '../errors';
import type { Logger } from '../logger';
import { loadDriver } from '../util/driver';
import { quotePgTable } from '../util/pg-table';
import { loadTls, tlsFailure, verifyServername, type TlsSettings } from '../util/tls';
import {
  checkName,
  checkTtl,
  deadlineOf,
  leaseFailed,
  leaseLost,
  monotonicNow,
  type Lease,
  type LeaseState,
  type LeaseStore,
  type Member,
} from './lease';

export const DEFAULT_LEASE_TABLE = 'evpub_leases';
export const DEFAULT_MEMBER_TABLE = 'evpub_members';

export interface PostgresLeaseOptions {
  url: string;
  /** The cluster's name: rows of other clusters in the same tables are never touched. */
  cluster: string;
  /** Lease table, default `evpub_leases`. */
  table?: string;
  /** Membership table, default `evpub_members`. */
  membersTable?: string;
  /** Bound on every connect and query, ms (default 5000). */
  opTimeout?: number;
  /** TLS (`cluster.tls`); without it the URL's `sslmode` decides. */
  tls?: TlsSettings;
  /** Told once when TLS verification is turned off. */
  logger?: Logger;
}

interface LeaseRow {
  holder: string | null;
  epoch: string;
  expires_ms: number;
  live?: boolean;
}

export class PostgresLeaseStore implements LeaseStore {
  readonly name = 'postgres';
  private readonly table: string;
  private readonly members_: string;
  private readonly endpoint: string;
  private pool: Promise<Pool> | undefined;

  constructor(private readonly options: PostgresLeaseOptions) {
    checkName(options.cluster, 'cluster.name');
    this.table = quotePgTable(options.table ?? DEFAULT_LEASE_TABLE, 'cluster.table', DEFAULT_LEASE_TABLE);
    this.members_ = quotePgTable(
      options.membersTable ?? DEFAULT_MEMBER_TABLE,
      'cluster.membersTable',
      DEFAULT_LEASE_TABLE,
    );
    this.endpoint = redact(options.url);
  }

  private connect(): Promise<Pool> {
    this.pool ??= (async () => {
      const pg = await loadDriver<typeof import('pg')>('pg', 'PostgreSQL lease store');
      const timeout = this.options.opTimeout ?? 5000;
      const { tls, logger } = this.options;
      let ssl;
      try {
        ssl = tls && verifyServername(loadTls(tls, 'cluster.tls', { endpoint: this.endpoint, logger }));
      } catch (err) {
        this.pool = undefined;
        throw err;
      }
      const pool = new pg.Pool({
        connectionString: this.options.url,
        ...(ssl ? { ssl } : {}),
        max: 2,
        connectionTimeoutMillis: timeout,
        query_timeout: timeout,
      });
      pool.on('error', () => undefined); // an idle client's error; the next query reports it
      try {
        await pool.query(
          `CREATE TABLE IF NOT EXISTS ${this.table} (cluster text NOT NULL, unit text NOT NULL, holder text,
             epoch bigint NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (cluster, unit))`,
        );
        await pool.query(
          `CREATE TABLE IF NOT EXISTS ${this.members_} (cluster text NOT NULL, instance text NOT NULL,
             info jsonb NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (cluster, instance))`,
        );
      } catch (err) {
        // Two stores creating a table at once: one of them loses the race on the catalog.
        const code = (err as { code?: string }).code;
        if (code !== '23505' && code !== '42P07') {
          this.pool = undefined;
          await pool.end().catch(() => undefined);
          throw (
            this.refusal(err, code) ??
            leaseFailed('postgres', `prepare the lease tables at ${this.endpoint}`, err)
          );
        }
      }
      return pool;
    })();
    return this.pool;
  }

  /** TLS_FAILED or AUTH_FAILED when the server refused this configuration; else undefined. */
  private refusal(err: unknown, sqlState: string | undefined): EvpubError | undefined {
    const tls = tlsFailure(err, this.endpoint, 'cluster.tls');
    if (tls) return tls;
    if (sqlState !== '28000' && sqlState !== '28P01') return undefined;
    return new EvpubError(
      ErrorCode.AUTH_FAILED,
      `the PostgreSQL lease store at ${this.endpoint} refused the credentials (${sqlState}): check the user and password in cluster.url, or the client certificate in cluster.tls`,
      { cause: err, context: { store: 'postgres', sqlState } },
    );
  }

  private async query<T>(
    what: string,
    sql: string,
    params: unknown[],
    context: Record<string, unknown> = {},
  ): Promise<T[]> {
    const pool = await this.connect();
    try {
      return (await pool.query(sql, params)).rows as T[];
    } catch (err) {
      throw leaseFailed('postgres', what, err, context);
    }
  }

  private lease(unit: string, holder: string, ttlMs: number, sentAt: number, row: LeaseRow): Lease {
    return {
      unit,
      holder,
      epoch: Number(row.epoch),
      expiresAt: Number(row.expires_ms),
      ttlMs,
      deadline: deadlineOf(sentAt, ttlMs),
    };
  }

  async acquire(unit: string, holder: string, ttlMs: number, minEpoch = 1): Promise<Lease | null> {
    checkName(unit, 'unit');
    checkName(holder, 'holder');
    checkTtl(ttlMs);
    const sentAt = monotonicNow();
    const rows = await this.query<LeaseRow>(
      `acquire ${unit}`,
      `INSERT INTO ${this.table} AS l (cluster, unit, holder, epoch, expires_at)
         VALUES ($1, $2, $3, GREATEST(1, $5::bigint), now() + $4 * interval '1 millisecond')
       ON CONFLICT (cluster, unit) DO UPDATE SET
         holder = EXCLUDED.holder,
         epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() THEN l.epoch
                      ELSE GREATEST(l.epoch + 1, $5::bigint) END,
         expires_at = EXCLUDED.expires_at
       WHERE l.expires_at <= now() OR l.holder IS NULL OR l.holder = EXCLUDED.holder
       RETURNING epoch, (extract(epoch FROM expires_at) * 1000)::float8 AS expires_ms`,
      [this.options.cluster, unit, holder, ttlMs, minEpoch],
      { unit },
    );
    return rows[0] ? this.lease(unit, holder, ttlMs, sentAt, rows[0]) : null;
  }

  async renew(lease: Lease): Promise<Lease> {
    const sentAt = monotonicNow();
    const rows = await this.query<LeaseRow>(
      `renew ${lease.unit}`,
      `UPDATE ${this.table} SET expires_at = now() + $5 * interval '1 millisecond'
       WHERE cluster = $1 AND unit = $2 AND holder = $3 AND epoch = $4 AND expires_at > now()
       RETURNING epoch, (extract(epoch FROM expires_at) * 1000)::float8 AS expires_ms`,
      [this.options.cluster, lease.unit, lease.holder, lease.epoch, lease.ttlMs],
      { unit: lease.unit },
    );
    if (!rows[0]) throw leaseLost(lease, this.name, 'it expired or another instance took it');
    return this.lease(lease.unit, lease.holder, lease.ttlMs, sentAt, rows[0]);
  }

  async release(lease: Lease): Promise<boolean> {
    const rows = await this.query<LeaseRow>(
      `release ${lease.unit}`,
      `UPDATE ${this.table} SET holder = NULL, expires_at = now()
       WHERE cluster = $1 AND unit = $2 AND holder = $3 AND epoch = $4 AND expires_at > now()
       RETURNING epoch`,
      [this.options.cluster, lease.unit, lease.holder, lease.epoch],
      { unit: lease.unit },
    );
    return rows.length > 0;
  }

  async read(unit: string): Promise<LeaseState | undefined> {
    const rows = await this.query<LeaseRow>(
      `read ${unit}`,
      `SELECT holder, epoch, (extract(epoch FROM expires_at) * 1000)::float8 AS expires_ms,
              holder IS NOT NULL AND expires_at > now() AS live
       FROM ${this.table} WHERE cluster = $1 AND unit = $2`,
      [this.options.cluster, unit],
      { unit },
    );
    const row = rows[0];
    if (!row) return undefined;
    return {
      unit,
      holder: row.holder ?? undefined,
      epoch: Number(row.epoch),
      expiresAt: Number(row.expires_ms),
      live: row.live === true,
    };
  }

  async join(instance: string, info: Record<string, unknown>, ttlMs: number): Promise<void> {
    checkName(instance, 'instance');
    checkTtl(ttlMs);
    await this.query(
      `register ${instance}`,
      `INSERT INTO ${this.members_} (cluster, instance, info, expires_at)
         VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
       ON CONFLICT (cluster, instance) DO UPDATE SET info = EXCLUDED.info, expires_at = EXCLUDED.expires_at`,
      [this.options.cluster, instance, JSON.stringify(info), ttlMs],
      { instance },
    );
  }

  heartbeat(instance: string, info: Record<string, unknown>, ttlMs: number): Promise<void> {
    return this.join(instance, info, ttlMs);
  }

  async leave(instance: string): Promise<void> {
    await this.query(
      `remove ${instance}`,
      `DELETE FROM ${this.members_} WHERE cluster = $1 AND instance = $2`,
      [this.options.cluster, instance],
      { instance },
    );
  }

  async members(): Promise<Member[]> {
    const rows = await this.query<{ instance: string; info: Record<string, unknown>; expires_ms: number }>(
      'list the members',
      `WITH gone AS (DELETE FROM ${this.members_} WHERE cluster = $1 AND expires_at <= now())
       SELECT instance, info, (extract(epoch FROM expires_at) * 1000)::float8 AS expires_ms
       FROM ${this.members_} WHERE cluster = $1 AND expires_at > now() ORDER BY instance`,
      [this.options.cluster],
    );
    return rows.map((r) => ({ instance: r.instance, info: r.info, expiresAt: Number(r.expires_ms) }));
  }

  async close(): Promise<void> {
    const pending = this.pool;
    this.pool = undefined;
    if (!pending) return;
    const pool = await pending.catch(() => undefined);
    await pool?.end();
  }
}
